"""Reconstruction quality of the PINN and the supervised baseline on the reference problem (docs/CONTRACT.md §7).

Lines objects, N=64, 1e9 photons, ideal disk probe, gridsize 1 and 2; amplitude-only lines by default
(as the reference table), ``--phase`` for a phase-carrying object (phase metrics then mean something).
Every arm is a real job (``python -m ptycho_exp ...``, the same job function as a study), in its own
folder under ``--out-dir``; the table and ``bench/results/<name>.json`` are read from the jobs'
``result.json`` files.

Protocols
---------
- CPU (default): 2,048 training samples, 20 epochs (goal: gridsize-2 PINN amplitude SSIM >= 0.90).
- Gridsize-2 samples are 2x2 blocks of adjacent grid positions (``data.grouping=block``), and the test
  blocks keep the training step between neighbours, as in PtychoPINN's simulations; ``--grouping knn``
  draws C of the k nearest instead (then test neighbours are a test step apart).
- ``--full``: the reference GPU protocol of docs/CONTRACT.md §7: 60 epochs, every training position (83x83 = 6,889
  per object). PtychoPINN's lines notebook trains on two simulated objects; ``--train-objects 2``
  does the same (``data.n_train_objects``, 13,778 samples per epoch with ``--full``).
Early stopping is off (patience = epochs) so arms train for equal epochs. At gridsize 2 a sample is a
group of 4 patterns; ``--n-train`` counts samples (``data.n_train``).

Usage::

    python bench/quality.py                              # CPU protocol, g=1 and g=2, PINN and baseline
    python bench/quality.py --gridsize 2 --models pinn   # one arm
    python bench/quality.py --phase                      # phase-carrying lines
    python bench/quality.py --full                       # reference protocol (GPU), one training object
    python bench/quality.py --full --train-objects 2     # ... on two objects, as PtychoPINN's notebook
    python bench/quality.py --epochs 1 --n-train 64 --N 32 --object-size 128   # smoke check
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result

ROOT = Path(__file__).resolve().parent.parent
# docs/CONTRACT.md §7 (lines, N=64, 1e9 photons, 60 epochs, GPU, ideal disk probe; PINN).
REFERENCE = {1: {"amp_ssim": 0.620, "phase_ssim": 0.410, "amp_frc50": 23.0},
             2: {"amp_ssim": 0.952, "phase_ssim": 0.996, "amp_frc50": 165.0}}
CPU_GOAL_G2_AMP_SSIM = 0.90
KEYS = ("amp_ssim", "phase_ssim", "amp_frc50", "phase_frc50", "amp_pearson", "phase_pearson")


def all_positions(object_size: int, N: int, stride: float) -> int:
    """Training positions of the default grid scan (every one is used by the full protocol)."""
    from ptycho_exp.physics.scan import grid_positions

    return int(grid_positions(object_size, N, stride).shape[0])


def job_overrides(model: str, gridsize: int, args: argparse.Namespace, n_train: int, epochs: int) -> list[str]:
    """Hydra overrides of one arm."""
    return [f"model={model}", "data=lines", f"data.object_phase={'tanh' if args.phase else 'none'}",
            f"data.N={args.N}", f"data.object_size={args.object_size}", "data.nphotons=1e9",
            "data.probe=ideal_disk", f"data.gridsize={gridsize}", f"data.n_train={n_train}",
            f"data.n_train_objects={args.train_objects}",
            f"train.epochs={epochs}", f"train.early_stopping_patience={epochs}", "train.tensorboard=false",
            "train.verbose=quiet", f"seed={args.seed}", f"data.grouping={args.grouping}", *args.override]


def run_job(overrides: list[str], job_dir: Path, timeout: float) -> dict:
    """Run one job through the CLI (skip-if-done applies: an identical finished job is reused)."""
    cmd = [sys.executable, "-m", "ptycho_exp", *overrides, f"hydra.run.dir={job_dir}"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        tail = proc.stderr.strip().splitlines()[-1:] if proc.returncode else []
    except subprocess.TimeoutExpired:
        tail = [f"timed out after {timeout:.0f} s"]
    wall = time.perf_counter() - t0
    try:
        res = json.loads((job_dir / "result.json").read_text())
    except (OSError, json.JSONDecodeError):
        res = {"status": "missing", "error": tail[0] if tail else "no result.json"}
    return {"status": res.get("status"), "error": res.get("error"), "wall_s": wall, "job_dir": str(job_dir),
            "metrics": {k: res.get("metrics", {}).get(k) for k in KEYS},
            "train_s": res.get("timings", {}).get("train_s"),
            "train_patterns_per_s": res.get("throughput", {}).get("train_patterns_per_s"),
            "epochs_run": res.get("epochs_run"), "dtype_policy": res.get("dtype_policy"),
            "peak_rss_mb": res.get("resources", {}).get("peak_rss_mb")}


def _fmt(v, width: int = 8, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return f"{'-':>{width}}"
    return f"{v:{width}.{digits}f}"


def format_table(rows: list[dict], show_reference: bool) -> str:
    head = (f"{'model':9} {'g':>2} {'amp SSIM':>8} {'ph SSIM':>8} {'amp FRC50':>9} {'ph FRC50':>8} "
            f"{'amp r':>6} {'train s':>8}  reference (CONTRACT §7, PINN, 60 ep.)")
    lines = [head, "-" * len(head)]
    for r in rows:
        m = r["metrics"]
        if r["status"] != "ok":
            lines.append(f"{r['model']:9} {r['gridsize']:>2}  FAILED: {r['error']}")
            continue
        ref = REFERENCE.get(r["gridsize"]) if (show_reference and r["model"] == "pinn") else None
        ref_txt = (f"amp {ref['amp_ssim']:.3f} / phase {ref['phase_ssim']:.3f} / FRC50 {ref['amp_frc50']:.0f}"
                   if ref else "")
        lines.append(f"{r['model']:9} {r['gridsize']:>2} {_fmt(m['amp_ssim'])} {_fmt(m['phase_ssim'])} "
                     f"{_fmt(m['amp_frc50'], 9, 1)} {_fmt(m['phase_frc50'], 8, 1)} {_fmt(m['amp_pearson'], 6, 3)} "
                     f"{_fmt(r['train_s'], 8, 0)}  {ref_txt}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true", help="reference protocol: 60 epochs, every training position")
    p.add_argument("--epochs", type=int, help="epochs (default 20; 60 with --full)")
    p.add_argument("--n-train", type=int, help="training samples (default 2048; all positions with --full)")
    p.add_argument("--train-objects", type=int, default=1,
                   help="simulated training objects (data.n_train_objects); the reference's notebook used 2")
    p.add_argument("--gridsize", type=int, nargs="+", default=[1, 2], choices=[1, 2, 3])
    p.add_argument("--models", nargs="+", default=["pinn", "baseline"], choices=["pinn", "baseline"])
    p.add_argument("--phase", action="store_true", help="phase-carrying lines (object_phase=tanh)")
    p.add_argument("--N", type=int, default=64, help="patch size (64 for the reference; smaller for smoke runs)")
    p.add_argument("--object-size", type=int, default=392)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--grouping", default="block", choices=["block", "knn"],
                   help="gridsize>1 samples: g x g blocks of the grid (PtychoPINN's layout, default) or knn")
    p.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides for every arm")
    p.add_argument("--out-dir", help="job folders (default outputs/bench_quality/<name>-<UTC time>)")
    p.add_argument("--name", help="results file stem (default quality_cpu / quality_full, +_phase)")
    p.add_argument("--timeout", type=float, default=6 * 3600, help="seconds per job")
    args = p.parse_args(argv)

    epochs = args.epochs or (60 if args.full else 20)
    n_all = all_positions(args.object_size, args.N, 4.0)
    n_all *= args.train_objects
    n_train = args.n_train or (n_all if args.full else min(2048, n_all))
    name = args.name or ("quality_full" if args.full else "quality_cpu") + ("_phase" if args.phase else "")
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out_dir = Path(args.out_dir) if args.out_dir else ROOT / "outputs" / "bench_quality" / f"{name}-{stamp}"
    reference_protocol = (args.N == 64 and args.object_size == 392 and not args.phase)
    print(f"quality: lines{' with phase' if args.phase else ' (amplitude only)'}, N={args.N}, "
          f"n_train={n_train} ({args.train_objects} object(s)), epochs={epochs}, gridsize {args.gridsize}, "
          f"models {args.models}; jobs in {out_dir}",
          flush=True)

    rows = []
    for g in args.gridsize:
        for model in args.models:
            job_dir = out_dir / f"{model}_g{g}"
            overrides = job_overrides(model, g, args, n_train, epochs)
            row = {"model": model, "gridsize": g, "overrides": overrides, **run_job(overrides, job_dir, args.timeout)}
            rows.append(row)
            print(format_table([row], reference_protocol).splitlines()[-1], flush=True)
    print()
    print(format_table(rows, reference_protocol))
    goal = None
    g2 = [r for r in rows if r["model"] == "pinn" and r["gridsize"] == 2 and r["status"] == "ok"]
    if g2 and not args.full and reference_protocol:
        amp = g2[0]["metrics"]["amp_ssim"]
        goal = {"target_amp_ssim": CPU_GOAL_G2_AMP_SSIM, "amp_ssim": amp,
                "met": bool(amp is not None and amp >= CPU_GOAL_G2_AMP_SSIM)}
        print(f"\nCPU goal, gridsize-2 PINN amplitude SSIM >= {CPU_GOAL_G2_AMP_SSIM}: "
              f"{_fmt(amp).strip()} ({'met' if goal['met'] else 'NOT met'})")
    payload = {"protocol": "full" if args.full else "cpu", "epochs": epochs, "n_train": n_train,
               "train_objects": args.train_objects,
               "object": "lines", "object_phase": "tanh" if args.phase else "none", "N": args.N,
               "nphotons": 1e9, "probe": "ideal_disk", "seed": args.seed, "grouping": args.grouping,
               "out_dir": str(out_dir),
               "reference_spec7": {str(k): v for k, v in REFERENCE.items()}, "cpu_goal": goal, "rows": rows}
    path = write_result(name, payload)
    print(f"\nwrote {path}")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
