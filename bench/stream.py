"""HDF5 scans larger than a memory budget: peak RSS and patterns/s of streamed training and test inference.

Writes a synthetic HDF5 contract scan (``--patterns`` patterns of ``--N``x``--N`` float32, the patterns of a
simulated scan repeated with positions moved by a sub-pixel step per repeat) whose patterns are larger than
``--budget-mb``, and a small one of the same shape (``--small`` patterns). A 1-epoch PINN job (gridsize 1,
``data=npz`` with ``.h5`` paths; the test scan is the small file) trains on each. The job's peak RSS
(the child process's ``ru_maxrss``) minus the small file's job's is the memory the extra patterns cost;
the check is that it stays under the budget while the patterns alone exceed it.

The test scan the same way: a job that trains on the small file and is scored on the large file (inference
read, predicted and stitched batch by batch) against the job that trains and is scored on the small file;
the difference of their peak RSS is what the large test scan costs.

    python bench/stream.py                                   # modest: 8,192 x 64x64 (128 MiB) vs 64 MiB
    python bench/stream.py --patterns 2048 --small 256 --budget-mb 16 --npz   # a quick run, with the contrast
    python bench/stream.py --patterns 20000 --N 128 --budget-mb 512   # 1.25 GiB of patterns

The free disk space is checked before anything is written; the files go to ``--dir`` (default: a temporary
folder, removed afterwards). ``--npz`` also trains from, and scores on, the large scan held in memory (a
contract .npz), the contrast. Results: ``bench/results/stream.json`` (``--name``).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402
from _run import bench_env, python, run  # noqa: E402


def write_scan(path: Path, base, m: int) -> int:
    """An HDF5 contract scan of ``m`` patterns cycling ``base``'s, written block by block; returns its bytes."""
    import numpy as np

    from ptycho_exp.data.container import ScanData
    from ptycho_exp.data.h5 import ContractH5Writer

    k = base.n_positions
    reps = np.arange(m) // k
    positions = base.positions[np.arange(m) % k] + (reps * 1e-3)[:, None]  # distinct positions, same geometry
    with ContractH5Writer(path) as w:
        d = w.diffraction(m, base.N)
        for start in range(0, m, k):
            stop = min(start + k, m)
            d[start:stop] = base.diffraction[: stop - start]
        w.finish(ScanData(diffraction=d, positions=positions, probe=base.probe, object=base.object,
                          meta=dict(base.meta)))
    return m * base.N * base.N * 4


def job(d: Path, name: str, train: Path, test: Path, n_train: int, args, env) -> dict:
    out = d / name
    wall, _ = run([python(), "-m", "ptycho_exp", "data=npz", f"data.N={args.N}", f"data.train_path={train}",
                   f"data.test_path={test}", "model=pinn", f"data.n_train={n_train}", f"train.epochs={args.epochs}",
                   f"train.batch_size={args.batch_size}", "train.tensorboard=false", "train.save_model=false",
                   "eval.figures=false", "eval.upsample_factor=10", f"hydra.run.dir={out}"], env, timeout=6 * 3600)
    res = json.loads((out / "result.json").read_text())
    if res["status"] != "ok":
        raise RuntimeError(f"{name}: {res.get('error')}")
    return {"n_train": res["data"]["train"]["n_samples"], "n_test": res["data"]["test"]["n_samples"],
            "peak_rss_mb": res["resources"]["peak_rss_mb"],
            "train_patterns_per_s": res["throughput"]["train_patterns_per_s"],
            "inference_patterns_per_s": res["throughput"]["inference_patterns_per_s"],
            "metrics": {k: res["metrics"].get(k) for k in ("amp_psnr", "phase_psnr", "amp_frc50")},
            "train_s": res["timings"]["train_s"] if "timings" in res else None, "wall_s": round(wall, 1)}


def main() -> None:
    import numpy as np

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patterns", type=int, default=8192, help="patterns in the large file")
    ap.add_argument("--small", type=int, default=1024, help="patterns in the small file (the reference job)")
    ap.add_argument("--N", type=int, default=64)
    ap.add_argument("--budget-mb", type=float, default=64.0, help="memory budget for the patterns (MiB)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--dir", help="folder for the files (default: a temporary folder, removed afterwards)")
    ap.add_argument("--npz", action="store_true",
                    help="also train from the large scan as an in-memory .npz (the contrast; needs the RAM)")
    ap.add_argument("--name", default="stream")
    args = ap.parse_args()

    from ptycho_exp.data.simulate import simulate_object_scan

    need = (args.patterns + args.small) * args.N ** 2 * 4
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        d = Path(tmp)
        free = shutil.disk_usage(d).free
        if free < 1.5 * need + 2 ** 30:
            sys.exit(f"{d}: {free / 2**30:.1f} GiB free, the files need {need / 2**30:.2f} GiB (+1 GiB margin); "
                     "use --dir on a larger disk or fewer --patterns")
        base = simulate_object_scan({"N": args.N, "object_size": 4 * args.N, "test_stride": args.N / 8,
                                     "nphotons": 1e6}, "test")
        big, small = d / "large.h5", d / "small.h5"
        big_bytes = write_scan(big, base, args.patterns)
        write_scan(small, base, args.small)
        test = small  # the reference test scan: the small file (sub-pixel positions too, as the large one)
        env = bench_env(d / "cache")
        rows = {"small": job(d, "small", small, test, args.small, args, env),
                "large": job(d, "large", big, test, args.patterns, args, env),
                "large_test": job(d, "large_test", small, big, args.small, args, env)}
        if args.npz:
            from ptycho_exp.data.npz import load_contract_npz, save_contract_npz

            in_memory = load_contract_npz(big)
            in_memory.diffraction = np.asarray(in_memory.diffraction)
            save_contract_npz(d / "large.npz", in_memory)
            del in_memory
            rows["large_npz_in_memory"] = job(d, "large_npz", d / "large.npz", test, args.patterns, args, env)
            rows["large_test_npz_in_memory"] = job(d, "large_test_npz", small, d / "large.npz", args.small, args,
                                                   env)
    extra = rows["large"]["peak_rss_mb"] - rows["small"]["peak_rss_mb"]
    extra_test = rows["large_test"]["peak_rss_mb"] - rows["small"]["peak_rss_mb"]
    if args.npz:
        for name in ("large_npz_in_memory", "large_test_npz_in_memory"):
            rows[name]["extra_peak_rss_mb"] = rows[name]["peak_rss_mb"] - rows["small"]["peak_rss_mb"]
    payload = {"N": args.N, "patterns": args.patterns, "small_patterns": args.small, "epochs": args.epochs,
               "batch_size": args.batch_size, "gridsize": 1, "pattern_bytes_mb": big_bytes / 2 ** 20,
               "budget_mb": args.budget_mb, "patterns_exceed_budget": big_bytes / 2 ** 20 > args.budget_mb,
               "extra_peak_rss_mb": extra, "within_budget": extra < args.budget_mb,
               "test_extra_peak_rss_mb": extra_test, "test_within_budget": extra_test < args.budget_mb,
               "jobs": rows}
    print(f"patterns {big_bytes / 2**20:.0f} MiB ({args.patterns} x {args.N}x{args.N} float32), budget "
          f"{args.budget_mb:.0f} MiB; peak RSS {rows['large']['peak_rss_mb']:.0f} MiB against "
          f"{rows['small']['peak_rss_mb']:.0f} MiB with {args.small} patterns (+{extra:.0f} MiB); training "
          f"{rows['large']['train_patterns_per_s']:.1f} patterns/s (small file: "
          f"{rows['small']['train_patterns_per_s']:.1f})")
    print(f"scored on the large file instead of the {rows['small']['n_test']}-pattern test scan: peak RSS "
          f"{rows['large_test']['peak_rss_mb']:.0f} MiB (+{extra_test:.0f} MiB), inference "
          f"{rows['large_test']['inference_patterns_per_s']:.1f} patterns/s")
    if args.npz:
        print(f"scored on the large scan from an in-memory .npz: peak RSS "
              f"{rows['large_test_npz_in_memory']['peak_rss_mb']:.0f} MiB "
              f"(+{rows['large_test_npz_in_memory']['extra_peak_rss_mb']:.0f} MiB)")
        print(f"the same large scan from an in-memory .npz: peak RSS "
              f"{rows['large_npz_in_memory']['peak_rss_mb']:.0f} MiB "
              f"(+{rows['large_npz_in_memory']['extra_peak_rss_mb']:.0f} MiB), "
              f"{rows['large_npz_in_memory']['train_patterns_per_s']:.1f} patterns/s")
    print(f"wrote {write_result(args.name, payload)}")


if __name__ == "__main__":
    main()
