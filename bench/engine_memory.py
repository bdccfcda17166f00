"""Peak memory of a PtyLab reconstruction against the scan's pattern bytes (the factor of iterative/memory.py).

For each size, a fresh process loads a synthetic HDF5 contract scan (``--N``x``--N`` patterns) and runs the
job's engine path (``ptycho_exp.workflow.cached_engine_result``: cache key, engine input file, PtyLab worker,
``--iterations`` ePIE iterations); its peak RSS (``ru_maxrss``) and its engine worker's are added (an upper
bound: the two peaks need not coincide). The slope of that sum against the float32 pattern bytes, and its
intercept, are what :data:`ptycho_exp.iterative.memory.ENGINE_PATTERN_FACTOR` and ``ENGINE_BASE_BYTES``
should cover.

    python bench/engine_memory.py                       # 512 and 4,096 patterns of 64x64
    python bench/engine_memory.py --sizes 256,1024 --N 32   # a quick run

Results: ``bench/results/engine_memory.json`` (``--name``).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402
from _run import python  # noqa: E402


def child(path: str, iterations: int) -> None:
    """Run the engine path on ``path`` in this process; print the two peak RSS (MiB) as JSON."""
    import resource

    from ptycho_exp.compose import compose_job_config
    from ptycho_exp.data.npz import load_contract_npz
    from ptycho_exp.workflow import cached_engine_result, iterative_settings

    d = Path(path).parent
    scan = load_contract_npz(path)
    cfg = compose_job_config(["data=npz", f"data.N={scan.N}", f"data.test_path={path}", "model=ptylab",
                              f"model.iterative.iterations={iterations}", f"paths.cache_dir={d / 'cache'}"])
    res, _ = cached_engine_result(cfg, scan, d / f"job{scan.n_positions}", iterative_settings(cfg, 0), "iterative",
                                  available=2 ** 62)
    assert res.object.size
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"job_peak_rss_mb": own, "worker_peak_rss_mb": worker}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="512,4096", help="patterns per scan, comma-separated (at least two)")
    ap.add_argument("--N", type=int, default=64)
    ap.add_argument("--iterations", type=int, default=2)
    ap.add_argument("--name", default="engine_memory")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.iterations)
        return
    import numpy as np

    from stream import write_scan

    from ptycho_exp.data.simulate import simulate_object_scan
    from ptycho_exp.iterative.memory import ENGINE_BASE_BYTES, ENGINE_PATTERN_FACTOR

    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = simulate_object_scan({"N": args.N, "object_size": 4 * args.N, "test_stride": args.N / 8,
                                     "nphotons": 1e6}, "test")
        for m in sizes:
            path = Path(tmp) / f"scan{m}.h5"
            pattern_bytes = write_scan(path, base, m)
            out = subprocess.run([python(), __file__, "--child", str(path), "--iterations", str(args.iterations)],
                                 check=True, capture_output=True, text=True, timeout=3600)
            peak = json.loads(out.stdout.strip().splitlines()[-1])
            total = peak["job_peak_rss_mb"] + peak["worker_peak_rss_mb"]
            rows.append({"patterns": m, "pattern_mb": pattern_bytes / 2 ** 20, **peak, "total_peak_rss_mb": total})
            print(f"{m} patterns ({pattern_bytes / 2**20:.0f} MiB): job {peak['job_peak_rss_mb']:.0f} MiB + worker "
                  f"{peak['worker_peak_rss_mb']:.0f} MiB = {total:.0f} MiB")
    x = np.array([r["pattern_mb"] for r in rows])
    y = np.array([r["total_peak_rss_mb"] for r in rows])
    slope, intercept = np.polyfit(x, y, 1)
    estimate = [(ENGINE_BASE_BYTES + ENGINE_PATTERN_FACTOR * r["pattern_mb"] * 2 ** 20) / 2 ** 20 for r in rows]
    payload = {"N": args.N, "iterations": args.iterations, "rows": rows, "slope": float(slope),
               "intercept_mb": float(intercept), "estimate_factor": ENGINE_PATTERN_FACTOR,
               "estimate_base_mb": ENGINE_BASE_BYTES / 2 ** 20, "estimate_mb": estimate,
               "estimate_covers_measured": all(e >= r["total_peak_rss_mb"] for e, r in zip(estimate, rows))}
    print(f"peak RSS = {intercept:.0f} MiB + {slope:.2f} x pattern bytes; estimate {ENGINE_BASE_BYTES / 2**20:.0f} MiB "
          f"+ {ENGINE_PATTERN_FACTOR:g} x: covers the measured peaks: {payload['estimate_covers_measured']}")
    print(f"wrote {write_result(args.name, payload)}")


if __name__ == "__main__":
    main()
