"""Wall time of the fast test suite (``make test``: ``pytest -q -n auto --dist loadfile``), goal <= 4 min on 2 cores.

Runs the suite ``--repeat`` times (run it on a quiet machine: the suite uses every core) and records each
run's wall time, its counts, the machine's load before each run, and the slowest files of the last run.

    python bench/test_suite.py [--repeat 3]

Results: ``bench/results/test_suite.json``.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COMMAND = [sys.executable, "-m", "pytest", "-q", "-n", "auto", "--dist", "loadfile", "--durations=0"]


def one_run() -> dict:
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(COMMAND, cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    summary = proc.stdout.strip().splitlines()[-1]
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?)", summary)}
    files = Counter()
    for seconds, _, test in re.findall(r"^([\d.]+)s (setup|call|teardown)\s+(\S+)", proc.stdout, re.M):
        files[test.split("::")[0]] += float(seconds)
    return {"wall_s": round(wall, 1), "exit_status": proc.returncode, "counts": counts, "load_before": load,
            "summary": summary, "slowest_files_s": {k: round(v, 1) for k, v in files.most_common(10)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--name", default="test_suite")
    args = ap.parse_args()
    runs = []
    for i in range(args.repeat):
        runs.append(one_run())
        print(f"run {i + 1}: {runs[-1]['wall_s']} s, {runs[-1]['summary']}", flush=True)
    walls = [r["wall_s"] for r in runs]
    payload = {"command": "make test (" + " ".join(COMMAND[1:-1]) + ")", "goal_s": 240,
               "median_wall_s": statistics.median(walls), "max_wall_s": max(walls),
               "all_passed": all(r["exit_status"] == 0 for r in runs), "runs": runs,
               "workers": os.cpu_count()}
    payload["goal_met"] = payload["all_passed"] and payload["max_wall_s"] <= 240
    print(f"median {payload['median_wall_s']} s, max {payload['max_wall_s']} s (goal <= 240 s): "
          f"{'met' if payload['goal_met'] else 'NOT met'}")
    write_result(args.name, payload)


if __name__ == "__main__":
    main()
