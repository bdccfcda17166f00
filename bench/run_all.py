"""``make bench``: the CPU benchmark suite (each script prints its figures and writes bench/results/*.json).

The quality benchmark (minutes per case) is not part of it: ``make bench-quality``.

    python bench/run_all.py [--only startup,cache]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# (script, arguments) in the order they run; sized so the whole suite stays under 15 minutes on 2 cores.
SUITE = [
    ("startup.py", ["--repeat", "5"]),
    ("cache.py", ["--k", "4"]),
    ("aggregate_scale.py", []),
    ("memory.py", []),
    ("throughput.py", ["--quick", "--repeat", "3"]),
    ("inference_vs_iterative.py", []),
    ("parallel.py", ["--n-jobs", "1,2"]),
    ("overhead.py", ["--seeds", "10", "--skip-in-process"]),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated script stems to run")
    args = ap.parse_args()
    only = set(args.only.split(",")) if args.only else None
    failed, t_all = [], time.perf_counter()
    for script, extra in SUITE:
        if only and Path(script).stem not in only:
            continue
        print(f"\n=== {script} {' '.join(extra)}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call([sys.executable, str(HERE / script), *extra])
        print(f"=== {script}: exit {rc} in {time.perf_counter() - t0:.0f} s", flush=True)
        if rc:
            failed.append(script)
    print(f"\nbench suite: {time.perf_counter() - t_all:.0f} s; results in {HERE / 'results'}"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
