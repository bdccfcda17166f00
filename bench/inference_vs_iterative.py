"""Wall time for a trained PINN to reconstruct a test scan vs an iterative solver on the same scan.

Trains a small PINN (its quality is not the point), then times, on the same held-out test scan:

* **PINN**: forward pass over every test pattern + stitching of the central crops into the object
  (median of ``--repeat`` warm runs; the first call, which traces the graph, is excluded and reported);
* **PtyLab** ePIE (CPU, ``--iterations``, default 100) through the engine worker: the engine's own
  reconstruction seconds, and the wall time including the worker process start;
* **Tike** rPIE (GPU) the same way, when ``--tike-python`` (default ``model.iterative.python``:
  ``$PTYCHO_EXP_TIKE_PYTHON`` or ``.venv-tike/bin/python``) can import tike + cupy and sees a GPU.

The ratio iterative / PINN is the speed-up (goal >= 100x on CPU against ePIE with 100 iterations).
The PINN runs on whatever device TensorFlow picks (GPU if visible). Prints a table and writes
``bench/results/inference_vs_iterative.json`` (machine named inside).

    python bench/inference_vs_iterative.py                 # N=64, the contract's test scan (33x33 positions)
    python bench/inference_vs_iterative.py --tiny          # seconds: wiring check only
    python bench/inference_vs_iterative.py --tike-iterations 1000   # GPU machine with `make tike-env`
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result

ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--N", type=int, default=64, help="pattern size (px)")
    ap.add_argument("--object-size", type=int, default=392, help="simulated object side (px)")
    ap.add_argument("--test-stride", type=float, default=10.0, help="test grid step (px)")
    ap.add_argument("--n-train", type=int, default=256, help="PINN training patterns")
    ap.add_argument("--epochs", type=int, default=2, help="PINN training epochs (speed, not quality)")
    ap.add_argument("--iterations", type=int, default=100, help="PtyLab iterations")
    ap.add_argument("--algorithm", default="ePIE", choices=("ePIE", "mPIE"), help="PtyLab algorithm")
    ap.add_argument("--tike-iterations", type=int, default=100, help="Tike rPIE iterations (GPU)")
    ap.add_argument("--tike-python", default=None, help="interpreter of the Tike environment")
    ap.add_argument("--no-tike", action="store_true", help="skip the Tike measurement")
    ap.add_argument("--repeat", type=int, default=5, help="warm PINN inference repeats (median)")
    ap.add_argument("--iterative-repeat", type=int, default=1, help="iterative runs (median)")
    ap.add_argument("--tiny", action="store_true",
                    help="N=32, 128 px object, 64 patterns, 1 epoch, 10 iterations: a wiring check")
    ap.add_argument("--name", default="inference_vs_iterative", help="result file stem")
    args = ap.parse_args(argv)
    if args.tiny:
        args.N, args.object_size, args.test_stride = 32, 128, 8.0
        args.n_train, args.epochs, args.iterations, args.tike_iterations = 64, 1, 10, 10
        args.repeat = min(args.repeat, 3)
        if args.name == "inference_vs_iterative":
            args.name = "inference_vs_iterative_tiny"
    return args


def _overrides(args: argparse.Namespace) -> list[str]:
    return ["model=pinn", f"data.N={args.N}", f"data.object_size={args.object_size}",
            f"data.test_stride={args.test_stride}", f"data.n_train={args.n_train}",
            f"train.epochs={args.epochs}", "train.tensorboard=false", "train.save_model=false",
            "train.verbose=quiet", "eval.figures=false"]


def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def time_pinn(cfg, ds, work: Path, repeat: int) -> dict:
    """Train a PINN on ``ds.train``; time warm inference + stitching of ``ds.test``."""
    import numpy as np

    from ptycho_exp.evaluate.stitch import default_crop, stitch_patches
    from ptycho_exp.models.fit import fit_network, predict_patches

    fit = fit_network(cfg.model, cfg.train, ds.train, ds.test_scan.probe, float(cfg.data.nphotons), work,
                      seed=int(cfg.seed))
    test = ds.test
    positions = test.positions.reshape(-1, 2)
    crop = cfg.eval.crop or default_crop(ds.test_scan.N)

    def once() -> tuple[float, float, float]:
        t0 = time.perf_counter()
        pred = predict_patches(fit.model, test.diffraction, fit.norm_factor, batch_size=cfg.eval.batch_size,
                               offsets=test.offsets)
        t1 = time.perf_counter()
        patches = np.moveaxis(pred, -1, 1).reshape(-1, pred.shape[1], pred.shape[2])
        stitch_patches(patches, positions, crop)
        t2 = time.perf_counter()
        return t2 - t0, t1 - t0, t2 - t1

    first = once()[0]  # includes tracing / graph building
    runs = [once() for _ in range(max(1, repeat))]
    times = [r[0] for r in runs]
    import tensorflow as tf

    gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    return {"train_s": float(fit.train_seconds), "first_call_s": first, "seconds": _median(times),
            "predict_s": _median([r[1] for r in runs]), "stitch_s": _median([r[2] for r in runs]),
            "runs_s": times, "n_patterns": int(positions.shape[0]), "n_params": int(fit.n_params),
            "device": "GPU" if gpus else "CPU", "gpus": gpus,
            "patterns_per_s": positions.shape[0] / max(_median(times), 1e-12)}


def time_engine(scan, settings: dict, repeat: int, python: str | None = None) -> dict:
    """Run an engine worker ``repeat`` times; engine seconds (its own clock) and wall incl. the worker."""
    from ptycho_exp.iterative.runner import run_engine

    engine_s, wall_s, meta = [], [], {}
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        res = run_engine(scan.diffraction, scan.positions, scan.probe, settings, python=python)
        wall_s.append(time.perf_counter() - t0)
        engine_s.append(float(res.metadata["seconds"]))
        meta = res.metadata
    err = [float(v) for v in res.data_error]
    return {"seconds": _median(engine_s), "wall_s": _median(wall_s), "runs_s": engine_s,
            "engine": meta.get("engine"), "version": meta.get("version"), "algorithm": meta.get("algorithm"),
            "iterations": int(meta.get("iterations", settings.get("iterations", 0))),
            "n_positions": int(scan.n_positions),
            "data_error_first_last": [err[0], err[-1]] if err else None}


def tike_python(arg: str | None) -> str:
    if arg:
        return arg
    p = os.environ.get("PTYCHO_EXP_TIKE_PYTHON") or str(ROOT / ".venv-tike" / "bin" / "python")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import numpy as np

    from ptycho_exp.data.datasets import build_datasets
    from ptycho_exp.iterative.tike_engine import check_tike_available
    from ptycho_exp.compose import compose_job_config

    cfg = compose_job_config(_overrides(args))
    with tempfile.TemporaryDirectory(prefix="bench_ivi_") as tmp:
        work = Path(tmp)
        ds = build_datasets(cfg.data, seed=int(cfg.seed), cache_dir=cfg.paths.cache_dir, need_train=True)
        scan = ds.test_scan.subset(np.unique(ds.test.groups.ravel()))  # the positions the PINN sees
        print(f"test scan: {scan.n_positions} patterns of {scan.N}x{scan.N}; training a PINN on "
              f"{ds.train.n} patterns for {args.epochs} epoch(s) ...", flush=True)
        pinn = time_pinn(cfg, ds, work, args.repeat)
        print(f"PINN ({pinn['device']}): {pinn['seconds'] * 1e3:.1f} ms for {pinn['n_patterns']} patterns "
              f"(network {pinn['predict_s'] * 1e3:.1f} ms + stitching {pinn['stitch_s'] * 1e3:.1f} ms; "
              f"first call {pinn['first_call_s']:.2f} s)", flush=True)

        ptylab = time_engine(scan, {"engine": "ptylab", "algorithm": args.algorithm,
                                    "iterations": args.iterations, "seed": 0}, args.iterative_repeat)
        ptylab["speedup_vs_pinn"] = ptylab["seconds"] / max(pinn["seconds"], 1e-12)
        ptylab["speedup_vs_pinn_wall"] = ptylab["wall_s"] / max(pinn["seconds"], 1e-12)
        print(f"PtyLab {args.algorithm} x{args.iterations} (CPU): {ptylab['seconds']:.2f} s "
              f"({ptylab['wall_s']:.2f} s with the worker) -> {ptylab['speedup_vs_pinn']:.1f}x the PINN",
              flush=True)

        tike: dict = {"status": "skipped (--no-tike)"} if args.no_tike else {}
        if not args.no_tike:
            py = tike_python(args.tike_python)
            problem = check_tike_available(py)
            if problem:
                tike = {"status": f"not run: {problem}"}
                print(f"Tike: {tike['status']}", flush=True)
            else:
                tike = time_engine(scan, {"engine": "tike", "algorithm": "rpie", "iterations": args.tike_iterations,
                                          "batch_size": 10, "seed": 0}, args.iterative_repeat, python=py)
                tike["status"] = "ok"
                tike["python"] = py
                tike["speedup_vs_pinn"] = tike["seconds"] / max(pinn["seconds"], 1e-12)
                tike["speedup_vs_pinn_wall"] = tike["wall_s"] / max(pinn["seconds"], 1e-12)
                print(f"Tike rPIE x{args.tike_iterations} (GPU): {tike['seconds']:.2f} s "
                      f"({tike['wall_s']:.2f} s with the worker) -> {tike['speedup_vs_pinn']:.1f}x the PINN",
                      flush=True)

    goal = 100.0
    payload = {
        "settings": {k: v for k, v in vars(args).items()},
        "n_patterns": pinn["n_patterns"], "N": scan.N,
        "pinn": pinn, "ptylab": ptylab, "tike": tike,
        "goal_cpu_speedup": goal,
        "cpu_goal_met": bool(ptylab["speedup_vs_pinn"] >= goal),
        "note": ("speed-up = iterative engine seconds / PINN seconds (warm inference + stitching) on the same "
                 "test patterns; *_wall includes starting the engine worker process"),
    }
    path = write_result(args.name, payload)
    print(f"speed-up PtyLab/PINN {ptylab['speedup_vs_pinn']:.1f}x (goal >= {goal:.0f}x: "
          f"{'met' if payload['cpu_goal_met'] else 'NOT met'}) -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
