"""Peak memory of one job: N=64, 4,096 training patterns, 1,089 test positions.

Runs the real job (``python -m ptycho_exp``) for the PINN and the baseline with one epoch and reads the
peak RSS the job records (the child process's ``ru_maxrss``). Goal: < 2 GiB per job.

``--floor`` instead measures what TensorFlow itself needs for the PINN: a bare Keras loop in a fresh
process (import, build the default network, two epochs of ``fit`` at batch 16 on 1,615 random patterns,
predict 1,089 in chunks of ``--predict-batch``) against the real job on the same sizes (gridsize 1, float32,
2 epochs), so a job's peak can be split into TensorFlow's floor and the framework's own share.

    python bench/memory.py [--epochs 1] [--models pinn,baseline]
    python bench/memory.py --floor [--predict-batch 64] [--name memory_floor]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402
from _run import bench_env, python, run  # noqa: E402


FLOOR_SIZES = {"n_train": 1615, "n_test": 1089, "N": 64, "batch_size": 16, "epochs": 2}


def _rss_mb() -> tuple[float, float]:
    """(current VmRSS, peak ru_maxrss) of this process in MiB."""
    import resource

    status = Path("/proc/self/status").read_text()
    now = float(status.split("VmRSS:")[1].split()[0]) / 1024
    return now, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def floor_child(predict_batch: int) -> None:
    """The bare loop of ``--floor`` (run in its own process); prints one JSON line of (stage, RSS, peak)."""
    import numpy as np

    marks = []

    def mark(stage: str) -> None:
        now, peak = _rss_mb()
        marks.append({"stage": stage, "rss_mb": round(now, 1), "peak_rss_mb": round(peak, 1)})

    mark("start")
    import keras
    import tensorflow  # noqa: F401

    mark("import tensorflow")
    from ptycho_exp.config import ModelConfig
    from ptycho_exp.models.pinn import build_pinn

    n = FLOOR_SIZES["N"]
    yy, xx = np.mgrid[:n, :n] - n // 2
    probe = (np.hypot(yy, xx) < n // 4).astype(np.complex64)
    model = build_pinn(ModelConfig(), n, 1, probe, 1e9)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    mark("network built")
    rng = np.random.default_rng(0)
    x = rng.random((FLOOR_SIZES["n_train"], n, n, 1), dtype=np.float32)
    for epoch in range(FLOOR_SIZES["epochs"]):
        model.fit(x, x, batch_size=FLOOR_SIZES["batch_size"], epochs=1, verbose=0)
        mark(f"fit epoch {epoch + 1}")
    xt = rng.random((FLOOR_SIZES["n_test"], n, n, 1), dtype=np.float32)
    for start in range(0, len(xt), predict_batch):
        np.asarray(model.inference_model.predict_on_batch(xt[start:start + predict_batch]))
    mark(f"predict (chunks of {predict_batch})")
    print(json.dumps(marks))


def floor(args, env: dict, tmp: Path) -> dict:
    """Bare loop against the real job at the same sizes."""
    _, out = run([python(), str(Path(__file__).resolve()), "--floor-child", str(args.predict_batch)], env)
    marks = json.loads([line for line in out.splitlines() if line.startswith("[{")][-1])
    d = tmp / "job"
    wall, _ = run([python(), "-m", "ptycho_exp", "model=pinn", "data=lines", f"data.N={FLOOR_SIZES['N']}",
                   "data.gridsize=1", "data.n_train=1700", "train.val_fraction=0.05", "train.warmup_epochs=0",
                   f"train.epochs={FLOOR_SIZES['epochs']}", f"train.batch_size={FLOOR_SIZES['batch_size']}",
                   "train.precision=float32", f"eval.batch_size={args.predict_batch}", "train.tensorboard=false",
                   "eval.figures=false", f"hydra.run.dir={d}"], env)
    res = json.loads((d / "result.json").read_text())
    assert res["status"] == "ok", res.get("error")
    bare_peak = max(m["peak_rss_mb"] for m in marks)
    job_peak = res["resources"]["peak_rss_mb"]
    for m in marks:
        print(f"bare loop  {m['stage']:24s} RSS {m['rss_mb']:7.0f} MiB  peak {m['peak_rss_mb']:7.0f} MiB")
    print(f"job        peak {job_peak:7.0f} MiB (n_train {res['data']['train']['n_samples']}, "
          f"n_test {res['data']['test']['n_samples']}); job's own share {job_peak - bare_peak:+.0f} MiB")
    return {"sizes": FLOOR_SIZES, "predict_batch": args.predict_batch, "bare_loop": marks,
            "bare_peak_rss_mb": bare_peak, "job_peak_rss_mb": job_peak, "job_wall_s": wall,
            "job_share_mb": job_peak - bare_peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--models", default="pinn,baseline")
    ap.add_argument("--floor", action="store_true", help="TensorFlow's own floor against the job")
    ap.add_argument("--predict-batch", type=int, default=64)
    ap.add_argument("--name", default=None, help="result file stem (default memory / memory_floor)")
    ap.add_argument("--floor-child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.floor_child is not None:
        floor_child(args.floor_child)
        return
    if args.floor:
        with tempfile.TemporaryDirectory() as tmp:
            payload = floor(args, bench_env(Path(tmp) / "cache"), Path(tmp))
        print(f"wrote {write_result(args.name or 'memory_floor', payload)}")
        return
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = bench_env(tmp / "cache")
        for model in args.models.split(","):
            d = tmp / model
            wall, _ = run([python(), "-m", "ptycho_exp", f"model={model}", "data.N=64", "data.n_train=4096",
                           f"train.epochs={args.epochs}", "train.tensorboard=false", f"hydra.run.dir={d}"], env)
            res = json.loads((d / "result.json").read_text())
            assert res["status"] == "ok", res.get("error")
            n_test = res["data"]["test"]["n_samples"]
            peak = res["resources"]["peak_rss_mb"]
            rows[model] = {"peak_rss_mb": peak, "n_train": res["data"]["train"]["n_samples"], "n_test": n_test,
                           "wall_s": wall, "goal_mb_max": 2048, "meets_goal": peak < 2048}
            print(f"{model:9s} peak RSS {peak:7.0f} MiB (goal < 2048) with {rows[model]['n_train']} training "
                  f"patterns, {n_test} test positions; job wall {wall:.0f} s")
    print(f"wrote {write_result(args.name or 'memory', {'epochs': args.epochs, 'jobs': rows})}")


if __name__ == "__main__":
    main()
