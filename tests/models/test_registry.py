"""The model registry and the metric directions: the single places the rest of the package asks."""
from __future__ import annotations

from pathlib import Path

import pytest

from ptycho_exp.analysis.metricinfo import direction, higher_is_better, lower_is_better
from ptycho_exp.models.registry import (
    ITERATIVE_MODELS,
    MODEL_KINDS,
    NETWORK_MODELS,
    is_external,
    is_iterative,
    is_network,
    model_kind,
)

CONF = Path(__file__).resolve().parents[2] / "ptycho_exp" / "conf"


def test_every_model_config_is_registered_and_every_registered_model_has_a_config():
    names = {p.stem for p in (CONF / "model").glob("*.yaml")}
    assert names == set(MODEL_KINDS)


def test_networks_are_the_models_with_a_keras_builder_and_iterative_ones_have_an_engine():
    from ptycho_exp.iterative.worker import ENGINES
    from ptycho_exp.models import _LAZY

    builders = {name.removeprefix("build_") for name in _LAZY if name.startswith("build_")}
    assert set(NETWORK_MODELS) == builders
    assert set(ITERATIVE_MODELS) == set(ENGINES)
    assert not set(NETWORK_MODELS) & set(ITERATIVE_MODELS)


@pytest.mark.parametrize("name, kind", [("pinn", "network"), ("baseline", "network"), ("ptylab", "iterative"),
                                        ("tike", "iterative"), ("external:ePIE-run3", "external"),
                                        ("unknown", None)])
def test_model_kind(name, kind):
    assert model_kind(name) == kind
    assert is_network(name) == (kind == "network")
    assert is_iterative(name) == (kind == "iterative")
    assert is_external(name) == (kind == "external")


@pytest.mark.parametrize("metric, higher", [("phase_ssim", True), ("amp_ms_ssim", True), ("phase_frc50", True),
                                            ("amp_psnr", True), ("phase_mae", False), ("amp_mse", False),
                                            ("mae", False), ("timings.train_s", False),
                                            ("resources.peak_rss_mb", False)])
def test_metric_directions(metric, higher):
    assert higher_is_better(metric) is higher
    assert lower_is_better(metric) is (not higher)
    assert direction(metric) == ("maximize" if higher else "minimize")
