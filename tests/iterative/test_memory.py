"""A scan too large for an iterative engine's memory is refused at once, with one line (iterative/memory.py).

The available memory is an argument, so a tiny figure stands in for a small machine: the pre-run validation
raises the ConfigError a job turns into exit status 2, and the job's engine path raises before the scan is
read or the worker starts. No engine runs here.
"""
from __future__ import annotations

import numpy as np
import pytest

from ptycho_exp.config import ConfigError
from ptycho_exp.iterative.memory import (
    EngineMemoryError,
    available_memory_bytes,
    engine_memory_bytes,
    engine_memory_shortfall,
)

N = 16


@pytest.fixture(scope="module")
def scan_files(tmp_path_factory):
    """A small test scan as .h5 with objectGuess, and the same without it (.npz)."""
    from ptycho_exp.data.h5 import save_contract_h5
    from ptycho_exp.data.npz import save_contract_npz
    from ptycho_exp.data.simulate import simulate_object_scan

    d = tmp_path_factory.mktemp("engine_memory")
    scan = simulate_object_scan({"N": N, "object_size": 64, "test_stride": 4, "nphotons": 1e6}, "test")
    save_contract_h5(d / "test.h5", scan)
    scan.object = None
    save_contract_npz(d / "no_object.npz", scan)
    return d


def _cfg(overrides):
    from ptycho_exp.compose import compose_job_config

    return compose_job_config(["data=npz", f"data.N={N}", *overrides])


def test_estimate_and_available_memory(tmp_path):
    assert engine_memory_bytes(2000, 64) > engine_memory_bytes(1000, 64) > 1000 * 64 * 64 * 4
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16000000 kB\nMemAvailable:    1234567 kB\n")
    assert available_memory_bytes(str(meminfo)) == 1234567 * 1024
    assert available_memory_bytes(str(tmp_path / "missing")) is None
    assert engine_memory_shortfall("x", 1000, 64, available=2 ** 50) is None
    line = engine_memory_shortfall("data.test_path='/d/scan.h5'", 1000, 64, available=2 ** 20)
    assert line is not None and "\n" not in line
    for part in ("data.test_path='/d/scan.h5'", "1000 patterns of 64x64", "0.00 GiB is available", "--bin",
                 "--frames", "more memory"):
        assert part in line, line


def test_validation_refuses_a_ptylab_job_that_does_not_fit(scan_files):
    from ptycho_exp.validate import check_iterative_memory

    h5 = scan_files / "test.h5"
    with pytest.raises(ConfigError, match=r"^data.test_path=.*test.h5.*needs about .* GiB.*available; fix:") as exc:
        check_iterative_memory(_cfg([f"data.test_path={h5}", "model=ptylab"]), available=2 ** 20)
    assert "\n" not in str(exc.value)
    check_iterative_memory(_cfg([f"data.test_path={h5}", "model=ptylab"]), available=2 ** 40)  # fits
    # a network scored against ground truth runs no engine; against an iterative reference it does
    check_iterative_memory(_cfg([f"data.test_path={h5}", f"data.train_path={h5}", "model=pinn"]), available=1)
    with pytest.raises(ConfigError, match="test.h5"):
        check_iterative_memory(_cfg([f"data.test_path={h5}", f"data.train_path={h5}", "model=pinn",
                                     "eval.reference=iterative"]), available=1)
    no_object = scan_files / "no_object.npz"  # no objectGuess: the iterative reference is needed
    with pytest.raises(ConfigError, match="no_object.npz"):
        check_iterative_memory(_cfg([f"data.test_path={no_object}", f"data.train_path={no_object}",
                                     "model=pinn"]), available=1)


def test_the_engine_path_refuses_before_reading_the_scan(scan_files, tmp_path):
    from ptycho_exp.data.npz import load_contract_npz
    from ptycho_exp.workflow import cached_engine_result, iterative_settings

    h5 = scan_files / "test.h5"
    cfg = _cfg([f"data.test_path={h5}", "model=ptylab", f"paths.cache_dir={tmp_path / 'cache'}"])
    scan = load_contract_npz(h5)

    def no_read(*_args, **_kwargs):
        raise AssertionError("the patterns were read")

    scan.diffraction.chunks = no_read  # the cache key would read them first
    with pytest.raises(EngineMemoryError, match=r"^data.test_path=.*test.h5.*fix:"):
        cached_engine_result(cfg, scan, tmp_path / "job", iterative_settings(cfg, 0), "iterative", available=1)
    assert not (tmp_path / "job").exists() and not (tmp_path / "cache").exists()
    assert np.isfinite(scan.positions).all()


def test_a_job_on_a_scan_too_large_for_this_machine_exits_2_at_once(tmp_path):
    """The real pre-run validation, on a sparse .h5 whose header declares 2,000,000 patterns of 64x64
    (30 GiB, about 610 GiB for PtyLab; the file itself holds only compressed positions): exit status 2 and
    one line on stderr, before any data is read or a job process starts."""
    import h5py
    from tests.helpers.cli import run_cli

    m, n = 2_000_000, 64
    if (available_memory_bytes() or 0) > engine_memory_bytes(m, n):
        pytest.skip("this machine has the memory for the scan")
    path = tmp_path / "huge.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("diffraction", shape=(m, n, n), dtype=np.float32, chunks=(1, n, n))  # never written
        for key in ("xcoords", "ycoords"):
            f.create_dataset(key, data=np.arange(m) % 100 + 40.0, compression="gzip")
        f.create_dataset("probeGuess", data=np.ones((n, n), np.complex64))
        f.create_dataset("objectGuess", data=np.ones((200, 200), np.complex64))
    proc = run_cli(["data=npz", f"data.N={n}", f"data.test_path={path}", "model=ptylab",
                    f"hydra.run.dir={tmp_path / 'job'}"], tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "huge.h5" in lines[0] and "2000000 patterns of 64x64" in lines[0], proc.stderr
    assert "available" in lines[0] and "--bin" in lines[0]
