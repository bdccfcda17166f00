"""Read job folders into one table (one row per job).

A job folder is any folder holding ``.hydra/overrides.yaml`` or ``result.json``; folders are found by
walking the given paths, never by matching directory names. Swept parameters are detected from the
overrides: a key is a column when its value differs across jobs (``model`` and ``seed`` always are).

Each row also carries what its scores mean: ``scored_against`` (``ground_truth`` or the iterative reference,
e.g. ``ptylab:ePIE:300``), ``metrics_valid`` and ``invalid_reason``, ``metrics_version``. Folders written before
``metrics_version`` 2 (no ``metrics_version`` and no ``phase_ssim_ref``) scored phase SSIM / MS-SSIM on the
reference publication's scale: their values are read into ``phase_ssim_ref`` / ``phase_ms_ssim_ref`` and the
headline columns stay empty (``df.attrs['legacy_jobs']`` counts them), so numbers of different meaning are
never averaged together. Columns an old folder lacks (``null_*``, ``ref_*``, ``scored_against``...) are empty.
"""
from __future__ import annotations

import json
import os
import re
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from ptycho_exp.analysis.metricinfo import LEGACY_RENAMES, NULL_PREFIX, REF_PREFIX
from ptycho_exp.models.registry import ITERATIVE_MODELS
from ptycho_exp.files import (
    HYDRA_CONFIG_FILE,
    HYDRA_DIR,
    MODEL_DIR,
    OVERRIDES_FILE,
    PLOTS_DIR,
    RESULT_FILE,
    TENSORBOARD_DIR,
)
from ptycho_exp.results import UnreadableResult, claim_owner, load_result

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

CONFIG_FILE = HYDRA_CONFIG_FILE
OK_STATUSES = ("ok", "skipped")
FINISHED_STATUSES = ("ok", "skipped", "failed")
# Sub-records of result.json flattened as "<record>.<key>" columns.
RECORD_PREFIXES = ("timings", "throughput", "resources")
# Fixed (non-parameter, non-metric) columns, in display order.
INFO_COLUMNS = ("job_dir", "sweep_dir", "job", "status", "model", "seed")
# What a job's scores mean (result.json fields; empty for folders written before they existed).
SCORE_COLUMNS = ("scored_against", "metrics_valid", "invalid_reason", "metrics_version")
TAIL_COLUMNS = ("error_type", "error", "started_at", "finished_at", "elapsed_s", "config_hash", "attempts",
                "overrides")
# Folders never worth descending into when looking for jobs.
_PRUNE = {HYDRA_DIR, ".git", "__pycache__", TENSORBOARD_DIR, MODEL_DIR, PLOTS_DIR, ".submitit", "node_modules"}


class NoJobsFound(FileNotFoundError):
    """No job folder under the given paths (raised instead of writing empty tables)."""


# --------------------------------------------------------------------------------------------- finding
def _is_job_dir(path: Path) -> bool:
    return (path / OVERRIDES_FILE).is_file() or (path / RESULT_FILE).is_file()


def _natural_key(path: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def find_job_dirs(paths: Path | str | Iterable[Path | str]) -> list[Path]:
    """Every job folder under ``paths`` (a path may itself be a job folder), naturally sorted, unique."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    found: set[Path] = set()
    for root in paths:
        root = Path(root)
        if not root.is_dir():
            continue
        if _is_job_dir(root):
            found.add(root.resolve())
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath)
            if here != root and (RESULT_FILE in filenames or (here / OVERRIDES_FILE).is_file()):
                found.add(here.resolve())
                dirnames[:] = []  # a job folder's own subfolders (model/, tensorboard/) hold no jobs
                continue
            dirnames[:] = [d for d in dirnames if d not in _PRUNE]
    return sorted(found, key=_natural_key)


# --------------------------------------------------------------------------------------------- parsing
def _load_yaml(path: Path) -> Any:
    import yaml

    safe_loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C SafeLoader when built, else the Python one
    try:
        with open(path, encoding="utf-8") as fh:
            return yaml.load(fh, Loader=safe_loader)  # SafeLoader: no Python objects
    except (OSError, yaml.YAMLError):
        return None


_INT_RE = re.compile(r"^[-+]?\d+$")
_FLOAT_RE = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def parse_value(text: str) -> Any:
    """Type a Hydra override value the way Hydra does for plain scalars (int, float, bool, null, str)."""
    s = text.strip()
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "'\"":
        return s[1:-1]
    low = s.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("null", "~", "none"):
        return None
    if _INT_RE.match(s):
        return int(s)
    if _FLOAT_RE.match(s) or low in ("inf", "-inf", "nan"):
        return float(s)
    return s


def parse_overrides(items: Sequence[str] | None) -> dict[str, Any]:
    """``['model=pinn', '+data.n_train=512']`` -> ``{'model': 'pinn', 'data.n_train': 512}``.

    Deletions (``~key``) and ``hydra.*`` keys are ignored; ``+``/``++`` prefixes are stripped.
    """
    out: dict[str, Any] = {}
    for item in items or ():
        item = str(item)
        if item.startswith("~") or "=" not in item:
            continue
        key, _, value = item.partition("=")
        key = key.lstrip("+").strip()
        if "@" in key:  # group@package=option
            key = key.split("@", 1)[0]
        key = key.replace("/", ".")
        if not key or key == "hydra" or key.startswith("hydra.") or key.startswith("hydra/"):
            continue
        out[key] = parse_value(value)
    return out


def _dotted(cfg: Any, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _parse_time(text: Any) -> datetime | None:
    if not text or not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _number(v: Any) -> float:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return float(v)
    return float("nan")


def read_job(job_dir: Path) -> dict[str, Any]:
    """One job folder as a flat record (status ``pending`` when it has no result.json yet, ``running`` while a
    live process holds its claim, :func:`ptycho_exp.results.is_running`).

    Raises
    ------
    ptycho_exp.results.UnreadableResult
        Its ``result.json`` is not a job record (see :func:`read_jobs`, which reports and skips those).
    """
    job_dir = Path(job_dir)
    result = load_result(job_dir)
    ov_raw = _load_yaml(job_dir / OVERRIDES_FILE)
    overrides_list = [str(x) for x in ov_raw] if isinstance(ov_raw, list) else []
    overrides = parse_overrides(overrides_list)
    cfg = (result or {}).get("config") if isinstance((result or {}).get("config"), dict) else None
    if cfg is None:
        cfg = _load_yaml(job_dir / CONFIG_FILE)
        cfg = cfg if isinstance(cfg, dict) else {}
    rec: dict[str, Any] = {"job_dir": str(job_dir), "sweep_dir": str(job_dir.parent), "job": job_dir.name}
    status = str((result or {}).get("status") or ("pending" if result is None else "unknown"))
    rec["status"] = status
    model = (result or {}).get("model") or _dotted(cfg, "model.name") or overrides.get("model")
    rec["model"] = str(model) if model is not None else "unknown"
    seed = (result or {}).get("seed")
    if seed is None:
        seed = overrides.get("seed", cfg.get("seed"))
    rec["seed"] = seed
    rec["_overrides"] = overrides
    rec["_config"] = cfg
    rec["overrides"] = " ".join(overrides_list)
    rec["_legacy"] = False
    rec["scored_against"] = None
    if result:
        metrics = {str(k): v for k, v in (result.get("metrics") or {}).items()}
        version = result.get("metrics_version")
        # older versions: no metrics_version and no _ref scores (a record with _ref scores is current)
        if version is None and status in OK_STATUSES and not any(new in metrics for new in LEGACY_RENAMES.values()):
            rec["_legacy"] = any(old in metrics for old in LEGACY_RENAMES)
            for old, new in LEGACY_RENAMES.items():  # the published convention, not the headline scale
                if old in metrics:
                    metrics[new] = metrics.pop(old)
        for k, v in metrics.items():
            rec[k] = _number(v)
        sa = result.get("scored_against")
        rec["scored_against"] = str(sa) if sa else None
        mv = result.get("metrics_valid")
        rec["metrics_valid"] = bool(mv) if isinstance(mv, bool) else None
        rec["invalid_reason"] = str(result.get("invalid_reason") or "")
        rec["metrics_version"] = _number(version) if version is not None else float("nan")
        for prefix in RECORD_PREFIXES:
            sub = result.get(prefix) or {}
            if isinstance(sub, dict):
                for k, v in sub.items():
                    rec[f"{prefix}.{k}"] = _number(v)
        err = result.get("error")
        rec["error"] = str(err) if err else ""
        rec["error_type"] = str(result.get("error_type") or "")
        prov = result.get("provenance") or {}
        rec["started_at"] = prov.get("started_at") or ""
        rec["finished_at"] = prov.get("finished_at") or ""
        rec["config_hash"] = result.get("config_hash") or ""
        rec["attempts"] = result.get("attempts")
        t0, t1 = _parse_time(prov.get("started_at")), _parse_time(prov.get("finished_at"))
        elapsed = float("nan")
        if t0 is not None and t1 is not None:
            elapsed = (t1 - t0).total_seconds()
        total = (result.get("timings") or {}).get("total_s")
        if isinstance(total, (int, float)) and status != "running":
            elapsed = float(total)
        rec["elapsed_s"] = elapsed
    if rec["scored_against"] is None and status not in OK_STATUSES:
        rec["scored_against"] = planned_reference(cfg)  # unfinished or failed: what its config asks for
    _mark_running(job_dir, rec)
    return rec


def planned_reference(cfg: dict) -> str | None:
    """The ``scored_against`` a job's config asks for (``eval.reference``): ``ground_truth``, or
    ``ptylab:<algorithm>:<iterations>`` of the iterative reference; None when the config does not say.

    Used for jobs without a recorded ``scored_against`` (unfinished or failed), so that they are counted in
    the group their finished siblings land in. A finished job's own record always wins.
    """
    ref = _dotted(cfg, "eval.reference")
    if ref == "ground_truth":
        return "ground_truth"
    if ref == "iterative":
        algorithm = _dotted(cfg, "eval.reference_algorithm") or "ePIE"
        iterations = _dotted(cfg, "eval.reference_iterations") or 300
        try:
            return f"ptylab:{algorithm}:{int(iterations)}"
        except (TypeError, ValueError):
            return None
    return None


def _mark_running(job_dir: Path, rec: dict[str, Any]) -> None:
    """Status ``running`` (and its start time) while a live process holds the job's claim."""
    owner = claim_owner(job_dir)
    if owner is not None:
        rec["status"] = "running"
        rec["started_at"] = owner.started_at or ""
        rec["elapsed_s"] = float("nan")


def read_jobs(job_dirs: Iterable[Path]) -> tuple[list[dict[str, Any]], list[UnreadableResult]]:
    """:func:`read_job` of each folder; a folder whose ``result.json`` is not a job record is skipped, with one
    warning line naming the file and why, and returned among the problems."""
    import logging

    recs, problems = [], []
    for job_dir in job_dirs:
        try:
            recs.append(read_job(job_dir))
        except UnreadableResult as exc:
            logging.getLogger(__name__).warning("skipped unreadable result file %s", exc)
            problems.append(exc)
    return recs, problems


def unreadable_note(problems: Sequence[Any]) -> str:
    """``"2 unreadable result files skipped"`` ("" for none)."""
    n = len(problems)
    return f"{n} unreadable result file{'s' if n != 1 else ''} skipped" if n else ""


# --------------------------------------------------------------------------------------------- table
def _param_value(rec: dict, key: str) -> Any:
    if key == "model":
        return rec["model"]
    if key == "seed":
        return rec["seed"]
    if key in rec["_overrides"]:
        return rec["_overrides"][key]
    v = _dotted(rec["_config"], key)
    return None if isinstance(v, (dict, list)) else v


def _describe(paths: Iterable[Path | str]) -> str:
    return ", ".join(str(Path(p)) for p in paths)


def collect_jobs(paths: Path | str | Iterable[Path | str]) -> "pd.DataFrame":
    """One row per job folder under ``paths``: job_dir, status, model, seed, swept parameters, metrics,
    ``timings.*``/``throughput.*``/``resources.*``, error text. Raises :class:`NoJobsFound` when empty.

    ``df.attrs['param_columns']`` lists the parameter columns (model, seed, then swept keys).
    Iterative arms (ptylab, tike) have no training set: their ``data.n_train`` is NaN.
    """
    import pandas as pd

    path_list = [paths] if isinstance(paths, (str, Path)) else list(paths)
    job_dirs = find_job_dirs(path_list)
    if not job_dirs:
        missing = [str(p) for p in path_list if not Path(p).exists()]
        extra = f" (does not exist: {', '.join(missing)})" if missing else ""
        raise NoJobsFound(
            f"no job folders found under {_describe(path_list) or '(no paths given)'}{extra}: looked for "
            f"folders containing .hydra/overrides.yaml or {RESULT_FILE} (pass a Hydra sweep dir such as "
            f"multirun/<date>/<time>)")
    recs, problems = read_jobs(job_dirs)
    if not recs:
        raise NoJobsFound(f"no readable job result under {_describe(path_list)}: {unreadable_note(problems)} "
                          f"({'; '.join(str(p) for p in problems[:3])}); fix: re-run those jobs or remove the files")

    keys: list[str] = []
    for rec in recs:
        for k in rec["_overrides"]:
            if k not in keys and k not in ("model", "seed"):
                keys.append(k)
    swept: list[str] = []
    for k in keys:
        values = {repr(_param_value(r, k)) for r in recs if _param_value(r, k) is not None}
        if len(values) > 1:
            swept.append(k)
    rows = []
    for rec in recs:
        row = {k: v for k, v in rec.items() if not k.startswith("_")}
        for k in swept:
            row[k] = _param_value(rec, k)
        rows.append(row)
    df = pd.DataFrame.from_records(rows)

    metric_cols = [c for c in df.columns if c not in INFO_COLUMNS and c not in TAIL_COLUMNS
                   and c not in SCORE_COLUMNS and c not in swept]
    base = [c for c in metric_cols if not any(c.startswith(p + ".") for p in RECORD_PREFIXES)]
    recs_cols = [c for c in metric_cols if c not in base]
    order = (list(INFO_COLUMNS) + list(SCORE_COLUMNS) + swept + sorted(base, key=_metric_order)
             + sorted(recs_cols) + [c for c in TAIL_COLUMNS if c in df.columns])
    for c in order:
        if c not in df.columns:
            df[c] = ("" if c in TAIL_COLUMNS or c in ("error", "error_type", "invalid_reason")
                     else None if c in ("scored_against", "metrics_valid") else float("nan"))
    df = df[order].copy()
    for c in swept:
        df[c] = _normalise_column(df[c])
    if "data.n_train" in df.columns:
        it = df["model"].isin(ITERATIVE_MODELS)
        if it.any():
            df["data.n_train"] = pd.to_numeric(df["data.n_train"], errors="coerce").astype(float)
            df.loc[it, "data.n_train"] = float("nan")
    df["seed"] = _normalise_column(df["seed"])
    df["scored_against"] = df["scored_against"].astype(object)
    df["metrics_valid"] = df["metrics_valid"].astype(object)
    df.attrs["param_columns"] = ["model", "seed"] + swept
    df.attrs["paths"] = [str(p) for p in path_list]
    df.attrs["legacy_jobs"] = int(sum(1 for r in recs if r.get("_legacy")))
    df.attrs["unreadable"] = [str(p) for p in problems]
    return df


def _normalise_column(col: "pd.Series") -> "pd.Series":
    """Numeric where every non-null value is numeric, else strings (NaN kept)."""
    import pandas as pd

    non_null = col.dropna()
    if len(non_null) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in non_null):
        num = pd.to_numeric(col, errors="coerce")
        if (num.dropna() == num.dropna().round()).all() and not num.isna().any():
            return num.astype("int64")
        return num.astype(float)
    return col.map(lambda v: v if v is None or (isinstance(v, float) and v != v) else str(v))


_METRIC_ORDER = ("ssim", "ms_ssim", "frc50", "frc_1_7", "psnr", "psnr255", "pearson", "mae", "mse")


def _metric_order(name: str) -> tuple:
    prefix = 0
    for i, pre in enumerate((NULL_PREFIX, REF_PREFIX), start=1):
        if name.startswith(pre):
            prefix, name = i, name[len(pre):]
    part, _, m = name.partition("_")
    p = {"amp": 0, "phase": 1}.get(part, 2)
    return (prefix, p, _METRIC_ORDER.index(m) if m in _METRIC_ORDER else 99, name)


# --------------------------------------------------------------------------------------------- columns
_METRIC_PREFIXES = ("amp_", "phase_", "reg_")


def is_metric_column(name: str) -> bool:
    """Whether a result column is a metric: ``amp_*``, ``phase_*`` (``*_ref`` too), ``reg_*``, the same with a
    ``null_`` or ``ref_`` prefix, and ``timings.*``/``throughput.*``/``resources.*``."""
    name = str(name)
    for pre in (NULL_PREFIX, REF_PREFIX):
        if name.startswith(pre):
            name = name[len(pre):]
            break
    return name.startswith(_METRIC_PREFIXES) or any(name.startswith(p + ".") for p in RECORD_PREFIXES)


def metric_columns(df: "pd.DataFrame", include_records: bool = True) -> list[str]:
    """Numeric result columns: flat metrics, and ``timings.*``/``throughput.*``/``resources.*`` if asked."""
    params = set(param_columns(df))
    out = []
    for c in df.columns:
        if c in params or not is_metric_column(c):
            continue
        if not include_records and any(c.startswith(p + ".") for p in RECORD_PREFIXES):
            continue
        out.append(c)
    return out


def quality_metrics(df: "pd.DataFrame") -> list[str]:
    """The reconstruction-quality metrics (``amp_*``/``phase_*``) present in ``df``."""
    return [c for c in metric_columns(df, include_records=False) if c.startswith(("amp_", "phase_"))]


def null_metrics_present(df: "pd.DataFrame") -> bool:
    """Whether any job recorded null (flat-image) scores."""
    return any(str(c).startswith(NULL_PREFIX) and df[c].notna().any() for c in df.columns)


def param_columns(df: "pd.DataFrame") -> list[str]:
    """Parameter columns (model, seed, swept keys) of a table from :func:`collect_jobs` or its CSV."""
    if "param_columns" in df.attrs:
        return [c for c in df.attrs["param_columns"] if c in df.columns]
    extra = ("valid", "excluded_by_filter", "metrics_invalid", "min_ms_ssim_phase", *SCORE_COLUMNS)
    return [c for c in df.columns if c not in INFO_COLUMNS[:4] and c not in TAIL_COLUMNS
            and not is_metric_column(c) and c not in extra]


def swept_parameters(df: "pd.DataFrame", include_model: bool = False, include_seed: bool = False) -> list[str]:
    """The swept parameter columns (detected by :func:`collect_jobs`: values differ across jobs).

    ``model``/``seed`` are always columns but are listed only when asked for and taking >1 value.
    """
    out = []
    for c in param_columns(df):
        if c in ("model", "seed"):
            if ((c == "model" and include_model) or (c == "seed" and include_seed)) \
                    and df[c].nunique(dropna=True) > 1:
                out.append(c)
            continue
        out.append(c)
    return out


def is_numeric_param(df: "pd.DataFrame", col: str) -> bool:
    import pandas as pd

    return bool(pd.api.types.is_numeric_dtype(df[col]) and not pd.api.types.is_bool_dtype(df[col]))


def load_raw(csv_path: Path | str) -> "pd.DataFrame":
    """Read ``raw_results_all_trials.csv`` back, restoring ``attrs['param_columns']`` from its sidecar."""
    import pandas as pd

    csv_path = Path(csv_path)
    df = pd.read_csv(csv_path)
    side = csv_path.with_suffix(".columns.json")
    if side.is_file():
        try:
            df.attrs["param_columns"] = json.loads(side.read_text())["param_columns"]
        except (ValueError, KeyError):
            pass
    return df
