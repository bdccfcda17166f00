"""Progress of a sweep (works while it runs): done / failed / running / pending jobs and an ETA.

The plan comes from the sweep's ``multirun.yaml`` (Hydra's saved sweep config): the basic sweeper's job list
is the cartesian product of ``hydra.sweeper.params`` and the sweep overrides in ``hydra.overrides.task``
(job number i = i-th combination, as Hydra numbers them); an Optuna sweep plans ``hydra.sweeper.n_trials``.

A job folder without ``result.json`` is *running* when :func:`job_is_running` says so (the one place that
decides it), else *pending*.
"""
from __future__ import annotations

import itertools
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ptycho_exp.analysis.collect import (OK_STATUSES, _load_yaml, _natural_key, find_job_dirs, read_jobs,
                                        unreadable_note)
from ptycho_exp.files import CLAIM_FILE, HYDRA_DIR, JOB_CONFIG_FILE, JOB_LOG_FILE, MULTIRUN_FILE, RESULT_FILE
from ptycho_exp.results import claim_owner

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

COUNT_KEYS = ("done", "failed", "running", "pending")
# A job whose folder shows no activity for this long (and at least STALE_FACTOR x the mean duration of the
# sweep's done jobs) is taken as dead (killed without a result), not running.
RUNNING_STALE_S = 30 * 60
STALE_FACTOR = 2.0


def job_is_running(job_dir: Path | str, now: float | None = None, stale_s: float = RUNNING_STALE_S) -> bool:
    """Whether the job in ``job_dir`` (a folder without ``result.json``) is running now.

    A job's claim (``ptycho_exp.files.CLAIM_FILE``) says it: running while its owner process lives (a stale
    claim, its owner gone, is a job that died). A folder without a claim (written before claims existed) is
    judged by the job's traces: Hydra's ``.hydra/`` folder exists and the job's log (``job.log`` of the
    isolated child, Hydra's ``<job name>.log``) or its ``job_config.json`` was modified within ``stale_s``
    seconds; Hydra writes ``.hydra/`` and the framework the config and log as a job starts, and a job
    logs as it goes.
    """
    import time

    job_dir = Path(job_dir)
    if (job_dir / RESULT_FILE).is_file():
        return False
    if (job_dir / CLAIM_FILE).is_file():
        return claim_owner(job_dir) is not None
    if not (job_dir / HYDRA_DIR).is_dir():
        return False
    now = time.time() if now is None else now
    traces = [job_dir / JOB_LOG_FILE, job_dir / JOB_CONFIG_FILE, *job_dir.glob("*.log")]
    for t in traces:
        try:
            if now - t.stat().st_mtime <= stale_s:
                return True
        except OSError:
            continue
    return False


def mark_running(df: "pd.DataFrame") -> "pd.DataFrame":
    """The job table (:func:`~ptycho_exp.analysis.collect.collect_jobs`) with each ``pending`` job that
    :func:`job_is_running` says is running marked ``running`` (in place; returned for chaining)."""
    pending = df.index[df["status"] == "pending"]
    running = [i for i in pending if job_is_running(df.at[i, "job_dir"])]
    if running:
        df.loc[running, "status"] = "running"
    return df


def _started_at(job_dir: Path) -> datetime | None:
    """When a running job started: the modification time of its ``.hydra`` folder."""
    try:
        return datetime.fromtimestamp((Path(job_dir) / HYDRA_DIR).stat().st_mtime, tz=timezone.utc)
    except OSError:
        return None


# ------------------------------------------------------------------------------------ multirun.yaml
def read_multirun(sweep_dir: Path | str) -> dict | None:
    """The sweep's ``multirun.yaml`` as a dict, or None."""
    cfg = _load_yaml(Path(sweep_dir) / MULTIRUN_FILE)
    return cfg if isinstance(cfg, dict) else None


def _hydra(multirun: dict | None) -> dict:
    h = (multirun or {}).get("hydra")
    return h if isinstance(h, dict) else {}


def is_optuna_sweep(multirun: dict | None) -> bool:
    return "optuna" in str((_hydra(multirun).get("sweeper") or {}).get("_target_", "")).lower()


def sweep_directions(multirun: dict | None) -> list[str]:
    """Optuna directions (``['maximize', 'minimize']``...), [] for a grid sweep."""
    d = (_hydra(multirun).get("sweeper") or {}).get("direction")
    if d is None:
        return []
    items = d if isinstance(d, list) else [d]
    return [str(x).lower().replace("direction.", "") for x in items]


def _split_sweep_values(value: str) -> list[str]:
    """Fallback splitter: ``a,b,c`` -> 3 values, ``range(1,4)`` -> 3, ``choice(a,b)`` -> 2 (no nesting)."""
    v = value.strip()
    if v.startswith("range(") and v.endswith(")"):
        nums = [float(x) for x in v[6:-1].split(",") if x.strip() and "=" not in x]
        start, stop, step = (0.0, nums[0], 1.0) if len(nums) == 1 else (nums[0], nums[1],
                                                                         nums[2] if len(nums) > 2 else 1.0)
        n = max(0, int(-(-(stop - start) // step)))
        return [str(start + i * step) for i in range(n)]
    if v.startswith("choice(") and v.endswith(")"):
        v = v[7:-1]
    if v.startswith("[") and v.endswith("]"):
        return [v]
    return [x for x in v.split(",")]


def planned_overrides(multirun: dict | None) -> list[list[str]] | None:
    """Each planned job's override list in Hydra's job order (basic sweeper), or None if unknown."""
    h = _hydra(multirun)
    if not h or is_optuna_sweep(multirun):
        return None
    sweeper = h.get("sweeper") or {}
    params = sweeper.get("params") or {}
    task = ((h.get("overrides") or {}).get("task")) or []
    items = [f"{k}={v}" for k, v in params.items()] + [str(x) for x in task]
    lists: dict[str, list[str]] = {}
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parsed = OverridesParser.create().parse_overrides(items)
        for ov in parsed:
            key = ov.get_key_element()
            if ov.is_sweep_override():
                if not ov.is_discrete_sweep():
                    return None
                lists[key] = [f"{key}={val}" for val in ov.sweep_string_iterator()]
            else:
                lists[key] = [f"{key}={ov.get_value_element_as_str()}"]
    except Exception:  # hydra missing or an unparsable override: plain comma splitting
        lists = {}
        for item in items:
            if "=" not in item:
                continue
            key, _, value = item.partition("=")
            lists[key] = [f"{key}={v}" for v in _split_sweep_values(value)]
    return [list(c) for c in itertools.product(*lists.values())]


def planned_job_count(multirun: dict | None) -> int | None:
    """Jobs the sweep will launch: product of the sweep lists, or Optuna's ``n_trials``; None if unknown."""
    if multirun is None:
        return None
    if is_optuna_sweep(multirun):
        n = (_hydra(multirun).get("sweeper") or {}).get("n_trials")
        return int(n) if isinstance(n, (int, float)) else None
    plan = planned_overrides(multirun)
    return len(plan) if plan is not None else None


def parallelism(multirun: dict | None) -> int:
    """Jobs running at once: joblib ``n_jobs``, submitit ``array_parallelism``, Optuna ``n_jobs``; else 1."""
    h = _hydra(multirun)
    launcher = h.get("launcher") or {}
    target = str(launcher.get("_target_", "")).lower()
    n: Any = None
    if "joblib" in target:
        n = launcher.get("n_jobs")
        if isinstance(n, int) and n < 0:
            n = max(1, (os.cpu_count() or 1) + 1 + n)
    elif "submitit" in target:
        n = launcher.get("array_parallelism")
    if is_optuna_sweep(multirun):
        opt_n = (h.get("sweeper") or {}).get("n_jobs")
        if isinstance(opt_n, int) and opt_n > 0:
            n = min(n, opt_n) if isinstance(n, int) and n > 0 else opt_n
    return int(n) if isinstance(n, (int, float)) and n >= 1 else 1


# ------------------------------------------------------------------------------------------- status
def _elapsed(rec: dict, now: datetime) -> float:
    if rec["status"] == "running":
        try:
            t0 = datetime.fromisoformat(rec.get("started_at") or "")
        except ValueError:
            return float("nan")
        if t0.tzinfo is None:
            t0 = t0.replace(tzinfo=timezone.utc)
        return max(0.0, (now - t0).total_seconds())
    return float(rec.get("elapsed_s", float("nan")))


def _state(status: str) -> str:
    if status in OK_STATUSES:
        return "done"
    if status in ("failed", "running"):
        return status
    return "pending"


def sweep_records(sweep_dir: Path | str) -> tuple[list[dict], dict]:
    """Pandas-free core of :func:`sweep_status` (cheap enough to run after every job).

    Returns
    -------
    rows : list of dict
        One per job (seen or planned), naturally sorted: job, overrides, status, state, elapsed_s, error,
        job_dir, and ``record`` (the :func:`~ptycho_exp.analysis.collect.read_job` record; None when planned).
    attrs : dict
        counts (done/failed/running/pending), planned (or None), parallelism, mean_done_s, eta_s,
        sweep_dir, total.
    """
    sweep_dir = Path(sweep_dir)
    multirun = read_multirun(sweep_dir)
    now = datetime.now(timezone.utc)
    rows: list[dict] = []
    seen_nums: set[str] = set()
    recs, unreadable = read_jobs(find_job_dirs(sweep_dir) if sweep_dir.is_dir() else [])
    for problem in unreadable:  # skipped, but not listed again as "not started"
        seen_nums.add(_rel(problem.path.parent, sweep_dir))
    for rec in recs:
        job_dir = Path(rec["job_dir"])
        rel = _rel(job_dir, sweep_dir)
        seen_nums.add(rel)
        rows.append({"job": rel, "overrides": rec["overrides"], "status": rec["status"],
                     "state": _state(rec["status"]), "elapsed_s": _elapsed(rec, now),
                     "error": (rec.get("error") or "").splitlines()[0][:200] if rec.get("error") else "",
                     "job_dir": str(job_dir), "record": rec})
    plan = planned_overrides(multirun)
    planned = planned_job_count(multirun)
    if plan is not None:
        for i, ovs in enumerate(plan):
            if str(i) not in seen_nums:
                rows.append({"job": str(i), "overrides": " ".join(ovs), "status": "not started",
                             "state": "pending", "elapsed_s": float("nan"), "error": "",
                             "job_dir": str(sweep_dir / str(i)), "record": None})
    elif planned is not None and planned > len(rows):
        for i in range(planned):
            if str(i) not in seen_nums and len(rows) < planned:
                rows.append({"job": str(i), "overrides": "", "status": "not started", "state": "pending",
                             "elapsed_s": float("nan"), "error": "", "job_dir": str(sweep_dir / str(i)),
                             "record": None})
    rows.sort(key=lambda r: _natural_key(Path(r["job"])))
    done_t = [float(r["elapsed_s"]) for r in rows if r["state"] == "done"
              and isinstance(r["elapsed_s"], (int, float)) and r["elapsed_s"] == r["elapsed_s"]]
    mean_done = sum(done_t) / len(done_t) if done_t else float("nan")
    stale = max(RUNNING_STALE_S, STALE_FACTOR * mean_done) if mean_done == mean_done else RUNNING_STALE_S
    for r in rows:  # a folder without result.json: running or pending, by its traces
        if r["record"] is not None and r["status"] == "pending" and job_is_running(r["job_dir"], stale_s=stale):
            r["status"] = r["state"] = r["record"]["status"] = "running"
            t0 = _started_at(Path(r["job_dir"]))
            r["elapsed_s"] = max(0.0, (now - t0).total_seconds()) if t0 is not None else float("nan")
    counts = {k: sum(1 for r in rows if r["state"] == k) for k in COUNT_KEYS}
    par = parallelism(multirun)
    remaining = counts["pending"] + counts["running"]
    if not remaining:
        eta = 0.0
    else:
        eta = mean_done * remaining / par if mean_done == mean_done else float("nan")
    attrs = {"counts": counts, "planned": planned, "parallelism": par, "mean_done_s": mean_done,
             "eta_s": eta, "sweep_dir": str(sweep_dir), "total": len(rows),
             "unreadable": [str(p) for p in unreadable]}
    return rows, attrs


def _rel(job_dir: Path, sweep_dir: Path) -> str:
    try:
        return str(job_dir.relative_to(sweep_dir.resolve()))
    except ValueError:
        return job_dir.name


def sweep_status(sweep_dir: Path | str) -> "pd.DataFrame":
    """One row per job (seen or planned): job, overrides, status, state, elapsed_s, error, job_dir.

    ``df.attrs`` holds ``counts`` (done/failed/running/pending), ``planned`` (or None), ``parallelism``,
    ``mean_done_s`` and ``eta_s`` (mean duration of done jobs x remaining / parallelism; NaN if unknown).
    Pending = planned - seen (jobs not started) + folders that have no result.json yet.
    """
    import pandas as pd

    rows, attrs = sweep_records(sweep_dir)
    cols = ["job", "overrides", "status", "state", "elapsed_s", "error", "job_dir"]
    df = pd.DataFrame([{c: r[c] for c in cols} for r in rows], columns=cols)
    df.attrs.update(attrs)
    return df


def format_seconds(s: float) -> str:
    if s != s or s is None:
        return "?"
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else (f"{m}m{sec:02d}s" if m else f"{sec}s")


def print_status(sweep_dir: Path | str, console: Any = None, max_rows: int = 200) -> "pd.DataFrame":
    """Print the status table and counts with rich; returns :func:`sweep_status`'s frame."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    df = sweep_status(sweep_dir)
    a = df.attrs
    c = a["counts"]
    colours = {"done": "green", "failed": "red", "running": "yellow", "pending": "dim"}
    table = Table(title=f"sweep {sweep_dir}", show_lines=False)
    for col in ("job", "overrides", "status", "elapsed"):
        table.add_column(col, overflow="fold")
    for _, r in df.head(max_rows).iterrows():
        st = r["status"] + (f": {r['error']}" if r["error"] else "")
        table.add_row(str(r["job"]), str(r["overrides"]), f"[{colours[r['state']]}]{st}[/]",
                      format_seconds(r["elapsed_s"]) if r["elapsed_s"] == r["elapsed_s"] else "")
    if len(df) > max_rows:
        table.add_row("...", f"{len(df) - max_rows} more rows", "", "")
    console.print(table)
    planned = a["planned"] if a["planned"] is not None else "unknown"
    console.print(f"done {c['done']}  failed {c['failed']}  running {c['running']}  pending {c['pending']}  "
                  f"(planned {planned}, parallelism {a['parallelism']})")
    if a.get("unreadable"):
        console.print(unreadable_note(a["unreadable"]))  # each named by a warning line as it was read
    if c["pending"] + c["running"]:
        console.print(f"ETA {format_seconds(a['eta_s'])} (mean done job {format_seconds(a['mean_done_s'])})")
    else:
        console.print("all planned jobs finished")
    return df


# ----------------------------------------------------------------------------------------------- CLI
def add_status_command(sub: Any) -> None:
    """The ``status`` subcommand's parser (``sub``: an argparse subparsers action)."""
    p = sub.add_parser("status", help="done / failed / running / pending jobs of a sweep, with an ETA")
    p.add_argument("sweep_dir")
    p.add_argument("--max-rows", type=int, default=200)


def run_status_command(args: Any) -> int:
    """``ptycho-exp status``: print the sweep's job table and counts."""
    if not Path(args.sweep_dir).is_dir():
        raise FileNotFoundError(f"sweep folder {args.sweep_dir!r} does not exist: pass a multirun/... folder")
    print_status(args.sweep_dir, max_rows=args.max_rows)
    return 0
