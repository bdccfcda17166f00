"""Config schema and validation: typos, types and ranges fail early with the key named."""
from __future__ import annotations

import time

import pytest
from omegaconf import OmegaConf

from ptycho_exp.config import ConfigError, validate
from ptycho_exp.compose import compose_job_config


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
])
def test_out_of_range_values_name_the_key(override, key):
    cfg = compose_job_config([override])
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert str(err.value).startswith(key + "=")


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
