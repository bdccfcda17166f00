"""What a job config may hold beyond its types: allowed values, the range of every numeric key, and
the checks that need the machine (a GPU) or the data files' headers.

Every check raises :class:`ConfigError` with one line ``key=value is invalid: <what is wrong and the
fix>``. The ranges are one table, :data:`RANGES`, read top to bottom: the first row a value fails is
the error. The schema itself (types and defaults) is :mod:`ptycho_exp.config`, which runs these checks
from :func:`ptycho_exp.config.validate`. Nothing here imports TensorFlow or reads a whole data file.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A configuration value is invalid. The message names the key and the fix."""


# --------------------------------------------------------------------------- allowed values
OBJECT_NAMES = ("lines", "grf", "points", "diagonals")
SKIMAGE_OBJECTS = ("camera", "astronaut", "brick", "grass", "gravel", "moon", "text", "coins",
                   "cell", "checkerboard", "shepp_logan_phantom")
PROBE_NAMES = ("ideal_disk", "gaussian", "defocused", "file")
PHASE_MODES = ("none", "tanh", "independent")
SCAN_KINDS = ("grid", "random")
from ptycho_exp.models.registry import MODEL_ORDER as MODEL_NAMES, NETWORK_MODELS  # noqa: E402 - the one registry
FAULTS = ("none", "raise", "exit", "sleep", "oom")  # testing hook (config key ``fault``)
DEVICES = ("cpu", "gpu", "auto")
# data.kind of data read from files, and the importer format of each measured kind (converted at job start)
MEASURED_FORMATS = {"cxi": "cxi", "ptylab_h5": "ptylab"}
FILE_KINDS = ("npz",) + tuple(MEASURED_FORMATS)
DATA_KINDS = ("simulate",) + FILE_KINDS

SEED_MAX = 2 ** 32 - 1     # NumPy and TensorFlow seeds are unsigned 32-bit
MIN_STRIDE_PX = 0.5        # a finer scan step than half a pixel only repeats patterns (and explodes the count)
MIN_TEST_POSITIONS = 4     # fewer scored test positions make no meaningful score
MIN_PATIENCE_STEPS = 20    # a smaller patience with train.patience_unit=steps is an epoch count left over
MAX_SIMULATED_BYTES = 12 * 2 ** 30  # one simulated scan held in memory: amplitude (float32) + patches (complex64)

# Hydra ``_target_`` prefixes a config may name: this package and the libraries it wires in
# (Hydra's plugins, Optuna samplers/pruners, submitit). Anything else is refused before it can run.
TARGET_ALLOW_PREFIXES = ("ptycho_exp.", "hydra_plugins.", "hydra._internal.core_plugins.",
                         "optuna.samplers.", "optuna.pruners.", "submitit.")


def _is_pow2(n: int) -> bool:
    return n > 0 and (n & (n - 1)) == 0


def _choose(options: tuple) -> str:
    return f"choose one of {', '.join(options)}"


def _get(cfg: Any, key: str) -> Any:
    """``cfg`` at a dotted ``key`` (attribute access: a DictConfig or dataclass)."""
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


# --------------------------------------------------------------------------- positions from the config
def grid_side(object_size: float, N: int, stride: float) -> int:
    """Positions along one axis of a grid scan of step ``stride`` with every patch inside the object
    (the count :func:`ptycho_exp.physics.scan.grid_positions` makes), 0 when no patch fits."""
    span = float(object_size) - N
    return 0 if span < 0 else int(math.floor(span / float(stride) + 1e-9)) + 1


def _block_test_layout(cfg: Any, which: str) -> bool:
    d = cfg.data
    return which == "test" and d.scan == "grid" and d.grouping == "block" and d.gridsize > 1


def simulated_positions(cfg: Any, which: str) -> int:
    """Positions of the simulated ``which`` (train | test) scan, counted from the config alone.

    The training scan holds ``n_train_objects`` objects' positions; the test scan of
    ``grouping=block`` (gridsize > 1) is g x g positions per block (see
    :func:`ptycho_exp.data.simulate.simulate_positions`, whose counts a test compares with these).
    """
    d = cfg.data
    if d.scan == "random":
        per_object = int(d.n_random_positions)
    elif _block_test_layout(cfg, which):
        reach = (d.gridsize - 1) * float(d.train_stride)
        per_object = grid_side(math.floor(d.object_size - reach), d.N, d.test_stride) ** 2 * d.gridsize ** 2
    else:
        per_object = grid_side(d.object_size, d.N, d.train_stride if which == "train" else d.test_stride) ** 2
    return per_object * (int(d.n_train_objects) if which == "train" else 1)


def _max_defocus(N: int) -> float:
    """Largest ``data.probe_defocus`` (rad at the disk edge) sampled without aliasing: the phase
    ``s (r/R)^2`` changes by at most pi per pixel at the disk edge, so ``|s| <= pi R / 2``."""
    from ptycho_exp.physics.probe import disk_radius

    return math.pi * float(disk_radius(N)) / 2.0


# --------------------------------------------------------------------------- the ranges
Check = Callable[[Any, Any], bool]  # (value, whole config) -> ok


def _seed(v: Any, c: Any) -> bool:
    return 0 <= v <= SEED_MAX


def _decoder_channels(c: Any) -> int:
    """Channels of the PINN decoder's last block (models.blocks.encoder_filters(N, scale)[0]), without Keras."""
    levels = max(1, round(math.log2(max(int(c.data.N), 16))) - 3)
    return max(1, int(round(float(c.model.n_filters_scale) * max(1, 128 >> (levels - 1)))))


def _optional(check: Check) -> Check:
    return lambda v, c: v is None or check(v, c)


SEED_FIX = f"must be in 0..{SEED_MAX} (2**32-1), e.g. 1"
STRIDE_FIX = (f"must be >= {MIN_STRIDE_PX} px: a finer step only adds interpolated copies of the patterns "
              "(e.g. 4 for training, 10 for testing)")

# (key, ok(value, cfg), fix: a text, or a function of the config that gives it). Read in order; a row may
# rely on the rows above it (data.N before the keys whose range depends on it). Names come first, then
# numbers; the rules that join several keys follow in _rules.
RANGES: tuple[tuple[str, Check, Any], ...] = (
    # names
    ("model.name", lambda v, c: v in MODEL_NAMES, f"{_choose(MODEL_NAMES)} (e.g. model=pinn)"),
    ("data.kind", lambda v, c: v in DATA_KINDS,
     f"{_choose(DATA_KINDS)} (e.g. data=lines, data=npz, data=cxi or data=ptylab_h5)"),
    ("data.object", lambda v, c: c.data.kind != "simulate" or v in OBJECT_NAMES + SKIMAGE_OBJECTS,
     _choose(OBJECT_NAMES + SKIMAGE_OBJECTS)),
    ("data.object_phase", lambda v, c: v in PHASE_MODES, _choose(PHASE_MODES)),
    ("data.probe", lambda v, c: v in PROBE_NAMES, _choose(PROBE_NAMES)),
    ("data.scan", lambda v, c: v in SCAN_KINDS, _choose(SCAN_KINDS)),
    ("data.train_on", lambda v, c: v in ("train", "test"),
     "choose train (the training scan) or test (the PINN trains on the scan it reconstructs)"),
    ("data.labels", lambda v, c: v in ("ground_truth", "iterative"),
     "choose ground_truth (objectGuess / Y) or iterative (a PtyLab reconstruction of the training scan)"),
    ("model.probe_scaling", lambda v, c: v in ("auto", "fit", "off"), "choose auto (fit for data=npz), fit or off"),
    ("data.grouping", lambda v, c: v in ("knn", "block"),
     "choose knn (C of the k nearest neighbours, any scan) or block (g x g blocks of a grid scan, "
     "PtychoPINN's layout)"),
    ("train.lr_schedule", lambda v, c: v in ("plateau", "cosine"),
     "choose plateau (docs/CONTRACT.md §5 default: ReduceLROnPlateau on val_loss) or cosine (a fixed decay from "
     "learning_rate to min_lr over train.epochs)"),
    ("train.patience_unit", lambda v, c: v in ("epochs", "steps"),
     "choose epochs (docs/CONTRACT.md §5 default) or steps (the same schedule in optimizer steps for every "
     "training-set size)"),
    ("train.precision", lambda v, c: v in ("auto", "float32", "mixed"), "choose auto, float32 or mixed"),
    ("train.verbose", lambda v, c: v in ("auto", "quiet", "progress"), "choose auto, quiet or progress"),
    ("eval.reference", lambda v, c: v in ("ground_truth", "iterative"), "choose ground_truth or iterative"),
    ("eval.reference_algorithm", lambda v, c: str(v).lower() in ("epie", "rpie", "mpie"),
     "choose ePIE, rPIE or mPIE (PtyLab)"),
    ("hardware.device", lambda v, c: v in DEVICES, "choose cpu, gpu or auto"),
    ("fault", lambda v, c: v in FAULTS, f"testing hook: {_choose(FAULTS)}"),
    # seeds
    ("seed", _seed, SEED_FIX),
    ("data.train_seed", _seed, SEED_FIX),
    ("data.test_seed", _seed, SEED_FIX),
    # data: geometry
    ("data.N", lambda v, c: _is_pow2(v) and 16 <= v <= 1024, "must be a power of two in 16..1024 (e.g. data.N=64)"),
    ("data.object_size", lambda v, c: c.data.kind != "simulate" or 2 * c.data.N <= v <= 8192,
     lambda c: f"must be in 2*data.N={2 * c.data.N}..8192 px (e.g. data.object_size={max(392, 2 * c.data.N)})"),
    ("data.gridsize", lambda v, c: 1 <= v <= 4, "must be in 1..4 (1 or 2 are usual)"),
    ("data.k_neighbors", lambda v, c: 1 <= v <= 64,
     "must be in 1..64: the neighbours a gridsize>1 group is drawn from (e.g. data.k_neighbors=7)"),
    ("data.train_stride", lambda v, c: v >= MIN_STRIDE_PX, STRIDE_FIX),
    ("data.test_stride", lambda v, c: v >= MIN_STRIDE_PX, STRIDE_FIX),
    ("data.jitter", lambda v, c: 0 <= v <= c.data.N / 2,
     lambda c: f"must be in 0..data.N/2={c.data.N / 2:g} px; for positions anywhere use data.scan=random"),
    ("data.n_random_positions", lambda v, c: 1 <= v <= 1_000_000, "must be in 1..1000000 (e.g. 4096)"),
    # data: sizes of the sets
    ("data.n_train", lambda v, c: v >= 1, "must be >= 1 (e.g. data.n_train=512)"),
    ("data.n_train_objects", lambda v, c: 1 <= v <= 100, "must be in 1..100 (e.g. data.n_train_objects=2)"),
    ("data.n_test", _optional(lambda v, c: v >= MIN_TEST_POSITIONS),
     f"must be >= {MIN_TEST_POSITIONS} (fewer positions make no meaningful score) or null (all test positions)"),
    # data: photons and probe
    ("data.nphotons", lambda v, c: 0 < v <= 1e15, "must be in (0, 1e15] counts per pattern (e.g. data.nphotons=1e9)"),
    ("data.probe_scale", lambda v, c: 0 < v <= 1000, "must be in (0, 1000] (default 4)"),
    ("data.probe_defocus", lambda v, c: c.data.probe != "defocused" or abs(v) <= _max_defocus(c.data.N),
     lambda c: f"the probe phase would alias (change by more than pi per pixel): use |data.probe_defocus| <= "
               f"{_max_defocus(c.data.N):.1f} rad at data.N={c.data.N}"),
    # data: the import of a measured file (data=cxi|ptylab_h5)
    ("data.reader.bin", lambda v, c: 1 <= v <= 64,
     "the detector binning factor: must be in 1..64 (1: crop data.N pixels around the zero frequency)"),
    ("data.reader.frame_start", _optional(lambda v, c: v >= 0), "must be >= 0 (the first frame used) or null"),
    ("data.reader.frame_stop", _optional(lambda v, c: v >= 1),
     "must be >= 1 (the frame after the last one used) or null (to the end)"),
    ("data.reader.distance", _optional(lambda v, c: v > 0), "must be > 0 m or null (the file's value)"),
    ("data.reader.wavelength", _optional(lambda v, c: v > 0), "must be > 0 m or null (the file's value)"),
    ("data.reader.energy_ev", _optional(lambda v, c: v > 0), "must be > 0 eV or null (the file's value)"),
    ("data.reader.pixel_size", _optional(lambda v, c: v > 0), "must be > 0 m or null (the file's value)"),
    ("data.reader.saturation", _optional(lambda v, c: v > 0),
     "must be > 0 counts or null (the integer dtype's maximum)"),
    # model
    ("model.n_filters_scale", lambda v, c: 1 <= v <= 16, "must be in 1..16 (e.g. model.n_filters_scale=2 or 1.5)"),
    ("model.border_channels", lambda v, c: 0 <= v < _decoder_channels(c),
     "must be >= 0 and below the decoder's last-block channels (32 * model.n_filters_scale at N=64); "
     "0 lets the border branch read them all, PtychoPINN reserves 4"),
    ("model.border_activation", lambda v, c: v in ("decoder", "swish"),
     "choose decoder (the central sigmoid / pi*tanh) or swish (PtychoPINN's border branch)"),
    ("model.nll_weight", lambda v, c: v >= 0, "loss weights must be >= 0"),
    ("model.mae_weight", lambda v, c: v >= 0, "loss weights must be >= 0"),
    ("model.tv_weight", lambda v, c: v >= 0, "loss weights must be >= 0"),
    ("model.realspace_weight", lambda v, c: v >= 0, "loss weights must be >= 0"),
    ("model.iterative.iterations", lambda v, c: 1 <= v <= 1_000_000, "must be in 1..1000000 (e.g. 100)"),
    ("model.iterative.batch_size", lambda v, c: 1 <= v <= 65536, "must be in 1..65536 (e.g. 10)"),
    ("model.iterative.beta_object", lambda v, c: 0 < v <= 1, "a step size: must be in (0, 1] (e.g. 0.25)"),
    ("model.iterative.beta_probe", lambda v, c: 0 < v <= 1, "a step size: must be in (0, 1] (e.g. 0.25)"),
    ("model.iterative.timeout_s", _optional(lambda v, c: v > 0), "must be > 0 s or null (no limit)"),
    # training
    ("train.epochs", lambda v, c: 1 <= v <= 100_000, "must be in 1..100000 (e.g. train.epochs=50)"),
    ("train.batch_size", lambda v, c: 1 <= v <= 65536, "must be in 1..65536 (e.g. 16)"),
    ("train.learning_rate", lambda v, c: 0 < v <= 1, "must be in (0, 1] (e.g. 1e-3)"),
    ("train.warmup_epochs", lambda v, c: 0 <= v <= c.train.epochs,
     "must be between 0 (off) and train.epochs (e.g. 1)"),
    ("train.lr_factor", lambda v, c: 0 < v < 1, "multiplies the learning rate on a plateau: must be in (0, 1) "
     "(e.g. 0.5)"),
    ("train.lr_patience", lambda v, c: v >= 1, lambda c: f"must be >= 1 ({c.train.patience_unit})"),
    ("train.early_stopping_patience", lambda v, c: v >= 1, lambda c: f"must be >= 1 ({c.train.patience_unit})"),
    ("train.min_lr", lambda v, c: 0 <= v <= 1, "must be in [0, 1] (e.g. 1e-4)"),
    ("train.val_fraction", lambda v, c: 0 < v < 0.5, "must be in (0, 0.5): every mode keeps a validation split"),
    # evaluation
    ("eval.crop", _optional(lambda v, c: 1 <= v <= c.data.N), lambda c: f"must be in 1..data.N={c.data.N} or null"),
    ("eval.upsample_factor", lambda v, c: 1 <= v <= 1000,
     "registration precision is 1/upsample_factor px: must be in 1..1000 (e.g. 50)"),
    ("eval.trim_px", lambda v, c: 0 <= v <= c.data.N // 2,
     lambda c: f"must be in 0..data.N/2={c.data.N // 2} (e.g. 2)"),
    ("eval.batch_size", lambda v, c: 1 <= v <= 65536, "must be in 1..65536 (e.g. 64)"),
    ("eval.reference_iterations", lambda v, c: 1 <= v <= 1_000_000, "must be in 1..1000000 (default 300)"),
    ("eval.min_coverage", lambda v, c: 0 < v <= 1,
     "the fraction of the test object the scan must cover to be scored: must be in (0, 1] (e.g. 0.5)"),
    # hardware
    ("hardware.intra_op_threads", lambda v, c: 0 <= v <= 4096, "must be in 0..4096 (0: TensorFlow's default)"),
    ("hardware.inter_op_threads", lambda v, c: 0 <= v <= 4096, "must be in 0..4096 (0: TensorFlow's default)"),
    ("hardware.retries", lambda v, c: 0 <= v <= 100, "must be in 0..100 (e.g. 2)"),
)


def _rules(c: Any) -> Iterator[tuple[str, Any, str]]:
    """Rules that join several keys: ``(key, value, fix)`` of each one broken, in order."""
    d, m, t = c.data, c.model, c.train
    if d.gridsize ** 2 > d.k_neighbors + 1:
        yield ("data.gridsize", d.gridsize,
               f"gridsize**2={d.gridsize ** 2} patterns per sample need data.k_neighbors >= {d.gridsize ** 2 - 1}; "
               f"set data.k_neighbors={d.gridsize ** 2 - 1} or use data.gridsize=1 or 2")
    if d.grouping == "block" and d.kind == "simulate" and d.scan != "grid":
        yield "data.grouping", d.grouping, "block needs a grid scan (data.scan=grid); use data.grouping=knn"
    if d.n_train_objects > 1 and d.kind != "simulate":
        yield ("data.n_train_objects", d.n_train_objects,
               "more than one training object needs simulated data (data.kind=simulate); with data=npz "
               "put every scan in data.train_path, or set data.n_train_objects=1")
    if d.kind in FILE_KINDS:
        suffix = {"npz": "npz", "cxi": "cxi"}.get(d.kind, "h5")
        for key in ("train_path", "test_path"):
            if getattr(d, key) is None and not (key == "train_path" and (m.name not in NETWORK_MODELS
                                                                         or d.train_on == "test")):
                yield f"data.{key}", None, f"data={d.kind} needs it: set data.{key}=/path/to/file.{suffix}"
    if d.reader.wavelength is not None and d.reader.energy_ev is not None:
        yield ("data.reader.energy_ev", d.reader.energy_ev, "give the photon energy or the wavelength, not both: "
               "set data.reader.energy_ev=null or data.reader.wavelength=null")
    if d.reader.frame_start is not None and d.reader.frame_stop is not None \
            and d.reader.frame_stop <= d.reader.frame_start:
        yield ("data.reader.frame_stop", d.reader.frame_stop, f"selects no frame: set it above "
               f"data.reader.frame_start={d.reader.frame_start}")
    if d.train_on == "test" and m.name == "baseline":
        yield ("data.train_on", d.train_on, "model=baseline needs labels, not the scan it reconstructs: use "
               "data.train_on=train, or model=pinn to train on the test scan itself")
    if d.probe == "file" and not d.probe_path:
        yield ("data.probe_path", d.probe_path,
               "data.probe=file needs a probe file: set data.probe_path=/path/with/probeGuess.npz")
    if m.name == "pinn" and m.nll_weight == 0 and m.mae_weight == 0:
        yield "model.nll_weight", 0, "the PINN needs a data term: set model.nll_weight>0 or model.mae_weight>0"
    if t.lr_schedule == "cosine" and t.min_lr > t.learning_rate:
        yield ("train.min_lr", t.min_lr, f"is where train.lr_schedule=cosine ends: set it at most "
               f"train.learning_rate={t.learning_rate} (e.g. train.min_lr=0)")
    if t.patience_unit == "steps":
        for key, example in (("lr_patience", 230), ("early_stopping_patience", 700)):
            if getattr(t, key) < MIN_PATIENCE_STEPS:
                yield (f"train.{key}", getattr(t, key), f"counts optimizer steps with train.patience_unit=steps; "
                       f"set it in steps too (>= {MIN_PATIENCE_STEPS}, e.g. train.{key}={example})")
    if d.kind == "simulate":
        yield from _scan_rules(c)


def _scan_rules(c: Any) -> Iterator[tuple[str, Any, str]]:
    """Enough simulated positions for the training set and for a meaningful test score."""
    d = c.data
    for which in ("train", "test"):
        size = simulated_positions(c, which) * d.N ** 2 * 12  # bytes: float32 amplitude + complex64 patch
        if size > MAX_SIMULATED_BYTES:
            key = "data.n_random_positions" if d.scan == "random" else f"data.{which}_stride"
            fix = "fewer data.n_random_positions" if d.scan == "random" else f"a larger data.{which}_stride"
            fix += ", fewer data.n_train_objects" if which == "train" and d.n_train_objects > 1 else ""
            yield (key, _get(c, key), f"the {which} scan would hold {simulated_positions(c, which):,} simulated "
                   f"patterns of {d.N}x{d.N} px ({size / 2 ** 30:.0f} GiB, more than "
                   f"{MAX_SIMULATED_BYTES / 2 ** 30:.0f} GiB); use {fix} or a smaller data.object_size")
    n_test = simulated_positions(c, "test")
    scored = n_test // d.gridsize ** 2 if _block_test_layout(c, "test") else n_test  # a block is one sample
    if scored < MIN_TEST_POSITIONS:
        key, value = ("data.n_random_positions", d.n_random_positions) if d.scan == "random" else \
            ("data.test_stride", d.test_stride)
        yield (key, value, f"gives only {scored} test sample(s) on a {d.object_size} px object with "
               f"{d.N} px patches; at least {MIN_TEST_POSITIONS} are needed for a meaningful score: use a smaller "
               "data.test_stride or a larger data.object_size")
    elif d.n_test is not None and d.n_test > n_test:
        yield ("data.n_test", d.n_test, f"the test scan has only {n_test} positions; use data.n_test<={n_test} "
               "or data.n_test=null (all)")
    n_train = simulated_positions(c, "train")
    if d.n_train > n_train:
        yield ("data.n_train", d.n_train, f"the training scan has only {n_train} positions (one sample per "
               f"centre); use data.n_train<={n_train}, more objects (data.n_train_objects) or a denser scan "
               "(smaller data.train_stride, larger data.object_size or more data.n_random_positions)")


def _floats(node: Any, path: str = "") -> Iterator[tuple[str, float]]:
    """(dotted key, value) of every float in a config's plain containers."""
    for key, value in _walk(node, path):
        if isinstance(value, float):
            yield key, value


def check_values(cfg: Any) -> None:
    """Every value in its range (:data:`RANGES`), every float finite, and the rules that join keys.

    Raises
    ------
    ConfigError
        ``key=value is invalid: <fix>`` for the first value out of range.
    """
    plain = as_plain(cfg)
    job = {k: v for k, v in plain.items() if k != "hydra"} if isinstance(plain, dict) else {}
    for key, value in _floats(job):
        if not math.isfinite(value):
            raise ConfigError(f"{key}={value} is invalid: must be a finite number")
    for key, ok, fix in RANGES:
        value = _get(cfg, key)
        if not ok(value, cfg):
            raise ConfigError(f"{key}={value!r} is invalid: {fix(cfg) if callable(fix) else fix}")
    for key, value, fix in _rules(cfg):
        raise ConfigError(f"{key}={value!r} is invalid: {fix}")


# --------------------------------------------------------------------------- _target_ allow-list
def _walk(node: Any, path: str = ""):
    """(dotted key, value) of every entry of nested dicts/lists (plain containers or OmegaConf nodes)."""
    items = node.items() if hasattr(node, "items") else enumerate(node) if isinstance(node, (list, tuple)) else ()
    for key, value in items:
        here = f"{path}.{key}" if path else str(key)
        yield here, value
        if hasattr(value, "items") or isinstance(value, (list, tuple)):
            yield from _walk(value, here)


def as_plain(cfg: Any) -> Any:
    """Plain containers of a (possibly unresolved) OmegaConf node; other objects unchanged."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        return cfg
    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=False)
    return cfg


def check_targets(job_cfg: Any) -> None:
    """Refuse any ``_target_`` (anywhere in the job config) outside :data:`TARGET_ALLOW_PREFIXES`.

    A job config never needs ``_target_``; one that names e.g. ``os.system`` (``+foo._target_=os.system``)
    is rejected before anything could instantiate it.
    """
    for key, value in _walk(as_plain(job_cfg)):
        if key.split(".")[-1] == "_target_" and not str(value).startswith(TARGET_ALLOW_PREFIXES):
            raise ConfigError(f"{key}={value!r} is invalid: only targets under "
                              f"{', '.join(p.rstrip('.') for p in TARGET_ALLOW_PREFIXES)} may be instantiated; "
                              "remove this override")


# --------------------------------------------------------------------------- data files (headers only)
def job_data_files(cfg: Any):
    """``(key, path)`` of each data file a job reads: ``test_path``, and ``train_path`` for the networks."""
    needs_train = cfg.model.name in NETWORK_MODELS
    for key in ("train_path", "test_path"):
        path = getattr(cfg.data, key)
        if path is not None and (key == "test_path" or needs_train):
            yield key, path


def check_data_files(cfg: Any) -> None:
    """``data=npz``: check each file's path and contract from its array headers (no data read).

    Cheap enough for the parent process, so a missing, corrupt or mis-shaped file fails in about a
    second, before any job process or TensorFlow starts. Value checks (NaN, negative amplitude) run
    when the job loads the data.
    """
    d = cfg.data
    if d.kind in MEASURED_FORMATS:
        check_measured_files(cfg)
        return
    if d.kind != "npz":
        return
    from ptycho_exp.data.npz import DataContractError, contract_header

    for key, path in job_data_files(cfg):
        try:
            head = contract_header(str(path))
        except DataContractError as exc:
            raise ConfigError(f"data.{key}={str(path)!r} is invalid: {exc}") from None
        if head["N"] != d.N:
            raise ConfigError(f"data.N={d.N} is invalid: data.{key}={str(path)!r} holds {head['N']}x{head['N']} "
                              f"patterns; set data.N={head['N']}")
        if key == "train_path" and d.train_on != "test" and d.n_train > head["M"]:
            raise ConfigError(f"data.n_train={d.n_train} is invalid: data.train_path={str(path)!r} holds only "
                              f"{head['M']} patterns; use data.n_train<={head['M']}")
        if key == "test_path" and head["M"] < MIN_TEST_POSITIONS:
            raise ConfigError(f"data.test_path={str(path)!r} is invalid: it holds {head['M']} pattern(s); at least "
                              f"{MIN_TEST_POSITIONS} are needed for a meaningful score: use a larger test scan")
        if key == "test_path" and d.n_test is not None and d.n_test > head["M"]:
            raise ConfigError(f"data.n_test={d.n_test} is invalid: data.test_path={str(path)!r} holds only "
                              f"{head['M']} patterns; use data.n_test<={head['M']} or data.n_test=null")
        if key == "test_path":  # every test window on objectGuess (reads only the coordinates)
            check_npz_scan_on_object(str(path), head)
    check_iterative_memory(cfg)


def iterative_scans(cfg: Any) -> Iterator[tuple[str, int]]:
    """``(data key, patterns)`` of each data file a PtyLab reconstruction of this job reads in memory.

    The arm ``model=ptylab`` reads the test scan's used positions (``data.n_test`` groups at most), the
    iterative reference (``eval.reference=iterative``, or a test file without ``objectGuess``) the whole
    test scan, and ``data.labels=iterative`` the training scan. Only headers are read.
    """
    from ptycho_exp.data.npz import DataContractError, contract_header

    d = cfg.data
    wanted: list[tuple[str, str]] = []
    if cfg.model.name == "ptylab":
        wanted.append(("test_path", "arm"))
    if cfg.model.name == "baseline" and str(d.labels) == "iterative":
        wanted.append(("test_path" if d.train_on == "test" else "train_path", "labels"))
    wanted.append(("test_path", "reference"))
    for key, why in wanted:
        path = getattr(d, key)
        if path is None:
            continue
        try:
            head = contract_header(str(path))
        except DataContractError:
            continue  # reported by check_data_files
        if why == "reference" and cfg.eval.reference != "iterative" and "objectGuess" in head["arrays"]:
            continue
        m = int(head["M"])
        if why == "arm" and d.n_test is not None:
            m = min(m, int(d.n_test) * int(d.gridsize) ** 2)
        yield key, m


def check_iterative_memory(cfg: Any, available: int | None = None) -> None:
    """``data=npz``: refuse a job whose PtyLab reconstruction would not fit in memory, before it runs.

    Parameters
    ----------
    cfg : the job config
    available : bytes of memory available (default: ``MemAvailable`` now, see
        :func:`ptycho_exp.iterative.memory.available_memory_bytes`)

    Raises
    ------
    ConfigError
        One line naming the file, the estimate, the available memory and the fix.
    """
    if cfg.data.kind != "npz":
        return
    from ptycho_exp.iterative.memory import available_memory_bytes, engine_memory_shortfall

    available = available_memory_bytes() if available is None else available
    for key, m in iterative_scans(cfg):
        reason = engine_memory_shortfall(f"data.{key}={str(getattr(cfg.data, key))!r}", m, int(cfg.data.N),
                                         available)
        if reason:
            raise ConfigError(reason)


def check_measured_files(cfg: Any) -> None:
    """``data=cxi|ptylab_h5``: each file opened and checked as the import will check it (format, positions,
    geometry in the file or in ``data.reader.*``, mask, probe, frame range), reading no frame.

    A missing geometry fact names the ``data.reader`` key that supplies it; the pattern counts are compared
    with ``data.n_train`` / ``data.n_test``.
    """
    d = cfg.data
    from ptycho_exp.data.npz import DataContractError
    from ptycho_exp.data.readers.convert import CONFIG_NAMES, check_file, options_from_config

    opts = options_from_config(as_plain(d.reader), d.N)
    for key, path in job_data_files(cfg):
        try:
            m = check_file(str(path), MEASURED_FORMATS[d.kind], opts, CONFIG_NAMES)
        except (DataContractError, ValueError, OSError) as exc:
            raise ConfigError(f"data.{key}={str(path)!r} is invalid: {exc}") from None
        if key == "train_path" and d.train_on != "test" and d.n_train > m:
            raise ConfigError(f"data.n_train={d.n_train} is invalid: data.train_path={str(path)!r} gives only "
                              f"{m} patterns; use data.n_train<={m}")
        if key == "test_path" and m < MIN_TEST_POSITIONS:
            raise ConfigError(f"data.test_path={str(path)!r} is invalid: it gives {m} pattern(s); at least "
                              f"{MIN_TEST_POSITIONS} are needed for a meaningful score: use a larger test scan")
        if key == "test_path" and d.n_test is not None and d.n_test > m:
            raise ConfigError(f"data.n_test={d.n_test} is invalid: data.test_path={str(path)!r} gives only "
                              f"{m} patterns; use data.n_test<={m} or data.n_test=null")


# --------------------------------------------------------------------------- test windows on the object
# A test window may stick out of the object by this much (px): sub-pixel positions at the edge.
OFF_OBJECT_TOLERANCE_PX = 1.0


def window_extent(positions: Any, N: int) -> tuple[float, float, float, float]:
    """``(y0, y1, x0, x1)``: the object coordinates spanned by the N×N windows centred at ``positions``.

    A window centred at ``(y, x)`` covers ``[y - N/2, y + N/2)`` × ``[x - N/2, x + N/2)``.
    """
    import numpy as np

    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
    h = N / 2.0
    return (float(pos[:, 0].min() - h), float(pos[:, 0].max() + h),
            float(pos[:, 1].min() - h), float(pos[:, 1].max() + h))


def check_scan_on_object(positions: Any, N: int, object_shape: tuple, where: str,
                         origin: tuple = (0.0, 0.0), what: str = "objectGuess") -> None:
    """Raise :class:`ConfigError` when a test window is not on the object it is scored against.

    Parameters
    ----------
    positions : (M, 2) [y, x] window centres (scan coordinates)
    N : window side (px)
    object_shape : (H, W) of the object (ground truth or iterative reference)
    where : what to name in the message, e.g. ``"data.test_path='/d/test.npz'"``
    origin : scan coordinate of the object's pixel (0, 0)
    what : the object's name in the message

    Every window must lie within the object, up to :data:`OFF_OBJECT_TOLERANCE_PX`. A window off
    the object would be scored against pixels that are not there (zeros), which can look perfect.
    Non-finite coordinates are left to the loader's value checks.
    """
    import numpy as np

    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
    if pos.size == 0 or not np.all(np.isfinite(pos)):
        return
    y0, y1, x0, x1 = window_extent(pos, N)
    r0, c0 = float(origin[0]), float(origin[1])
    H, W = int(object_shape[0]), int(object_shape[1])
    tol = OFF_OBJECT_TOLERANCE_PX
    if y0 >= r0 - tol and x0 >= c0 - tol and y1 <= r0 + H + tol and x1 <= c0 + W + tol:
        return
    raise ConfigError(f"{where} is invalid: its xcoords/ycoords put test windows ({N}×{N} px) off the object: "
                      f"they span x {x0:g}..{x1:g}, y {y0:g}..{y1:g} px, but {what} ({H}×{W}) covers x "
                      f"{c0:g}..{c0 + W:g}, y {r0:g}..{r0 + H:g}; fix: give xcoords/ycoords as window centres in "
                      f"{what} pixels (N/2 <= x <= W - N/2, N/2 <= y <= H - N/2)")


def check_npz_scan_on_object(path: str, header: dict, key: str = "data.test_path") -> None:
    """:func:`check_scan_on_object` for a contract NPZ file that has an ``objectGuess``, reading only
    ``xcoords``/``ycoords`` and the header (``header``: :func:`ptycho_exp.data.npz.contract_header`)."""
    arrays = header["arrays"]
    if "objectGuess" not in arrays:
        return
    import zipfile

    import numpy as np

    from ptycho_exp.data.h5 import is_h5, read_positions

    try:
        if is_h5(path):
            positions = read_positions(path)
        else:
            with np.load(path, allow_pickle=False) as z:
                positions = np.stack([np.asarray(z["ycoords"], np.float64), np.asarray(z["xcoords"], np.float64)],
                                     axis=1)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return  # a damaged member: the loader names it when the job reads the data
    check_scan_on_object(positions, int(header["N"]), arrays["objectGuess"][0], f"{key}={str(path)!r}")


# --------------------------------------------------------------------------- the device
def visible_gpus(environ: dict | None = None) -> list[str]:
    """The NVIDIA GPUs a job started here would see, found without importing TensorFlow.

    ``CUDA_VISIBLE_DEVICES`` set to ``""`` or ``-1`` hides every GPU; otherwise the GPUs are what
    ``nvidia-smi -L`` lists (or, without it, ``/proc/driver/nvidia/gpus``), narrowed to the ids
    ``CUDA_VISIBLE_DEVICES`` names where it is set.
    """
    env = os.environ if environ is None else environ
    ids = env.get("CUDA_VISIBLE_DEVICES")
    if ids is not None and ids.strip() in ("", "-1"):
        return []
    present: list[str] = []
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], check=False, capture_output=True, text=True, timeout=10).stdout
            present = [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU")]
        except (OSError, subprocess.SubprocessError):
            present = []
    elif os.path.isdir("/proc/driver/nvidia/gpus"):
        present = [str(i) for i, _ in enumerate(sorted(os.listdir("/proc/driver/nvidia/gpus")))]
    if not present or ids is None:
        return present
    return [i.strip() for i in ids.split(",") if i.strip()][:len(present)]


def check_device(cfg: Any, environ: dict | None = None) -> str:
    """The device a job runs on here: ``cpu`` or ``gpu`` (``hardware.device=auto`` picks and logs which).

    Call it where the job will run (a SLURM node, not the login node that submits it).

    Raises
    ------
    ConfigError
        ``hardware.device=gpu`` where no GPU is visible.
    """
    device = cfg.hardware.device
    if device == "cpu":
        return "cpu"
    gpus = visible_gpus(environ)
    if device == "gpu" and not gpus:
        raise ConfigError("hardware.device='gpu' is invalid: no NVIDIA GPU is visible here (nvidia-smi lists none "
                          "or CUDA_VISIBLE_DEVICES hides them); use hardware.device=cpu (or auto), or run on a "
                          "machine with a GPU")
    if device == "auto":
        if gpus:
            log.info("hardware.device=auto: running on the GPU (%d visible)", len(gpus))
        else:
            log.warning("hardware.device=auto: no GPU visible, running on the CPU")
    return "gpu" if gpus else "cpu"
