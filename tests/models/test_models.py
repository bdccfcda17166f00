"""The PINN and the supervised baseline: architecture, learning, saving, whole jobs and ``ptycho-exp predict``.

Everything runs on CPU with tiny data (N=32 or 16, 128 px objects); the whole file takes about a minute.
The end-to-end jobs run in-process through :func:`ptycho_exp.run.train_and_evaluate` (the real job
function, as the isolated child runs it) and are shared between tests by module-scoped fixtures.
"""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from tests.helpers.cli import TINY, onednn_expected, run_cli

from ptycho_exp.config import ModelConfig, TrainConfig

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

# docs/CONTRACT.md §6: every metric, for amplitude and phase.
METRICS = ("mae", "mse", "psnr", "psnr255", "ssim", "ms_ssim", "frc50", "frc_1_7", "pearson")
JOB = TINY + ["data.n_train=64", "train.verbose=quiet", "eval.figures=false"]


def _tiny_data(tmp_path, gridsize: int = 1, n_train: int = 32, N: int = 32):
    from ptycho_exp.data.datasets import build_datasets

    data = {"N": N, "object_size": 128, "n_train": n_train, "gridsize": gridsize, "test_stride": 8}
    return build_datasets(data, seed=1, cache_dir=tmp_path / "cache")


def _train_cfg(**kw):
    base = {"epochs": 2, "batch_size": 16, "learning_rate": 1e-3, "lr_factor": 0.5, "lr_patience": 2, "min_lr": 1e-4,
                "early_stopping_patience": 6, "val_fraction": 0.1, "precision": "float32", "jit_compile": False,
                "deterministic": True, "verbose": "quiet", "save_model": True, "tensorboard": False}
    base.update(kw)
    return TrainConfig(**base)  # the schema's defaults for every key not set here


def _model_cfg(name="pinn", **kw):
    base = {"name": name, "n_filters_scale": 2, "nll_weight": 1.0, "mae_weight": 0.0, "tv_weight": 0.0,
                "realspace_weight": 0.0, "probe_trainable": False, "intensity_scale_trainable": False,
                "probe_big": False, "object_big": True}
    base.update(kw)
    return ModelConfig(**base)


def _run_job(tmp_path_factory, name: str, overrides: list[str]):
    from ptycho_exp.compose import job_config_dict
    from ptycho_exp.run import train_and_evaluate
    from ptycho_exp.compose import compose_job_config

    root = tmp_path_factory.mktemp(name)
    cfg = compose_job_config(JOB + overrides + [f"paths.cache_dir={root / 'cache'}"])
    res = train_and_evaluate(job_config_dict(cfg), root / "job")
    return root, res


@pytest.fixture(scope="module")
def pinn_job(tmp_path_factory):
    return _run_job(tmp_path_factory, "pinn", ["model=pinn"])


@pytest.fixture(scope="module")
def pinn_g2_job(tmp_path_factory):
    # patience in optimizer steps: 29 training samples, batch 16 -> 2 steps per epoch
    return _run_job(tmp_path_factory, "pinn_g2", ["model=pinn", "data.gridsize=2", "data.n_train=32",
                                                  "train.patience_unit=steps", "train.lr_patience=22",
                                                  "train.early_stopping_patience=30"])


@pytest.fixture(scope="module")
def pinn_sync_job(tmp_path_factory):
    return _run_job(tmp_path_factory, "pinn_sync", ["model=pinn", "eval.phase_sync=true"])


@pytest.fixture(scope="module")
def baseline_job(tmp_path_factory):
    return _run_job(tmp_path_factory, "baseline", ["model=baseline"])


# --------------------------------------------------------------------------- architecture
def test_parameter_counts_match_spec():
    """docs/CONTRACT.md §5: PINN ~2.3 M and baseline ~4.6 M parameters at N=64, gridsize 1, n_filters_scale 2."""
    from ptycho_exp.models.baseline import build_baseline
    from ptycho_exp.models.blocks import encoder_filters
    from ptycho_exp.models.pinn import build_pinn
    from ptycho_exp.physics.probe import make_probe

    assert encoder_filters(64, 2) == [64, 128, 256]
    assert encoder_filters(128, 2) == [32, 64, 128, 256]
    pinn = build_pinn(_model_cfg(), 64, 1, make_probe("ideal_disk", 64), 1e9)
    base = build_baseline(_model_cfg("baseline"), 64, 1)
    assert 2.2e6 < pinn.n_params < 2.35e6, pinn.n_params
    assert 4.5e6 < base.n_params < 4.7e6, base.n_params
    # the decoders reach N/2 and are zero-padded to N (oversampling constraint)
    amp = pinn.inference_model.get_layer("amp_pad").output
    assert tuple(amp.shape[1:3]) == (64, 64)
    with pytest.raises(ValueError, match="power of two"):
        encoder_filters(48, 2)


def test_a_fractional_width_rounds_every_level_and_scales_the_work():
    """model.n_filters_scale=1.5: 48 / 96 / 192 filters; parameters and multiply-adds lie between widths 1 and 2."""
    import keras
    from omegaconf import OmegaConf

    from ptycho_exp.models.blocks import encoder_filters
    from ptycho_exp.models.pinn import build_pinn
    from ptycho_exp.physics.probe import make_probe
    from ptycho_exp.validate import _decoder_channels

    assert encoder_filters(64, 1.5) == [48, 96, 192]
    assert encoder_filters(128, 1.5) == [24, 48, 96, 192]
    assert _decoder_channels(OmegaConf.create({"data": {"N": 64}, "model": {"n_filters_scale": 1.5}})) == 48

    def macs(model):  # multiply-adds per pattern of every convolution
        return sum(c.output.shape[1] * c.output.shape[2] * c.kernel_size[0] * c.kernel_size[1]
                   * c.input.shape[-1] * c.output.shape[-1]
                   for c in model.layers if isinstance(c, keras.layers.Conv2D))

    probe = make_probe("ideal_disk", 64)
    nets = {s: build_pinn(_model_cfg(n_filters_scale=s), 64, 1, probe, 1e9) for s in (1, 1.5, 2)}
    assert nets[1].n_params < nets[1.5].n_params < nets[2].n_params
    w = {s: macs(n.inference_model) for s, n in nets.items()}
    # the convolutions between hidden layers dominate, so the work grows about as the square of the width
    assert 0.5 < w[1.5] / w[2] / (1.5 / 2) ** 2 < 1.1 and w[1.5] < 0.6 * w[2]
    assert nets[1.5].inference_model.get_layer("amp_out").input.shape[-1] == 48


def test_reserved_border_channels_reproduce_the_reference_layout():
    """model.border_channels / border_activation: the layout PtychoPINN (712c23f3) documents for its grid-lines
    model at N=64, g=1, n_filters_scale 2 (2,331,772 parameters with probe.big, 2,252,026 without), with the
    central output reading only the unreserved channels and the border branch only the reserved ones."""
    import keras
    import tensorflow as tf

    from ptycho_exp.models.pinn import build_pinn
    from ptycho_exp.physics.probe import make_probe

    probe = make_probe("ideal_disk", 64)
    ref = build_pinn(_model_cfg(probe_big=True, border_channels=4, border_activation="swish"), 64, 1, probe, 1e9)
    assert ref.n_params == 2_331_772
    assert build_pinn(_model_cfg(border_channels=4), 64, 1, probe, 1e9).n_params == 2_252_026
    assert build_pinn(_model_cfg(probe_big=True), 64, 1, probe, 1e9).n_params == 2_400_964
    inf = ref.inference_model
    for name in ("amp", "phase"):
        assert inf.get_layer(f"{name}_out").input.shape[-1] == 60
        assert inf.get_layer(f"{name}_border_conv1").input.shape[-1] == 4
    # the object's border is the swish branch's output: it is not bounded below by 0 like the sigmoid,
    # and the centre is untouched by it
    trunk = keras.Model(inf.input, [inf.get_layer("amp_border_act").output, inf.get_layer("amp_act").output,
                                    inf.get_layer("amp_with_border").output])
    x = tf.random.stateless_normal((2, 64, 64, 1), (1, 2)) * 3.0
    border, central, combined = (np.asarray(t) for t in trunk(x))
    np.testing.assert_allclose(combined[:, 16:48, 16:48], central, rtol=0, atol=0)
    np.testing.assert_allclose(combined[:, :16], border[:, :16], rtol=0, atol=0)
    silu_min = -0.2785
    assert silu_min - 1e-4 <= border.min() < 0.0


@pytest.mark.parametrize("N", [16, 32, 128])
def test_pinn_builds_at_every_patch_size_with_and_without_reserved_border_channels(N):
    """N=16 has no decoder up-blocks (the output convolutions read the bottleneck): every layout still builds,
    and the validation's channel count (no Keras) is the network's."""
    from omegaconf import OmegaConf

    from ptycho_exp.models.pinn import build_pinn
    from ptycho_exp.physics.probe import make_probe
    from ptycho_exp.validate import _decoder_channels

    probe = make_probe("ideal_disk", N)
    for kw in ({}, {"probe_big": True, "border_channels": 4, "border_activation": "swish"}):
        pinn = build_pinn(_model_cfg(n_filters_scale=1, **kw), N, 2, probe, 1e9)
        out = pinn.inference_model.get_layer("amp_out")
        reserved = kw.get("border_channels", 0)
        c = OmegaConf.create({"data": {"N": N}, "model": {"n_filters_scale": 1}})
        assert out.input.shape[-1] + reserved == _decoder_channels(c)
    with pytest.raises(ValueError, match="model.border_channels"):
        build_pinn(_model_cfg(n_filters_scale=1, border_channels=_decoder_channels(c)), N, 1, probe, 1e9)


def test_merge_is_per_group_not_across_the_batch():
    """Groups never mix: changing one group's patches leaves every other group's merged object unchanged."""
    import tensorflow as tf

    from ptycho_exp.models.layers import extract_group, merge_group

    rng = np.random.default_rng(0)
    n, C, N = 6, 4, 16
    patches = (rng.random((n, C, N, N)) + 1j * rng.random((n, C, N, N))).astype(np.complex64)
    offsets = rng.normal(0, 2, (n, C, 2)).astype(np.float32)
    a = merge_group(tf.constant(patches), tf.constant(offsets), N // 2, 2 * N).numpy()
    changed = patches.copy()
    changed[3] *= 5.0
    b = merge_group(tf.constant(changed), tf.constant(offsets), N // 2, 2 * N).numpy()
    others = [i for i in range(n) if i != 3]
    np.testing.assert_array_equal(a[others], b[others])
    assert not np.allclose(a[3], b[3])
    # one group of identical, consistent patches round-trips: merge then re-extract gives them back
    obj = (rng.random((2 * N, 2 * N)) + 1j).astype(np.complex64)
    offs = np.array([[[-2, -2], [-2, 2], [2, -2], [2, 2]]], np.float32)
    from ptycho_exp.models.layers import crop_center, fourier_shift

    true = crop_center(fourier_shift(tf.constant(obj)[None, None], -tf.constant(offs)), N).numpy()
    merged = merge_group(tf.constant(true), tf.constant(offs), N // 2, 2 * N)
    back = extract_group(merged, tf.constant(offs), N).numpy()
    c = slice(N // 2 - 2, N // 2 + 2)  # the centre is inside every patch's trusted support
    np.testing.assert_allclose(back[..., c, c], true[..., c, c], atol=1e-4)


def test_translate_is_exact_for_whole_pixels_and_does_not_ring():
    import tensorflow as tf

    from ptycho_exp.models.layers import fourier_shift, translate

    rng = np.random.default_rng(0)
    img = (rng.random((2, 3, 16, 16)) + 1j * rng.random((2, 3, 16, 16))).astype(np.complex64)
    shifts = rng.integers(-3, 4, (2, 3, 2)).astype(np.float32)
    out = translate(tf.constant(img), tf.constant(shifts)).numpy()
    assert out.shape == img.shape
    for i in range(2):
        for c in range(3):
            dy, dx = (int(v) for v in shifts[i, c])
            want = np.zeros_like(img[i, c])  # content moves by +t; what enters the frame is 0
            want[max(dy, 0):16 + min(dy, 0), max(dx, 0):16 + min(dx, 0)] = \
                img[i, c, max(-dy, 0):16 + min(-dy, 0), max(-dx, 0):16 + min(-dx, 0)]
            np.testing.assert_allclose(out[i, c], want, atol=1e-6)
    # half a pixel splits a point in two; a cut-off box stays within [0, 1] where a Fourier shift rings
    delta = np.zeros((1, 16, 16), np.complex64)
    delta[0, 8, 8] = 1
    half = translate(tf.constant(delta), tf.constant([[0.0, 0.5]])).numpy()[0]
    np.testing.assert_allclose(half[8, 8:10].real, [0.5, 0.5], atol=1e-6)
    box = np.zeros((1, 32, 32), np.complex64)
    box[0, 8:24, 8:24] = 1
    moved = translate(tf.constant(box), tf.constant([[0.5, 0.5]])).numpy()[0].real
    assert moved.min() >= -1e-6 and moved.max() <= 1 + 1e-6
    rung = fourier_shift(tf.constant(box), tf.constant([[0.5, 0.5]])).numpy()[0].real
    assert rung.min() < -0.05


def test_phase_aligned_merge_undoes_constant_phases_per_channel():
    import tensorflow as tf

    from ptycho_exp.models.layers import crop_center, extract_group, fourier_shift, merge_group

    rng = np.random.default_rng(1)
    N = 16
    obj = (0.5 + rng.random((2 * N, 2 * N))).astype(np.complex64) * np.exp(1j * rng.random((2 * N, 2 * N)))
    offs = tf.constant([[[-2, -2], [-2, 2], [2, -2], [2, 2]]], tf.float32)
    true = crop_center(fourier_shift(tf.constant(obj.astype(np.complex64))[None, None], -offs), N).numpy()
    turned = true * np.exp(1j * np.array([0.0, 2.0, -1.5, 3.0]))[None, :, None, None].astype(np.complex64)
    c = slice(N // 2 - 2, N // 2 + 2)
    for patches, aligned in ((true, True), (true, False), (turned, True)):
        back = extract_group(merge_group(tf.constant(patches), offs, N // 2, 2 * N, align_phase=aligned),
                             offs, N).numpy()
        np.testing.assert_allclose(back[..., c, c], true[..., c, c], atol=1e-4)
    # without the alignment the turned patches partly cancel
    back = extract_group(merge_group(tf.constant(turned), offs, N // 2, 2 * N), offs, N).numpy()
    assert np.abs(back[..., c, c]).mean() < 0.8 * np.abs(true[..., c, c]).mean()


@pytest.mark.parametrize("grouping", ["knn", "block"])
def test_grouped_samples_agree_with_the_physics_layers(tmp_path, grouping):
    """A job's gridsize-2 samples, pushed through the PINN's physics (merge per group, re-extract,
    probe, diffract), give back their own diffraction: offsets, channel order and shift signs agree."""
    import tensorflow as tf

    from ptycho_exp.data.datasets import build_datasets
    from ptycho_exp.models.layers import diffract_amplitude, extract_group, merge_group

    N = 32
    ds = build_datasets({"N": N, "object_size": 96, "gridsize": 2, "n_train": 24, "noise": False,
                         "grouping": grouping}, seed=1, cache_dir=tmp_path)
    # knn groups of the 10 px test grid have offsets in quarter-steps (2.5 px): bilinear sub-pixel moves
    # blur a little (0.3 % here; a Fourier shift of the cut-off patches rang at the cut: 4 %)
    fractional = bool(np.any(np.abs(ds.test.offsets % 1) > 0.1))
    assert fractional == (grouping == "knn")
    for split, scan in ((ds.train, ds.train_scan), (ds.test, ds.test_scan)):
        tolerance = 5e-3 if (split is ds.test and fractional) else 2e-3
        truth = np.moveaxis(split.patches, -1, 1)  # (n, C, N, N)
        offsets = tf.constant(split.offsets, tf.float32)
        merged = merge_group(tf.constant(truth), offsets, N // 2, 2 * N)
        again = extract_group(merged, offsets, N)
        amp = diffract_amplitude(again * scan.probe).numpy()
        measured = np.moveaxis(split.diffraction, -1, 1)
        # (not exact: the probe's faint tail reaches past the N/2 support the object is merged on)
        assert np.linalg.norm(amp - measured) / np.linalg.norm(measured) < tolerance
        # a wrong sign of the offsets breaks it (the check can fail)
        wrong = diffract_amplitude(extract_group(merge_group(tf.constant(truth), -offsets, N // 2, 2 * N),
                                                 -offsets, N) * scan.probe).numpy()
        assert np.linalg.norm(wrong - measured) / np.linalg.norm(measured) > 1e-2


@pytest.mark.parametrize("gridsize", [1, 2])
def test_pinn_learns_on_a_fixed_batch(tmp_path, gridsize):
    """Five epochs on one fixed batch lower the PINN's loss (it learns); gridsize 2 merges per group."""
    import keras

    from ptycho_exp.models.fit import compute_norm_factor, seed_everything
    from ptycho_exp.models.pinn import build_pinn

    ds = _tiny_data(tmp_path, gridsize, n_train=16)
    seed_everything(0, deterministic=False)
    N = 32
    model = build_pinn(_model_cfg(n_filters_scale=1), N, gridsize, ds.train_scan.probe, 1e9)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x = {"diffraction": (ds.train.diffraction * compute_norm_factor(ds.train.diffraction)).astype(np.float32)}
    if gridsize > 1:
        x["offsets"] = ds.train.offsets.astype(np.float32)
    hist = model.fit(x, epochs=5, batch_size=16, verbose=0, shuffle=False).history["loss"]
    assert all(math.isfinite(v) for v in hist), hist
    assert hist[-1] < 0.7 * hist[0], hist


# --------------------------------------------------------------------------- training loop
def test_validation_split_exists_in_every_mode():
    from ptycho_exp.models.fit import _split

    for n, frac in ((2, 0.1), (10, 0.01), (64, 0.1), (1000, 0.45)):
        tr, va = _split(n, frac, seed=0)
        assert len(va) >= 1 and len(tr) >= 1 and len(tr) + len(va) == n
        assert not set(tr) & set(va)
    with pytest.raises(ValueError, match="validation"):
        _split(1, 0.1, seed=0)


def test_reduce_lr_on_plateau_is_active(tmp_path):
    """The schedule watches val_loss: a plateau halves the learning rate, floored at min_lr."""
    import keras

    from ptycho_exp.models.fit import training_callbacks

    cfg = _train_cfg(learning_rate=1e-3, lr_factor=0.5, lr_patience=2, min_lr=3e-4)
    cbs = training_callbacks(cfg, tmp_path, verbose=0, name="pinn")
    plateau = [c for c in cbs if isinstance(c, keras.callbacks.ReduceLROnPlateau)]
    assert len(plateau) == 1 and plateau[0].monitor == "val_loss"
    assert any(isinstance(c, keras.callbacks.EarlyStopping) and c.monitor == "val_loss" for c in cbs)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    cb = plateau[0]
    cb.set_model(model)
    cb.on_train_begin()
    lrs = []
    for epoch in range(8):
        cb.on_epoch_end(epoch, {"val_loss": 1.0})
        lrs.append(float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)))
    assert lrs[0] == pytest.approx(1e-3)
    assert min(lrs) == pytest.approx(3e-4) and lrs[-1] == pytest.approx(3e-4)
    assert any(v == pytest.approx(5e-4) for v in lrs)


def test_patience_in_steps_gives_every_training_size_the_same_schedule(tmp_path):
    """train.patience_unit=steps: the same number of updates before the LR drops, whatever n_train."""
    import keras

    from ptycho_exp.models.fit import patience_in_epochs, training_callbacks

    steps = _train_cfg(patience_unit="steps", lr_patience=230, early_stopping_patience=690)
    for spe, lr, stop in ((29, 8, 24), (116, 2, 6), (1000, 1, 1)):  # 512, 2,048 samples; one huge epoch
        p = patience_in_epochs(steps, spe)
        assert (p["lr_patience"], p["early_stopping_patience"]) == (lr, stop)
        assert p["lr_patience"] == 1 or abs(p["lr_patience"] * spe - 230) <= spe / 2  # nearest whole epoch
    cbs = training_callbacks(steps, tmp_path, verbose=0, name="pinn", steps_per_epoch=29)
    plateau = next(c for c in cbs if isinstance(c, keras.callbacks.ReduceLROnPlateau))
    stop = next(c for c in cbs if isinstance(c, keras.callbacks.EarlyStopping))
    assert (plateau.patience, stop.patience) == (8, 24)
    # the default (docs/CONTRACT.md §5) counts epochs and ignores the epoch size
    spec = _train_cfg()
    assert patience_in_epochs(spec, 29)["lr_patience"] == patience_in_epochs(spec, 116)["lr_patience"] == 2
    with pytest.raises(ValueError, match="patience_unit"):
        patience_in_epochs(_train_cfg(patience_unit="batches"), 10)


def test_a_backup_that_loads_half_way_leaves_the_fresh_weights_untouched(tmp_path, caplog):
    """A backup of another network (its first layer fits, its second does not) fails part-way through loading:
    the layers it had already overwritten get their fresh values back, so the restart is a true restart."""
    import keras

    from ptycho_exp.models.callbacks import AtomicBackupAndRestore

    x = np.random.default_rng(0).random((12, 3)).astype(np.float32)
    other = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.Dense(1)])
    other.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    other.fit(x, x[:, :1], epochs=2, verbose=0,
              callbacks=[AtomicBackupAndRestore(str(tmp_path / "b"), delete_checkpoint=False)])
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    fresh = [w.copy() for w in model.get_weights()]
    backup = AtomicBackupAndRestore(str(tmp_path / "b"))
    backup.set_model(model)
    with caplog.at_level("WARNING", logger="ptycho_exp.models.callbacks"):
        backup.on_train_begin()
    assert "unreadable" in caplog.text and not (tmp_path / "b").exists()
    for a, b in zip(model.get_weights(), fresh):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(other.get_weights()[0], fresh[0])  # the first layer would have been overwritten


def test_saving_a_model_removes_the_partial_file_of_a_killed_save(tmp_path):
    """A job killed inside model.save leaves .tmp-PID-model.keras; the rerun's save removes it and writes
    model.keras and norm.json, and nothing else."""
    import keras

    from ptycho_exp.models.fit import save_network

    stale = tmp_path / ".tmp-12345-model.keras"
    stale.write_bytes(b"PK\x03\x04 half a zip")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    save_network(model, tmp_path, {"N": 3})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras", "norm.json"]
    again = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    x = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(again.predict(x, verbose=0), model.predict(x, verbose=0))


def _rates_per_batch(callbacks, n, batch_size, epochs):
    """The learning rate each batch of a tiny Adam(1e-3) fit starts with, under ``callbacks``."""
    import keras

    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            seen.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    x = np.random.default_rng(0).random((n, 3)).astype(np.float32)
    model.fit(x, x[:, :1], batch_size=batch_size, epochs=epochs, verbose=0, callbacks=[*callbacks, Record()])
    return seen


def test_cosine_schedule_warms_up_then_falls_to_min_lr_at_the_last_step():
    """train.lr_schedule=cosine: the rate rises linearly over the warm-up, is learning_rate at its end, follows
    a half cosine (the mean of both ends halfway) and is min_lr at the last planned step; no ReduceLROnPlateau."""
    import keras

    from ptycho_exp.models.callbacks import LinearWarmup
    from ptycho_exp.models.fit import training_callbacks, warmup_steps

    cfg = _train_cfg(epochs=5, lr_schedule="cosine", min_lr=1e-5, warmup_epochs=1)
    spe = 6
    cbs = training_callbacks(cfg, None, verbose=1, name="pinn", steps_per_epoch=spe)
    assert not any(isinstance(c, keras.callbacks.ReduceLROnPlateau) for c in cbs)
    schedule = [c for c in cbs if not isinstance(c, keras.callbacks.EarlyStopping)]
    seen = _rates_per_batch([LinearWarmup(warmup_steps(cfg, spe), 1e-3), *schedule], spe * 4, 4, 5)
    assert len(seen) == 5 * spe
    np.testing.assert_allclose(seen[:spe], [1e-3 * (i + 1) / spe for i in range(spe)], rtol=1e-6)
    assert seen[spe] == pytest.approx(1e-3)  # the first step after the warm-up: the peak
    tail = seen[spe:]
    assert all(a > b for a, b in zip(tail, tail[1:]))  # falls every step
    assert tail[len(tail) // 2] == pytest.approx((1e-3 + 1e-5) / 2, rel=1e-5)  # halfway: the mean of both ends
    assert schedule[0].rate(5 * spe) == pytest.approx(1e-5) and tail[-1] < 1e-3 * 0.02


def test_cosine_schedule_continues_from_the_optimizer_step_after_a_resume():
    """A job resumed from its backup continues the curve: the rate depends on the optimizer's step only."""
    import keras

    from ptycho_exp.models.callbacks import CosineDecay

    curve = CosineDecay(0, 100, 1e-3, 0.0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    model.optimizer.build(model.trainable_variables)
    model.optimizer.iterations.assign(60)
    curve.set_model(model)
    curve.on_train_begin()
    curve.on_train_batch_begin(0)
    lr = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    assert lr == pytest.approx(1e-3 * 0.5 * (1 + np.cos(np.pi * 0.6)), rel=1e-5)


def test_inference_chunks_are_equal_and_cover_everything():
    from ptycho_exp.models.fit import chunk_size

    for n, b in ((1089, 256), (8, 5), (256, 256), (1, 256), (1000, 7)):
        size = chunk_size(n, b)
        chunks = -(-n // size)
        assert size <= b and chunks == -(-n // b) and chunks * size - n < chunks


def test_precision_policy():
    from ptycho_exp.models.fit import precision_policy

    assert precision_policy("float32", on_gpu=True, bf16_cpu=True) == "float32"
    assert precision_policy("mixed", on_gpu=True, bf16_cpu=False) == "mixed_float16"
    assert precision_policy("mixed", on_gpu=False, bf16_cpu=True) == "mixed_bfloat16"
    assert precision_policy("mixed", on_gpu=False, bf16_cpu=False) == "float32"
    assert precision_policy("auto", on_gpu=False, bf16_cpu=True) == "mixed_bfloat16"
    assert precision_policy("auto", on_gpu=False, bf16_cpu=False) == "float32"
    assert precision_policy("auto", on_gpu=True, bf16_cpu=True) == "float32"
    with pytest.raises(ValueError, match="train.precision"):
        precision_policy("half", on_gpu=False, bf16_cpu=False)


@pytest.mark.e2e  # float16 convolutions are emulated on a CPU: minutes for a few steps
def test_the_gpu_precision_mixed_float16_trains_both_networks(tmp_path, monkeypatch):
    """``train.precision=mixed`` on a GPU is float16 with loss scaling. CI has no GPU, so the policy a GPU
    gets is chosen here on the CPU: the encoder convolutions compute in float16, the physics, outputs and losses
    stay float32 (the PINN's NLL, ~2e5 at the start, would overflow float16's 65,504), and both networks
    train to finite losses at gridsize 1 and 2."""
    import keras

    from ptycho_exp.models import fit as fitmod

    monkeypatch.setattr(fitmod, "_on_gpu", lambda: True)
    for gridsize in (1, 2):
        ds = _tiny_data(tmp_path / f"g{gridsize}", gridsize=gridsize, n_train=32)
        for name in ("pinn", "baseline"):
            fit = fitmod.fit_network(_model_cfg(name, n_filters_scale=1), _train_cfg(epochs=1, precision="mixed"),
                                     ds.train, ds.train_scan.probe, 1e9, tmp_path / f"{name}{gridsize}", seed=3,
                                     grouping="block" if name == "pinn" else "knn")
            assert fit.dtype_policy == "mixed_float16"
            assert all(math.isfinite(v) for k, v in fit.final_losses.items() if "loss" in k), fit.final_losses
            if name == "pinn":
                assert fit.final_losses["nll"] > 65504  # held in float32: float16 would be inf
            convs = [lay for lay in fit.model._flatten_layers() if isinstance(lay, keras.layers.Conv2D)]
            enc = [lay for lay in convs if lay.name.startswith("enc")]
            assert enc and {lay.compute_dtype for lay in enc} == {"float16"}
            off = ds.test.offsets[:8] if gridsize > 1 else None
            patches = fitmod.predict_patches(fit.model, ds.test.diffraction[:8], fit.norm_factor, offsets=off)
            assert patches.dtype == np.complex64 and np.isfinite(patches).all()
            fitmod.release_tf()


@pytest.mark.e2e  # trains two networks (13 s): the e2e stage
def test_gridsize2_pinn_and_baseline_train_save_and_reload(tmp_path):
    """fit_network at gridsize 2 (PINN and baseline): finite losses, a validation loss, .keras reload is exact."""
    from ptycho_exp.models.fit import fit_network, load_network, predict_patches, release_tf

    ds = _tiny_data(tmp_path, gridsize=2, n_train=32)
    for name in ("pinn", "baseline"):
        out = tmp_path / name
        grouping = "block" if name == "pinn" else "knn"  # recorded with the model for ``predict``
        fit = fit_network(_model_cfg(name, n_filters_scale=1), _train_cfg(epochs=1), ds.train,
                          ds.train_scan.probe, 1e9, out, seed=3, grouping=grouping)
        assert fit.epochs_run == 1 and math.isfinite(fit.final_losses["loss"])
        assert math.isfinite(fit.final_losses["val_loss"])
        assert (out / "history.csv").read_text().splitlines()[0].count("val_loss") == 1
        x, off = ds.test.diffraction[:8], ds.test.offsets[:8]
        before = predict_patches(fit.model, x, fit.norm_factor, batch_size=5, offsets=off)
        model, meta = load_network(out)
        after = predict_patches(model, x, meta["norm_factor"], batch_size=5, offsets=off)
        assert meta["needs_offsets"] is (name == "pinn")
        if name == "pinn":  # patches are cut from one merged object per group: merging them again changes nothing
            import tensorflow as tf

            from ptycho_exp.models.layers import extract_group, merge_group

            cf = np.moveaxis(before, -1, 1)
            again = extract_group(merge_group(tf.constant(cf), tf.constant(off, tf.float32), 16, 64),
                                  tf.constant(off, tf.float32), 32).numpy()
            c = slice(12, 20)
            np.testing.assert_allclose(again[..., c, c], cf[..., c, c], atol=1e-4)
        assert before.shape == (8, 32, 32, 4) and before.dtype == np.complex64
        np.testing.assert_array_equal(before, after)
        assert meta["gridsize"] == 2 and meta["model"] == name
        assert meta["grouping"] == grouping and meta["neighbour_step"] > 0
        release_tf()
    # ptycho-exp predict groups a plain scan like a job's test set for a gridsize-2 model
    from ptycho_exp.data.npz import save_contract_npz
    from ptycho_exp.predict import predict_file

    data = tmp_path / "test_scan.npz"
    save_contract_npz(data, ds.test_scan)
    summary = predict_file(tmp_path / "pinn", data, tmp_path / "o.npz")
    assert "gridsize=2" in summary
    # the PINN's groups were 4 px apart: the 8 px test grid is cut into 2x2 blocks, with a warning
    assert "warning: neighbours in this scan's groups are 8 px apart" in summary and "4 px" in summary
    with np.load(tmp_path / "o.npz", allow_pickle=False) as z:
        assert np.isfinite(z["object"]).all() and (z["weight"] > 0).mean() > 0.9


# --------------------------------------------------------------------------- whole jobs
@pytest.mark.parametrize("job", ["pinn_job", "baseline_job", "pinn_g2_job"])
def test_job_writes_every_metric(job, request):
    root, res = request.getfixturevalue(job)
    assert res["status"] == "ok", res.get("error")
    on_disk = json.loads((root / "job" / "result.json").read_text())
    assert on_disk["status"] == "ok"
    m = on_disk["metrics"]
    for prefix in ("amp", "phase"):
        for key in METRICS:
            value = m.get(f"{prefix}_{key}")
            assert isinstance(value, float) and math.isfinite(value), (prefix, key, value)
    for key in ("reg_dy", "reg_dx"):  # null only when registration rejects an implausible shift
        assert key in m and (m[key] is None or math.isfinite(m[key]))
    for key in ("data_s", "train_s", "inference_s", "eval_s", "total_s"):
        assert on_disk["timings"][key] > 0
    assert on_disk["throughput"]["train_patterns_per_s"] > 0
    assert on_disk["throughput"]["inference_patterns_per_s"] > 0
    assert on_disk["resources"]["peak_rss_mb"] > 0 and on_disk["resources"]["n_params"] > 1e5
    assert on_disk["epochs_run"] == 2
    assert on_disk["device"] == "CPU"  # what it trained on (these tests hide GPUs); a GPU job names its GPU
    assert on_disk["onednn"] is onednn_expected()  # TensorFlow's CPU kernels, recorded with the results
    expected = ({"unit": "steps", "steps_per_epoch": 2, "lr_patience": 11, "early_stopping_patience": 15}
                if job == "pinn_g2_job" else {"unit": "epochs", "lr_patience": 2, "early_stopping_patience": 6})
    assert {k: on_disk["schedule"][k] for k in expected} == expected
    for key in ("loss", "val_loss", "learning_rate", "best_val_loss"):
        assert math.isfinite(on_disk["final_losses"][key])
    for name in ("history.csv", "loss.png", "frc.csv", "recon.npz", "model/model.keras", "model/norm.json"):
        assert (root / "job" / name).is_file(), name


def test_a_phase_sync_job_scores_the_aligned_patches_and_keeps_the_scores_as_predicted(pinn_job, pinn_sync_job,
                                                                                        tmp_path):
    """eval.phase_sync=true: the same training (same seed) as the plain job; ``phase_sync.as_predicted`` holds
    exactly the plain job's scores, and ``metrics`` are the aligned patches' (recomputed here from the saved
    model); ``ptycho-exp predict --phase-sync`` stitches the same object the job scored."""
    from ptycho_exp.data.datasets import build_datasets
    from ptycho_exp.data.npz import save_contract_npz
    from ptycho_exp.evaluate.phase_sync import align_patch_phases
    from ptycho_exp.evaluate.pipeline import evaluate_reconstruction
    from ptycho_exp.models.fit import load_network, predict_patches
    from ptycho_exp.predict import predict_file

    (_, plain), (root, sync) = pinn_job, pinn_sync_job
    assert sync["status"] == "ok" and "phase_sync" not in plain
    as_predicted = sync["phase_sync"]["as_predicted"]
    assert {"amp_ssim", "phase_ssim", "phase_frc50", "phase_pearson"} <= set(as_predicted)
    assert as_predicted == {k: plain["metrics"][k] for k in as_predicted}
    assert sync["phase_sync"]["window_px"] == 10  # the stitching crop at N=32
    assert sync["metrics"]["phase_mae"] != plain["metrics"]["phase_mae"]
    cfg = sync["config"]
    ds = build_datasets(cfg["data"], seed=cfg["seed"], cache_dir=root / "cache", need_train=False)
    model, meta = load_network(root / "job")
    pred = predict_patches(model, ds.test.diffraction, meta["norm_factor"], batch_size=cfg["eval"]["batch_size"])
    patches, positions = pred[..., 0], ds.test.positions.reshape(-1, 2)
    ev = evaluate_reconstruction(align_patch_phases(patches, positions, window=10)[0], positions,
                                 ds.test_scan.object, upsample_factor=cfg["eval"]["upsample_factor"])
    for key in as_predicted:
        np.testing.assert_allclose(ev.metrics[key], sync["metrics"][key], rtol=1e-6, atol=1e-9, err_msg=key)
    data = tmp_path / "test.npz"
    save_contract_npz(data, ds.test_scan)
    for flag in (False, True):
        predict_file(root / "job", data, tmp_path / f"o{flag}.npz", phase_sync=flag)
    with np.load(tmp_path / "oFalse.npz", allow_pickle=False) as a, \
            np.load(tmp_path / "oTrue.npz", allow_pickle=False) as b:
        assert bool(b["phase_sync"]) and not bool(a["phase_sync"])
        assert np.array_equal(np.abs(a["weight"]), np.abs(b["weight"])) and not np.allclose(a["object"], b["object"])


def test_predict_groups_a_scan_as_the_model_was_trained():
    """A block-trained model's scan is cut into g x g grid blocks; a non-grid scan or another step is flagged."""
    from ptycho_exp.physics.scan import grid_positions, random_positions, relative_offsets
    from ptycho_exp.predict import group_scan

    grid = grid_positions(96, 32, 4.0)
    groups, notes = group_scan(grid, 2, "block", step=4.0)
    assert notes == [] and groups.shape == (len(grid), 4)
    assert set(groups.ravel()) == set(range(len(grid)))  # every position predicted
    off = relative_offsets(grid, groups)
    np.testing.assert_allclose(off, np.broadcast_to([[-2, -2], [-2, 2], [2, -2], [2, 2]], off.shape))
    # the same scan as a knn model groups it: members are not always a square block
    knn, _ = group_scan(grid, 2, "knn", step=4.0)
    assert not np.allclose(relative_offsets(grid, knn), off)
    # trained on 4 px neighbours, given a 6 px grid: grouped in blocks, with a note naming both steps
    _, notes = group_scan(grid_positions(96, 32, 6.0), 2, "block", step=4.0)
    assert len(notes) == 1 and "6 px" in notes[0] and "4 px" in notes[0]
    # a random scan has no blocks: knn, said once
    rand = random_positions(96, 32, 60, np.random.default_rng(1))
    groups, notes = group_scan(rand, 2, "block")
    assert groups.shape == (60, 4) and len(notes) == 1 and "not a grid" in notes[0]


def test_saved_model_reloads_with_identical_predictions(pinn_job):
    """The job's .keras model, reloaded with safe_mode=True, predicts exactly what the job's model did."""
    from ptycho_exp.models.fit import load_network, predict_patches
    from ptycho_exp.predict import predict_scan

    root, _ = pinn_job
    model, meta = load_network(root / "job")
    assert meta["N"] == 32 and meta["gridsize"] == 1 and meta["model"] == "pinn"
    recon = np.load(root / "job" / "recon.npz", allow_pickle=False)
    assert np.isfinite(recon["recon"]).all()
    rng = np.random.default_rng(0)
    x = rng.random((5, 32, 32, 1)).astype(np.float32)
    a = predict_patches(model, x, meta["norm_factor"])
    model2, _ = load_network(root / "job" / "model")
    b = predict_patches(model2, x, meta["norm_factor"])
    np.testing.assert_array_equal(a, b)
    patches, pos, norm, notes = predict_scan(model, x[..., 0], rng.random((5, 2)) * 10 + 40, gridsize=1)
    assert patches.shape == (5, 32, 32) and pos.shape == (5, 2) and norm > 0 and notes == []


def test_predict_cli_on_a_contract_npz(pinn_job, tmp_path):
    """``ptycho-exp predict <job>/model data.npz --out o.npz`` stitches an object; bad inputs fail clearly."""
    from ptycho_exp.data.npz import save_contract_npz
    from ptycho_exp.data.simulate import simulate_object_scan
    from ptycho_exp.predict import predict_file
    from ptycho_exp.compose import compose_job_config

    root, _ = pinn_job
    cfg = compose_job_config(["data.N=32", "data.object_size=96", "data.test_stride=8"])
    data = tmp_path / "scan.npz"
    save_contract_npz(data, simulate_object_scan(cfg.data, "test"))
    out = tmp_path / "o.npz"
    proc = run_cli(["predict", str(root / "job" / "model"), str(data), "--out", str(out)], tmp_path,
                   module="ptycho_exp.cli")
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout
    with np.load(out, allow_pickle=False) as z:
        obj, weight = z["object"], z["weight"]
        assert obj.dtype == np.complex64 and obj.ndim == 2 and obj.shape == weight.shape
        assert np.isfinite(obj).all() and (weight > 0).mean() > 0.9
        assert int(z["N"]) == 32 and str(z["model"]) == "pinn"
    # a missing model and a wrong patch size each give one clear error
    with pytest.raises(FileNotFoundError, match="model"):
        predict_file(tmp_path / "nowhere", data, tmp_path / "x.npz")
    cfg16 = compose_job_config(["data.N=16", "data.object_size=64", "data.test_stride=8"])
    data16 = tmp_path / "scan16.npz"
    save_contract_npz(data16, simulate_object_scan(cfg16.data, "test"))
    with pytest.raises(ValueError, match="N=32"):
        predict_file(root / "job", data16, tmp_path / "x.npz")
    assert not (tmp_path / "x.npz").exists()
    proc = run_cli(["predict", str(tmp_path / "nowhere"), str(data), "--out", str(out)], tmp_path,
                   module="ptycho_exp.cli")
    assert proc.returncode == 2 and "model" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.e2e
def test_killed_training_resumes_from_its_last_epoch(tmp_path):
    """SIGKILL after epoch 2 of 3, run the same command again: training resumes at epoch 3 (checkpoint keyed by
    the config), history.csv keeps all 3 epochs, and the checkpoint is removed when training ends."""
    import os
    import re
    import signal
    import subprocess
    import sys
    import time

    from tests.helpers.cli import ROOT, TINY

    job = tmp_path / "job"
    cmd = [sys.executable, "-m", "ptycho_exp", "model=pinn", *TINY, "train.epochs=3",
           "train.early_stopping_patience=10",
           "eval.figures=false", "train.save_model=false", f"hydra.run.dir={job}"]
    env = {**os.environ, "PTYCHO_EXP_CACHE": str(tmp_path / "cache"), "CUDA_VISIBLE_DEVICES": "",
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    seen = ""
    deadline = time.time() + 240
    for line in proc.stdout:
        seen += line
        if re.search(r"pinn epoch 2/3", line) or time.time() > deadline:
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert "pinn epoch 2/3" in seen, seen[-2000:]
    backups = list(job.glob(".train_backup-*"))
    assert len(backups) == 1, list(job.iterdir())

    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    out = again.stdout + again.stderr
    assert again.returncode == 0, out[-3000:]
    assert "pinn epoch 3/3" in out and "pinn epoch 1/3" not in out, out[-3000:]
    rows = (job / "history.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 3, rows  # epoch 2's row may be NaN if the kill fell between checkpoint and CSV
    assert rows[1].split(",")[1] not in ("", "nan") and rows[3].split(",")[1] not in ("", "nan"), rows
    assert not list(job.glob(".train_backup-*"))


def _backup_fit(backup, epochs, seed=0):
    """A tiny Dense model fitted ``epochs`` epochs with an AtomicBackupAndRestore kept in ``backup``:
    (epochs this call ran, the weights it ended with)."""
    import keras

    from ptycho_exp.models.callbacks import AtomicBackupAndRestore

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    x = np.random.default_rng(0).random((12, 3)).astype(np.float32)
    hist = model.fit(x, x[:, :1], batch_size=4, epochs=epochs, verbose=0,
                     callbacks=[AtomicBackupAndRestore(str(backup), delete_checkpoint=False)])
    return len(hist.history["loss"]), [w.copy() for w in model.get_weights()]


def test_training_backup_names_a_complete_weights_file_even_if_killed_while_writing_the_next(tmp_path, caplog):
    """A kill while epoch 3's weights are written leaves a truncated file beside epoch 2's; the metadata still
    names epoch 2's complete file, so the rerun resumes at epoch 3 with epoch 2's weights."""
    import json

    backup = tmp_path / "backup"
    ran, _ = _backup_fit(backup, 2)
    assert ran == 2
    meta = json.loads((backup / "training_metadata.json").read_text())
    assert meta["epoch"] == 2 and (backup / meta["weights"]).is_file()
    assert [p.name for p in backup.glob("*.weights.h5")] == [meta["weights"]]  # older epochs are removed
    (backup / "epoch-00003-batch-000000.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(88))  # eof = 96
    with caplog.at_level("INFO", logger="ptycho_exp.models.callbacks"):
        ran, _ = _backup_fit(backup, 3)
    assert ran == 1, "the rerun should train epoch 3 only"
    assert "resumes from the backup of epoch 2" in caplog.text and "unreadable" not in caplog.text


def test_unreadable_training_backup_is_removed_and_training_starts_from_epoch_1(tmp_path, caplog):
    """A backup whose named weights file is truncated (a kill with Keras's in-place writer, or a broken disk)
    does not fail the job: it is logged, removed, and all epochs run again, as from scratch."""
    import json

    backup = tmp_path / "backup"
    _backup_fit(backup, 2)
    meta = json.loads((backup / "training_metadata.json").read_text())
    (backup / meta["weights"]).write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(88))
    with caplog.at_level("WARNING", logger="ptycho_exp.models.callbacks"):
        ran, w = _backup_fit(backup, 3)
    assert ran == 3, "training should start again from epoch 1"
    assert "unreadable" in caplog.text and str(backup) in caplog.text
    _, fresh = _backup_fit(tmp_path / "fresh", 3)
    for a, b in zip(w, fresh):
        np.testing.assert_allclose(a, b, rtol=1e-5)  # the same as a run that never had a backup


def test_linear_warmup_raises_the_learning_rate_over_its_steps_then_holds():
    from ptycho_exp.models.callbacks import LinearWarmup

    seen = _rates_per_batch([LinearWarmup(4, 1e-3)], 12, 2, 2)
    np.testing.assert_allclose(seen[:6], [2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3], rtol=1e-6)
    assert len(seen) == 12 and all(v == pytest.approx(1e-3) for v in seen[4:])
