"""Scans larger than memory: the HDF5 contract layout, read in batches (ptycho_exp/data/h5.py).

- An .h5 file holds the same arrays as the .npz it was written from; its header is checked like the NPZ's.
- ``data import ... --out scan.h5`` writes the patterns through to the file and gives the same scan as .npz.
- A PINN job on .h5 files gives the same result as on the equivalent .npz files: the training pipeline
  shuffles and batches the same indices with the job's seed and reads each batch's patterns from the file.
- Reading every batch of a file 4x larger does not use more memory (tracemalloc), where loading it does.
- A test scan in a file is predicted and stitched batch by batch with the scores and object of the in-memory
  path, bit for bit (a model stand-in, no TensorFlow); `ptycho-exp predict` on the .h5 writes what it writes
  for the .npz (a freshly built PINN).
Everything runs on the CPU in well under two minutes (two 1-epoch CLI jobs on 32x32 patterns).
"""
from __future__ import annotations

import json
import os
import tracemalloc

import h5py
import numpy as np
import pytest
from tests.helpers.cli import run_cli

from ptycho_exp.data.h5 import GroupedPatterns, H5Patterns, save_contract_h5
from ptycho_exp.data.npz import DataContractError, contract_header, load_contract_npz, save_contract_npz

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

N = 32


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """A training and a test scan (32x32, grf object) saved as .npz and as .h5."""
    from ptycho_exp.data.simulate import simulate_object_scan

    d = tmp_path_factory.mktemp("stream")
    fields = {"N": N, "object_size": 128, "object": "grf", "object_phase": "tanh", "probe": "defocused",
              "probe_defocus": 2.0, "train_stride": 4, "test_stride": 6, "nphotons": 1e6}
    for split in ("train", "test"):
        scan = simulate_object_scan(fields, split)
        save_contract_npz(d / f"{split}.npz", scan)
        save_contract_h5(d / f"{split}.h5", scan)
    return d


def test_h5_holds_the_npz_arrays_and_reads_any_index_order(scans):
    a, b = load_contract_npz(scans / "test.h5"), load_contract_npz(scans / "test.npz")
    assert isinstance(a.diffraction, H5Patterns) and a.diffraction.shape == b.diffraction.shape
    assert np.array_equal(np.asarray(a.diffraction), b.diffraction)
    assert np.array_equal(a.positions, b.positions) and np.array_equal(a.probe, b.probe)
    assert np.array_equal(a.object, b.object)
    assert a.meta["normalisation_factor"] == b.meta["normalisation_factor"]
    idx = np.array([[7, 2], [2, 0], [b.n_positions - 1, 7]])  # unsorted, repeated: h5py needs sorted unique
    assert np.array_equal(a.diffraction[idx], b.diffraction[idx])
    groups = np.array([[3, 1, 4, 1], [5, 9, 2, 6]])
    grouped = GroupedPatterns(a.diffraction, groups)
    assert grouped.shape == (2, N, N, 4)
    assert np.array_equal(grouped[np.array([1, 0])], np.moveaxis(b.diffraction[groups[[1, 0]]], 1, -1))
    from ptycho_exp.data.tools import inspect_npz  # `data inspect` reads either layout, the same summary

    def summary(path):  # the .npz also holds the simulator's patches Y, which the HDF5 layout leaves out
        return [line for line in inspect_npz(path).splitlines()[1:] if not line.lstrip().startswith("Y")]

    assert summary(scans / "test.h5") == summary(scans / "test.npz")


def test_h5_header_is_checked_like_the_npz(scans, tmp_path):
    head = contract_header(scans / "test.h5")
    assert head["N"] == N and head["diffraction_key"] == "diffraction"
    bad = tmp_path / "bad.h5"
    with h5py.File(scans / "test.h5", "r") as src, h5py.File(bad, "w") as dst:
        for key in ("diffraction", "xcoords", "probeGuess"):
            src.copy(key, dst)
    with pytest.raises(DataContractError, match="key 'ycoords' is missing"):
        contract_header(bad)
    with h5py.File(bad, "a") as f:
        f["ycoords"] = np.zeros(3)
    with pytest.raises(DataContractError, match=r"key 'ycoords' has shape \(3,\): expected"):
        contract_header(bad)
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5 at all")
    with pytest.raises(DataContractError, match="not a readable HDF5 file"):
        contract_header(junk)
    with h5py.File(bad, "a") as f:
        del f["ycoords"]
        f["ycoords"] = np.zeros(f["xcoords"].shape)
        f["diffraction"][0, 0, 0] = -1.0
    with pytest.raises(DataContractError, match="key 'diffraction' has negative values"):
        load_contract_npz(bad)


def test_import_writes_the_patterns_through_to_h5(scans, tmp_path):
    proc = run_cli(["data", "import", str(scans / "test.npz"), "--format", "npz", "--N", str(N),
                    "--out", str(tmp_path / "imported.h5")], tmp_path, timeout=300, module="ptycho_exp.cli")
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = run_cli(["data", "import", str(scans / "test.npz"), "--format", "npz", "--N", str(N),
                    "--out", str(tmp_path / "imported.npz")], tmp_path, timeout=300, module="ptycho_exp.cli")
    assert proc.returncode == 0, proc.stderr[-2000:]
    a, b = load_contract_npz(tmp_path / "imported.h5"), load_contract_npz(tmp_path / "imported.npz")
    assert np.array_equal(np.asarray(a.diffraction), b.diffraction) and np.array_equal(a.positions, b.positions)
    assert a.meta["imported"] == b.meta["imported"]
    with h5py.File(tmp_path / "imported.h5", "r") as f:
        assert f["diffraction"].chunks == (1, N, N)  # one pattern per chunk: batches read whole chunks
    # bad input: one line, exit 2, no file and no folder
    out = tmp_path / "never" / "scan.h5"
    proc = run_cli(["data", "import", str(scans / "test.npz"), "--format", "npz", "--N", "30", "--frames", "5:5",
                    "--out", str(out)], tmp_path, timeout=300, module="ptycho_exp.cli")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not out.parent.exists()


def _job(d, name, suffix):
    out = d / f"job_{name}"
    proc = run_cli(["data=npz", f"data.N={N}", f"data.train_path={d / ('train' + suffix)}",
                    f"data.test_path={d / ('test' + suffix)}", "model=pinn", "data.n_train=96", "train.epochs=2",
                    "train.batch_size=16", "train.tensorboard=false", "eval.figures=false",
                    "eval.upsample_factor=10", f"hydra.run.dir={out}"], d, timeout=600)
    res = json.loads((out / "result.json").read_text()) if (out / "result.json").is_file() else None
    assert res is not None and res["status"] == "ok", proc.stderr[-3000:]
    return res, (out / "history.csv").read_text()


@pytest.mark.e2e  # trains networks in real jobs: the e2e stage
def test_a_job_on_h5_files_matches_the_same_job_on_npz(scans):
    """Same seed, same shuffled indices, same batches: the streamed pipeline reads the rows that the in-memory
    one gathers, and the training is deterministic, so losses and metrics are equal, not merely close."""
    h5, h5_history = _job(scans, "h5", ".h5")
    npz, npz_history = _job(scans, "npz", ".npz")
    assert h5["data"]["train"]["file"]["path"].endswith("train.h5")
    assert h5["data"]["train"]["n_samples"] == npz["data"]["train"]["n_samples"] == 96
    assert h5["data"]["test"]["photons"] == npz["data"]["test"]["photons"]
    assert h5["data"]["scaling"] == npz["data"]["scaling"]
    timing = {"epoch_seconds"}
    assert {k: v for k, v in h5["final_losses"].items() if k not in timing} == \
        {k: v for k, v in npz["final_losses"].items() if k not in timing}
    assert h5["metrics"] == npz["metrics"]
    assert h5_history.splitlines()[0] == npz_history.splitlines()[0]


def _peak_bytes_reading_batches(path, batch: int) -> int:
    patterns = H5Patterns(path)
    order = np.random.default_rng(0).permutation(len(patterns))
    grouped = GroupedPatterns(patterns, order[:, None])
    tracemalloc.start()
    try:
        total = 0.0
        for start in range(0, len(grouped), batch):
            total += float(grouped[slice(start, start + batch)].sum())
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        patterns.close()


def test_reading_batches_of_a_4x_larger_file_needs_no_more_memory(tmp_path):
    rng = np.random.default_rng(1)
    peaks, loaded = {}, {}
    for m in (512, 2048):
        path = tmp_path / f"scan{m}.h5"
        with h5py.File(path, "w") as f:  # float32 patterns written in blocks, as the importer does
            d = f.create_dataset("diffraction", (m, 64, 64), np.float32, chunks=(1, 64, 64))
            for s in range(0, m, 256):
                d[s:s + 256] = rng.random((min(256, m - s), 64, 64), dtype=np.float32)
        peaks[m] = _peak_bytes_reading_batches(path, batch=32)
        tracemalloc.start()
        np.asarray(H5Patterns(path))
        loaded[m] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    batch_bytes = 32 * 64 * 64 * 4
    assert peaks[2048] < 1.25 * peaks[512] + batch_bytes, peaks
    assert peaks[2048] < 12 * batch_bytes, peaks  # a few batches, not the 32 MiB of the file
    assert loaded[2048] > 3.5 * loaded[512]  # the same patterns held in memory do grow with the file


def test_streamed_pipeline_gives_the_in_memory_batches_for_gridsize_2(scans):
    """The training pipeline on patterns read from the file yields, batch for batch and epoch for epoch,
    what it yields on the same samples in memory (groups of 4, offsets, shuffled with the seed)."""
    from ptycho_exp.data.datasets import make_samples, training_groups
    from ptycho_exp.models.fit import _datasets, _split

    streamed_scan, memory_scan = load_contract_npz(scans / "train.h5"), load_contract_npz(scans / "train.npz")
    groups = training_groups(memory_scan, 48, gridsize=2, k=7, seed=3)
    streamed, memory = make_samples(streamed_scan, groups), make_samples(memory_scan, groups)
    assert isinstance(streamed.diffraction, GroupedPatterns) and streamed.patches is None
    assert np.array_equal(streamed.offsets, memory.offsets)
    train_idx, val_idx = _split(48, 0.25, seed=3)
    pipelines = [_datasets({"diffraction": s.diffraction, "offsets": s.offsets}, None, train_idx, val_idx, 8, 3,
                           scale=0.5) for s in (streamed, memory)]
    for _epoch in range(2):  # reshuffled each epoch, identically
        for split in (0, 1):
            got = list(pipelines[0][split].as_numpy_iterator())
            want = list(pipelines[1][split].as_numpy_iterator())
            assert len(got) == len(want) > 1
            for (a,), (b,) in zip(got, want):
                assert a["diffraction"].shape[1:] == (N, N, 4)
                assert np.array_equal(a["diffraction"], b["diffraction"])
                assert np.array_equal(a["offsets"], b["offsets"])


# --------------------------------------------------------------------------- the test scan, batch by batch
class _StubModel:
    """A model-shaped stand-in (no TensorFlow): complex patches from the normalised diffraction (and offsets)."""

    def __init__(self, n: int, channels: int, takes_offsets: bool):
        from types import SimpleNamespace

        self.inputs = [None, None] if takes_offsets else [None]
        self.outputs = [SimpleNamespace(shape=(None, n, n, channels))]

    def predict_on_batch(self, inputs):
        x, phase = (inputs[0], 0.05 * inputs[1].sum(-1)[:, None, None, :]) if len(self.inputs) > 1 else (inputs, 0.0)
        return (np.sqrt(x + 0.1) * np.exp(1j * (0.3 * x + phase))).astype(np.complex64)


def test_stitching_batch_by_batch_equals_stitching_all_patches():
    """Patches added in any split (a single one, batches across the accumulator's blocks) give the object of
    stitch_patches on all of them at once, bit for bit, on the default canvas and on a given one."""
    from ptycho_exp.evaluate.stitch import StitchAccumulator, stitch_patches

    rng = np.random.default_rng(4)
    m, n = 1100, 16
    patches = (rng.random((m, n, n)) + 1j * rng.random((m, n, n))).astype(np.complex64)
    positions = rng.random((m, 2)) * 60 + 20
    positions[:50] = np.round(positions[:50])  # some integer positions: placed without a Fourier shift
    for canvas in ({}, {"origin": (30, 25), "shape": (40, 50)}):
        want = stitch_patches(patches, positions, 6, **canvas)
        acc = StitchAccumulator(positions, n, 6, **canvas)
        for a, b in ((0, 1), (1, 38), (38, 600), (600, 601), (601, m)):
            acc.add(patches[a:b], positions[a:b])
        got = acc.result()
        assert got.origin == want.origin and acc.n_added == m
        assert np.array_equal(got.image, want.image) and np.array_equal(got.weight, want.weight)


@pytest.mark.parametrize("gridsize", [1, 2])
def test_h5_test_scan_scores_from_batches_equal_the_in_memory_scores(scans, gridsize):
    """The job's streamed test path (patterns read per batch from the .h5, predicted, stitched at once onto the
    scored canvas) scores exactly what the in-memory path (all patches predicted, then stitched) scores on the
    .npz; ``ptycho-exp predict``'s batch-wise stitching equals stitching all patches."""
    from ptycho_exp.data.datasets import heldout_groups, make_samples
    from ptycho_exp.evaluate.pipeline import evaluate_reconstruction, evaluate_stitched, scored_canvas
    from ptycho_exp.evaluate.stitch import stitch_patches
    from ptycho_exp.models.fit import compute_norm_factor, predict_patches
    from ptycho_exp.predict import predict_scan, stitch_predictions, stitch_scan

    streamed_scan, memory_scan = load_contract_npz(scans / "test.h5"), load_contract_npz(scans / "test.npz")
    groups = heldout_groups(memory_scan, None, gridsize, 7, 5)
    streamed, memory = make_samples(streamed_scan, groups), make_samples(memory_scan, groups)
    assert isinstance(streamed.diffraction, GroupedPatterns)
    model = _StubModel(N, gridsize ** 2, takes_offsets=gridsize > 1)
    norm = compute_norm_factor(memory.diffraction)
    pred = predict_patches(model, memory.diffraction, norm, batch_size=7, offsets=memory.offsets)
    patches = np.moveaxis(pred, -1, 1).reshape(-1, N, N)
    positions = memory.positions.reshape(-1, 2)
    want = evaluate_reconstruction(patches, positions, memory_scan.object, upsample_factor=10)
    crop, origin, shape = scored_canvas(positions, N)
    st, seconds = stitch_predictions(model, streamed.diffraction, streamed.positions, norm, crop, origin=origin,
                                     shape=shape, batch_size=7, offsets=streamed.offsets)
    got = evaluate_stitched(st, streamed_scan.object, upsample_factor=10)
    assert seconds > 0
    np.testing.assert_equal(got.metrics, want.metrics)
    assert np.array_equal(got.recon, want.recon) and got.origin == want.origin
    # ptycho-exp predict: the whole scan grouped, batch by batch from the file
    all_patches, all_positions, norm_all, _ = predict_scan(model, memory_scan.diffraction, memory_scan.positions,
                                                           gridsize, batch_size=7)
    want_obj = stitch_patches(all_patches, all_positions, 10)
    got_obj, norm_streamed, _ = stitch_scan(model, streamed_scan.diffraction, streamed_scan.positions, gridsize,
                                            10, batch_size=7)
    assert norm_streamed == norm_all
    assert np.array_equal(got_obj.image, want_obj.image) and got_obj.origin == want_obj.origin


class _LevelsModel(_StubModel):
    """The stub, with a constant phase per patch that depends on its pattern (what one pattern leaves free)."""

    def predict_on_batch(self, inputs):
        out = super().predict_on_batch(inputs)
        x = inputs[0] if len(self.inputs) > 1 else inputs
        return (out * np.exp(1j * 40.0 * x.mean(axis=(1, 2), keepdims=True))).astype(np.complex64)


@pytest.mark.parametrize("gridsize", [1, 2])
def test_phase_synced_streaming_equals_aligning_all_patches(scans, gridsize):
    """eval.phase_sync on a file's test scan (two passes, only the central windows kept between them) stitches
    exactly what aligning all the predicted patches at once and stitching them gives; the first pass is the
    plain stitch."""
    from functools import partial

    from ptycho_exp.data.datasets import heldout_groups, make_samples
    from ptycho_exp.evaluate.phase_sync import align_patch_phases
    from ptycho_exp.evaluate.pipeline import scored_canvas
    from ptycho_exp.evaluate.stitch import stitch_patches
    from ptycho_exp.models.fit import compute_norm_factor, predict_patches
    from ptycho_exp.predict import stitch_phase_synced, stitch_predictions

    streamed_scan, memory_scan = load_contract_npz(scans / "test.h5"), load_contract_npz(scans / "test.npz")
    groups = heldout_groups(memory_scan, None, gridsize, 7, 5)
    streamed, memory = make_samples(streamed_scan, groups), make_samples(memory_scan, groups)
    model = _LevelsModel(N, gridsize ** 2, takes_offsets=gridsize > 1)
    norm = compute_norm_factor(memory.diffraction)
    pred = predict_patches(model, memory.diffraction, norm, batch_size=7, offsets=memory.offsets)
    patches = np.moveaxis(pred, -1, 1).reshape(-1, N, N)
    positions = memory.positions.reshape(-1, 2)
    crop, origin, shape = scored_canvas(positions, N)
    aligned, u = align_patch_phases(patches, positions, window=crop)
    assert np.std(np.angle(u)) > 0.1  # the levels were there to undo
    stitch = partial(stitch_predictions, model, streamed.diffraction, streamed.positions, norm, crop, origin=origin,
                     shape=shape, batch_size=7, offsets=streamed.offsets)
    raw, synced, seconds = stitch_phase_synced(stitch, streamed.positions, crop)
    assert seconds > 0
    for got, want in ((raw, patches), (synced, aligned)):
        want = stitch_patches(want, positions, crop, origin=origin, shape=shape)
        assert np.array_equal(got.image, want.image) and np.array_equal(got.weight, want.weight)


def test_predict_command_on_h5_writes_the_npz_result(scans, tmp_path):
    """``ptycho-exp predict`` with a (freshly built, untrained) saved PINN: the .h5 scan, read batch by batch,
    gives the object, weights and normalisation it gives for the same scan as .npz."""
    from ptycho_exp.config import ModelConfig
    from ptycho_exp.models.fit import save_network
    from ptycho_exp.models.pinn import build_pinn
    from ptycho_exp.predict import predict_file

    scan = load_contract_npz(scans / "test.npz")
    pinn = build_pinn(ModelConfig(name="pinn", n_filters_scale=1), N, 1, scan.probe, 1e6)
    save_network(pinn.inference_model, tmp_path / "model", {"N": N, "gridsize": 1, "model": "pinn",
                                                            "norm_factor": 0.87})
    for norm in ("model", "scan"):
        outs = {}
        for suffix in (".h5", ".npz"):
            summary = predict_file(tmp_path / "model", scans / f"test{suffix}", tmp_path / f"o{suffix}.npz",
                                   batch_size=16, norm=norm)
            assert summary.startswith("wrote") and f"from {scan.n_positions} patterns" in summary
            with np.load(tmp_path / f"o{suffix}.npz", allow_pickle=False) as z:
                outs[suffix] = {k: z[k] for k in z.files}
        assert np.isfinite(outs[".h5"]["object"]).all() and (outs[".h5"]["weight"] > 0).mean() > 0.9
        assert (float(outs[".h5"]["norm_factor"]) == 0.87) == (norm == "model")
        for key, value in outs[".npz"].items():
            np.testing.assert_array_equal(outs[".h5"][key], value, err_msg=key)
