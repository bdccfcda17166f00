"""``data=cxi`` and ``data=ptylab_h5``: a measured file read directly by a job.

Files are written with h5py from a simulated scan of known geometry (tests/helpers/measured.py). The job
must refuse a bad file before it starts, import a good one into the dataset cache once, and then run on
exactly the scan that ``data import`` followed by ``data=npz`` gives. No TensorFlow in the in-process tests.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from ptycho_exp.compose import compose_job_config, compose_validated
from ptycho_exp.config import ConfigError
from ptycho_exp.data.datasets import build_datasets
from ptycho_exp.data.npz import load_contract_npz
from ptycho_exp.data.readers import ImportOptions, import_file
from tests.helpers.cli import run_cli
from tests.helpers.measured import CXI_DETECTOR, CXI_SOURCE, DISTANCE, ENERGY_EV, small_scan, write_cxi, write_ptylab

WRITERS = {"cxi": (write_cxi, "cxi", "scan.cxi"), "ptylab_h5": (write_ptylab, "ptylab", "scan.h5")}
# tiny iterative job settings: seconds per job
TINY_PTYLAB = ["data.N=32", "model=ptylab", "model.iterative.iterations=5", "eval.reference_iterations=5",
               "eval.figures=false", "eval.upsample_factor=10", "hardware.isolate=false"]


@pytest.fixture(scope="module")
def sim32():
    return small_scan()


def _overrides(kind: str, path, *more: str) -> list[str]:
    return [f"data={kind}", f"data.test_path={path}", "data.N=32", "model=ptylab", *more]


# --------------------------------------------------------------------------- refused before the job starts

MISSING = [
    ("cxi", [f"{CXI_DETECTOR}/distance"], "data.reader.distance", f"data.reader.distance={DISTANCE}"),
    ("cxi", [f"{CXI_SOURCE}/energy"], "data.reader.energy_ev", f"data.reader.energy_ev={ENERGY_EV}"),
    ("ptylab_h5", ["zo"], "data.reader.distance", f"data.reader.distance={DISTANCE}"),
    ("ptylab_h5", ["probe"], "data.reader.probe_path", None),
]


@pytest.mark.parametrize("kind,drop,key,supply", MISSING, ids=[f"{m[0]}-{m[2]}" for m in MISSING])
def test_missing_geometry_names_the_config_key(sim32, tmp_path, kind, drop, key, supply):
    writer, _, name = WRITERS[kind]
    path = writer(tmp_path / name, sim32, drop=drop)
    with pytest.raises(ConfigError) as info:
        compose_validated(_overrides(kind, path))
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"data.test_path={str(path)!r} is invalid")
    assert f"fix: set {key}=" in message and "--" not in message, message
    if supply:
        compose_validated(_overrides(kind, path, supply))  # the key supplies the missing fact


def test_wrong_format_missing_file_and_bad_reader_values_are_refused(sim32, tmp_path):
    cxi, h5 = write_cxi(tmp_path / "s.cxi", sim32), write_ptylab(tmp_path / "s.h5", sim32)
    cases = [
        (_overrides("cxi", h5), "entry_1/data_1/data"),
        (_overrides("ptylab_h5", cxi), "ptychogram missing"),
        (_overrides("cxi", tmp_path / "gone.cxi"), "does not exist"),
        (_overrides("cxi", cxi, "data.reader.frame_start=100"), "data.reader.frame_start=100"),
        (_overrides("cxi", cxi, "data.reader.bin=0"), "data.reader.bin=0"),
        (_overrides("cxi", cxi, "data.reader.distance=-1"), "data.reader.distance=-1"),
        (_overrides("cxi", cxi, "data.n_test=500"), "data.n_test=500"),
        (["data=cxi", "data.N=32", "model=ptylab"], "data.test_path=None"),
    ]
    for overrides, needle in cases:
        with pytest.raises(ConfigError, match="is invalid") as info:
            compose_validated(overrides)
        assert needle in str(info.value), (overrides, str(info.value))


# --------------------------------------------------------------------------- imported once, then as data=npz

@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_the_job_data_is_the_imported_contract_scan_cached_once(sim32, tmp_path, kind):
    writer, fmt, name = WRITERS[kind]
    path = writer(tmp_path / name, sim32)
    cfg = compose_job_config(_overrides(kind, path))
    first = build_datasets(cfg.data, seed=1, cache_dir=tmp_path / "cache", need_train=False)
    record = first.info["test"]["import"]
    assert record["cache_hit"] is False and record["format"] == kind and record["reader_format"] == fmt
    assert record["reader"]["bin"] == 1 and record["reader"]["distance"] is None
    assert record["report"]["N"] == 32 and record["report"]["frames"] == [0, sim32.n_positions]
    assert record["report"]["zero_frequency_found"] == [16, 16] and record["report"]["clipped_negative"] == 0
    assert first.info["test"]["file"]["path"] == str(path.resolve())
    assert first.info["probe"]["source"] == f"file:{path}"

    # the two-step path: `data import` to a contract file, then data=npz on it
    contract = tmp_path / "scan.npz"
    import_file(path, fmt, contract, ImportOptions(N=32))
    two_step = load_contract_npz(contract)
    np.testing.assert_array_equal(np.asarray(first.test_scan.diffraction), two_step.diffraction)
    np.testing.assert_array_equal(first.test_scan.positions, two_step.positions)
    np.testing.assert_array_equal(first.test_scan.probe, two_step.probe)
    npz = build_datasets(compose_job_config(["data=npz", f"data.test_path={contract}", "data.N=32",
                                             "model=ptylab"]).data, seed=1, cache_dir=tmp_path / "cache",
                         need_train=False)
    np.testing.assert_array_equal(first.test.groups, npz.test.groups)
    assert first.info["test"]["photons"] == npz.info["test"]["photons"]

    again = build_datasets(cfg.data, seed=1, cache_dir=tmp_path / "cache", need_train=False)
    assert again.info["test"]["import"]["cache_hit"] is True
    assert again.info["test"]["import"]["contract"] == record["contract"]
    binned = build_datasets(compose_job_config(_overrides(kind, path, "data.N=16")).data, seed=1,
                            cache_dir=tmp_path / "cache", need_train=False)
    assert binned.info["test"]["import"]["cache_key"] != record["cache_key"]  # N is part of the key


def test_a_damaged_cache_entry_is_imported_again(sim32, tmp_path):
    path = write_cxi(tmp_path / "scan.cxi", sim32)
    cfg = compose_job_config(_overrides("cxi", path))
    first = build_datasets(cfg.data, seed=1, cache_dir=tmp_path / "cache", need_train=False)
    contract = first.info["test"]["import"]["contract"]
    expected = np.asarray(first.test_scan.diffraction)
    with open(contract, "r+b") as fh:  # truncated, as by a full disk
        fh.truncate(100)
    again = build_datasets(cfg.data, seed=1, cache_dir=tmp_path / "cache", need_train=False)
    assert again.info["test"]["import"]["cache_hit"] is False and again.info["test"]["import"]["contract"] == contract
    np.testing.assert_array_equal(np.asarray(again.test_scan.diffraction), expected)


# --------------------------------------------------------------------------- a real job

def test_a_data_cxi_job_scores_as_data_import_then_data_npz(sim32, tmp_path):
    path = write_cxi(tmp_path / "scan.cxi", sim32)
    direct = run_cli(["data=cxi", f"data.test_path={path}", *TINY_PTYLAB, f"hydra.run.dir={tmp_path}/direct"],
                     tmp_path)
    assert direct.returncode == 0, direct.stderr[-3000:]
    imported = run_cli(["data", "import", str(path), "--format", "cxi", "--N", "32", "--out",
                        str(tmp_path / "scan.npz")], tmp_path, module="ptycho_exp.cli")
    assert imported.returncode == 0, imported.stderr[-3000:]
    npz = run_cli(["data=npz", f"data.test_path={tmp_path}/scan.npz", *TINY_PTYLAB,
                   f"hydra.run.dir={tmp_path}/npz"], tmp_path)
    assert npz.returncode == 0, npz.stderr[-3000:]
    a = json.loads((tmp_path / "direct" / "result.json").read_text())
    b = json.loads((tmp_path / "npz" / "result.json").read_text())
    assert a["status"] == b["status"] == "ok"
    assert a["metrics"] == b["metrics"]
    test = a["data"]["test"]
    assert test["file"]["path"] == str(path) and len(test["file"]["sha256"]) == 64
    assert test["import"]["format"] == "cxi" and test["import"]["reader"]["bin"] == 1
    assert test["import"]["report"]["saturated_zeroed"] == 0 and test["import"]["report"]["masked_pixels"] == 0


@pytest.mark.e2e  # trains a network in a real job: the e2e stage
def test_a_pinn_job_on_ptylab_h5_files(sim32, tmp_path):
    """Training and test file both measured (here the same file): both imported, the PINN trains and scores."""
    path = write_ptylab(tmp_path / "scan.h5", sim32)
    proc = run_cli(["data=ptylab_h5", f"data.train_path={path}", f"data.test_path={path}", "data.N=32",
                    "data.n_train=32", "model=pinn", "train.epochs=1", "train.tensorboard=false",
                    "train.save_model=false", "eval.figures=false", "eval.upsample_factor=10",
                    "eval.reference_iterations=5", "hardware.isolate=false", f"hydra.run.dir={tmp_path}/job"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "job" / "result.json").read_text())
    assert result["status"] == "ok"
    data = result["data"]
    assert data["kind"] == "ptylab_h5" and data["train"]["file"] == data["test"]["file"]
    assert data["train"]["import"]["contract"] == data["test"]["import"]["contract"]  # one cache entry
    assert data["train"]["photons"]["counts_source"].startswith("photon_scale")
