"""Train a network (PINN or baseline), predict object patches, save and load models.

TensorFlow is imported inside the functions, so importing this module is cheap and the TF thread
counts can still be set by :func:`fit_network` before any TF op runs.
"""
from __future__ import annotations

import gc
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ptycho_exp.files import (
    HISTORY_FILE,
    MODEL_DIR,
    MODEL_FILE,
    TENSORBOARD_DIR,
    atomic_path,
    atomic_write_bytes,
    remove_stale_temp_files,
)
from ptycho_exp.files import NORM_FILE as META_FILE

log = logging.getLogger(__name__)

_NORM_CHUNK = 1024  # rows per chunk of the float64 normalisation sums


@dataclass
class FitResult:
    """What :func:`fit_network` returns.

    ``model`` is the inference model (normalised diffraction -> complex patches); ``history``
    maps each logged key (loss, val_loss, terms, learning_rate, epoch_seconds) to per-epoch
    values; ``final_losses`` holds the last epoch's values plus ``best_epoch`` / ``best_val_loss``
    (the weights are those of the best epoch); ``schedule`` the learning-rate schedule, its warm-up
    steps and the patience in epochs as applied (:func:`patience_in_epochs`); ``train_patterns_per_s``
    counts diffraction patterns (samples x C) per second of ``train_seconds`` (wall time of ``fit``, validation and
    the first epoch's tracing included); ``scaling`` (PINN) how the probe was scaled to the normalised
    patterns (:func:`ptycho_exp.models.pinn.scale_probe`) and the counts per pattern the intensity scale used.
    """

    model: Any
    norm_factor: float
    history: dict[str, list] = field(default_factory=dict)
    train_seconds: float = 0.0
    n_params: int = 0
    final_losses: dict = field(default_factory=dict)
    epochs_run: int = 0
    train_patterns_per_s: float = 0.0
    dtype_policy: str = "float32"
    device: str = "CPU"
    onednn: bool | None = None
    schedule: dict = field(default_factory=dict)
    scaling: dict = field(default_factory=dict)


def compute_norm_factor(diffraction: np.ndarray) -> float:
    """``f`` such that the mean per-pattern ``sum (f X)**2`` is ``(N/2)**2`` (float64 sums).

    Parameters
    ----------
    diffraction : np.ndarray
        Amplitudes (n, N, N, C) (or (n, N, N)); every (sample, channel) is one pattern. Any object with
        ``shape`` and row slicing (:class:`ptycho_exp.data.h5.GroupedPatterns`) is read in chunks of rows.
    """
    if not hasattr(diffraction, "shape"):
        diffraction = np.asarray(diffraction)
    n_px = diffraction.shape[1]
    per_pattern = []
    for start in range(0, diffraction.shape[0], _NORM_CHUNK):  # rows at a time: patterns may be read from a file
        x = np.asarray(diffraction[start:start + _NORM_CHUNK])
        if x.ndim == 3:
            x = x[..., None]
        per_pattern.append(np.sum(np.square(x, dtype=np.float64), axis=(1, 2)))
    mean = float(np.mean(np.concatenate(per_pattern))) if per_pattern else 0.0
    if not mean > 0 or not math.isfinite(mean):
        raise ValueError(f"cannot normalise diffraction: mean total intensity per pattern is {mean}")
    return math.sqrt((n_px / 2) ** 2 / mean)


def configure_threads(threads: tuple[int, int]) -> None:
    """Set TF (intra_op, inter_op) thread counts (0: leave TF's default); call before any TF op."""
    import tensorflow as tf

    intra, inter = (int(t) for t in threads)
    for value, setter, getter in (
        (intra, tf.config.threading.set_intra_op_parallelism_threads,
         tf.config.threading.get_intra_op_parallelism_threads),
        (inter, tf.config.threading.set_inter_op_parallelism_threads,
         tf.config.threading.get_inter_op_parallelism_threads),
    ):
        if value <= 0 or getter() == value:
            continue
        try:
            setter(value)
        except RuntimeError as err:  # TF already initialised in this process
            log.warning("could not set TF threads to %d (%s); keeping %d", value, err, getter())


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed python, numpy, TF and Keras; enable TF op determinism when asked."""
    import random

    import keras
    import tensorflow as tf

    random.seed(seed)
    np.random.seed(seed % 2**32)
    tf.random.set_seed(seed)
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def _quiet_auto() -> bool:
    """True when the output is not an interactive terminal, under SLURM, or in a Hydra multirun."""
    if not (hasattr(sys.stdout, "isatty") and sys.stdout.isatty()):
        return True
    if os.environ.get("SLURM_JOB_ID"):
        return True
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:  # noqa: BLE001 - hydra absent or not configured
        return False


def resolve_verbose(mode: str) -> int:
    """``train.verbose`` (auto|quiet|progress) -> Keras ``verbose`` (0 quiet, 1 progress bar)."""
    if mode == "progress":
        return 1
    if mode == "quiet":
        return 0
    return 0 if _quiet_auto() else 1


def _split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random train / validation indices; both non-empty."""
    if n < 2:
        raise ValueError(f"need at least 2 samples to keep a validation split, got {n}")
    n_val = min(n - 1, max(1, round(n * val_fraction)))
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _datasets(x: dict, y: Any, train_idx, val_idx, batch_size: int, seed: int, scale: float = 1.0):
    """tf.data pipelines (shuffled training, ordered validation) that gather whole batches by index.

    The arrays are converted to tensors once; the pipelines shuffle and batch only indices and gather
    each batch with one op (no per-sample slicing, no shuffle buffer of samples, no per-split copies).
    A ``diffraction`` that is not an ndarray (:class:`ptycho_exp.data.h5.GroupedPatterns`, patterns in an
    HDF5 file) is read batch by batch (``tf.numpy_function``) instead: the same indices in the same order,
    so the same batches, with only the prefetched batches in memory.

    Parameters
    ----------
    x : dict
        ``diffraction`` (n, N, N, C) and optionally ``offsets`` (n, C, 2).
    y : None, array or tuple of arrays
        Targets with ``n`` rows.
    train_idx, val_idx : array of int
        Rows of each split.
    batch_size, seed : int
        Batch size and the seed of the per-epoch shuffle.
    scale : float
        Factor applied to ``diffraction`` in the pipeline (the normalisation).
    """
    import tensorflow as tf

    streamed = x["diffraction"] if not isinstance(x["diffraction"], np.ndarray) else None
    with tf.device("/CPU:0"):  # the input pipeline runs on the host; batches go to the device
        xt = {k: tf.convert_to_tensor(np.asarray(v, np.float32)) for k, v in x.items()
              if not (streamed is not None and k == "diffraction")}
        if y is None:
            yt = None
        elif isinstance(y, tuple):
            yt = tuple(tf.convert_to_tensor(np.asarray(t, np.float32)) for t in y)
        else:
            yt = tf.convert_to_tensor(np.asarray(y, np.float32))
        factor = tf.constant(float(scale), tf.float32)

    def read(i):  # a batch of patterns from the file, rows in the shuffled order
        return streamed[np.asarray(i)]

    def gather(i):
        xs = {k: tf.gather(v, i) for k, v in xt.items()}
        if streamed is not None:
            batch = tf.numpy_function(read, [i], tf.float32, stateful=False)
            batch.set_shape((None, *streamed.shape[1:]))
            xs["diffraction"] = batch
        xs["diffraction"] = xs["diffraction"] * factor
        if yt is None:
            return (xs,)
        return xs, (tuple(tf.gather(t, i) for t in yt) if isinstance(yt, tuple) else tf.gather(yt, i))

    def make(idx, shuffle: bool):
        ds = tf.data.Dataset.from_tensor_slices(np.asarray(idx, np.int64))
        if shuffle:
            ds = ds.shuffle(len(idx), seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size).map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.prefetch(tf.data.AUTOTUNE)

    return make(train_idx, True), make(val_idx, False)


def cpu_has_bf16() -> bool:
    """True when this CPU has native bfloat16 dot products (AVX512_BF16 or AMX), read from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def precision_policy(precision: str, on_gpu: bool, bf16_cpu: bool) -> str:
    """Keras dtype policy for ``train.precision``.

    ``float32`` -> ``"float32"``; ``mixed`` -> ``"mixed_float16"`` on a GPU, ``"mixed_bfloat16"`` on a CPU
    with native bfloat16 (about twice as fast as float32 there), else ``"float32"`` (a CPU without it
    would emulate bfloat16 and run slower than float32); ``auto`` (the default) -> ``"mixed_bfloat16"``
    on a CPU with native bfloat16, ``"float32"`` otherwise (GPUs included). Variables, the physics
    layers, the outputs and the losses stay float32 in every mode.
    """
    if precision == "float32":
        return "float32"
    if precision == "auto":
        return "mixed_bfloat16" if (bf16_cpu and not on_gpu) else "float32"
    if precision != "mixed":
        raise ValueError(f"train.precision={precision!r} is invalid: choose auto, float32 or mixed")
    if on_gpu:
        return "mixed_float16"
    if bf16_cpu:
        return "mixed_bfloat16"
    log.warning("train.precision=mixed: no GPU and no native bfloat16 on this CPU; training in float32")
    return "float32"


def _on_gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))


def gpu_names() -> list[str]:
    """The GPUs TensorFlow sees, by name (``"NVIDIA H100 80GB HBM3"``); empty on a CPU-only machine."""
    import tensorflow as tf

    names = []
    for dev in tf.config.list_physical_devices("GPU"):
        try:
            names.append(str(tf.config.experimental.get_device_details(dev).get("device_name") or dev.name))
        except (RuntimeError, ValueError):
            names.append(dev.name)
    return names


def training_device() -> str:
    """What TensorFlow trains on: the first GPU's name, else ``"CPU"``."""
    return next(iter(gpu_names()), "CPU")


def onednn_enabled() -> bool | None:
    """Whether TensorFlow's CPU kernels are oneDNN's (``TF_ENABLE_ONEDNN_OPTS``; results differ in the last
    bits from its Eigen kernels); None where this TensorFlow does not say."""
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:
        return None
    is_enabled = getattr(_pywrap_util_port, "IsMklEnabled", None)
    return bool(is_enabled()) if callable(is_enabled) else None


def _build(model_cfg, N: int, gridsize: int, probe, nphotons: float, dtype: str):
    if model_cfg.name == "pinn":
        from .pinn import build_pinn

        return build_pinn(model_cfg, N, gridsize, probe, nphotons, dtype=dtype)
    if model_cfg.name == "baseline":
        from .baseline import build_baseline

        return build_baseline(model_cfg, N, gridsize, dtype=dtype)
    raise ValueError(f"model.name={model_cfg.name!r} is not a network model (pinn or baseline)")


def patience_in_epochs(train_cfg: Any, steps_per_epoch: int) -> dict:
    """The learning-rate and early-stopping patience in epochs, as the Keras callbacks count them.

    With ``train.patience_unit=epochs`` (docs/CONTRACT.md §5) they are ``lr_patience`` and ``early_stopping_patience``
    as given. With ``steps`` those are optimizer steps, turned into whole epochs of this job's size
    (rounded, at least 1): the schedule then reacts after about the same number of updates whatever
    the training-set size, where a patience in epochs gives a small training set far fewer steps
    (2 epochs are 58 steps at 512 samples, 230 at 2,048).

    Parameters
    ----------
    train_cfg : TrainConfig-like
        Reads ``lr_patience``, ``early_stopping_patience`` and ``patience_unit``.
    steps_per_epoch : int
        Optimizer steps in one epoch of this job.

    Returns
    -------
    dict
        ``lr_patience`` and ``early_stopping_patience`` in epochs, ``steps_per_epoch`` and ``unit``.
    """
    unit = str(train_cfg.patience_unit)
    lr, stop = int(train_cfg.lr_patience), int(train_cfg.early_stopping_patience)
    if unit == "steps":
        lr, stop = (max(1, round(p / max(1, steps_per_epoch))) for p in (lr, stop))
    elif unit != "epochs":
        raise ValueError(f"train.patience_unit={unit!r}: choose epochs or steps")
    return {"unit": unit, "steps_per_epoch": int(steps_per_epoch), "lr_patience": lr,
            "early_stopping_patience": stop}


def warmup_steps(train_cfg: Any, steps_per_epoch: int) -> int:
    """Optimizer steps of the linear warm-up: ``train.warmup_epochs`` epochs, at least 1 when on, 0 when off."""
    warmup = float(train_cfg.warmup_epochs)
    return max(1, round(warmup * steps_per_epoch)) if warmup > 0 else 0


def training_callbacks(train_cfg: Any, out_dir: Path, verbose: int, name: str, steps_per_epoch: int = 1) -> list:
    """The schedule and logging callbacks of :func:`fit_network`.

    The learning-rate schedule is ``train.lr_schedule``: ``plateau`` (docs/CONTRACT.md §5) is
    ReduceLROnPlateau(val_loss, ``lr_factor``, ``lr_patience``, floor ``min_lr``); ``cosine`` is
    :class:`CosineDecay` from ``learning_rate`` after the warm-up to ``min_lr`` at the last planned step,
    the same for every run of that length. Then EarlyStopping(val_loss, ``early_stopping_patience``,
    best weights restored), a per-epoch log line when the progress bar is off,
    and TensorBoard when ``train.tensorboard``. The patience values are in ``train.patience_unit``
    (see :func:`patience_in_epochs`; ``steps_per_epoch`` matters only for ``steps``).
    """
    import keras

    from .callbacks import EpochLogger

    patience = patience_in_epochs(train_cfg, steps_per_epoch)
    if str(train_cfg.lr_schedule) == "cosine":
        from .callbacks import CosineDecay

        warmup = warmup_steps(train_cfg, steps_per_epoch)
        schedule = CosineDecay(warmup, int(train_cfg.epochs) * steps_per_epoch, float(train_cfg.learning_rate),
                               float(train_cfg.min_lr))
    else:
        schedule = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=float(train_cfg.lr_factor),
                                                     patience=patience["lr_patience"], min_lr=float(train_cfg.min_lr))
    callbacks = [
        schedule,
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience["early_stopping_patience"],
                                      restore_best_weights=True),
    ]
    if verbose == 0:
        callbacks.append(EpochLogger(int(train_cfg.epochs), name=name))
    if train_cfg.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(Path(out_dir) / TENSORBOARD_DIR),
                                                     write_graph=False, profile_batch=0))
    return callbacks


def fit_network(model_cfg: Any, train_cfg: Any, samples: Any, probe: np.ndarray, nphotons: float,
                out_dir: Path, seed: int, threads: tuple[int, int] = (0, 0),
                backup_dir: Path | None = None, grouping: str = "knn", probe_scaling: str = "fit") -> FitResult:
    """Train the PINN or the baseline on ``samples`` and write its outputs to ``out_dir``.

    Parameters
    ----------
    model_cfg : ModelConfig-like
        ``name`` (pinn | baseline) and the architecture / loss knobs.
    train_cfg : TrainConfig-like
        Optimiser, schedule, early stopping, validation split, precision, output options.
    samples : Samples
        Training samples (diffraction (n,N,N,C) amplitude as stored; offsets; for the baseline
        ``patches``). A random ``val_fraction`` of them is held out for validation.
    probe : np.ndarray
        (N, N) complex probe (PINN only).
    nphotons : float
        Mean counts per pattern of the training data (PINN's intensity scale).
    out_dir : Path
        Gets ``history.csv``, ``loss.png``, ``tensorboard/`` (if enabled) and ``model/``
        (``model.keras`` + ``norm.json``, if ``save_model``).
    seed : int
        Seeds initialisation, the split and shuffling.
    threads : tuple[int, int]
        TF (intra_op, inter_op) threads; 0 keeps TF's default.
    backup_dir : Path, optional
        Keep a checkpoint of the weights, optimizer state and epoch here after every epoch
        (``AtomicBackupAndRestore``, safe against a kill while it writes): a job killed or requeued
        mid-training (SLURM time limit, preemption, a crash) resumes from its last finished epoch when
        it runs again; the backup is deleted when training ends. The caller keys the folder by the job's config.
    grouping : str
        How the samples' groups were formed (``data.grouping``: knn | block); saved with the model,
        with the neighbour step, so ``ptycho-exp predict`` groups a new scan the same way.
    probe_scaling : str
        PINN: ``fit`` scales ``probe`` to the normalised patterns in closed form (any overall scale of the
        supplied probe gives the same model), ``off`` uses it as given (see
        :func:`ptycho_exp.models.pinn.scale_probe`; ``model.probe_scaling`` resolved by
        :func:`ptycho_exp.models.pinn.probe_scaling_mode`).

    Returns
    -------
    FitResult
    """
    configure_threads(threads)
    import keras

    from .callbacks import HistoryRecorder, plot_history

    name = model_cfg.name
    if name == "baseline" and samples.patches is None:
        raise ValueError("model=baseline needs ground-truth patches (objectGuess or Y in the data) "
                         "to train on; use model=pinn for data without a ground truth")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(seed, bool(train_cfg.deterministic))

    diffraction = samples.diffraction  # an ndarray, or patterns read from a file per batch
    if isinstance(diffraction, np.ndarray) or not hasattr(diffraction, "shape"):
        diffraction = np.asarray(diffraction)
    n, N, C = diffraction.shape[0], diffraction.shape[1], diffraction.shape[-1]
    gridsize = round(math.sqrt(C))
    if gridsize ** 2 != C:
        raise ValueError(f"samples have {C} channels; expected gridsize**2")
    norm = compute_norm_factor(diffraction)
    x = {"diffraction": diffraction}  # normalised by ``norm`` inside the input pipeline
    if C > 1:
        x["offsets"] = np.asarray(samples.offsets, np.float32)
    y = None
    realspace = float(model_cfg.realspace_weight)
    if name == "baseline":
        from .baseline import split_targets

        y = split_targets(np.asarray(samples.patches))
    elif realspace > 0:
        if samples.patches is None:
            log.warning("model.realspace_weight=%g ignored: the data has no ground-truth patches", realspace)
        else:
            y = np.abs(np.asarray(samples.patches)).astype(np.float32)
    train_idx, val_idx = _split(n, float(train_cfg.val_fraction), seed)
    ds_train, ds_val = _datasets(x, y, train_idx, val_idx, int(train_cfg.batch_size), seed, scale=norm)
    del x, y  # the pipelines hold the only copies the training needs

    scaling: dict = {}
    if name == "pinn":
        from .pinn import object_support, scale_probe

        probe, scaling = scale_probe(probe, object_support(model_cfg, N), probe_scaling,
                                     data_energy=(N / 2) ** 2 / norm ** 2)
        scaling["counts_per_pattern"] = float(nphotons)
    policy = precision_policy(str(train_cfg.precision), _on_gpu(), cpu_has_bf16())
    model = _build(model_cfg, N, gridsize, probe, nphotons, policy)
    if name == "pinn":
        model.norm_factor = norm
    optimizer = keras.optimizers.Adam(learning_rate=float(train_cfg.learning_rate))
    if policy == "mixed_float16":  # float16 needs loss scaling; bfloat16 has float32's range
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(optimizer=optimizer, jit_compile=bool(train_cfg.jit_compile))

    verbose = resolve_verbose(str(train_cfg.verbose))
    recorder = HistoryRecorder(out_dir / HISTORY_FILE)
    steps_per_epoch = -(-len(train_idx) // int(train_cfg.batch_size))
    callbacks = training_callbacks(train_cfg, out_dir, verbose, name, steps_per_epoch) + [recorder]
    warmup = warmup_steps(train_cfg, steps_per_epoch)
    if warmup > 0:
        from .callbacks import LinearWarmup

        callbacks.insert(0, LinearWarmup(warmup, float(train_cfg.learning_rate)))
    if backup_dir is not None:
        from .callbacks import AtomicBackupAndRestore

        callbacks.insert(0, AtomicBackupAndRestore(str(backup_dir)))

    t0 = time.perf_counter()
    model.fit(ds_train, validation_data=ds_val, epochs=int(train_cfg.epochs), verbose=verbose,
              callbacks=callbacks, shuffle=False)  # the tf.data pipeline shuffles every epoch
    train_seconds = time.perf_counter() - t0

    history = recorder.history
    epochs_run = len(history.get("loss", []))
    final = {k: v[-1] for k, v in history.items() if v}
    val = history.get("val_loss", [])
    if val:
        best = int(np.nanargmin(val))
        final.update(best_epoch=best + 1, best_val_loss=float(val[best]))
    if name == "pinn":
        final["intensity_scale"] = float(np.exp(keras.ops.convert_to_numpy(model.log_scale)))
    schedule = {**patience_in_epochs(train_cfg, steps_per_epoch),
                "lr_schedule": str(train_cfg.lr_schedule),
                "warmup_steps": warmup}
    plot_history(history, out_dir / "loss.png", title=f"{name} (N={N}, gridsize={gridsize})")

    meta = {"norm_factor": norm, "N": N, "gridsize": gridsize, "model": name, "n_params": model.n_params,
            "nphotons": float(nphotons), "needs_offsets": len(model.inference_model.inputs) > 1,
            "dtype_policy": policy, "format": 1}
    if C > 1:
        from ptycho_exp.physics.scan import neighbour_step

        meta.update(grouping=str(grouping), neighbour_step=neighbour_step(np.asarray(samples.positions)))
    if name == "pinn":
        meta["intensity_scale"] = final["intensity_scale"]
        meta["probe_scale_fitted"] = scaling["probe_scale_fitted"]
    if train_cfg.save_model:
        save_network(model.inference_model, out_dir / MODEL_DIR, meta)
    patterns = len(train_idx) * C * epochs_run
    return FitResult(model=model.inference_model, norm_factor=norm, history=history,
                     train_seconds=train_seconds, n_params=model.n_params, final_losses=final,
                     epochs_run=epochs_run, train_patterns_per_s=patterns / max(train_seconds, 1e-9),
                     dtype_policy=policy, schedule=schedule, device=training_device(),
                     onednn=onednn_enabled(), scaling=scaling)


def save_network(model: Any, model_dir: Path, meta: dict) -> Path:
    """Save ``model`` as ``model_dir/model.keras`` and ``meta`` as ``model_dir/norm.json`` (atomically).

    A partial temp file left by an earlier attempt that was killed while saving is removed first.
    """
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(model_dir, [MODEL_FILE])
    target = model_dir / MODEL_FILE
    with atomic_path(target) as tmp:  # keeps the .keras suffix Keras asks for
        model.save(tmp)
    atomic_write_bytes(model_dir / META_FILE, json.dumps(meta, indent=2).encode())
    return target


def load_network(model_dir: Path) -> tuple[Any, dict]:
    """Load a saved inference model (``safe_mode=True``) and its ``norm.json``.

    Parameters
    ----------
    model_dir : Path
        The ``model/`` folder, or the job folder that contains it.

    Returns
    -------
    (keras.Model, dict)
    """
    import keras

    from . import layers  # noqa: F401  (registers the custom layers)

    model_dir = Path(model_dir)
    if not (model_dir / MODEL_FILE).exists() and (model_dir / MODEL_DIR / MODEL_FILE).exists():
        model_dir = model_dir / MODEL_DIR
    path = model_dir / MODEL_FILE
    if not path.exists():
        raise FileNotFoundError(f"no saved network at {path}")
    meta = json.loads((model_dir / META_FILE).read_text()) if (model_dir / META_FILE).exists() else {}
    return keras.saving.load_model(path, safe_mode=True), meta


def predict_patches(model: Any, diffraction: np.ndarray, norm_factor: float, batch_size: int = 256,
                    offsets: np.ndarray | None = None) -> np.ndarray:
    """Complex object patches for stored-amplitude diffraction, in chunks of ``batch_size``.

    Parameters
    ----------
    model : keras.Model
        An inference model (``FitResult.model`` or :func:`load_network`).
    diffraction : np.ndarray
        (n, N, N, C) amplitude as stored (normalised here by ``norm_factor``), or an object with ``shape``
        and row slicing (patterns read from a file one chunk at a time).
    norm_factor : float
        The training set's factor (``FitResult.norm_factor`` / ``norm.json``).
    batch_size : int
        Samples per forward pass at most (bounds memory); the samples are split into equal chunks
        (the last one zero-padded) so the predict function is traced for one shape only.
    offsets : np.ndarray, optional
        (n, C, 2); needed by a PINN with C > 1 (its patches are cut from each group's merged object),
        ignored by models that take only the diffraction.

    Returns
    -------
    np.ndarray
        complex64 (n, N, N, C).
    """
    if not hasattr(diffraction, "shape"):
        diffraction = np.asarray(diffraction)
    out = np.empty((diffraction.shape[0], *tuple(model.outputs[0].shape[1:])), np.complex64)
    for start, stop, pred in predicted_batches(model, diffraction, norm_factor, batch_size, offsets):
        out[start:stop] = pred
    return out


def predicted_batches(model: Any, diffraction: Any, norm_factor: float, batch_size: int = 256,
                      offsets: np.ndarray | None = None):
    """The predictions of :func:`predict_patches` one chunk at a time, without holding them all.

    Parameters
    ----------
    model, diffraction, norm_factor, batch_size, offsets
        As in :func:`predict_patches` (the same chunks, so the same values).

    Yields
    ------
    (start, stop, np.ndarray)
        Sample rows ``start:stop`` and their complex64 (stop - start, N, N, C) patches. The rows of
        ``diffraction`` are read per chunk (patterns in a file stay there).
    """
    single = len(diffraction.shape) == 3  # (n, N, N): one channel
    needs_offsets = len(model.inputs) > 1
    if needs_offsets and offsets is None:
        raise ValueError("this model (a PINN with gridsize>1) needs the samples' offsets (offsets=...)")
    n = diffraction.shape[0]
    size = chunk_size(n, int(batch_size))
    for start in range(0, n, size):
        stop = min(start + size, n)
        rows = np.asarray(diffraction[start:stop])  # read per chunk: patterns may stay in a file
        rows = rows[..., None] if single else rows
        chunk = _pad_to((rows.astype(np.float64) * norm_factor).astype(np.float32), size)
        inputs = [chunk, _pad_to(np.asarray(offsets[start:stop], np.float32), size)] if needs_offsets else chunk
        yield start, stop, np.asarray(model.predict_on_batch(inputs))[:stop - start].astype(np.complex64, copy=False)


def chunk_size(n: int, batch_size: int) -> int:
    """Equal chunks of at most ``batch_size`` covering ``n`` samples (one traced shape, < 1 chunk of padding)."""
    if n <= 0:
        return max(1, batch_size)
    n_chunks = -(-n // max(1, batch_size))
    return -(-n // n_chunks)


def _pad_to(a: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad the first axis of ``a`` to ``size`` (the last chunk keeps the traced batch shape)."""
    if a.shape[0] == size:
        return a
    return np.concatenate([a, np.zeros((size - a.shape[0], *a.shape[1:]), a.dtype)])


def release_tf() -> None:
    """Free Keras/TF state between fits in one process (``clear_session`` + garbage collection)."""
    import keras

    keras.backend.clear_session()
    gc.collect()
