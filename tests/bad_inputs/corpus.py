"""The bad-input corpus: configs, NPZ files, paths and command lines that every entry point must refuse cleanly.

:func:`build_corpus` writes the files of every case into a folder and returns the cases; each case is
one command line of ``python -m ptycho_exp`` (``entry="run"``) or ``ptycho-exp`` (``entry="cli"``)
and the words its single error line must hold (the key, the file or the option it names). Nothing
here is committed as a binary: the NPZ files are generated from a small valid contract file (M=64
patterns of 32x32) by one change each; FIFOs and device links are made when the case is built.
"""
from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

N = 32
M = 64
# Keep a job tiny in case a case unexpectedly got past validation (it must not, but then it is quick).
BASE = ["data.N=32", "data.object_size=64", "data.n_train=16", "train.epochs=1", "train.tensorboard=false",
        "train.save_model=false", "eval.figures=false"]


@dataclass
class Case:
    """One bad input: the arguments (``{dir}`` is the case folder) and what the error must name."""

    name: str
    overrides: list[str]
    needles: list[str]                       # substrings of the one error line (the field, the file ...)
    kind: str = "config"                     # config | npz | path | message | cli
    files: dict[str, Callable[[Path], None]] = field(default_factory=dict)  # file name -> writer
    entry: str = "run"                       # run: python -m ptycho_exp; cli: python -m ptycho_exp.cli
    quick: bool = False                      # must end within 5 s (FIFOs, devices, absurd headers)


def valid_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """A small contract NPZ's arrays: amplitude diffraction, grid positions, a complex probe."""
    rng = np.random.default_rng(seed)
    side = int(np.sqrt(M))
    yy, xx = np.meshgrid(np.arange(side) * 4.0 + N / 2, np.arange(side) * 4.0 + N / 2, indexing="ij")
    amp = np.sqrt(rng.gamma(2.0, 1.0, size=(M, N, N))).astype(np.float32) * 0.37
    probe = (np.exp(-((np.arange(N) - N / 2) ** 2)[:, None] / 40.0 - ((np.arange(N) - N / 2) ** 2)[None, :] / 40.0)
             * np.exp(0.3j)).astype(np.complex64)
    obj = np.ones((side * 4 + N + 8, side * 4 + N + 8), np.complex64)
    return {"xcoords": xx.ravel(), "ycoords": yy.ravel(), "diffraction": amp, "probeGuess": probe,
            "objectGuess": obj}


def _npz(**changes) -> Callable[[Path], None]:
    """Writer of the valid file with keys replaced (value) or dropped (None)."""
    def write(path: Path) -> None:
        arrays = valid_arrays()
        for key, value in changes.items():
            if value is None:
                arrays.pop(key, None)
            else:
                arrays[key] = value(arrays) if callable(value) else value
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)
    return write


def _set(key: str, index, value) -> Callable[[dict], np.ndarray]:
    def change(arrays: dict) -> np.ndarray:
        arr = arrays[key].copy()
        arr[index] = value
        return arr
    return change


def _truncated(path: Path) -> None:
    _npz()(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _not_zip(path: Path) -> None:
    path.write_text("xcoords,ycoords\n1,2\n")


def _empty_file(path: Path) -> None:
    path.write_bytes(b"")


def _single_npy(path: Path) -> None:
    with open(path, "wb") as fh:
        np.save(fh, valid_arrays()["diffraction"])


def _absurd_header(path: Path) -> None:
    """A valid archive whose 'diffraction' header declares 10^12 patterns (a few bytes stored)."""
    arrays = valid_arrays()
    buf = io.BytesIO()
    np.lib.format.write_array_header_2_0(buf, {"descr": "<f4", "fortran_order": False,
                                               "shape": (10 ** 12, N, N)})
    buf.write(b"\0" * 64)
    with zipfile.ZipFile(path, "w") as zf:
        for key, value in arrays.items():
            if key == "diffraction":
                zf.writestr("diffraction.npy", buf.getvalue())
            else:
                member = io.BytesIO()
                np.save(member, value)
                zf.writestr(f"{key}.npy", member.getvalue())


def _object_array(arrays: dict) -> np.ndarray:
    out = np.empty(M, dtype=object)
    out[:] = [float(v) for v in arrays["xcoords"]]
    return out


def _npz_case(name: str, writer: Callable[[Path], None], needles: list[str], role: str = "train",
              quick: bool = False) -> Case:
    bad, good = "{dir}/bad.npz", "{dir}/good.npz"
    train, test = (bad, good) if role == "train" else (good, bad)
    return Case(name, ["data=npz", f"data.train_path={train}", f"data.test_path={test}", "data.n_train=16"],
                needles, kind="npz", files={"bad.npz": writer, "good.npz": _npz()}, quick=quick)


def config_cases() -> list[Case]:
    c = Case
    return [
        # wrong types
        c("type_N_string", ["data.N=abc"], ["data.N"]),
        c("type_epochs_float", ["train.epochs=1.5"], ["train.epochs"]),
        c("type_bool_word", ["model.probe_trainable=maybe"], ["model.probe_trainable"]),
        c("type_nphotons_word", ["data.nphotons=lots"], ["data.nphotons"]),
        c("type_N_list", ["data.N=[32,64]"], ["data.N"]),
        # unknown keys
        c("unknown_key_typo", ["data.NN=32"], ["data.NN"]),
        c("unknown_key_appended", ["+data.foo=1"], ["data.foo"]),
        c("unknown_top_level_key", ["+learning_rate=0.1"], ["learning_rate"]),
        # sizes
        c("N_zero", ["data.N=0"], ["data.N"]),
        c("N_negative", ["data.N=-32"], ["data.N"]),
        c("N_not_power_of_two", ["data.N=48"], ["data.N"]),
        c("N_too_small", ["data.N=8"], ["data.N"]),
        c("gridsize_zero", ["data.gridsize=0"], ["data.gridsize"]),
        c("gridsize_too_large", ["data.gridsize=3"], ["data.gridsize"]),
        c("gridsize_huge", ["data.gridsize=9"], ["data.gridsize"]),
        c("object_too_small_for_N", ["data.object_size=40"], ["data.object_size"]),
        c("n_train_zero", ["data.n_train=0"], ["data.n_train"]),
        c("n_train_negative", ["data.n_train=-5"], ["data.n_train"]),
        c("n_train_more_than_scan", ["data.n_train=100000", "data.N=16", "data.object_size=64"],
          ["data.n_train", "100000"]),
        c("n_test_negative", ["data.n_test=-1"], ["data.n_test"]),
        c("batch_size_zero", ["train.batch_size=0"], ["train.batch_size"]),
        c("learning_rate_negative", ["train.learning_rate=-1"], ["train.learning_rate"]),
        c("warmup_negative", ["train.warmup_epochs=-1"], ["train.warmup_epochs"]),
        c("grouping_unknown", ["data.grouping=nearest"], ["data.grouping", "knn"]),
        c("grouping_block_on_random_scan", ["data.gridsize=2", "data.grouping=block", "data.scan=random"],
          ["data.grouping", "data.scan=grid"]),
        c("val_fraction_too_big", ["train.val_fraction=0.7"], ["train.val_fraction"]),
        c("eval_crop_larger_than_N", ["eval.crop=1000"], ["eval.crop"]),
        # photons
        c("nphotons_zero", ["data.nphotons=0"], ["data.nphotons"]),
        c("nphotons_negative", ["data.nphotons=-1e6"], ["data.nphotons"]),
        # unknown names
        c("unknown_model_group", ["model=transformer"], ["model", "transformer"]),
        c("unknown_data_group", ["data=bogus"], ["data", "bogus"]),
        c("unknown_model_name", ["model.name=resnet"], ["model.name"]),
        c("unknown_object", ["data.object=triangles"], ["data.object"]),
        c("unknown_probe", ["data.probe=laser"], ["data.probe"]),
        c("unknown_device", ["hardware.device=tpu"], ["hardware.device"]),
        # inconsistent overrides
        c("probe_file_without_path", ["data.probe=file"], ["data.probe_path"]),
        c("probe_file_missing", ["data.probe=file", "data.probe_path={dir}/no_probe.npz"],
          ["data.probe_path", "no_probe.npz"]),
        c("npz_without_paths", ["data=npz"], ["data.train_path"]),
        c("override_syntax", ["data.N=("], ["overrides"]),
        # code execution through _target_
        c("target_in_job_config", ["+foo._target_=os.system"], ["foo._target_", "os.system"]),
        c("target_in_hydra_callbacks", ["+hydra.callbacks.evil._target_=os.getcwd"], ["os.getcwd"]),
    ]


def npz_cases() -> list[Case]:
    a = valid_arrays()
    return [
        _npz_case("npz_missing_diffraction", _npz(diffraction=None), ["diffraction", "missing"]),
        _npz_case("npz_missing_xcoords", _npz(xcoords=None), ["xcoords", "missing"]),
        _npz_case("npz_missing_probe", _npz(probeGuess=None), ["probeGuess", "missing"]),
        _npz_case("npz_diffraction_2d", _npz(diffraction=a["diffraction"][0]), ["diffraction", "shape"]),
        _npz_case("npz_diffraction_not_square", _npz(diffraction=a["diffraction"][:, :, :16]),
                  ["diffraction", "square"]),
        _npz_case("npz_probe_wrong_shape", _npz(probeGuess=a["probeGuess"][:16, :16]), ["probeGuess", "shape"]),
        _npz_case("npz_xcoords_length_mismatch", _npz(xcoords=a["xcoords"][:10]), ["xcoords", "(64,)"]),
        _npz_case("npz_ycoords_2d", _npz(ycoords=a["ycoords"].reshape(8, 8)), ["ycoords", "shape"]),
        _npz_case("npz_diffraction_strings", _npz(diffraction=np.array(["a", "b"])), ["diffraction", "dtype"]),
        _npz_case("npz_diffraction_complex", _npz(diffraction=a["diffraction"].astype(np.complex64)),
                  ["diffraction", "dtype"]),
        _npz_case("npz_empty_diffraction", _npz(diffraction=np.zeros((0, N, N), np.float32),
                                                xcoords=np.zeros(0), ycoords=np.zeros(0)),
                  ["diffraction", "empty"]),
        _npz_case("npz_object_array_needs_pickle", _npz(xcoords=_object_array), ["xcoords", "pickle"]),
        _npz_case("npz_object_guess_3d", _npz(objectGuess=np.ones((2, 8, 8), np.complex64)),
                  ["objectGuess", "shape"]),
        _npz_case("npz_truncated", _truncated, ["bad.npz", "truncated"]),
        _npz_case("npz_not_a_zip", _not_zip, ["bad.npz", "not a readable NPZ"]),
        _npz_case("npz_empty_file", _empty_file, ["bad.npz", "not a readable NPZ"]),
        _npz_case("npz_single_npy", _single_npy, ["bad.npz", "single .npy"]),
        _npz_case("npz_absurd_declared_size", _absurd_header, ["diffraction", "declares shape"], quick=True),
        _npz_case("npz_bad_test_file", _npz(probeGuess=None), ["data.test_path", "probeGuess"], role="test"),
        _npz_case("npz_N_mismatch", _npz(diffraction=a["diffraction"][:, :16, :16],
                                         probeGuess=a["probeGuess"][:16, :16]), ["data.N", "16"]),
        _npz_case("npz_n_train_more_than_file", _npz(diffraction=a["diffraction"][:8], xcoords=a["xcoords"][:8],
                                                     ycoords=a["ycoords"][:8]), ["data.n_train", "8 patterns"]),
        # value checks read the (small) arrays before the run makes a folder
        _npz_case("npz_nan_amplitude", _npz(diffraction=_set("diffraction", (3, 5, 5), np.nan)),
                  ["diffraction", "NaN"]),
        _npz_case("npz_inf_amplitude", _npz(diffraction=_set("diffraction", (0, 0, 0), np.inf)),
                  ["diffraction", "NaN/Inf"]),
        _npz_case("npz_negative_amplitude", _npz(diffraction=_set("diffraction", (1, 2, 3), -1.0)),
                  ["diffraction", "negative"]),
        _npz_case("npz_nan_position", _npz(xcoords=_set("xcoords", 7, np.nan)), ["xcoords", "NaN"]),
        _npz_case("npz_nan_probe", _npz(probeGuess=_set("probeGuess", (0, 0), np.nan)), ["probeGuess", "NaN"]),
        _npz_case("npz_nan_ycoords", _npz(ycoords=_set("ycoords", 0, np.nan)), ["ycoords", "NaN"]),
        _npz_case("npz_inf_probe", _npz(probeGuess=_set("probeGuess", (3, 3), np.inf)), ["probeGuess", "NaN/Inf"]),
        _npz_case("npz_nan_object", _npz(objectGuess=_set("objectGuess", (0, 0), np.nan)),
                  ["objectGuess", "NaN"]),
        _npz_case("npz_all_zero_diffraction", _npz(diffraction=np.zeros((M, N, N), np.float32)),
                  ["diffraction", "zero"]),
        _npz_case("npz_Y_wrong_length", _npz(Y=np.ones((M - 1, N, N), np.complex64)), ["'Y'", "(63, 32, 32)"]),
        _npz_case("npz_nan_in_test_file", _npz(diffraction=_set("diffraction", (9, 1, 1), np.nan)),
                  ["data.test_path", "NaN"], role="test"),
        _npz_case("npz_negative_in_test_file", _npz(diffraction=_set("diffraction", (2, 2, 2), -3.0)),
                  ["data.test_path", "negative"], role="test"),
        _npz_case("npz_absurd_header_test_file", _absurd_header, ["data.test_path", "declares shape"], role="test",
                  quick=True),
        _npz_case("npz_zip_member_larger_than_file", _lying_zip_directory, ["diffraction", "holds"], quick=True),
        _npz_case("npz_no_object_n_train_above_file", _npz(diffraction=a["diffraction"][:8],
                                                                  xcoords=a["xcoords"][:8], ycoords=a["ycoords"][:8],
                                                                  objectGuess=None), ["data.n_train", "8"]),
        Case("npz_n_test_more_than_file", ["data=npz", "data.train_path={dir}/good.npz",
                                           "data.test_path={dir}/good.npz", "data.n_train=16", "data.n_test=500"],
             ["data.n_test", "500"], kind="npz", files={"good.npz": _npz()}),
        Case("npz_in_a_sweep_job", ["-m", "data=npz", "data.train_path={dir}/good.npz,{dir}/bad.npz",
                                    "data.test_path={dir}/good.npz", "data.n_train=16"],
             ["bad.npz", "NaN"], kind="npz",
             files={"good.npz": _npz(), "bad.npz": _npz(diffraction=_set("diffraction", (0, 1, 1), np.nan))}),
    ]


def _lying_zip_directory(path: Path) -> None:
    """A stored archive whose central directory claims a 'diffraction' member of 2**40 bytes."""
    _npz()(path)
    data = bytearray(path.read_bytes())
    name = b"diffraction.npy"
    at = data.find(b"PK\x01\x02")  # central directory entries: sizes at +20 (compressed) and +24
    while at >= 0:
        n = int.from_bytes(data[at + 28:at + 30], "little")
        if data[at + 46:at + 46 + n] == name:
            data[at + 20:at + 24] = (0xFFFFFFF0).to_bytes(4, "little")
            data[at + 24:at + 28] = (0xFFFFFFF0).to_bytes(4, "little")
        at = data.find(b"PK\x01\x02", at + 4)
    path.write_bytes(bytes(data))


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _dev_zero(path: Path) -> None:
    os.symlink("/dev/zero", path)


def _probe_file(**changes) -> Callable[[Path], None]:
    """An NPZ holding only a probe (``probeGuess``) or what ``changes`` make of it."""
    def write(path: Path) -> None:
        arrays = {"probeGuess": valid_arrays()["probeGuess"]}
        arrays.update({k: v for k, v in changes.items() if v is not None})
        for k in [k for k, v in changes.items() if v is None]:
            arrays.pop(k, None)
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)
    return write


def special_file_cases() -> list[Case]:
    """Paths that are not regular files (a FIFO would block a reader, /dev/zero never ends)."""
    good = {"good.npz": _npz()}
    runs = [
        ("fifo_train_path", "data.train_path={dir}/pipe.npz", "data.test_path={dir}/good.npz", "pipe.npz", _fifo,
         ["data.train_path", "FIFO"]),
        ("fifo_test_path", "data.train_path={dir}/good.npz", "data.test_path={dir}/pipe.npz", "pipe.npz", _fifo,
         ["data.test_path", "FIFO"]),
        ("dev_zero_train_path", "data.train_path={dir}/zero.npz", "data.test_path={dir}/good.npz", "zero.npz",
         _dev_zero, ["data.train_path", "character device"]),
    ]
    cases = [Case(name, ["data=npz", train, test, "data.n_train=16"], needles, kind="path",
                  files={**good, fname: writer}, quick=True) for name, train, test, fname, writer, needles in runs]
    cases += [
        Case("dev_zero_directly", ["data=npz", "data.train_path=/dev/zero", "data.test_path={dir}/good.npz",
                                   "data.n_train=16"], ["data.train_path", "/dev/zero"], kind="path", files=good,
             quick=True),
        Case("fifo_probe_path", ["data.probe=file", "data.probe_path={dir}/probe.npz"],
             ["data.probe_path", "FIFO"], kind="path", files={"probe.npz": _fifo}, quick=True),
        Case("probe_path_is_directory", ["data.probe=file", "data.probe_path={dir}/probes"],
             ["data.probe_path", "directory"], kind="path", files={"probes": lambda p: p.mkdir()}),
        Case("probe_file_without_probe", ["data.probe=file", "data.probe_path={dir}/probe.npz"],
             ["data.probe_path", "probeGuess"], kind="npz",
             files={"probe.npz": _probe_file(probeGuess=None, other=np.ones(3))}),
        Case("probe_file_wrong_size", ["data.probe=file", "data.probe_path={dir}/probe.npz"],
             ["data.probe_path", "data.N"], kind="npz",
             files={"probe.npz": _probe_file(probeGuess=np.ones((16, 16), np.complex64))}),
        Case("probe_file_nan", ["data.probe=file", "data.probe_path={dir}/probe.npz"],
             ["data.probe_path", "NaN"], kind="npz",
             files={"probe.npz": _probe_file(probeGuess=_set("probeGuess", (1, 1), np.nan)(valid_arrays()))}),
        Case("probe_file_not_a_zip", ["data.probe=file", "data.probe_path={dir}/probe.npz"],
             ["data.probe_path", "probe.npz"], kind="npz", files={"probe.npz": _not_zip}),
    ]
    return cases


def path_cases() -> list[Case]:
    def mkdir(path: Path) -> None:
        path.mkdir()

    def regular(path: Path) -> None:
        path.write_text("a file, not a folder\n")

    good = {"good.npz": _npz()}
    return [
        Case("path_missing", ["data=npz", "data.train_path={dir}/nowhere.npz", "data.test_path={dir}/good.npz",
                              "data.n_train=16"], ["data.train_path", "does not exist"], kind="path", files=good),
        Case("path_is_directory", ["data=npz", "data.train_path={dir}/adir.npz", "data.test_path={dir}/good.npz",
                                   "data.n_train=16"], ["data.train_path", "directory"], kind="path",
             files={**good, "adir.npz": mkdir}),
        Case("path_missing_test", ["data=npz", "data.train_path={dir}/good.npz", "data.test_path={dir}/gone.npz",
                                   "data.n_train=16"], ["data.test_path", "does not exist"], kind="path", files=good),
        Case("output_dir_under_a_file", ["hydra.run.dir={dir}/plainfile/run"], ["hydra.run.dir", "not writable"],
             kind="path", files={"plainfile": regular}),
        Case("sweep_dir_under_a_file", ["-m", "seed=1,2", "hydra.sweep.dir={dir}/plainfile/sweep"],
             ["hydra.sweep.dir", "not writable"], kind="path", files={"plainfile": regular}),
    ]


def more_config_cases() -> list[Case]:
    """Ranges and names the schema's types cannot express, single runs and sweeps."""
    c = Case
    return [
        c("scan_unknown", ["data.scan=spiral"], ["data.scan"]),
        c("precision_unknown", ["train.precision=half"], ["train.precision"]),
        c("lr_schedule_unknown", ["train.lr_schedule=step"], ["train.lr_schedule"]),
        c("patience_unit_unknown", ["train.patience_unit=minutes"], ["train.patience_unit"]),
        c("reference_unknown", ["eval.reference=oracle"], ["eval.reference"]),
        c("object_phase_unknown", ["data.object_phase=wild"], ["data.object_phase"]),
        c("verbose_unknown", ["train.verbose=loud"], ["train.verbose"]),
        c("probe_scale_zero", ["data.probe_scale=0"], ["data.probe_scale"]),
        c("jitter_negative", ["data.jitter=-1"], ["data.jitter"]),
        c("n_random_positions_zero", ["data.scan=random", "data.n_random_positions=0"], ["data.n_random_positions"]),
        c("n_filters_scale_zero", ["model.n_filters_scale=0"], ["model.n_filters_scale"]),
        c("border_channels_all", ["model.border_channels=4096"], ["model.border_channels"]),
        c("border_activation_unknown", ["model.border_activation=relu"], ["model.border_activation"]),
        c("nll_weight_negative", ["model.nll_weight=-1"], ["model.nll_weight"]),
        c("pinn_without_data_term", ["model.nll_weight=0", "model.mae_weight=0"], ["model.nll_weight"]),
        c("iterations_zero", ["model=ptylab", "model.iterative.iterations=0"], ["model.iterative.iterations"]),
        c("min_lr_negative", ["train.min_lr=-1"], ["train.min_lr"]),
        c("retries_negative", ["hardware.retries=-1"], ["hardware.retries"]),
        c("n_train_objects_zero", ["data.n_train_objects=0"], ["data.n_train_objects"]),
        c("lr_patience_zero", ["train.lr_patience=0"], ["train.lr_patience"]),
        c("train_stride_zero", ["data.train_stride=0"], ["data.train_stride"]),
        c("epochs_zero", ["train.epochs=0"], ["train.epochs"]),
        c("learning_rate_zero", ["train.learning_rate=0"], ["train.learning_rate"]),
        c("npz_with_two_objects", ["data=npz", "data.train_path={dir}/good.npz", "data.test_path={dir}/good.npz",
                                   "data.n_train_objects=2"], ["data.n_train_objects"], files={"good.npz": _npz()}),
        c("unknown_study", ["study=quik"], ["study=quik", "quick"]),
        c("unknown_launcher", ["hydra/launcher=nope"], ["launcher=nope", "basic"]),
        # sweeps: every job is checked before the sweep folder exists
        c("sweep_second_value_bad", ["-m", "seed=1,2", "data.N=16,48"], ["data.N=48"]),
        c("sweep_bad_fixed_value", ["-m", "seed=1,2", "data.nphotons=-1"], ["data.nphotons"]),
        c("sweep_models_bad_gridsize", ["-m", "model=pinn,baseline", "data.gridsize=0"], ["data.gridsize"]),
        c("study_with_bad_value", ["study=quick", "data.nphotons=-1"], ["data.nphotons"]),
        c("optuna_with_bad_fixed_value", ["study=optuna", "train.batch_size=0"], ["train.batch_size"]),
        c("sweep_range_bad_value", ["-m", "train.epochs=range(-1,2)"], ["train.epochs"]),
        c("sweep_unknown_key", ["-m", "data.NN=1,2"], ["data.NN"]),
        # code execution through _target_, wherever it is set
        c("target_in_callback_os_system", ["+hydra.callbacks.x._target_=os.system"],
          ["hydra.callbacks.x._target_", "os.system", "remove"]),
        c("target_in_callback_eval", ["+hydra.callbacks.y._target_=builtins.eval"],
          ["hydra.callbacks.y._target_", "builtins.eval"]),
        c("target_in_callback_in_sweep", ["-m", "seed=1,2", "+hydra.callbacks.z._target_=subprocess.Popen"],
          ["hydra.callbacks.z._target_", "subprocess.Popen"]),
        c("target_nested_in_job", ["+model.extra={_target_: shutil.rmtree}"], ["model.extra"]),
    ]


def cli_cases() -> list[Case]:
    """Every ``ptycho-exp`` subcommand, fed a path or value it must refuse."""
    def cli(name, args, needles, files=None, quick=False):
        return Case(name, args, needles, kind="cli", files=files or {}, entry="cli", quick=quick)

    good = {"good.npz": _npz()}
    fifo = {"pipe.npz": _fifo}
    nan = {"nan.npz": _npz(diffraction=_set("diffraction", (0, 0, 0), np.nan))}
    plain = {"plain.txt": lambda p: p.write_text("not a folder\n")}
    empty_dir = {"emptydir": lambda p: p.mkdir()}
    return [
        # status / aggregate
        cli("status_on_a_file", ["status", "{dir}/plain.txt"], ["plain.txt", "is a file, not a folder"], plain),
        cli("status_missing", ["status", "{dir}/nowhere"], ["nowhere", "does not exist"]),
        cli("status_bad_max_rows", ["status", "{dir}", "--max-rows", "many"], ["--max-rows"]),
        cli("aggregate_on_a_file", ["aggregate", "{dir}/plain.txt"], ["plain.txt", "is a file"], plain),
        cli("aggregate_missing", ["aggregate", "{dir}/nowhere"], ["nowhere", "does not exist"]),
        cli("aggregate_out_is_a_file", ["aggregate", "{dir}/emptydir", "--out", "{dir}/plain.txt"],
            ["--out", "plain.txt", "existing file"], {**plain, **empty_dir}),
        cli("aggregate_bad_threshold", ["aggregate", "{dir}", "--min-ms-ssim-phase", "high"],
            ["--min-ms-ssim-phase"]),
        # plan validates like the run
        cli("plan_unknown_study", ["plan", "study=quik"], ["study=quik", "quick"]),
        cli("plan_bad_N", ["plan", "data.N=63"], ["data.N=63"]),
        cli("plan_unknown_key", ["plan", "data.NN=3"], ["data.NN"]),
        cli("plan_bad_sweep_value", ["plan", "seed=1,2", "train.epochs=0"], ["train.epochs"]),
        cli("plan_npz_nan", ["plan", "data=npz", "data.train_path={dir}/nan.npz", "data.test_path={dir}/nan.npz",
                             "data.n_train=16", "data.N=32"], ["nan.npz", "NaN"], nan),
        cli("plan_target", ["plan", "+hydra.callbacks.x._target_=os.system"], ["hydra.callbacks.x._target_"]),
        cli("plan_syntax", ["plan", "data.N=("], ["overrides"]),
        # predict / rerun
        cli("predict_fifo_data", ["predict", "{dir}", "{dir}/pipe.npz", "--out", "{dir}/o.npz"],
            ["pipe.npz", "FIFO"], fifo, quick=True),
        cli("predict_nan_data", ["predict", "{dir}", "{dir}/bad.npz", "--out", "{dir}/o.npz"],
            ["bad.npz", "probeGuess"], {"bad.npz": _npz(probeGuess=None)}),
        cli("predict_nan_values", ["predict", "{dir}", "{dir}/nan.npz", "--out", "{dir}/o.npz"],
            ["nan.npz", "NaN"], nan),
        cli("predict_model_dir_missing", ["predict", "{dir}/nomodel", "{dir}/good.npz", "--out", "{dir}/o.npz"],
            ["nomodel", "does not exist"], good),
        cli("predict_out_is_a_folder", ["predict", "{dir}", "{dir}/good.npz", "--out", "{dir}/emptydir"],
            ["--out", "emptydir", "folder"], {**good, **empty_dir}),
        cli("rerun_on_a_file", ["rerun", "{dir}/plain.txt"], ["plain.txt", "is a file"], plain),
        cli("rerun_missing", ["rerun", "{dir}/nojob"], ["nojob", "does not exist"]),
        cli("rerun_not_a_job", ["rerun", "{dir}/emptydir"], ["emptydir", "result.json"], empty_dir),
        cli("rerun_out_is_a_file", ["rerun", "{dir}/emptydir", "--out", "{dir}/plain.txt"],
            ["--out", "plain.txt"], {**plain, **empty_dir}),
        # data inspect
        cli("inspect_fifo", ["data", "inspect", "{dir}/pipe.npz"], ["pipe.npz", "FIFO"], fifo, quick=True),
        cli("inspect_dev_zero", ["data", "inspect", "/dev/zero"], ["/dev/zero", "character device"], quick=True),
        cli("inspect_missing", ["data", "inspect", "{dir}/gone.npz"], ["gone.npz", "does not exist"]),
        cli("inspect_directory", ["data", "inspect", "{dir}/emptydir"], ["emptydir", "directory"], empty_dir),
        cli("inspect_nan", ["data", "inspect", "{dir}/nan.npz"], ["nan.npz", "NaN"], nan),
        cli("inspect_absurd_header", ["data", "inspect", "{dir}/big.npz"], ["big.npz", "declares shape"],
            {"big.npz": _absurd_header}, quick=True),
        cli("inspect_lying_zip", ["data", "inspect", "{dir}/big.npz"], ["big.npz", "holds"],
            {"big.npz": _lying_zip_directory}, quick=True),
        cli("inspect_truncated", ["data", "inspect", "{dir}/half.npz"], ["half.npz", "truncated"],
            {"half.npz": _truncated}),
        cli("inspect_all_zero", ["data", "inspect", "{dir}/zero.npz"], ["zero.npz", "zero"],
            {"zero.npz": _npz(diffraction=np.zeros((M, N, N), np.float32))}),
        # data split
        cli("split_fifo", ["data", "split", "{dir}/pipe.npz", "--train-out", "{dir}/a.npz", "--test-out",
                           "{dir}/b.npz"], ["pipe.npz", "FIFO"], fifo, quick=True),
        cli("split_nan", ["data", "split", "{dir}/nan.npz", "--train-out", "{dir}/a.npz", "--test-out",
                          "{dir}/b.npz"], ["nan.npz", "NaN"], nan),
        cli("split_same_outputs", ["data", "split", "{dir}/good.npz", "--train-out", "{dir}/a.npz", "--test-out",
                                   "{dir}/a.npz"], ["--train-out", "--test-out"], good),
        cli("split_out_is_a_folder", ["data", "split", "{dir}/good.npz", "--train-out", "{dir}/emptydir",
                                      "--test-out", "{dir}/b.npz"], ["--train-out", "emptydir"],
            {**good, **empty_dir}),
        cli("split_missing_option", ["data", "split", "{dir}/good.npz", "--train-out", "{dir}/a.npz"],
            ["--test-out"], good),
        cli("split_negative_gap", ["data", "split", "{dir}/good.npz", "--train-out", "{dir}/a.npz", "--test-out",
                                   "{dir}/b.npz", "--gap", "-4"], ["gap"], good),
        cli("split_output_over_input", ["data", "split", "{dir}/good.npz", "--train-out", "{dir}/good.npz",
                                        "--test-out", "{dir}/b.npz"], ["--train-out", "input"], good),
        # data simulate
        cli("simulate_bad_N", ["data", "simulate", "--out", "{dir}/s.npz", "data.N=63"], ["data.N"]),
        cli("simulate_unknown_key", ["data", "simulate", "--out", "{dir}/s.npz", "data.NN=1"], ["data.NN"]),
        cli("simulate_unknown_study", ["data", "simulate", "--out", "{dir}/s.npz", "study=quik"], ["study=quik"]),
        cli("simulate_out_is_a_folder", ["data", "simulate", "--out", "{dir}/emptydir"], ["--out", "emptydir"],
            empty_dir),
        cli("simulate_fifo_probe", ["data", "simulate", "--out", "{dir}/s.npz", "data.probe=file",
                                    "data.probe_path={dir}/pipe.npz"], ["pipe.npz"], fifo, quick=True),
        cli("simulate_bad_which", ["data", "simulate", "--out", "{dir}/s.npz", "--which", "val"], ["--which"]),
        # data import
        cli("import_fifo", ["data", "import", "{dir}/pipe.npz", "--format", "cxi", "--out", "{dir}/o.npz"],
            ["pipe.npz", "FIFO"], fifo, quick=True),
        cli("import_dev_zero", ["data", "import", "/dev/zero", "--format", "tike", "--out", "{dir}/o.npz"],
            ["/dev/zero"], quick=True),
        cli("import_fifo_probe", ["data", "import", "{dir}/good.npz", "--format", "npz", "--probe",
                                  "{dir}/pipe.npz", "--out", "{dir}/o.npz"], ["--probe", "pipe.npz"],
            {**good, **fifo}, quick=True),
        cli("import_missing", ["data", "import", "{dir}/gone.h5", "--format", "cxi", "--out", "{dir}/o.npz"],
            ["gone.h5", "does not exist"]),
        cli("import_not_hdf5", ["data", "import", "{dir}/plain.txt", "--format", "cxi", "--out", "{dir}/o.npz"],
            ["plain.txt", "HDF5"], plain),
        cli("import_bad_format", ["data", "import", "{dir}/good.npz", "--format", "tiff", "--out", "{dir}/o.npz"],
            ["--format"], good),
        cli("import_odd_N", ["data", "import", "{dir}/good.npz", "--format", "npz", "--N", "3", "--out",
                             "{dir}/o.npz"], ["--N"], good),
        cli("import_bad_frames", ["data", "import", "{dir}/good.npz", "--format", "npz", "--frames", "x",
                                  "--out", "{dir}/o.npz"], ["--frames"], good),
        # data export
        cli("export_on_a_file", ["data", "export", "{dir}/plain.txt", "--out", "{dir}/ex"], ["plain.txt"], plain),
        cli("export_not_a_job", ["data", "export", "{dir}/emptydir", "--out", "{dir}/ex"], ["emptydir"], empty_dir),
        cli("export_out_is_a_file", ["data", "export", "{dir}/emptydir", "--out", "{dir}/plain.txt"],
            ["--out", "plain.txt"], {**plain, **empty_dir}),
        # score
        cli("score_fifo_recon", ["score", "{dir}/pipe.npz", "--test", "{dir}/good.npz", "--out", "{dir}/sc"],
            ["pipe.npz", "FIFO"], {**good, **fifo}, quick=True),
        cli("score_fifo_test", ["score", "{dir}/good.npz", "--test", "{dir}/pipe.npz", "--out", "{dir}/sc"],
            ["--test", "pipe.npz"], {**good, **fifo}, quick=True),
        cli("score_dev_zero_reference", ["score", "{dir}/good.npz", "--test", "{dir}/good.npz", "--reference",
                                         "/dev/zero", "--out", "{dir}/sc"], ["--reference", "/dev/zero"], good,
            quick=True),
        cli("score_missing_recon", ["score", "{dir}/gone.npz", "--test", "{dir}/good.npz", "--out", "{dir}/sc"],
            ["gone.npz", "does not exist"], good),
        cli("score_out_is_a_file", ["score", "{dir}/good.npz", "--test", "{dir}/good.npz", "--out",
                                    "{dir}/plain.txt"], ["--out", "plain.txt"], {**good, **plain}),
        # the top level
        cli("unknown_command", ["frobnicate"], ["frobnicate"]),
        cli("unknown_option", ["status", "{dir}", "--colour"], ["--colour"]),
    ]


def _measured(fmt: str, drop=()) -> Callable[[Path], None]:
    """Writer of the valid scan as a CXI (``fmt="cxi"``) or PtyLab HDF5 file of known geometry, keys dropped."""
    def write(path: Path) -> None:
        from ptycho_exp.data.container import ScanData
        from tests.helpers.measured import write_cxi, write_ptylab

        a = valid_arrays()
        scan = ScanData(diffraction=a["diffraction"], positions=np.stack([a["ycoords"], a["xcoords"]], axis=1),
                        probe=a["probeGuess"], meta={"photon_scale": 1.0})
        (write_cxi if fmt == "cxi" else write_ptylab)(path, scan, drop=drop)
    return write


def measured_cases() -> list[Case]:
    """``data=cxi`` / ``data=ptylab_h5`` (and ``data import``) fed a missing file, another format, or a file
    without a geometry fact: refused before any run folder, naming the config key (the option for the CLI)."""
    det, src = "entry_1/instrument_1/detector_1", "entry_1/instrument_1/source_1"
    cxi = ["data=cxi", "data.test_path={dir}/scan.cxi", "model=ptylab"]
    h5 = ["data=ptylab_h5", "data.test_path={dir}/scan.h5", "model=ptylab"]
    good_cxi, good_h5 = {"scan.cxi": _measured("cxi")}, {"scan.h5": _measured("ptylab")}
    no_distance = {"scan.cxi": _measured("cxi", drop=[f"{det}/distance"])}
    return [
        Case("cxi_missing_distance", cxi, ["data.test_path", "scan.cxi", f"{det}/distance", "data.reader.distance"],
             kind="npz", files=no_distance),
        Case("cxi_missing_energy", cxi, ["scan.cxi", "data.reader.energy_ev", "data.reader.wavelength"],
             kind="npz", files={"scan.cxi": _measured("cxi", drop=[f"{src}/energy"])}),
        Case("cxi_missing_probe", cxi, ["scan.cxi", "data.reader.probe_path"], kind="npz",
             files={"scan.cxi": _measured("cxi", drop=[f"{src}/illumination"])}),
        Case("cxi_without_entry_1", cxi, ["data.test_path", "scan.cxi", "entry_1/data_1/data"], kind="npz",
             files={"scan.cxi": _measured("ptylab")}),
        Case("cxi_not_hdf5", cxi, ["scan.cxi", "HDF5"], kind="npz", files={"scan.cxi": _not_zip}),
        Case("cxi_missing_file", ["data=cxi", "data.test_path={dir}/gone.cxi", "model=ptylab"],
             ["data.test_path", "gone.cxi", "does not exist"], kind="path"),
        Case("cxi_path_is_directory", ["data=cxi", "data.test_path={dir}/scans", "model=ptylab"],
             ["data.test_path", "directory"], kind="path", files={"scans": lambda p: p.mkdir()}),
        Case("cxi_without_test_path", ["data=cxi", "model=ptylab"], ["data.test_path", "data=cxi"]),
        Case("cxi_frames_select_none", cxi + ["data.reader.frame_start=500"], ["data.reader.frame_start", "500"],
             kind="npz", files=good_cxi),
        Case("cxi_n_test_above_file", cxi + ["data.n_test=500"], ["data.n_test", "scan.cxi"], kind="npz",
             files=good_cxi),
        Case("cxi_reader_bin_zero", cxi + ["data.reader.bin=0"], ["data.reader.bin"], files=good_cxi),
        Case("cxi_reader_distance_negative", cxi + ["data.reader.distance=-2"], ["data.reader.distance"],
             files=good_cxi),
        Case("cxi_energy_and_wavelength", cxi + ["data.reader.energy_ev=8000", "data.reader.wavelength=1e-10"],
             ["data.reader.energy_ev", "data.reader.wavelength"], files=good_cxi),
        Case("cxi_reader_unknown_key", cxi + ["data.reader.distanse=2"], ["data.reader.distanse"], files=good_cxi),
        Case("cxi_bad_file_in_a_sweep", ["-m", "data=cxi", "data.test_path={dir}/scan.cxi,{dir}/bad.cxi",
                                         "model=ptylab"], ["bad.cxi", "data.reader.distance"], kind="npz",
             files={**good_cxi, "bad.cxi": no_distance["scan.cxi"]}),
        Case("ptylab_h5_missing_pixel_size", h5, ["scan.h5", "dxd", "data.reader.pixel_size"], kind="npz",
             files={"scan.h5": _measured("ptylab", drop=["dxd"])}),
        Case("ptylab_h5_missing_distance", h5, ["scan.h5", "zo", "data.reader.distance"], kind="npz",
             files={"scan.h5": _measured("ptylab", drop=["zo"])}),
        Case("ptylab_h5_given_a_cxi_file", h5, ["scan.h5", "ptychogram"], kind="npz",
             files={"scan.h5": _measured("cxi")}),
        Case("ptylab_h5_bad_train_file", ["data=ptylab_h5", "data.train_path={dir}/bad.h5",
                                          "data.test_path={dir}/scan.h5"],
             ["data.train_path", "bad.h5", "data.reader.probe_path"], kind="npz",
             files={**good_h5, "bad.h5": _measured("ptylab", drop=["probe"])}),
        Case("plan_cxi_missing_distance", ["plan", *cxi, "data.N=32"], ["scan.cxi", "data.reader.distance"],
             kind="cli", files=no_distance, entry="cli"),
        Case("import_cxi_missing_distance", ["data", "import", "{dir}/scan.cxi", "--format", "cxi", "--N", "32",
                                             "--out", "{dir}/o.h5"], ["scan.cxi", "--distance METRES"],
             kind="cli", files=no_distance, entry="cli"),
    ]


def all_cases() -> list[Case]:
    return (config_cases() + more_config_cases() + npz_cases() + special_file_cases() + path_cases()
            + cli_cases() + measured_cases())


def build_case(case: Case, folder: Path) -> list[str]:
    """Write the case's files into ``folder``; return its full override list (with a run dir there)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, writer in case.files.items():
        writer(folder / name)
    args = [a.replace("{dir}", str(folder)) for a in case.overrides]
    if case.entry == "cli":
        return args
    if not any(a.startswith(("hydra.run.dir=", "hydra.sweep.dir=")) for a in args):
        args += [f"hydra.run.dir={folder}/run", f"hydra.sweep.dir={folder}/sweep"]
    return BASE + args
