"""Iterative ptychography engines (PtyLab on CPU, Tike on GPU) run out of process.

Import-light: numpy and the standard library only.  Engines are imported inside the worker.
"""

from .health import DivergedRun, RunHealth, assess_run, raise_if_failed
from .protocol import (
    EngineInput,
    EngineResult,
    ProtocolError,
    amplitude_to_tike_intensity,
    read_engine_input,
    read_engine_output,
    tike_intensity_to_amplitude,
    write_engine_input,
    write_engine_output,
    write_probe_file,
)
from .runner import WORKER_PATH, EngineError, run_engine
from .tike_engine import check_tike_available

__all__ = [
    "WORKER_PATH",
    "DivergedRun",
    "RunHealth",
    "assess_run",
    "raise_if_failed",
    "EngineError",
    "EngineInput",
    "EngineResult",
    "ProtocolError",
    "amplitude_to_tike_intensity",
    "check_tike_available",
    "read_engine_input",
    "read_engine_output",
    "run_engine",
    "tike_intensity_to_amplitude",
    "write_engine_input",
    "write_engine_output",
    "write_probe_file",
]
