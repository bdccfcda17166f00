"""Parallel scaling on one machine: ``hardware=parallel`` vs back-to-back jobs.

Four identical-size PINN jobs (different seeds) run three ways:

* sequential, TensorFlow's default threads (``hardware=local``);
* sequential, 1 intra-op thread per job (``hardware.intra_op_threads=1``);
* ``hardware=parallel hydra.launcher.n_jobs=J`` (threads split between the J concurrent jobs).

Goals (2 cores, J=2): parallel >= 1.6x faster than back to back with 1 thread each, and never slower than
sequential with all threads. ``--n-jobs 1,2,4`` records the curve (more where there are cores).

    python bench/parallel.py [--n-jobs 1,2] [--jobs 4]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402
from _run import bench_env, job_results, python, run  # noqa: E402

JOB = ["model=pinn", "data.N=32", "data.object_size=128", "data.n_train=512", "data.n_test=64",
       "data.test_stride=8", "train.epochs=2", "train.tensorboard=false", "train.save_model=false",
       "eval.figures=false", "eval.upsample_factor=10"]


def sweep(tmp: Path, name: str, seeds: str, extra: list[str], env: dict) -> float:
    wall, _ = run([python(), "-m", "ptycho_exp", "-m", *JOB, f"seed={seeds}", *extra,
                   f"hydra.sweep.dir={tmp / name}"], env)
    assert all(r["status"] == "ok" for r in job_results(tmp / name)), f"{name}: a job failed"
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-jobs", default="2")
    ap.add_argument("--jobs", type=int, default=4)
    args = ap.parse_args()
    seeds = ",".join(str(s) for s in range(1, args.jobs + 1))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = bench_env(tmp / "cache")
        run([python(), "-m", "ptycho_exp", *JOB, f"hydra.run.dir={tmp / 'warm'}"], env)  # warm the data cache
        seq_all = sweep(tmp, "seq_all", seeds, ["hardware=local"], env)
        seq_one = sweep(tmp, "seq_one", seeds, ["hardware=local", "hardware.intra_op_threads=1",
                                                "hardware.inter_op_threads=1"], env)
        par = {}
        for j in (int(x) for x in args.n_jobs.split(",")):
            par[j] = sweep(tmp, f"par{j}", seeds, ["hardware=parallel", f"hydra.launcher.n_jobs={j}"], env)
    out = {"cores": os.cpu_count(), "jobs": args.jobs, "sequential_all_threads_s": seq_all,
           "sequential_one_thread_s": seq_one, "parallel_s": {str(k): v for k, v in par.items()},
           "speedup_vs_one_thread": {str(k): seq_one / v for k, v in par.items()},
           "speedup_vs_all_threads": {str(k): seq_all / v for k, v in par.items()}}
    if 2 in par:
        out["meets_goal"] = seq_one / par[2] >= 1.6 and par[2] <= seq_all
    print(f"{args.jobs} jobs: sequential all threads {seq_all:.1f} s, sequential 1 thread {seq_one:.1f} s")
    for k, v in par.items():
        print(f"  parallel n_jobs={k}: {v:.1f} s  speed-up vs 1-thread {seq_one / v:.2f}x, "
              f"vs all-threads {seq_all / v:.2f}x")
    print(f"wrote {write_result('parallel', out)}")


if __name__ == "__main__":
    main()
