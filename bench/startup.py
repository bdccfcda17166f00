"""Start-up cost of the CLI paths that do not train.

Goals (2 CPU cores): ``ptycho-exp --help`` < 1.5 s; ``python -m ptycho_exp --cfg job`` < 3 s; ``plan``,
``status`` and ``aggregate`` never import TensorFlow.

    python bench/startup.py [--repeat 5]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the synthetic-sweep helper
from _common import write_result  # noqa: E402
from _run import bench_env, python, run, timed  # noqa: E402

NO_TF = "import sys, runpy; sys.argv = {argv!r}; \n" \
        "try:\n    runpy.run_module('ptycho_exp.cli', run_name='__main__')\n" \
        "except SystemExit:\n    pass\n" \
        "print('TF_LOADED=%s' % ('tensorflow' in sys.modules))"


def tf_loaded(argv: list[str], env: dict) -> bool:
    """Whether running ``ptycho-exp argv`` imports TensorFlow."""
    _, out = run([python(), "-c", NO_TF.format(argv=["ptycho-exp", *argv])], env, check=False)
    return "TF_LOADED=True" in out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = bench_env(tmp / "cache")
        from helpers.synthetic import write_synthetic_sweep

        sweep = tmp / "sweep"
        write_synthetic_sweep(sweep, {"model": ["pinn", "baseline"], "data.n_train": [512, 1024], "seed": [1, 2, 3]})
        exe = str(Path(python()).with_name("ptycho-exp"))
        cases = {
            "ptycho-exp --help": ([exe, "--help"], ["--help"], 1.5),
            "python -m ptycho_exp --cfg job": ([python(), "-m", "ptycho_exp", "--cfg", "job"], None, 3.0),
            "ptycho-exp plan study=generalization": ([exe, "plan", "study=generalization"],
                                                     ["plan", "study=generalization"], 5.0),
            "ptycho-exp status <12-job sweep>": ([exe, "status", str(sweep)], ["status", str(sweep)], None),
            "ptycho-exp aggregate --no-plots <12-job sweep>": (
                [exe, "aggregate", str(sweep), "--out", str(tmp / "agg"), "--no-plots"],
                ["aggregate", str(sweep), "--out", str(tmp / "agg2"), "--no-plots"], None),
        }
        rows = {}
        for name, (cmd, cli_argv, goal) in cases.items():
            t = timed(cmd, args.repeat, env)
            t["goal_s"] = goal
            t["meets_goal"] = None if goal is None else t["median_s"] < goal
            t["imports_tensorflow"] = None if cli_argv is None else tf_loaded(cli_argv, env)
            rows[name] = t
            print(f"{name:50s} median {t['median_s']:.2f} s (min {t['min_s']:.2f}, max {t['max_s']:.2f})"
                  f"  goal {goal if goal else '-'}  TF imported: {t['imports_tensorflow']}")
    path = write_result("startup", {"cases": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
