"""Aggregating 1,000 job folders: wall time and peak memory (goal: < 10 s and < 1 GiB).

Writes a synthetic sweep (``tests/helpers/synthetic.py``: model x n_train x nphotons x seed, ~1 % failed), then
times ``aggregate`` in a fresh process per path, so each peak RSS is that path's own:

* ``tables``: tables, best parameters, findings, STUDY_SUMMARY.md and report.html (``--no-plots``);
* ``full``: the same plus every figure (PNG 300 dpi + SVG, plotly 3-D when the grid has 3 axes);
* ``live``: the live page after a job (``write_live_report``) on a separate 50-job sweep (goal < 0.3 s).

    python bench/aggregate_scale.py [--jobs 1000] [--skip-full] [--keep DIR]

Prints one line per path and writes ``bench/results/aggregate_scale.json``.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))  # the synthetic-sweep helper

GOAL_S = 10.0
GOAL_RSS_MB = 1024.0
LIVE_GOAL_S = 0.3


def grid_for(n_jobs: int) -> dict:
    """model(2) x n_train(5) x nphotons(5) x seeds, the seed count chosen to reach ``n_jobs`` (>= 1 seed)."""
    seeds = max(1, round(n_jobs / 50))
    return {"model": ["pinn", "baseline"], "data.n_train": [128, 256, 512, 1024, 2048],
            "data.nphotons": [1e4, 1e5, 1e6, 1e7, 1e8], "seed": list(range(1, seeds + 1))}


def _child(kind: str, sweep: str, out: str) -> None:
    """Run one path in this (fresh) process and print a JSON line with its time and peak RSS."""
    import resource

    t0 = time.perf_counter()
    if kind == "live":
        from hydra.core.override_parser.overrides_parser import OverridesParser  # noqa: F401 (Hydra's parent has it)

        from ptycho_exp.report.page import write_live_report

        t_imp = time.perf_counter()
        times = []
        for _ in range(3):
            t = time.perf_counter()
            write_live_report(sweep)
            times.append(time.perf_counter() - t)
        seconds = min(times)
        summary = ""
    else:
        from ptycho_exp.aggregate import aggregate

        t_imp = time.perf_counter()
        summary = aggregate([Path(sweep)], Path(out), plots=(kind == "full"))
        seconds = time.perf_counter() - t_imp
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    n_fig = len(list((Path(out) / "plots").glob("*.png"))) if kind == "full" else 0
    print(json.dumps({"kind": kind, "seconds": seconds, "seconds_with_imports": time.perf_counter() - t0,
                      "import_s": t_imp - t0, "peak_rss_mb": rss_mb, "n_png": n_fig,
                      "summary_first_line": summary.splitlines()[0] if summary else ""}))


def _run_child(kind: str, sweep: Path, out: Path) -> dict:
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", kind, str(sweep), str(out)],
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} path failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=1000, help="job folders to generate (default 1000)")
    ap.add_argument("--skip-full", action="store_true", help="only the tables path (no plots)")
    ap.add_argument("--keep", help="write the sweep and the aggregates here and keep them")
    ap.add_argument("--child", nargs=3, metavar=("KIND", "SWEEP", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _child(*args.child)
        return 0

    from helpers.synthetic import write_synthetic_sweep

    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ptycho_agg_bench_"))
    try:
        sweep = root / "sweep"
        if sweep.exists():
            shutil.rmtree(sweep)
        grid = grid_for(args.jobs)
        n_total = 1
        for v in grid.values():
            n_total *= len(v)
        failed = range(7, n_total, 97)
        t = time.perf_counter()
        write_synthetic_sweep(sweep, grid, failed=failed, study_name="aggregate_scale")
        gen_s = time.perf_counter() - t
        print(f"generated {n_total} job folders ({len(failed)} failed) in {gen_s:.1f} s: {sweep}", flush=True)

        live_sweep = root / "live_sweep"
        if live_sweep.exists():
            shutil.rmtree(live_sweep)
        write_synthetic_sweep(live_sweep, {"model": ["pinn", "baseline"], "data.n_train": [128, 256, 512, 1024, 2048],
                                           "seed": [1, 2, 3, 4, 5]}, failed=[3], running=[40], pending=[41])
        runs = {"tables": _run_child("tables", sweep, root / "agg_tables")}
        if not args.skip_full:
            runs["full"] = _run_child("full", sweep, root / "agg_full")
        runs["live"] = _run_child("live", live_sweep, root / "unused")
        for kind, r in runs.items():
            goal_s = LIVE_GOAL_S if kind == "live" else GOAL_S
            r["meets_time_goal"] = r["seconds"] < goal_s
            r["meets_memory_goal"] = r["peak_rss_mb"] < GOAL_RSS_MB
            r["goal_s"] = goal_s
            what = "50 jobs" if kind == "live" else f"{n_total} jobs"
            print(f"{kind:6s} {what}: {r['seconds']:.2f} s (goal < {goal_s:g} s: "
                  f"{'met' if r['meets_time_goal'] else 'MISSED'}), {r['seconds_with_imports']:.2f} s with imports, "
                  f"peak RSS {r['peak_rss_mb']:.0f} MiB (goal < {GOAL_RSS_MB:.0f}: "
                  f"{'met' if r['meets_memory_goal'] else 'MISSED'})"
                  + (f", {r['n_png']} PNG figures" if kind == "full" else ""), flush=True)
        payload = {"n_jobs": n_total, "n_failed": len(failed), "grid": {k: len(v) for k, v in grid.items()},
                   "generate_s": gen_s, "runs": runs,
                   "goal": {"seconds": GOAL_S, "peak_rss_mb": GOAL_RSS_MB, "live_seconds": LIVE_GOAL_S}}
        try:
            from _common import write_result

            path = write_result("aggregate_scale", payload)
        except ImportError:  # pragma: no cover - bench/_common.py missing
            from ptycho_exp.results import write_json

            path = HERE / "results" / "aggregate_scale.json"
            write_json(path, {"name": "aggregate_scale", **payload})
        print(f"wrote {path}")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
