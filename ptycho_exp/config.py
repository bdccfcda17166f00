"""Structured-config schema for every job, registered in Hydra's ConfigStore.

The dataclasses are the schema: a typo'd key or a wrong type is rejected by
OmegaConf when Hydra composes the config. Value ranges that a type cannot
express are checked by :func:`validate` before any work starts; every error
names the key and the fix.
"""
from __future__ import annotations

from dataclasses import MISSING, dataclass, field
from typing import Any, Optional

OBJECT_NAMES = ("lines", "grf", "points", "diagonals")
SKIMAGE_OBJECTS = ("camera", "astronaut", "brick", "grass", "gravel", "moon", "text", "coins",
                   "cell", "checkerboard", "shepp_logan_phantom")
PROBE_NAMES = ("ideal_disk", "gaussian", "defocused", "file")
PHASE_MODES = ("none", "tanh", "independent")
SCAN_KINDS = ("grid", "random")
MODEL_NAMES = ("pinn", "baseline", "ptylab", "tike")
NETWORK_MODELS = ("pinn", "baseline")
FAULTS = ("none", "raise", "exit", "sleep", "oom")  # testing hook (config key ``fault``)
MIN_PATIENCE_STEPS = 20  # a smaller patience with train.patience_unit=steps is an epoch count left over


class ConfigError(ValueError):
    """A configuration value is invalid. The message names the key and the fix."""


@dataclass
class DataConfig:
    kind: str = "simulate"            # simulate | npz
    object: str = "lines"             # lines|grf|points|diagonals|<skimage image name>
    object_phase: str = "tanh"        # none | tanh | independent
    object_size: int = 392            # S: side of each simulated object (px)
    N: int = 64                       # patch / diffraction size (px), power of two
    gridsize: int = 1                 # g: g*g neighbouring patterns per sample
    nphotons: float = 1e9             # mean total counts per pattern
    noise: bool = True                # Poisson noise on/off
    n_train: int = 512                # training samples (groups when gridsize>1)
    n_train_objects: int = 1          # independent simulated training objects; samples drawn over all
    n_test: Optional[int] = None      # test positions used (None: all of the test scan)
    probe: str = "ideal_disk"         # ideal_disk | gaussian | defocused | file
    probe_path: Optional[str] = None  # NPZ with probeGuess (probe=file)
    probe_scale: float = 4.0
    probe_defocus: float = 0.0        # quadratic phase strength (rad at the disk edge) for probe=defocused
    scan: str = "grid"                # grid | random
    train_stride: float = 4.0         # grid step of the training scan (px) = outer_offset_train / 2
    test_stride: float = 10.0         # grid step of the test scan (px)
    n_random_positions: int = 4096    # positions per object for scan=random
    jitter: float = 0.0               # std of random position jitter (px)
    train_seed: int = 0               # seed of the training object and its noise
    test_seed: int = 12345            # seed of the held-out test object (fixed across arms)
    train_path: Optional[str] = None  # kind=npz: contract NPZ for training
    test_path: Optional[str] = None   # kind=npz: contract NPZ for testing
    k_neighbors: int = 7              # gridsize>1: neighbours considered when grouping
    grouping: str = "knn"             # gridsize>1: knn (C of the k nearest) | block (g x g grid blocks)
    train_on: str = "train"           # train | test: the PINN trains on the scan it reconstructs (self-supervised)
    labels: str = "ground_truth"      # baseline targets: ground_truth | iterative (PtyLab on the training scan)


@dataclass
class IterativeConfig:
    algorithm: str = "ePIE"           # ptylab: ePIE|mPIE ; tike: rpie|lstsq_grad
    iterations: int = 100
    batch_size: int = 10
    beta_object: float = 0.25
    beta_probe: float = 0.25
    probe_refine: bool = True
    noise_model: str = "poisson"
    adaptive_moments: bool = True
    python: Optional[str] = None      # interpreter for the engine worker (tike: .venv-tike/bin/python)
    timeout_s: Optional[float] = None


@dataclass
class ModelConfig:
    name: str = "pinn"                # pinn | baseline | ptylab | tike
    n_filters_scale: int = 2
    nll_weight: float = 1.0
    mae_weight: float = 0.0
    tv_weight: float = 0.0
    realspace_weight: float = 0.0
    probe_trainable: bool = False
    intensity_scale_trainable: bool = False
    probe_big: bool = False
    object_big: bool = True
    align_phase: bool = True          # gridsize>1: align each patch's constant phase to the first before merging
    probe_scaling: str = "auto"       # auto | fit | off: scale the PINN's probe to the normalised patterns
    iterative: IterativeConfig = field(default_factory=IterativeConfig)


@dataclass
class TrainConfig:
    epochs: int = 50
    batch_size: int = 16
    learning_rate: float = 1e-3
    warmup_epochs: float = 1.0        # linear learning-rate warm-up (epochs; 0: off)
    lr_factor: float = 0.5
    lr_patience: int = 2
    min_lr: float = 1e-4
    early_stopping_patience: int = 6
    patience_unit: str = "epochs"     # epochs | steps: unit of lr_patience and early_stopping_patience
    lr_schedule: str = "plateau"      # plateau (SPEC §5: ReduceLROnPlateau) | cosine (to min_lr at the last epoch)
    val_fraction: float = 0.1
    precision: str = "auto"           # auto | float32 | mixed (auto: bfloat16 on CPUs with native bf16)
    jit_compile: bool = False
    deterministic: bool = True
    verbose: str = "auto"             # auto | quiet | progress
    save_model: bool = True
    tensorboard: bool = True


@dataclass
class EvalConfig:
    crop: Optional[int] = None        # central crop kept when stitching (None: 20 px at N=64, scaled)
    upsample_factor: int = 50
    trim_px: int = 2
    batch_size: int = 64              # inference samples per forward pass (memory; as fast as 256 on CPU)
    reference: str = "ground_truth"   # ground_truth | iterative
    reference_algorithm: str = "mPIE"  # iterative reference (PtyLab): ePIE | mPIE
    reference_iterations: int = 300    # iterations of the iterative reference
    figures: bool = True
    save_recon: bool = True


@dataclass
class HardwareConfig:
    name: str = "local"
    device: str = "cpu"               # cpu | gpu | auto
    isolate: bool = True              # run each job in a child process (survives hard crashes)
    intra_op_threads: int = 0         # 0: TensorFlow default
    inter_op_threads: int = 0
    retries: int = 0                  # re-run a failed job this many times


@dataclass
class PathsConfig:
    cache_dir: str = ".cache/ptycho_exp"
    output_dir: str = "${hydra:runtime.output_dir}"


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    seed: int = 1
    tag: str = ""
    fault: str = "none"               # testing only: none | raise | exit | sleep | oom
    objective: Any = None             # metric key(s) returned to sweepers (str or list)
    study_name: str = "default"


def register_configs() -> None:
    """Register the schema in Hydra's ConfigStore (called by the entry point, never at import)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    for group, node in (("model", ModelConfig), ("data", DataConfig), ("train", TrainConfig),
                        ("eval", EvalConfig), ("hardware", HardwareConfig)):
        cs.store(group=group, name=f"{group}_schema", node=node)


def _is_pow2(n: int) -> bool:
    return n > 0 and (n & (n - 1)) == 0


# Hydra ``_target_`` prefixes a config may name: this package and the libraries it wires in
# (Hydra's plugins, Optuna samplers/pruners, submitit). Anything else is refused before it can run.
TARGET_ALLOW_PREFIXES = ("ptycho_exp.", "hydra_plugins.", "hydra._internal.core_plugins.",
                         "optuna.samplers.", "optuna.pruners.", "submitit.")


def _walk(node: Any, path: str = ""):
    """(dotted key, value) of every entry of nested dicts/lists (plain containers or OmegaConf nodes)."""
    items = node.items() if hasattr(node, "items") else enumerate(node) if isinstance(node, (list, tuple)) else ()
    for key, value in items:
        here = f"{path}.{key}" if path else str(key)
        yield here, value
        if hasattr(value, "items") or isinstance(value, (list, tuple)):
            yield from _walk(value, here)


def check_targets(job_cfg: Any) -> None:
    """Refuse any ``_target_`` (anywhere in the job config) outside :data:`TARGET_ALLOW_PREFIXES`.

    A job config never needs ``_target_``; one that names e.g. ``os.system`` (``+foo._target_=os.system``)
    is rejected before anything could instantiate it.
    """
    for key, value in _walk(_plain(job_cfg)):
        if key.split(".")[-1] == "_target_" and not str(value).startswith(TARGET_ALLOW_PREFIXES):
            raise ConfigError(f"{key}={value!r} is invalid: only targets under "
                              f"{', '.join(p.rstrip('.') for p in TARGET_ALLOW_PREFIXES)} may be instantiated; "
                              "remove this override")


def _plain(cfg: Any) -> Any:
    """Plain containers of a (possibly unresolved) OmegaConf node; other objects unchanged."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        return cfg
    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=False)
    return cfg


def check_known_keys(job_cfg: Any) -> None:
    """Refuse keys the schema does not know (``+data.foo=1`` gets past Hydra's struct check)."""
    from dataclasses import fields, is_dataclass

    def visit(schema: Any, node: Any, path: str) -> None:
        known = {f.name: f for f in fields(schema)}
        for key in node:
            if path == "" and key == "hydra":
                continue
            here = f"{path}.{key}" if path else str(key)
            if key not in known:
                close = [k for k in known if k.lower() == str(key).lower() or k.startswith(str(key)[:3])]
                hint = f" (did you mean {path + '.' if path else ''}{close[0]}?)" if close else ""
                raise ConfigError(f"{here} is not a known key{hint}: remove it or fix its spelling "
                                  "(`python -m ptycho_exp --cfg job` lists every key)")
            sub = known[key].default_factory
            if sub is not MISSING and is_dataclass(sub) and isinstance(node[key], dict):
                visit(sub, node[key], here)

    plain = _plain(job_cfg)
    if isinstance(plain, dict):
        visit(Config, plain, "")


def check_data_files(cfg: Any) -> None:
    """``data=npz``: check each file's path and contract from its array headers (no data read).

    Cheap enough for the parent process, so a missing, corrupt or mis-shaped file fails in about a
    second, before any job process or TensorFlow starts. Value checks (NaN, negative amplitude) run
    when the job loads the data.
    """
    d = cfg.data
    if d.kind != "npz":
        return
    from ptycho_exp.data.npz import DataContractError, contract_header

    needs_train = cfg.model.name in NETWORK_MODELS
    for key in ("train_path", "test_path"):
        path = getattr(d, key)
        if path is None or (key == "train_path" and not needs_train):
            continue
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
        if key == "test_path" and d.n_test is not None and d.n_test > head["M"]:
            raise ConfigError(f"data.n_test={d.n_test} is invalid: data.test_path={str(path)!r} holds only "
                              f"{head['M']} patterns; use data.n_test<={head['M']} or data.n_test=null")


def validate(cfg: Any) -> None:
    """Check a composed config; raise :class:`ConfigError` naming the key and the fix.

    Order: ``_target_`` allow-list, unknown keys, value ranges, then (``data=npz``) the files'
    headers -- all before any job process or TensorFlow starts.
    """
    check_targets(cfg)
    check_known_keys(cfg)
    _validate_values(cfg)
    check_data_files(cfg)


def _validate_values(cfg: Any) -> None:
    d, m, t, e = cfg.data, cfg.model, cfg.train, cfg.eval

    def fail(key: str, value: Any, fix: str) -> None:
        raise ConfigError(f"{key}={value!r} is invalid: {fix}")

    if m.name not in MODEL_NAMES:
        fail("model.name", m.name, f"choose one of {', '.join(MODEL_NAMES)} (e.g. model=pinn)")
    if d.kind not in ("simulate", "npz"):
        fail("data.kind", d.kind, "choose simulate or npz (e.g. data=lines or data=npz)")
    if not _is_pow2(d.N) or d.N < 16:
        fail("data.N", d.N, "must be a power of two >= 16 (e.g. data.N=64)")
    if d.gridsize < 1:
        fail("data.gridsize", d.gridsize, "must be >= 1 (1 or 2 are usual)")
    if d.gridsize > 4 or d.gridsize ** 2 > d.k_neighbors + 1:
        fail("data.gridsize", d.gridsize,
             f"gridsize**2={d.gridsize ** 2} patterns per sample need gridsize <= 4 and data.k_neighbors >= "
             f"{d.gridsize ** 2 - 1}; set data.k_neighbors={max(d.gridsize ** 2 - 1, d.k_neighbors)} or use "
             "data.gridsize=1 or 2")
    if d.grouping not in ("knn", "block"):
        fail("data.grouping", d.grouping, "choose knn (C of the k nearest neighbours, any scan) or block "
             "(g x g blocks of a grid scan, PtychoPINN's layout)")
    if d.grouping == "block" and d.kind == "simulate" and d.scan != "grid":
        fail("data.grouping", d.grouping, "block needs a grid scan (data.scan=grid); use data.grouping=knn")
    if not d.nphotons > 0:
        fail("data.nphotons", d.nphotons, "must be > 0 (e.g. data.nphotons=1e9)")
    if d.n_train <= 0:
        fail("data.n_train", d.n_train, "must be > 0 (e.g. data.n_train=512)")
    if d.n_train_objects < 1:
        fail("data.n_train_objects", d.n_train_objects, "must be >= 1 (e.g. data.n_train_objects=2)")
    if d.n_train_objects > 1 and d.kind != "simulate":
        fail("data.n_train_objects", d.n_train_objects,
             "more than one training object needs simulated data (data.kind=simulate); with data=npz "
             "put every scan in data.train_path, or set data.n_train_objects=1")
    if d.n_test is not None and d.n_test <= 0:
        fail("data.n_test", d.n_test, "must be > 0 or null (all test positions)")
    if d.kind == "simulate":
        if d.object not in OBJECT_NAMES + SKIMAGE_OBJECTS:
            fail("data.object", d.object, f"choose one of {', '.join(OBJECT_NAMES + SKIMAGE_OBJECTS)}")
        if d.object_size < 2 * d.N:
            fail("data.object_size", d.object_size, f"must be >= 2*data.N = {2 * d.N}")
    else:
        for key in ("train_path", "test_path"):
            if getattr(d, key) is None and not (key == "train_path" and (m.name in ("ptylab", "tike")
                                                                         or d.train_on == "test")):
                fail(f"data.{key}", None, f"data=npz needs it: set data.{key}=/path/to/file.npz")
    if d.train_on not in ("train", "test"):
        fail("data.train_on", d.train_on, "choose train (the training scan) or test (self-supervised on the test scan)")
    if d.train_on == "test" and m.name == "baseline":
        fail("data.train_on", d.train_on, "model=baseline needs labels, not the scan it reconstructs: use "
             "data.train_on=train, or model=pinn to train on the test scan itself")
    if d.labels not in ("ground_truth", "iterative"):
        fail("data.labels", d.labels, "choose ground_truth (objectGuess / Y) or iterative (a PtyLab reconstruction "
             "of the training scan)")
    if m.probe_scaling not in ("auto", "fit", "off"):
        fail("model.probe_scaling", m.probe_scaling, "choose auto (fit for data=npz), fit or off")
    if d.object_phase not in PHASE_MODES:
        fail("data.object_phase", d.object_phase, f"choose one of {', '.join(PHASE_MODES)}")
    if d.probe not in PROBE_NAMES:
        fail("data.probe", d.probe, f"choose one of {', '.join(PROBE_NAMES)}")
    if d.probe == "file" and not d.probe_path:
        fail("data.probe_path", d.probe_path,
             "data.probe=file needs a probe file: set data.probe_path=/path/with/probeGuess.npz")
    if d.probe_scale <= 0:
        fail("data.probe_scale", d.probe_scale, "must be > 0 (default 4)")
    if d.scan not in SCAN_KINDS:
        fail("data.scan", d.scan, f"choose one of {', '.join(SCAN_KINDS)}")
    for key in ("train_stride", "test_stride"):
        if getattr(d, key) <= 0:
            fail(f"data.{key}", getattr(d, key), "must be > 0 px (e.g. 4 for training, 10 for test)")
    if d.jitter < 0:
        fail("data.jitter", d.jitter, "must be >= 0 px")
    if d.n_random_positions <= 0:
        fail("data.n_random_positions", d.n_random_positions, "must be > 0")
    if m.n_filters_scale < 1:
        fail("model.n_filters_scale", m.n_filters_scale, "must be >= 1")
    for key in ("nll_weight", "mae_weight", "tv_weight", "realspace_weight"):
        if getattr(m, key) < 0:
            fail(f"model.{key}", getattr(m, key), "loss weights must be >= 0")
    if m.name == "pinn" and m.nll_weight == 0 and m.mae_weight == 0:
        fail("model.nll_weight", 0, "the PINN needs a data term: set model.nll_weight>0 or model.mae_weight>0")
    if m.iterative.iterations <= 0:
        fail("model.iterative.iterations", m.iterative.iterations, "must be > 0")
    if t.epochs <= 0:
        fail("train.epochs", t.epochs, "must be > 0")
    if t.batch_size <= 0:
        fail("train.batch_size", t.batch_size, "must be > 0 (e.g. 16)")
    if not t.learning_rate > 0:
        fail("train.learning_rate", t.learning_rate, "must be > 0 (e.g. 1e-3)")
    if not 0 <= t.warmup_epochs <= t.epochs:
        fail("train.warmup_epochs", t.warmup_epochs, "must be between 0 (off) and train.epochs (e.g. 1)")
    if not 0 < t.val_fraction < 0.5:
        fail("train.val_fraction", t.val_fraction, "must be in (0, 0.5): every mode keeps a validation split")
    if t.lr_schedule not in ("plateau", "cosine"):
        fail("train.lr_schedule", t.lr_schedule, "choose plateau (SPEC §5 default: ReduceLROnPlateau on val_loss) or "
             "cosine (a fixed decay from learning_rate to min_lr over train.epochs)")
    if t.min_lr < 0:
        fail("train.min_lr", t.min_lr, "must be >= 0 (e.g. 1e-4)")
    if t.lr_schedule == "cosine" and t.min_lr > t.learning_rate:
        fail("train.min_lr", t.min_lr, f"is where train.lr_schedule=cosine ends: set it at most "
             f"train.learning_rate={t.learning_rate} (e.g. train.min_lr=0)")
    if t.patience_unit not in ("epochs", "steps"):
        fail("train.patience_unit", t.patience_unit, "choose epochs (SPEC §5 default) or steps (the same schedule "
             "in optimizer steps for every training-set size)")
    for key, example in (("lr_patience", 230), ("early_stopping_patience", 700)):
        if getattr(t, key) < 1:
            fail(f"train.{key}", getattr(t, key), f"must be >= 1 ({t.patience_unit})")
        if t.patience_unit == "steps" and getattr(t, key) < MIN_PATIENCE_STEPS:
            fail(f"train.{key}", getattr(t, key), f"counts optimizer steps with train.patience_unit=steps; "
                 f"set it in steps too (>= {MIN_PATIENCE_STEPS}, e.g. train.{key}={example})")
    if t.precision not in ("auto", "float32", "mixed"):
        fail("train.precision", t.precision, "choose auto, float32 or mixed")
    if t.verbose not in ("auto", "quiet", "progress"):
        fail("train.verbose", t.verbose, "choose auto, quiet or progress")
    if e.crop is not None and not 0 < e.crop <= d.N:
        fail("eval.crop", e.crop, f"must be in 1..data.N={d.N} or null")
    if e.reference not in ("ground_truth", "iterative"):
        fail("eval.reference", e.reference, "choose ground_truth or iterative")
    if cfg.hardware.device not in ("cpu", "gpu", "auto"):
        fail("hardware.device", cfg.hardware.device, "choose cpu, gpu or auto")
    if cfg.hardware.retries < 0:
        fail("hardware.retries", cfg.hardware.retries, "must be >= 0")
    if cfg.fault not in FAULTS:
        fail("fault", cfg.fault, f"testing hook: one of {', '.join(FAULTS)}")
