"""Dataset cache: cost of a hit vs simulating, and K jobs sharing one data config.

* Direct: the default training scan (lines, N=64, S=392: 83² = 6,889 patterns) simulated on a cold cache,
  then loaded from it (median of ``--repeat``). Goal: a hit costs < 5 % of simulating.
* Sweep: K tiny jobs with one data config on a cold cache (``-m seed=1..K``): the first job simulates the
  train and test scans, the other K-1 hit (counted from each job's result.json, not from logs).

    python bench/cache.py [--k 4] [--repeat 5]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402
from _run import TINY, bench_env, job_results, python, run  # noqa: E402


def direct(tmp: Path, repeat: int) -> dict:
    from ptycho_exp.config import DataConfig
    from ptycho_exp.data.cache import load_or_simulate

    fields = DataConfig()
    t0 = time.perf_counter()
    scan, hit, _ = load_or_simulate(tmp / "direct", fields, "train")
    miss_s = time.perf_counter() - t0
    assert not hit
    hits = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        _, hit, _ = load_or_simulate(tmp / "direct", fields, "train")
        hits.append(time.perf_counter() - t0)
        assert hit
    hit_s = statistics.median(hits)
    return {"patterns": int(scan.n_positions), "N": int(scan.N), "miss_s": miss_s, "hit_s": hit_s,
            "hit_fraction_of_miss": hit_s / miss_s, "goal_fraction_max": 0.05, "meets_goal": hit_s / miss_s < 0.05}


def sweep(tmp: Path, k: int) -> dict:
    env = bench_env(tmp / "sweep_cache")
    seeds = ",".join(str(s) for s in range(1, k + 1))
    run([python(), "-m", "ptycho_exp", "-m", "model=pinn", f"seed={seeds}", *TINY,
         f"hydra.sweep.dir={tmp / 'sweep'}"], env)
    res = job_results(tmp / "sweep")
    hits = {w: sum(bool(r["data"][f"{w}_cache"]["hit"]) for r in res) for w in ("train", "test")}
    return {"jobs": len(res), "hits": hits, "expected_hits": k - 1,
            "meets_goal": len(res) == k and all(h == k - 1 for h in hits.values())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        d = direct(tmp, args.repeat)
        print(f"simulate {d['patterns']} patterns of {d['N']}x{d['N']}: {d['miss_s']:.2f} s; cache hit "
              f"{d['hit_s']:.3f} s = {100 * d['hit_fraction_of_miss']:.1f} % (goal < 5 %)")
        s = sweep(tmp, args.k)
        print(f"sweep of {s['jobs']} jobs sharing one data config: train hits {s['hits']['train']}, "
              f"test hits {s['hits']['test']} (expected {s['expected_hits']} each)")
    print(f"wrote {write_result('cache', {'direct': d, 'sweep': s})}")


if __name__ == "__main__":
    main()
