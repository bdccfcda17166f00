"""Which model names are trained networks and which are iterative solvers: the one registry.

An arm scored from outside the framework is named ``external:<label>`` and is neither (kind ``external``).
"""
from __future__ import annotations

__all__ = ["MODEL_KINDS", "NETWORK_MODELS", "ITERATIVE_MODELS", "MODEL_ORDER", "MODEL_LABELS", "EXTERNAL_PREFIX",
           "model_kind", "is_network", "is_iterative", "is_external"]

# in presentation order: tables, legends and rankings list models in this order
MODEL_KINDS: dict[str, str] = {"pinn": "network", "baseline": "network", "ptylab": "iterative", "tike": "iterative"}
NETWORK_MODELS: tuple[str, ...] = tuple(m for m, k in MODEL_KINDS.items() if k == "network")
ITERATIVE_MODELS: tuple[str, ...] = tuple(m for m, k in MODEL_KINDS.items() if k == "iterative")
MODEL_ORDER: tuple[str, ...] = tuple(MODEL_KINDS)
MODEL_LABELS: dict[str, str] = {"pinn": "PINN", "baseline": "baseline", "ptylab": "PtyLab", "tike": "Tike"}
EXTERNAL_PREFIX = "external:"


def model_kind(name: str) -> str | None:
    """``"network"``, ``"iterative"``, ``"external"`` (``external:<label>``) or None for an unknown name."""
    name = str(name)
    if name.startswith(EXTERNAL_PREFIX):
        return "external"
    return MODEL_KINDS.get(name)


def is_network(name: str) -> bool:
    """True for a trained network (``pinn``, ``baseline``)."""
    return model_kind(name) == "network"


def is_iterative(name: str) -> bool:
    """True for an iterative solver (``ptylab``, ``tike``)."""
    return model_kind(name) == "iterative"


def is_external(name: str) -> bool:
    """True for an arm scored from outside the framework (``external:<label>``)."""
    return model_kind(name) == "external"
