"""Composing a job's config outside a running Hydra app: the one home for it.

The config tree (:data:`CONF_DIR`, shipped inside the package), splitting command-line overrides into fixed
and sweep ones, composing with Hydra's compose API exactly as a job sees its config, validating it, and
converting between the composed config and the plain dict a job records. ``plan``, ``rerun``, the
``data simulate`` command and the entry point's multirun check all compose through here.

Import-light: Hydra and OmegaConf load inside the functions.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["CONF_DIR", "CONFIG_NAME", "conf_dir", "split_overrides", "compose_job_config", "compose_many",
           "compose_validated", "job_config_dict", "as_config"]

CONF_DIR = str(Path(__file__).resolve().parent / "conf")  # the config tree ships inside the package
CONFIG_NAME = "config"


def conf_dir() -> str:
    """The primary config folder (``ptycho_exp/conf``)."""
    return CONF_DIR


def split_overrides(overrides: list[str]) -> tuple[list[str], list[str]]:
    """(fixed overrides, sweep overrides such as ``a=1,2``), each in the given order, as strings."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    fixed, sweep = [], []
    for text, ov in zip(overrides, parsed):
        (sweep if ov.is_sweep_override() else fixed).append(text)
    return fixed, sweep


def compose_job_config(overrides: list[str], return_hydra: bool = False) -> Any:
    """The typed job config for these (non-sweep) overrides, as a job would see it."""
    return compose_many([overrides], return_hydra)[0]


def compose_many(override_lists: list[list[str]], return_hydra: bool = False, resolve: bool = True) -> list:
    """:func:`compose_job_config` for many override lists under one Hydra initialisation."""
    import warnings

    from hydra import compose, initialize_config_dir
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    from ptycho_exp.config import register_configs

    if "config_schema.yaml" not in ConfigStore.instance().repo:
        register_configs()
    out = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*version_base parameter is deprecated.*")
        with initialize_config_dir(config_dir=conf_dir(), version_base=None):
            for overrides in override_lists:
                cfg = compose(config_name=CONFIG_NAME, overrides=list(overrides) + ["paths.output_dir=."],
                              return_hydra_config=return_hydra)
                if resolve and not return_hydra:
                    OmegaConf.resolve(cfg)
                out.append(cfg)
    return out


def compose_validated(overrides: list[str]) -> Any:
    """:func:`compose_job_config`, then :func:`ptycho_exp.config.validate`.

    Raises
    ------
    ValueError
        An override Hydra or OmegaConf rejects (unknown key, wrong type), in one line.
    ptycho_exp.config.ConfigError
        A value out of range, naming the key.
    """
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from ptycho_exp.config import validate

    try:
        cfg = compose_job_config(overrides)
    except (HydraException, OmegaConfBaseException) as exc:  # typo'd key, wrong type: one line
        from ptycho_exp.errors import one_line_error

        raise ValueError(one_line_error(exc)) from None
    validate(cfg)
    return cfg


def job_config_dict(cfg: Any) -> dict:
    """The resolved job config as plain containers (Hydra's own node removed)."""
    from omegaconf import OmegaConf

    container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    container.pop("hydra", None)
    return container


def as_config(job_cfg: dict) -> Any:
    """A typed DictConfig (schema-checked) from a plain job config dict."""
    from omegaconf import OmegaConf

    from ptycho_exp.config import Config

    return OmegaConf.merge(OmegaConf.structured(Config), job_cfg)
