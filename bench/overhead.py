"""Framework overhead of a multirun and the dataset cache in a sweep.

Runs the same ``study=quick`` jobs (tiny, CPU) three ways on a warm dataset cache:

* **framework**: ``python -m ptycho_exp study=quick seed=1..S`` (Hydra multirun, basic launcher, one child
  process per job, live report after each job, final aggregate at the end);
* **plain loop**: a Python loop that runs the same job function in a fresh process per job
  (``python -m ptycho_exp.run <dir>`` with the same configs) -- what a shell-script study does;
* **in-process loop** (for information): one process calling ``train_and_evaluate`` for each config
  (no isolation: TensorFlow state is shared between jobs; the framework avoids this on purpose).

Goal: framework vs plain loop overhead <= 3 % of the wall time and <= 0.5 s per job. The framework's jobs
share one data config, so all but the first simulated scan are cache hits (K-1 hits, from result.json).

    python bench/overhead.py [--seeds 10]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402
from _run import TINY, bench_env, job_results, python, run  # noqa: E402

IN_PROCESS = """
import json, sys, time
from pathlib import Path
from ptycho_exp.run import train_and_evaluate
jobs = json.loads(Path(sys.argv[1]).read_text())
for i, cfg in enumerate(jobs):
    res = train_and_evaluate(cfg, Path(sys.argv[2]) / str(i))
    assert res["status"] == "ok", res.get("error")
"""


def job_configs(overrides: list[str]) -> list[dict]:
    from ptycho_exp.compose import job_config_dict
    from ptycho_exp.compose import compose_many
    from ptycho_exp.sweep.plan import expand_sweep

    jobs, _ = expand_sweep(overrides)
    jobs = [[o for o in job if not o.startswith("hydra.")] for job in jobs]
    return [job_config_dict(c) for c in compose_many(jobs)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10, help="jobs = 2 models x seeds")
    ap.add_argument("--skip-in-process", action="store_true")
    args = ap.parse_args()
    seeds = ",".join(str(s) for s in range(1, args.seeds + 1))
    overrides = ["study=quick", f"seed={seeds}", *TINY]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = bench_env(tmp / "cache")
        cfgs = job_configs(overrides)
        n = len(cfgs)
        # warm the dataset cache (and the OS file cache) with one job outside the timings
        run([python(), "-m", "ptycho_exp", *TINY, f"hydra.run.dir={tmp / 'warm'}"], env)

        t_fw, _ = run([python(), "-m", "ptycho_exp", *overrides, f"hydra.sweep.dir={tmp / 'fw'}"], env)
        res = job_results(tmp / "fw")
        assert len(res) == n and all(r["status"] == "ok" for r in res), "framework sweep had failures"
        hits = sum(bool(r["data"].get(f"{w}_cache", {}).get("hit")) for r in res for w in ("train", "test"))
        job_seconds = sum(r["timings"]["total_s"] for r in res)

        t0 = time.perf_counter()
        for i, cfg in enumerate(cfgs):
            d = tmp / "loop" / str(i)
            d.mkdir(parents=True)
            (d / "job_config.json").write_text(json.dumps(cfg))
            run([python(), "-m", "ptycho_exp.run", str(d)], env)
        t_loop = time.perf_counter() - t0

        t_inproc = None
        if not args.skip_in_process:
            (tmp / "jobs.json").write_text(json.dumps(cfgs))
            t_inproc, _ = run([python(), "-c", IN_PROCESS, str(tmp / "jobs.json"), str(tmp / "inproc")], env)

    overhead = t_fw - t_loop
    out = {"n_jobs": n, "framework_s": t_fw, "plain_loop_s": t_loop, "in_process_loop_s": t_inproc,
           "overhead_s": overhead, "overhead_fraction": overhead / t_fw, "overhead_per_job_s": overhead / n,
           "sum_of_job_total_s": job_seconds,
           "goal": {"overhead_fraction_max": 0.03, "overhead_per_job_s_max": 0.5},
           "meets_goal": overhead / t_fw <= 0.03 and overhead / n <= 0.5,
           "cache": {"scan_loads": 2 * n, "hits": hits, "expected_hits": 2 * n,
                     "note": "the cache was warmed by one job before the sweep, so every load is a hit"}}
    print(f"{n} jobs: framework {t_fw:.1f} s, plain loop (fresh process per job) {t_loop:.1f} s, "
          f"in-process loop {t_inproc if t_inproc is None else round(t_inproc, 1)} s")
    print(f"overhead {overhead:+.1f} s = {100 * overhead / t_fw:+.2f} % of wall, {overhead / n:+.3f} s per job "
          f"(goal <= 3 % and <= 0.5 s/job): {'met' if out['meets_goal'] else 'NOT met'}")
    print(f"dataset cache: {hits}/{2 * n} scan loads were hits")
    print(f"wrote {write_result('overhead', out)}")


if __name__ == "__main__":
    main()
