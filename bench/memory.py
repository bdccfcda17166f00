"""Peak memory of one job: N=64, 4,096 training patterns, 1,089 test positions.

Runs the real job (``python -m ptycho_exp``) for the PINN and the baseline with one epoch and reads the
peak RSS the job records (the child process's ``ru_maxrss``). Goal: < 2 GiB per job.

    python bench/memory.py [--epochs 1] [--models pinn,baseline]
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--models", default="pinn,baseline")
    args = ap.parse_args()
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
    print(f"wrote {write_result('memory', {'epochs': args.epochs, 'jobs': rows})}")


if __name__ == "__main__":
    main()
