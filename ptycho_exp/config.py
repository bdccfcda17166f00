"""Structured-config schema for every job, registered in Hydra's ConfigStore.

The dataclasses are the schema and the one home of every default: a typo'd key
or a wrong type is rejected by OmegaConf when Hydra composes the config, and the
YAML files under ``ptycho_exp/conf/`` set only what an option changes from these
defaults (``model=baseline`` sets ``model.name: baseline``). Value ranges that a
type cannot express are checked by :func:`validate` before any work starts;
every error names the key and the fix.
"""
from __future__ import annotations

from dataclasses import MISSING, dataclass, field
from typing import Any, Optional

# Allowed values and ranges live with the checks; re-exported here, where callers have always found them.
from ptycho_exp.validate import (  # noqa: F401
    FAULTS,
    MIN_PATIENCE_STEPS,
    MODEL_NAMES,
    NETWORK_MODELS,
    OBJECT_NAMES,
    PHASE_MODES,
    PROBE_NAMES,
    SCAN_KINDS,
    SKIMAGE_OBJECTS,
    TARGET_ALLOW_PREFIXES,
    ConfigError,
    as_plain,
    check_data_files,
    check_device,
    check_targets,
    check_values,
)


@dataclass
class ReaderConfig:
    """How ``data=cxi`` / ``data=ptylab_h5`` convert a measured file to a contract scan (``data import``'s options).

    Geometry left at None is read from the file; a value here overrides the file's.
    """

    bin: int = 1                        # detector binning factor b: N*b pixels around the zero frequency, b x b summed
    frame_start: Optional[int] = None   # first frame used (Python slice semantics; None: from the first)
    frame_stop: Optional[int] = None    # frame after the last one used (None: to the end)
    distance: Optional[float] = None    # sample-detector distance (m)
    wavelength: Optional[float] = None  # wavelength (m); or energy_ev
    energy_ev: Optional[float] = None   # photon energy (eV)
    pixel_size: Optional[float] = None  # detector pixel size (m)
    saturation: Optional[float] = None  # counts at or above which a pixel is saturated (None: the dtype's maximum)
    mask_good: bool = False             # the file's mask marks good pixels with non-zero values
    probe_path: Optional[str] = None    # NPZ with probeGuess, for files without a probe


@dataclass
class DataConfig:
    kind: str = "simulate"            # simulate | npz | cxi | ptylab_h5
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
    train_path: Optional[str] = None  # file kinds: the training file (contract NPZ/.h5, CXI or PtyLab HDF5)
    test_path: Optional[str] = None   # file kinds: the test file
    k_neighbors: int = 7              # gridsize>1: neighbours considered when grouping
    grouping: str = "knn"             # gridsize>1: knn (C of the k nearest) | block (g x g grid blocks)
    train_on: str = "train"           # train | test: the PINN trains on the scan it reconstructs (self-supervised)
    labels: str = "ground_truth"      # baseline targets: ground_truth | iterative (PtyLab on the training scan)
    reader: ReaderConfig = field(default_factory=ReaderConfig)  # kind=cxi|ptylab_h5: the import's options


@dataclass
class IterativeConfig:
    algorithm: str = "ePIE"           # ptylab: ePIE|rPIE|mPIE ; tike: rpie|lstsq_grad
    iterations: int = 100
    batch_size: int = 10
    beta_object: float = 0.25
    beta_probe: float = 0.25
    probe_refine: bool = True
    position_correction: bool = False  # ptylab: pcPIE position refinement (mPIE-class engine; ePIE update kept)
    noise_model: str = "poisson"
    adaptive_moments: bool = True
    python: Optional[str] = None      # interpreter for the engine worker (tike: .venv-tike/bin/python)
    timeout_s: Optional[float] = None


@dataclass
class ModelConfig:
    name: str = "pinn"                # pinn | baseline | ptylab | tike
    n_filters_scale: float = 2        # width: filters scale x [32, 64, 128] at N=64, rounded (1.5: 48, 96, 192)
    nll_weight: float = 1.0
    mae_weight: float = 0.0
    tv_weight: float = 0.0
    realspace_weight: float = 0.0
    probe_trainable: bool = False
    intensity_scale_trainable: bool = False
    probe_big: bool = False
    # reserve the decoders' last k channels for the probe_big border branch (PtychoPINN reserves 4)
    border_channels: int = 0
    border_activation: str = "decoder"  # decoder (sigmoid / pi*tanh) | swish: the border branch's output
    object_big: bool = True
    align_phase: bool = True          # gridsize>1: align each patch's constant phase to the first before merging
    probe_scaling: str = "auto"       # auto | fit | off: scale the PINN's probe to the normalised patterns
    iterative: IterativeConfig = field(default_factory=IterativeConfig)


@dataclass
class TrainConfig:
    epochs: int = 50
    batch_size: int = 16
    learning_rate: float = 1e-3
    warmup_epochs: float = 1.0        # linear learning-rate warm-up over the first epoch(s) (0: off)
    lr_factor: float = 0.5
    lr_patience: int = 2
    min_lr: float = 1e-4
    early_stopping_patience: int = 6
    # Unit of lr_patience and early_stopping_patience. epochs (docs/CONTRACT.md §5) ties the schedule to the epoch size:
    # 2 epochs are 58 steps at n_train=512 but 230 at 2,048. For data-efficiency curves use steps, e.g.
    # train.patience_unit=steps train.lr_patience=230 train.early_stopping_patience=700
    patience_unit: str = "epochs"     # epochs | steps
    # plateau (docs/CONTRACT.md §5): ReduceLROnPlateau(val_loss, lr_factor, lr_patience, min_lr).
    # cosine: after the warm-up the rate falls along a half cosine to min_lr at the last planned step.
    lr_schedule: str = "plateau"      # plateau | cosine
    val_fraction: float = 0.1
    # auto: mixed bfloat16 on CPUs with native bf16 (~1.9x faster, same quality), else float32
    precision: str = "auto"           # auto | float32 | mixed
    jit_compile: bool = False
    deterministic: bool = True
    verbose: str = "auto"             # auto | quiet | progress
    save_model: bool = True
    tensorboard: bool = True


@dataclass
class EvalConfig:
    crop: Optional[int] = None        # central crop kept when stitching (None: 20 px at N=64, scaled with N)
    upsample_factor: int = 50         # sub-pixel registration precision: 1/upsample_factor px
    trim_px: int = 2                  # border trimmed from both images after registration
    batch_size: int = 64              # inference samples per forward pass: as fast as 256 on CPU, ~600 MB less
    reference: str = "ground_truth"   # ground_truth | iterative
    reference_algorithm: str = "ePIE"  # iterative reference (PtyLab): ePIE (stable on measured data) | mPIE
    reference_iterations: int = 300    # iterations of the iterative reference
    min_coverage: float = 0.5         # fraction of the test object the scan must cover for it to be scored
    phase_sync: bool = False          # networks: align each predicted patch's constant phase with its overlapping
    #                                   neighbours before stitching (evaluate/phase_sync.py); result.json keeps the
    #                                   scores as predicted under phase_sync.as_predicted
    figures: bool = True
    save_recon: bool = True


@dataclass
class HardwareConfig:
    name: str = "local"
    device: str = "cpu"               # cpu | gpu | auto
    isolate: bool = True              # run each job in a child process: TensorFlow state never leaks and a
    #                                   hard crash (OOM kill, segfault) is recorded by the parent
    intra_op_threads: int = 0         # 0: TensorFlow default
    inter_op_threads: int = 0
    retries: int = 0                  # re-run a failed job this many times


@dataclass
class PathsConfig:
    cache_dir: str = "${oc.env:PTYCHO_EXP_CACHE,.cache/ptycho_exp}"  # PTYCHO_EXP_CACHE moves it
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
    objective: Any = "phase_ssim"     # metric(s) returned to sweepers (Optuna); a list for multi-objective
    study_name: str = "default"


def register_configs() -> None:
    """Register the schema in Hydra's ConfigStore (called by the entry point, never at import)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    for group, node in (("model", ModelConfig), ("data", DataConfig), ("train", TrainConfig),
                        ("eval", EvalConfig), ("hardware", HardwareConfig)):
        cs.store(group=group, name=f"{group}_schema", node=node)


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

    plain = as_plain(job_cfg)
    if isinstance(plain, dict):
        visit(Config, plain, "")


def validate(cfg: Any) -> None:
    """Check a composed config; raise :class:`ConfigError` naming the key and the fix.

    Order: ``_target_`` allow-list, unknown keys, value ranges (:data:`ptycho_exp.validate.RANGES`), then
    (``data=npz``) the files' headers -- all before any job process or TensorFlow starts. Whether the
    device exists is :func:`check_device`, run where the job runs.
    """
    check_targets(cfg)
    check_known_keys(cfg)
    check_values(cfg)
    check_data_files(cfg)
