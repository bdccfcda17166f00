"""Training and inference throughput (patterns/s) and peak memory of the PINN and the baseline.

Each configuration (model, N, gridsize, batch size, precision) runs in its own Python process, so TF
state never leaks and each row's peak RSS is its own. Training is timed in steady state (after warm-up
steps that trace the graph) through the same tf.data pipeline and compiled train step as a job
(:mod:`ptycho_exp.models.fit`); inference through :func:`ptycho_exp.models.fit.predict_patches`.
A *pattern* is one diffraction pattern (a gridsize-2 sample holds 4). The device is TensorFlow's choice
(the GPU when there is one), so the same command measures a GPU machine unchanged.

``--job-rss`` also runs one real job (``python -m ptycho_exp``, 4,096 training patterns at N=64, 1 epoch)
and reports its peak RSS (goal < 2 GiB).

Usage::

    python bench/throughput.py --quick --repeat 3   # PINN and baseline, N=64, g=1, batch 16, median of 3 (~3 min)
    python bench/throughput.py                  # the full grid: N=64 g=1/g=2, N=128 g=1; batch 16/32/64
    python bench/throughput.py --precision float32 auto --models pinn --batch 16

Results: a table on stdout and ``bench/results/throughput.json`` (with machine info).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, write_result

ROOT = Path(__file__).resolve().parent.parent
REFERENCE_TRAIN_RATE = 71.0  # reference TF PtychoPINN, N=64, g=1, scale 2, batch 16, 2-core CPU
GEOMETRIES = {"64g1": (64, 1), "64g2": (64, 2), "128g1": (128, 1)}


# --------------------------------------------------------------------------- worker (one process per row)
def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure(model_name: str, N: int, gridsize: int, batch: int, precision: str, steps: int, warmup: int,
            n_infer: int, jit: bool = False, seed: int = 0) -> dict:
    """Time ``steps`` training steps and inference on ``n_infer`` samples of one configuration.

    Returns
    -------
    dict
        ``train_patterns_per_s`` (wall), ``train_patterns_per_cpu_s`` (patterns per CPU second of this
        process, a contention-robust figure), ``infer_patterns_per_s``, ``peak_rss_mb``, ``n_params``,
        ``dtype_policy``, ``device`` and the step times.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    from ptycho_exp.config import ModelConfig
    from ptycho_exp.models.fit import (
        _build,
        _datasets,
        _on_gpu,
        compute_norm_factor,
        cpu_has_bf16,
        onednn_enabled,
        precision_policy,
        predict_patches,
        seed_everything,
    )
    from ptycho_exp.physics.probe import make_probe

    seed_everything(seed, deterministic=False)
    C = gridsize ** 2
    rng = np.random.default_rng(seed)
    n = max(batch * 4, 64)
    diff = rng.gamma(1.0, 1.0, (n, N, N, C)).astype(np.float32)
    diff *= compute_norm_factor(diff)
    x = {"diffraction": diff}
    if C > 1:
        x["offsets"] = rng.normal(0.0, 3.0, (n, C, 2)).astype(np.float32)
    y = None
    if model_name == "baseline":
        y = (rng.random((n, N, N, C), dtype=np.float32), rng.random((n, N, N, C), dtype=np.float32))
    policy = precision_policy(precision, _on_gpu(), cpu_has_bf16())
    model = _build(ModelConfig(name=model_name), N, gridsize, make_probe("ideal_disk", N),
                   1e9, policy)
    optimizer = keras.optimizers.Adam(1e-3)
    if policy == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(optimizer=optimizer, jit_compile=bool(jit))
    ds, _ = _datasets(x, y, np.arange(n), np.arange(1), batch, seed)
    ds = ds.repeat()

    class Clock(keras.callbacks.Callback):  # wall and CPU time at the end of every step
        def __init__(self):
            super().__init__()
            self.ends = []

        def on_train_batch_end(self, batch, logs=None):
            self.ends.append((time.perf_counter(), time.process_time()))

    # One fit for warm-up and timed steps: a second fit call would time its own start-up (a new iterator,
    # the prefetch filling), about 0.5 s, which halved the rate of a 12-step row.
    clock = Clock()
    t0 = time.perf_counter()
    model.fit(ds, steps_per_epoch=warmup + steps, epochs=1, verbose=0, callbacks=[clock])
    (wall0, cpu0), (wall1, cpu1) = clock.ends[warmup - 1], clock.ends[-1]
    first_s, wall, cpu = wall0 - t0, wall1 - wall0, cpu1 - cpu0
    patterns = steps * batch * C

    infer_x = np.abs(rng.normal(size=(n_infer, N, N, C))).astype(np.float32)
    infer_off = rng.normal(0.0, 3.0, (n_infer, C, 2)).astype(np.float32) if C > 1 else None
    inf = model.inference_model
    predict_patches(inf, infer_x[:256], 1.0, offsets=None if infer_off is None else infer_off[:256])  # trace
    t1 = time.perf_counter()
    predict_patches(inf, infer_x, 1.0, offsets=infer_off)
    infer_s = time.perf_counter() - t1
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    return {"model": model_name, "N": N, "gridsize": gridsize, "batch": batch, "precision": precision,
            "dtype_policy": policy, "jit_compile": bool(jit), "device": gpus[0] if gpus else "CPU",
            "onednn": onednn_enabled(),
            "n_params": int(model.n_params), "steps": steps, "warmup_s": first_s, "train_s": wall,
            "train_cpu_s": cpu, "train_patterns_per_s": patterns / wall,
            "train_patterns_per_cpu_s": patterns / max(cpu, 1e-9),
            "infer_patterns": n_infer * C, "infer_s": infer_s, "infer_patterns_per_s": n_infer * C / infer_s,
            "peak_rss_mb": _peak_rss_mb(), "tf_threads": [tf.config.threading.get_intra_op_parallelism_threads(),
                                                          tf.config.threading.get_inter_op_parallelism_threads()]}


def job_peak_rss(n_train: int, epochs: int, timeout: float) -> dict:
    """Run one real PINN job (N=64, ``n_train`` patterns) through the CLI; report its peak RSS and speed."""
    with tempfile.TemporaryDirectory(prefix="ptycho-bench-") as tmp:
        job = Path(tmp) / "job"
        cmd = [sys.executable, "-m", "ptycho_exp", "model=pinn", "data.N=64", f"data.n_train={n_train}",
               f"train.epochs={epochs}", "train.tensorboard=false", "eval.figures=false", "train.verbose=quiet",
               f"paths.cache_dir={Path(tmp) / 'cache'}", f"hydra.run.dir={job}"]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        wall = time.perf_counter() - t0
        try:
            res = json.loads((job / "result.json").read_text())
        except (OSError, json.JSONDecodeError):
            res = {"status": "missing", "error": proc.stderr[-2000:]}
    return {"n_train": n_train, "epochs": epochs, "status": res.get("status"), "error": res.get("error"),
            "peak_rss_mb": res.get("resources", {}).get("peak_rss_mb"), "wall_s": wall,
            "train_patterns_per_s": res.get("throughput", {}).get("train_patterns_per_s"),
            "inference_patterns_per_s": res.get("throughput", {}).get("inference_patterns_per_s"),
            "dtype_policy": res.get("dtype_policy")}


# --------------------------------------------------------------------------- parent
def run_row(spec: dict, timeout: float) -> dict:
    """One configuration in a fresh process; a failure becomes a row with ``error``."""
    from ptycho_exp.isolation import tensorflow_env

    # the settings a job's process gets (oneDNN on), then quieter logs
    env = {**os.environ, **tensorflow_env(), "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**spec, "model": spec["model_name"], "error": f"timed out after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {**spec, "model": spec["model_name"], "error": error_text(proc.stderr)}


def error_text(stderr: str) -> str:
    """The informative end of a failed worker's stderr, from the last line naming an error: its first 3
    and last 7 lines, TensorFlow's log lines dropped. TensorFlow's last line alone
    (``[[StatefulPartitionedCall]]``) names no cause; the message sits just above it."""
    noise = ("I0000", "W0000", "E0000", "WARNING: All log messages", "To enable the following")
    lines = [ln.rstrip() for ln in stderr.splitlines() if ln.strip() and not ln.startswith(noise)]
    if not lines:
        return "no output"
    start = max((i for i, ln in enumerate(lines) if "Error" in ln), default=max(0, len(lines) - 10))
    seg = lines[start:]
    if len(seg) > 10:
        seg = [*seg[:3], "...", *seg[-7:]]
    return "\n".join(seg)[:3000]


def median_row(spec: dict, timeout: float, repeat: int) -> dict:
    """:func:`run_row` ``repeat`` times; the run with the median training rate, with every run's rates.

    A 2-core VM's wall-clock rates vary by about 15 % from one process to the next, so a goal near
    the line needs more than one run.
    """
    runs = [run_row(spec, timeout) for _ in range(max(1, repeat))]
    ok = sorted((r for r in runs if "error" not in r), key=lambda r: r["train_patterns_per_s"])
    if not ok:
        return runs[-1]
    row = dict(ok[(len(ok) - 1) // 2])
    row["runs"] = [{k: r[k] for k in ("train_patterns_per_s", "train_patterns_per_cpu_s", "infer_patterns_per_s")}
                   for r in ok]
    return row


def format_table(rows: list[dict]) -> str:
    head = (f"{'model':9} {'N':>4} {'g':>2} {'batch':>5} {'policy':>15} {'train/s':>8} {'train/cpu-s':>11} "
            f"{'infer/s':>8} {'inf/train':>9} {'RSS MiB':>8}  device")
    lines = [head, "-" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['model']:9} {r['N']:>4} {r['gridsize']:>2} {r['batch']:>5}  ERROR: {r['error']}")
            continue
        ratio = r["infer_patterns_per_s"] / r["train_patterns_per_s"]
        lines.append(f"{r['model']:9} {r['N']:>4} {r['gridsize']:>2} {r['batch']:>5} {r['dtype_policy']:>15} "
                     f"{r['train_patterns_per_s']:8.1f} {r['train_patterns_per_cpu_s']:11.1f} "
                     f"{r['infer_patterns_per_s']:8.1f} {ratio:9.1f} {r['peak_rss_mb']:8.0f}  {r['device']}")
    return "\n".join(lines)


def build_specs(args: argparse.Namespace) -> list[dict]:
    if args.quick:
        models, geoms, batches = ["pinn", "baseline"], ["64g1"], [16]
    else:
        models, geoms, batches = args.models, args.geometries, args.batch
    specs = []
    for model, geom, batch, prec in itertools.product(models, geoms, batches, args.precision):
        N, g = GEOMETRIES[geom]
        steps = args.steps if args.steps else (40 if args.quick else max(24, 1536 // (batch * g * g)))
        if N >= 128 and not args.steps:
            steps = max(8, steps // 3)
        specs.append({"model_name": model, "N": N, "gridsize": g, "batch": batch, "precision": prec,
                      "steps": steps, "warmup": args.warmup, "n_infer": args.n_infer, "jit": args.jit})
    return specs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="PINN and baseline at N=64, g=1, batch 16 only")
    p.add_argument("--models", nargs="+", default=["pinn", "baseline"], choices=["pinn", "baseline"])
    p.add_argument("--geometries", nargs="+", default=list(GEOMETRIES), choices=list(GEOMETRIES),
                   help="N and gridsize: 64g1, 64g2, 128g1")
    p.add_argument("--batch", nargs="+", type=int, default=[16, 32, 64])
    p.add_argument("--precision", nargs="+", default=["auto"], choices=["auto", "float32", "mixed"],
                   help="train.precision values to measure (auto: bf16 on CPUs with native bf16)")
    p.add_argument("--jit", action="store_true", help="compile the train step with XLA (train.jit_compile)")
    p.add_argument("--steps", type=int, default=0, help="timed training steps per row (0: by size)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (graph tracing)")
    p.add_argument("--repeat", type=int, default=1, help="runs per row (fresh processes); the median is kept")
    p.add_argument("--n-infer", type=int, default=512, help="samples predicted for the inference rate")
    p.add_argument("--job-rss", action="store_true", help="also run a real 4,096-pattern N=64 job for peak RSS")
    p.add_argument("--job-n-train", type=int, default=4096)
    p.add_argument("--timeout", type=float, default=1800, help="seconds per row")
    p.add_argument("--name", default="throughput", help="results file stem (bench/results/<name>.json)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.warmup < 1:
        p.error("--warmup must be >= 1: the first step traces the graph")

    if args.worker:
        print(json.dumps(measure(**json.loads(args.worker))), flush=True)
        return 0

    specs = build_specs(args)
    load_before = machine_info(with_tf=False).get("loadavg")
    rows = []
    for spec in specs:
        row = median_row(spec, args.timeout, args.repeat)
        rows.append(row)
        print(format_table([row]).splitlines()[-1], flush=True)
    print()
    print(format_table(rows))
    payload: dict = {"quick": bool(args.quick), "reference_train_patterns_per_s": REFERENCE_TRAIN_RATE,
                     "repeat": args.repeat, "loadavg_before": load_before, "rows": rows}
    ref = [r for r in rows if "error" not in r and r["model"] == "pinn" and r["N"] == 64
           and r["gridsize"] == 1 and r["batch"] == 16]
    for r in ref:
        print(f"\nPINN N=64 g=1 batch 16 ({r['dtype_policy']}): {r['train_patterns_per_s']:.1f} patterns/s "
              f"({r['train_patterns_per_s'] / REFERENCE_TRAIN_RATE:.2f}x the reference's 71; goal >= 110), "
              f"inference {r['infer_patterns_per_s'] / r['train_patterns_per_s']:.1f}x training (goal >= 3)")
    if args.job_rss:
        job = job_peak_rss(args.job_n_train, 1, args.timeout)
        payload["job_rss"] = job
        print(f"\njob with {job['n_train']} training patterns at N=64: status {job['status']}, "
              f"peak RSS {job['peak_rss_mb']} MiB (goal < 2048)")
    load = load_before  # afterwards the load average counts this benchmark's own workers
    if load and load[0] > (os.cpu_count() or 1) * 0.5:
        print(f"\nnote: load average {load[0]} on {os.cpu_count()} cores before the start: the machine was busy, "
              "wall-clock rates are low; train/cpu-s is patterns per CPU second of the process (multiply by the cores "
              "for an uncontended estimate)")
    path = write_result(args.name, payload)
    print(f"\nwrote {path}")
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
