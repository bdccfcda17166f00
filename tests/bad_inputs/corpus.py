"""The bad-input corpus: configs, NPZ files and paths that every entry point must refuse cleanly.

:func:`build_corpus` writes the files of every case into a folder and returns the cases; each case
is the overrides of one ``python -m ptycho_exp`` run and the words its single error line must hold
(the field it names). Nothing here is committed as a binary: the NPZ files are generated from a
small valid contract file (M=64 patterns of 32×32) by one change each.
"""
from __future__ import annotations

import io
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
    """One bad input: the overrides (``{dir}`` is the case folder) and what the error must name."""

    name: str
    overrides: list[str]
    needles: list[str]                       # substrings of the one error line (the field, the file ...)
    kind: str = "config"                     # config | npz | path
    files: dict[str, Callable[[Path], None]] = field(default_factory=dict)  # file name -> writer
    job_runs: bool = False                   # True: caught when the job loads data (still before TF)


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


def _npz_case(name: str, writer: Callable[[Path], None], needles: list[str], job_runs: bool = False,
              role: str = "train") -> Case:
    bad, good = "{dir}/bad.npz", "{dir}/good.npz"
    train, test = (bad, good) if role == "train" else (good, bad)
    return Case(name, ["data=npz", f"data.train_path={train}", f"data.test_path={test}", "data.n_train=16"],
                needles, kind="npz", files={"bad.npz": writer, "good.npz": _npz()}, job_runs=job_runs)


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
          ["data.n_train", "100000"], job_runs=True),
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
        c("probe_file_missing", ["data.probe=file", "data.probe_path={dir}/no_probe.npz"], ["no_probe.npz"],
          job_runs=True),
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
        _npz_case("npz_absurd_declared_size", _absurd_header, ["diffraction", "declares shape"]),
        _npz_case("npz_bad_test_file", _npz(probeGuess=None), ["data.test_path", "probeGuess"], role="test"),
        _npz_case("npz_N_mismatch", _npz(diffraction=a["diffraction"][:, :16, :16],
                                         probeGuess=a["probeGuess"][:16, :16]), ["data.N", "16"]),
        _npz_case("npz_n_train_more_than_file", _npz(diffraction=a["diffraction"][:8], xcoords=a["xcoords"][:8],
                                                     ycoords=a["ycoords"][:8]), ["data.n_train", "8 patterns"]),
        # value checks need the data: the job loads it (a second or two, still no TensorFlow)
        _npz_case("npz_nan_amplitude", _npz(diffraction=_set("diffraction", (3, 5, 5), np.nan)),
                  ["diffraction", "NaN"], job_runs=True),
        _npz_case("npz_inf_amplitude", _npz(diffraction=_set("diffraction", (0, 0, 0), np.inf)),
                  ["diffraction", "NaN/Inf"], job_runs=True),
        _npz_case("npz_negative_amplitude", _npz(diffraction=_set("diffraction", (1, 2, 3), -1.0)),
                  ["diffraction", "negative"], job_runs=True),
        _npz_case("npz_nan_position", _npz(xcoords=_set("xcoords", 7, np.nan)), ["xcoords", "NaN"],
                  job_runs=True),
        _npz_case("npz_nan_probe", _npz(probeGuess=_set("probeGuess", (0, 0), np.nan)), ["probeGuess", "NaN"],
                  job_runs=True),
    ]


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


def all_cases() -> list[Case]:
    return config_cases() + npz_cases() + path_cases()


def build_case(case: Case, folder: Path) -> list[str]:
    """Write the case's files into ``folder``; return its full override list (with a run dir there)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, writer in case.files.items():
        writer(folder / name)
    args = [a.replace("{dir}", str(folder)) for a in case.overrides]
    if not any(a.startswith(("hydra.run.dir=", "hydra.sweep.dir=")) for a in args):
        args.append(f"hydra.run.dir={folder}/run")
    return BASE + args
