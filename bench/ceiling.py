"""How close PINN inference runs to this machine's float32 arithmetic ceiling, and what that allows.

Inference is one forward pass of the convolutional network, so on a CPU its rate is bounded by the rate at
which TensorFlow can do float32 multiply-adds. In a fresh process with a job's TensorFlow settings this
measures:

- the ceiling: the best float32 matrix product (``tf.linalg.matmul``) and the best single 3x3
  convolution of the network, each timed alone, in GMAC/s (1 GMAC = 1e9 multiply-adds);
- the network: multiply-adds per pattern of the PINN's inference model (the sum over its convolutions of
  output pixels x kh x kw x c_in x c_out) and its rate through :func:`ptycho_exp.models.fit.predict_patches`
  (the job's path, tracing excluded) at ``--batch``, so its achieved GMAC/s and its share of the ceiling;
- each convolution alone at the same batch, so the table shows where the time goes.

With ``--against RATE`` (another code's measured inference, patterns/s) it prints the most any network of
this arithmetic could reach on this machine, ``ceiling / MAC per pattern``, as a multiple of ``RATE``.

    python bench/ceiling.py [--batch 64] [--override model.n_filters_scale=1] [--against 160] [--name ceiling]

Results: ``bench/results/<name>.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402
from _run import bench_env, python, run  # noqa: E402

N = 64
N_TEST = 1089
GEMM_SHAPES = [(2048, 2048, 2048), (4096, 576, 64), (16384, 576, 64), (1024, 1152, 128)]


def _best_seconds(fn, min_total: float = 2.0, repeats: int = 5) -> float:
    """Best wall time of ``fn()`` over ``repeats`` rounds of at least ``min_total / repeats`` seconds each."""
    fn()  # trace / warm up
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-6)
    inner = max(1, int(min_total / repeats / one))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        best = min(best, (time.perf_counter() - t0) / inner)
    return best


def conv_macs(model) -> list[dict]:
    """Every Conv2D of ``model`` with its multiply-adds per sample (output pixels x kh x kw x c_in x c_out)."""
    import keras

    rows = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, h, w, c_out = layer.output.shape
            kh, kw = layer.kernel_size
            c_in = layer.input.shape[-1]
            rows.append({"layer": layer.name, "in": list(layer.input.shape[1:]), "out": [h, w, c_out],
                         "macs": int(h * w * kh * kw * c_in * c_out)})
    return rows


def child(batch: int, overrides: list[str]) -> None:
    """The measurements (run in a fresh process); prints one JSON line."""
    import numpy as np
    import tensorflow as tf

    from ptycho_exp.config import ModelConfig
    from ptycho_exp.models.fit import predict_patches
    from ptycho_exp.models.pinn import build_pinn

    from omegaconf import OmegaConf

    cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig),
                          OmegaConf.from_dotlist([o.removeprefix("model.") for o in overrides]))
    yy, xx = np.mgrid[:N, :N] - N // 2
    probe = (np.hypot(yy, xx) < N // 4).astype(np.complex64)
    net = build_pinn(cfg, N, 1, probe, 1e9).inference_model
    rng = np.random.default_rng(0)

    gemm = []
    for m, k, n in GEMM_SHAPES:
        a = tf.constant(rng.random((m, k), np.float32))
        b = tf.constant(rng.random((k, n), np.float32))
        f = tf.function(lambda a=a, b=b: tf.linalg.matmul(a, b)[0, 0])  # no copy-out of the product
        s = _best_seconds(lambda f=f: f().numpy())
        gemm.append({"shape": [m, k, n], "s": s, "gmac_per_s": m * k * n / s / 1e9})

    layers = conv_macs(net)
    for row in layers:
        layer = net.get_layer(row["layer"])
        x = tf.constant(rng.random((batch, *row["in"]), np.float32))
        w = tf.constant(rng.random((*layer.kernel_size, row["in"][-1], row["out"][-1]), np.float32))
        f = tf.function(lambda x=x, w=w: tf.nn.conv2d(x, w, 1, "SAME")[0, 0, 0, 0])
        s = _best_seconds(lambda f=f: f().numpy(), min_total=1.0, repeats=3)
        row.update({"s_per_batch": s, "gmac_per_s": row["macs"] * batch / s / 1e9})

    macs = sum(r["macs"] for r in layers)
    xt = rng.random((N_TEST, N, N, 1), dtype=np.float32)
    predict_patches(net, xt, 1.0, batch_size=batch)  # trace
    s_net = _best_seconds(lambda: predict_patches(net, xt, 1.0, batch_size=batch), min_total=10.0, repeats=3)
    print(json.dumps({"gemm": gemm, "layers": layers, "macs_per_pattern": macs,
                      "network": {"s": s_net, "patterns_per_s": N_TEST / s_net,
                                  "gmac_per_s": macs * N_TEST / s_net / 1e9},
                      "n_params": int(net.count_params())}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64, help="inference chunk (eval.batch_size; default 64)")
    ap.add_argument("--override", action="append", default=[], help="a model key, e.g. model.n_filters_scale=1")
    ap.add_argument("--against", type=float, default=None, help="another code's inference, patterns/s")
    ap.add_argument("--name", default="ceiling")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.batch, args.override)
        return
    env = bench_env(Path(os.environ.get("TMPDIR", "/tmp")) / "ptycho_exp_bench_cache",
                    OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    cmd = [python(), str(Path(__file__).resolve()), "--child", "--batch", str(args.batch)]
    for o in args.override:
        cmd += ["--override", o]
    load_before = os.getloadavg()
    _, out = run(cmd, env)
    res = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    best_gemm = max(g["gmac_per_s"] for g in res["gemm"])
    best_conv = max(r["gmac_per_s"] for r in res["layers"])
    ceiling = max(best_gemm, best_conv)
    net = res["network"]
    for g in res["gemm"]:
        print(f"matmul {'x'.join(map(str, g['shape'])):>16s}  {g['gmac_per_s']:7.1f} GMAC/s")
    layer_s = sum(r["s_per_batch"] for r in res["layers"]) / args.batch
    for r in res["layers"]:
        share = r["s_per_batch"] / args.batch / layer_s
        print(f"conv {r['layer']:>22s} {str(r['in']):>15s} -> {r['out'][-1]:4d}  {r['macs'] / 1e6:7.1f} MMAC  "
              f"{r['gmac_per_s']:7.1f} GMAC/s  {100 * share:5.1f} % of the convolutions' time")
    print(f"network: {res['macs_per_pattern'] / 1e9:.3f} GMAC per pattern, {net['patterns_per_s']:.1f} patterns/s "
          f"= {net['gmac_per_s']:.1f} GMAC/s ({100 * net['gmac_per_s'] / ceiling:.0f} % of the ceiling "
          f"{ceiling:.1f}); convolutions alone {1 / layer_s:.1f} patterns/s")
    bound = ceiling * 1e9 / res["macs_per_pattern"]
    summary = {"ceiling_gmac_per_s": ceiling, "best_matmul_gmac_per_s": best_gemm, "best_conv_gmac_per_s": best_conv,
               "network_share_of_ceiling": net["gmac_per_s"] / ceiling,
               "convolutions_alone_patterns_per_s": 1 / layer_s,
               "bound_patterns_per_s": bound, "against_patterns_per_s": args.against,
               "bound_over_against": None if not args.against else bound / args.against,
               "measured_over_against": None if not args.against else net["patterns_per_s"] / args.against}
    print(f"at most {bound:.0f} patterns/s for this arithmetic on this machine"
          + (f": {bound / args.against:.2f}x of {args.against:g} (measured {net['patterns_per_s'] / args.against:.2f}x)"
             if args.against else ""))
    write_result(args.name, {"batch": args.batch, "overrides": args.override, "n_test": N_TEST, "N": N,
                             "omp_num_threads": env["OMP_NUM_THREADS"], "load_before": load_before,
                             "load_after": os.getloadavg(), **res, "summary": summary})


if __name__ == "__main__":
    main()
