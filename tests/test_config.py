"""Config schema and validation: typos, types and ranges fail early with the key named; every default
lives in the schema and each YAML option holds only what it changes."""
from __future__ import annotations

import dataclasses
import logging
import math
import time
import typing
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

import ptycho_exp
from ptycho_exp.compose import compose_job_config, compose_many
from ptycho_exp.config import Config, ConfigError, validate

CONF = Path(ptycho_exp.__file__).parent / "conf"
JOB_GROUPS = ("model", "data", "train", "eval", "hardware", "study", "experiment")


def test_default_config_composes_and_validates():
    cfg = compose_job_config([])
    validate(cfg)
    assert cfg.model.name == "pinn" and cfg.data.N == 64 and cfg.data.nphotons == 1e9
    assert cfg.train.batch_size == 16 and cfg.train.learning_rate == 1e-3


@pytest.mark.parametrize("group", ["model=baseline", "model=ptylab", "model=tike", "data=grf", "data=points",
                                   "data=diagonals", "hardware=parallel", "train=fast"])
def test_every_group_option_composes(group):
    validate(compose_job_config([group]))


@pytest.mark.parametrize("override,key", [
    ("data.N=63", "data.N"), ("data.N=8", "data.N"), ("data.gridsize=0", "data.gridsize"),
    ("data.nphotons=0", "data.nphotons"), ("data.nphotons=-5", "data.nphotons"),
    ("data.n_train=0", "data.n_train"), ("data.object=triangles", "data.object"),
    ("data.probe=laser", "data.probe"), ("data.scan=spiral", "data.scan"),
    ("data.object_phase=random", "data.object_phase"), ("train.epochs=0", "train.epochs"),
    ("train.val_fraction=0", "train.val_fraction"), ("train.learning_rate=0", "train.learning_rate"),
    ("train.precision=half", "train.precision"), ("eval.crop=100", "eval.crop"),
    ("data.gridsize=5", "data.gridsize"), ("data.object_size=64", "data.object_size"),
    ("model.nll_weight=-1", "model.nll_weight"), ("data.probe=file", "data.probe_path"),
    ("hardware.device=tpu", "hardware.device"), ("data.n_test=-1", "data.n_test"),
    ("train.patience_unit=batches", "train.patience_unit"), ("train.lr_patience=0", "train.lr_patience"),
    ("train.patience_unit=steps", "train.lr_patience"),  # 2 and 6 are epoch counts, not steps
    ("train.lr_schedule=step", "train.lr_schedule"), ("train.min_lr=-1e-4", "train.min_lr"),
    ("data.n_train_objects=0", "data.n_train_objects"),
    # seeds: NumPy / TensorFlow take 0..2**32-1
    ("seed=-1", "seed"), ("seed=4294967296", "seed"), ("data.train_seed=-1", "data.train_seed"),
    ("data.test_seed=4294967296", "data.test_seed"),
    # data
    ("data.N=2048", "data.N"), ("data.object_size=10000", "data.object_size"),
    ("data.k_neighbors=-3", "data.k_neighbors"),  # its own key, not a gridsize error
    ("data.k_neighbors=0", "data.k_neighbors"), ("data.k_neighbors=65", "data.k_neighbors"),
    ("data.train_stride=0.001", "data.train_stride"), ("data.test_stride=0.25", "data.test_stride"),
    ("data.train_stride=-4", "data.train_stride"), ("data.jitter=-1", "data.jitter"), ("data.jitter=40", "data.jitter"),
    ("data.n_random_positions=0", "data.n_random_positions"), ("data.n_train_objects=101", "data.n_train_objects"),
    ("data.n_test=2", "data.n_test"), ("data.nphotons=1e16", "data.nphotons"),
    ("data.probe_scale=0", "data.probe_scale"),
    ("data.probe=defocused data.probe_defocus=40", "data.probe_defocus"),  # aliases: 17 rad is the limit at N=64
    # too few test positions for a score, too many asked of a scan: computed from the config, nothing simulated
    ("data.test_stride=400", "data.test_stride"),
    ("data.object_size=128 data.n_train=64 data.test_stride=65", "data.test_stride"),
    ("data.scan=random data.n_random_positions=3", "data.n_random_positions"),
    ("data.gridsize=2 data.grouping=block data.test_stride=330", "data.test_stride"),
    ("data.n_test=5000", "data.n_test"), ("data.n_train=100000", "data.n_train"),
    ("data.scan=random data.n_random_positions=100", "data.n_train"),
    # a scan too large to hold in memory (431,649 patterns at a 0.5 px step on the default object)
    ("data.train_stride=0.5", "data.train_stride"), ("data.test_stride=0.5", "data.test_stride"),
    ("data.scan=random data.n_random_positions=1000000", "data.n_random_positions"),
    # model
    ("model.n_filters_scale=0", "model.n_filters_scale"), ("model.n_filters_scale=17", "model.n_filters_scale"),
    ("model.n_filters_scale=0.5", "model.n_filters_scale"),
    ("model.border_channels=-1", "model.border_channels"),
    ("model.n_filters_scale=1 model.border_channels=32", "model.border_channels"),
    ("model.border_activation=tanh", "model.border_activation"),
    ("model.tv_weight=-0.1", "model.tv_weight"), ("model.iterative.iterations=0", "model.iterative.iterations"),
    ("model.iterative.batch_size=0", "model.iterative.batch_size"),
    ("model.iterative.beta_object=0", "model.iterative.beta_object"),
    ("model.iterative.beta_probe=1.5", "model.iterative.beta_probe"),
    ("model.iterative.timeout_s=0", "model.iterative.timeout_s"),
    # training
    ("train.lr_factor=1.5", "train.lr_factor"), ("train.lr_factor=1", "train.lr_factor"),
    ("train.lr_factor=0", "train.lr_factor"), ("train.learning_rate=2", "train.learning_rate"),
    ("train.epochs=100001", "train.epochs"), ("train.batch_size=0", "train.batch_size"),
    ("train.warmup_epochs=60", "train.warmup_epochs"),
    ("train.early_stopping_patience=0", "train.early_stopping_patience"),
    ("train.min_lr=2", "train.min_lr"),
    # evaluation
    ("eval.upsample_factor=0", "eval.upsample_factor"), ("eval.upsample_factor=-3", "eval.upsample_factor"),
    ("eval.upsample_factor=1001", "eval.upsample_factor"), ("eval.crop=0", "eval.crop"),
    ("eval.trim_px=-1", "eval.trim_px"), ("eval.trim_px=33", "eval.trim_px"), ("eval.batch_size=0", "eval.batch_size"),
    ("eval.reference_iterations=0", "eval.reference_iterations"),
    ("eval.reference_algorithm=DM", "eval.reference_algorithm"),
    ("eval.min_coverage=0", "eval.min_coverage"), ("eval.min_coverage=1.5", "eval.min_coverage"),
    # hardware and the rest
    ("hardware.intra_op_threads=-1", "hardware.intra_op_threads"),
    ("hardware.inter_op_threads=5000", "hardware.inter_op_threads"), ("hardware.retries=-1", "hardware.retries"),
    ("fault=boom", "fault"),
])
def test_out_of_range_values_name_the_key(override, key):
    cfg = compose_job_config(override.split())
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    message = str(err.value)
    assert message.startswith(key + "=") and "\n" not in message
    assert any(word in message for word in ("must", "choose", "use ", "set ")), message  # the fix is said


@pytest.mark.parametrize("override", [
    "eval.upsample_factor=1", "train.lr_factor=0.99", "seed=0", "seed=4294967295", "data.test_seed=0",
    "data.N=16 data.object_size=64 data.train_stride=0.5", "data.test_stride=328", "eval.min_coverage=1",
    "eval.min_coverage=0.01",
    "data.k_neighbors=1", "data.probe=defocused data.probe_defocus=-15", "data.probe_defocus=40",
    "data.n_test=4", "data.n_train=6889", "data.jitter=32", "model.iterative.timeout_s=0.5",
    "data.gridsize=2 data.grouping=block", "data.scan=random data.n_random_positions=512",
    "data.object_size=128 data.n_train=64 data.test_stride=32",
])
def test_values_at_the_edges_of_their_range_are_accepted(override):
    """The ranges refuse nonsense, not settings at their limits (data.test_stride=328 leaves 2x2 test positions)."""
    validate(compose_job_config(override.split()))


def _float_keys(schema=Config, prefix=""):
    """Dotted keys of every float field of the schema (Optional[float] too)."""
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            yield from _float_keys(kind, f"{prefix}{f.name}.")
        elif kind is float or float in typing.get_args(kind):
            yield prefix + f.name


def test_an_infinite_learning_rate_is_refused_naming_the_key():
    """train.learning_rate=inf passed (inf > 0) and reached the job as null."""
    with pytest.raises(ConfigError, match=r"^train\.learning_rate=inf is invalid: must be a finite number"):
        validate(compose_job_config(["train.learning_rate=inf"]))


@pytest.fixture(scope="module")
def default_cfg():
    return compose_job_config([])


@pytest.mark.parametrize("key", list(_float_keys()))
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_every_float_key_refuses_inf_and_nan(default_cfg, key, value):
    """No float key takes a non-number (the composed config is typed: the schema says which keys are floats)."""
    cfg = default_cfg.copy()
    OmegaConf.update(cfg, key, value)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert str(err.value).startswith(f"{key}=") and "finite" in str(err.value)


def test_the_float_keys_cover_the_schema():
    assert {"train.learning_rate", "data.nphotons", "eval.min_coverage", "model.iterative.timeout_s"} <= set(
        _float_keys())


@pytest.mark.parametrize("overrides", [
    [], ["study=quick"], ["data.scan=random", "data.n_random_positions=300"], ["data.n_train_objects=3"],
    ["data.gridsize=2", "data.grouping=block"], ["data.gridsize=2", "data.grouping=block", "data.test_stride=7.5"],
    ["data.N=32", "data.object_size=100", "data.train_stride=3.3", "data.test_stride=7"],
])
def test_position_counts_from_the_config_match_the_simulated_scans(overrides):
    """The counts validation uses (no simulation) are those the simulator makes."""
    from ptycho_exp.data.simulate import resolve_data_fields, simulate_positions
    from ptycho_exp.validate import simulated_positions

    cfg = compose_job_config(overrides)
    fields = resolve_data_fields(OmegaConf.to_container(cfg.data))
    for which, objects in (("train", cfg.data.n_train_objects), ("test", 1)):
        made = len(simulate_positions(fields, which, np.random.default_rng(0)))
        assert simulated_positions(cfg, which) == objects * made, which


def test_npz_data_needs_paths():
    with pytest.raises(ConfigError, match="data.train_path"):
        validate(compose_job_config(["data=npz"]))


def test_several_training_objects_need_simulated_data():
    with pytest.raises(ConfigError, match=r"^data\.n_train_objects=2 .*data\.train_path"):
        validate(compose_job_config(["data=npz", "data.train_path=/a.npz", "data.test_path=/b.npz",
                                     "data.n_train_objects=2"]))
    validate(compose_job_config(["data.n_train_objects=2"]))


@pytest.mark.parametrize("override,needle", [
    ("data.NN=3", "data.NN"), ("data.N=abc", "data.N"), ("train.epochs=1.5", "train.epochs"),
    ("model.probe_trainable=maybe", "model.probe_trainable"), ("data=foo", "data/foo"),
])
def test_typos_and_wrong_types_are_rejected_by_the_schema(override, needle):
    with pytest.raises(Exception) as err:
        compose_job_config([override])
    assert needle in str(err.value)


def test_cfg_job_prints_resolved_config(cli):
    res = cli(["data.N=64", "data.nphotons=1e4", "--cfg", "job"])
    assert res.returncode == 0, res.stderr
    cfg = OmegaConf.create(res.stdout)
    assert cfg.data.N == 64 and cfg.data.nphotons == 1e4


def test_bad_N_fails_fast_naming_the_key(cli, tmp_path):
    t0 = time.time()
    res = cli(["data.N=63", f"hydra.run.dir={tmp_path / 'run'}"])
    assert time.time() - t0 < 5
    assert res.returncode != 0
    assert "data.N" in res.stderr and "Traceback" not in res.stderr + res.stdout
    assert not (tmp_path / "cache").exists()  # no work started


def test_cosine_schedule_must_end_below_its_start():
    """min_lr is where the cosine ends; above the learning rate it would rise. The plateau schedule keeps
    accepting it (ReduceLROnPlateau never raises the rate), so existing configs stay valid."""
    validate(compose_job_config(["train.learning_rate=5e-5"]))
    with pytest.raises(ConfigError) as err:
        validate(compose_job_config(["train.learning_rate=5e-5", "train.lr_schedule=cosine"]))
    assert str(err.value).startswith("train.min_lr=") and "train.min_lr=0" in str(err.value)
    validate(compose_job_config(["train.lr_schedule=cosine", "train.min_lr=0"]))


# --------------------------------------------------------------------------- defaults live in the schema
def _schema_default(dotted: str):
    """The schema's default at a dotted key, or a sentinel when the schema has no such leaf."""
    node = Config()
    for part in dotted.split("."):
        if not dataclasses.is_dataclass(node) or part not in {f.name for f in dataclasses.fields(node)}:
            return _NOT_IN_SCHEMA
        node = getattr(node, part)
    return _NOT_IN_SCHEMA if dataclasses.is_dataclass(node) else node


_NOT_IN_SCHEMA = object()


def _option_files():
    """(group or None for the root, option name, path) of every YAML option of the job groups."""
    yield None, "config", CONF / "config.yaml"
    for group in JOB_GROUPS:
        for path in sorted((CONF / group).glob("*.yaml")):
            yield group, path.stem, path


def _own_keys(group, path):
    """The job-config keys a YAML option sets itself (its package applied), as {dotted key: value}."""
    raw = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    raw.pop("defaults", None)
    raw.pop("hydra", None)
    is_global = group is None or "# @package _global_" in path.read_text()
    body = raw if is_global else {group: raw}
    out = {}

    def walk(node, prefix):
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                out[prefix + key] = value
    walk(body, "")
    return out


@pytest.mark.parametrize("group,option,path", list(_option_files()), ids=lambda v: getattr(v, "name", str(v)))
def test_yaml_options_hold_no_schema_default(group, option, path):
    """Every default lives in one place, the schema (ptycho_exp/config.py): an option sets only what it changes."""
    for key, value in _own_keys(group, path).items():
        default = _schema_default(key)
        assert default is not _NOT_IN_SCHEMA, f"{path.name}: {key} is not a schema key"
        if isinstance(default, float) and isinstance(value, (int, float, str)):
            value = float(value)
        assert value != default, f"{path.relative_to(CONF)} repeats the schema default {key}={default!r}"


def _chain(group, path):
    """(group, file) of the options a file builds on (its defaults list: the same group's files and
    ``override /<group>: <option>`` of other job groups), then the file itself: the order Hydra merges them."""
    chain = []
    for entry in OmegaConf.load(path).get("defaults", []):
        if isinstance(entry, str):
            if not (entry.endswith("_schema") or entry == "_self_"):
                chain += _chain(group, path.parent / f"{entry}.yaml")
        else:
            (key, option), = entry.items()
            other = str(key).removeprefix("override /")
            if other in JOB_GROUPS:
                chain += _chain(other, CONF / other / f"{option}.yaml")
    return [*chain, (group, path)]


@pytest.mark.parametrize("group,option,path", [o for o in _option_files() if o[0] is not None],
                         ids=lambda v: getattr(v, "name", str(v)))
def test_an_option_composes_to_the_schema_defaults_plus_its_own_keys(group, option, path):
    """What `python -m ptycho_exp <group>=<option> --cfg job` prints: the schema, changed by the option's keys."""
    expected = OmegaConf.structured(Config)
    for file_group, file in _chain(group, path):
        for key, value in _own_keys(file_group, file).items():
            OmegaConf.update(expected, key, value, merge=True)
    OmegaConf.update(expected, "paths.output_dir", ".")
    composed = compose_many([[f"{group}={option}"]], resolve=False)[0]
    assert OmegaConf.to_container(composed, resolve=False) == OmegaConf.to_container(expected, resolve=False)


def test_the_root_config_keeps_the_schema_defaults():
    expected = OmegaConf.structured(Config)
    OmegaConf.update(expected, "paths.output_dir", ".")
    composed = compose_many([[]], resolve=False)[0]
    assert OmegaConf.to_container(composed, resolve=False) == OmegaConf.to_container(expected, resolve=False)


# --------------------------------------------------------------------------- the device
def test_gpu_without_a_visible_gpu_is_a_config_error():
    from ptycho_exp.validate import check_device, visible_gpus

    hidden = {"CUDA_VISIBLE_DEVICES": ""}
    assert visible_gpus(hidden) == [] and visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == []
    with pytest.raises(ConfigError, match=r"^hardware\.device='gpu' is invalid: .*hardware\.device=cpu"):
        check_device(compose_job_config(["hardware=gpu"]), hidden)
    assert check_device(compose_job_config([]), hidden) == "cpu"


def test_auto_device_says_which_it_picked(caplog):
    from ptycho_exp.validate import check_device

    with caplog.at_level(logging.INFO, logger="ptycho_exp.validate"):
        assert check_device(compose_job_config(["hardware=parallel"]), {"CUDA_VISIBLE_DEVICES": ""}) == "cpu"
    assert "hardware.device=auto" in caplog.text and "CPU" in caplog.text


def test_gpu_job_without_a_gpu_fails_with_one_line(cli, tmp_path):
    """The job refuses at once (exit 2, one line naming the key) instead of training on the CPU unasked."""
    res = cli(["hardware.device=gpu", f"hydra.run.dir={tmp_path / 'run'}"])  # the cli hides every GPU
    assert res.returncode == 2, res.stderr[-2000:]
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "hardware.device" in lines[0] and "Traceback" not in res.stdout + res.stderr
    assert not (tmp_path / "cache").exists()


def test_min_coverage_is_in_the_schema():
    cfg = compose_job_config([])
    assert 0 < cfg.eval.min_coverage <= 1 and not math.isnan(cfg.eval.min_coverage)
