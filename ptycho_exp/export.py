"""``ptycho-exp data export JOB_DIR --out DIR``: the exact training and test data of a job, for other codes.

The datasets are rebuilt from the job's recorded config (``result.json``'s ``config``, else
``job_config.json`` / ``.hydra/config.yaml``) with :func:`ptycho_exp.data.datasets.build_datasets`, which is
deterministic: simulated scans come from (or are re-simulated into) the dataset cache, NPZ data are re-read
from ``data.train_path`` / ``data.test_path``, the training subset and the groups are drawn with the job's
seeds. ``load_contract_npz`` of the written files gives back, byte for byte, the arrays the job trained on
and scored.

Files (contract NPZ, CONTRACT §4: the layout PtychoPINN-style codes read)
-------------------------------------------------------------------------
``train.npz`` (network jobs only) and ``test.npz``, each with

``diffraction``
    (M, N, N) float32, **amplitude** (square root of the counts, times the scan's ``photon_scale`` for
    simulated data: see ``meta_json``), zero frequency at the centre (fftshifted).
``xcoords``, ``ycoords``
    (M,) float64, pattern (patch) centres in pixels of ``objectGuess`` (x = column, y = row).
``xcoords_start``, ``ycoords_start``
    (M,) float64, equal to ``xcoords``/``ycoords`` (the key names some codes expect for the nominal positions).
``probeGuess``
    (N, N) complex64, the probe of the scan (the networks' fixed probe is the test scan's).
``objectGuess``
    (H, W) complex64, the ground-truth object in the frame of the coordinates (absent when the data have none).
``scan_index``
    (M,) int64, which object each pattern belongs to (training on several objects lays them side by side
    on one canvas; 0 for a single object).
``pattern_index``
    (M,) int64, each pattern's index in the job's full scan (before the training subset was drawn).
``groups``
    (n, C) int64, the job's samples: C = gridsize² indices into this file's patterns per sample (a
    training sample's neighbours; at gridsize 1 simply ``arange(M)[:, None]``).
``meta_json``
    JSON string: the split, the job folder, config hash, seed, N, gridsize, grouping, n_train and the
    scan's own metadata (photon_scale, nphotons, noise, ...).

Training file: at gridsize 1, the n_train drawn patterns in the job's sample order; at gridsize > 1, every
distinct pattern of the job's groups (sorted), with ``groups`` giving the samples. Test file: the patterns
the job predicts and scores (all test positions, or those of the ``data.n_test`` subset), in scan order.
"""
from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np


TRAIN_FILE = "train.npz"
TEST_FILE = "test.npz"


def job_config(job_dir: Path) -> dict:
    """The resolved config a job ran with; ValueError naming the folder when none is recorded."""

    from ptycho_exp.results import read_result

    res = read_result(job_dir)
    if res and isinstance(res.get("config"), dict):
        return res["config"]
    cfg_json = job_dir / "job_config.json"
    if cfg_json.is_file():
        try:
            return json.loads(cfg_json.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass
    cfg_yaml = job_dir / ".hydra" / "config.yaml"
    if cfg_yaml.is_file():
        import yaml

        cfg = yaml.safe_load(cfg_yaml.read_text(encoding="utf-8"))
        if isinstance(cfg, dict):
            return cfg
    raise ValueError(f"{job_dir}: no job config found (result.json, job_config.json or .hydra/config.yaml). "
                     "Fix: pass a job folder written by `python -m ptycho_exp`")


def rebuild_datasets(cfg: dict, cache_dir: str | None = None) -> Any:
    """The job's :class:`~ptycho_exp.data.datasets.Datasets`, built exactly as its run built them."""

    from ptycho_exp.config import NETWORK_MODELS
    from ptycho_exp.data.datasets import build_datasets
    from ptycho_exp.run import as_config

    if (cfg.get("model") or {}).get("name", "").startswith("external:"):
        raise ValueError("an external arm's folder holds no data of its own. Fix: export the job whose test "
                         "file it was scored on")
    c = as_config(cfg)
    return build_datasets(c.data, seed=int(c.seed), cache_dir=cache_dir or c.paths.cache_dir,
                          need_train=c.model.name in NETWORK_MODELS)


def _scan_index(scan: Any, index: np.ndarray) -> np.ndarray:
    """Object number of each pattern ``index`` of a (possibly side-by-side) scan."""
    import numpy as np

    origins = scan.meta.get("object_origins")
    if not origins or len(origins) < 2:
        return np.zeros(len(index), np.int64)
    starts = np.array([o[1] for o in origins], np.float64)
    return (np.searchsorted(starts, scan.positions[index, 1], side="right") - 1).astype(np.int64)


def split_arrays(scan: Any, groups: np.ndarray, keep_order: bool) -> dict[str, np.ndarray]:
    """Contract arrays of the patterns ``groups`` uses (see the module docstring)."""
    import numpy as np

    groups = np.asarray(groups, np.int64)
    if keep_order and groups.shape[1] == 1:
        index, local = groups[:, 0], np.arange(groups.shape[0], dtype=np.int64)[:, None]
    else:
        index, inverse = np.unique(groups, return_inverse=True)
        local = inverse.reshape(groups.shape).astype(np.int64)
    pos = np.asarray(scan.positions, np.float64)[index]
    arrays = {"diffraction": np.asarray(scan.diffraction[index], np.float32),
              "xcoords": pos[:, 1].copy(), "ycoords": pos[:, 0].copy(),
              "xcoords_start": pos[:, 1].copy(), "ycoords_start": pos[:, 0].copy(),
              "probeGuess": np.asarray(scan.probe, np.complex64),
              "scan_index": _scan_index(scan, index), "pattern_index": index.astype(np.int64), "groups": local}
    if scan.object is not None:
        arrays["objectGuess"] = np.asarray(scan.object, np.complex64)
    return arrays


def _write_npz(path: Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    import numpy as np

    from ptycho_exp.files import atomic_write_bytes

    buf = io.BytesIO()
    text = json.dumps(meta, sort_keys=True, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v))
    np.savez(buf, **arrays, meta_json=np.asarray(text))
    atomic_write_bytes(path, buf.getvalue())


def export_job_data(job_dir: str | Path, out: str | Path, cache_dir: str | None = None) -> list[Path]:
    """Write ``train.npz`` (network jobs) and ``test.npz`` of a job into ``out``; returns the paths written.

    Raises
    ------
    ValueError
        No config in ``job_dir``, or its data cannot be rebuilt (e.g. a moved ``data.train_path``).
    """

    from ptycho_exp.results import config_hash

    job_dir, out = Path(job_dir), Path(out)
    if not job_dir.is_dir():
        raise ValueError(f"{job_dir}: no such job folder. Fix: pass a folder written by `python -m ptycho_exp`")
    cfg = job_config(job_dir)
    ds = rebuild_datasets(cfg, cache_dir)
    data = cfg.get("data") or {}
    common = {"job_dir": str(job_dir.resolve()), "config_hash": config_hash(cfg), "seed": cfg.get("seed"),
              "model": (cfg.get("model") or {}).get("name"), "N": ds.test_scan.N,
              "gridsize": int(data.get("gridsize", 1)), "grouping": data.get("grouping"),
              "n_train": data.get("n_train"), "n_test": data.get("n_test"), "data_kind": data.get("kind")}
    files = []
    if ds.train is not None:
        arrays = split_arrays(ds.train_scan, ds.train.groups, keep_order=True)
        files.append((out / TRAIN_FILE, arrays, {**ds.train_scan.meta, **common, "split": "train"}))
    arrays = split_arrays(ds.test_scan, ds.test.groups, keep_order=False)
    files.append((out / TEST_FILE, arrays, {**ds.test_scan.meta, **common, "split": "test"}))
    for path, arrays, meta in files:
        meta.pop("source", None)
        _write_npz(path, arrays, meta)
    return [p for p, _, _ in files]


def add_export_parser(dsub: argparse._SubParsersAction) -> None:
    """``ptycho-exp data export`` (see the module docstring)."""

    p = dsub.add_parser("export", help="write the exact train/test data a job used as contract NPZs")
    p.add_argument("job_dir")
    p.add_argument("--out", required=True, help="folder for train.npz and test.npz")
    p.add_argument("--cache-dir", help="dataset cache (default: the job's paths.cache_dir)")
    p.set_defaults(handler=run_export)


def run_export(args: argparse.Namespace) -> int:
    import numpy as np

    for path in export_job_data(args.job_dir, args.out, args.cache_dir):
        with np.load(path, allow_pickle=False) as z:
            print(f"wrote {path}: {z['diffraction'].shape[0]} patterns of {z['diffraction'].shape[1]}x"
                  f"{z['diffraction'].shape[2]}, {z['groups'].shape[0]} samples")
    return 0
