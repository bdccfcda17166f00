"""Hydra callbacks of every sweep (wired in ``conf/config.yaml``; parent side, no TensorFlow).

* :class:`FailureSummaryCallback`: at the end of a multirun, one line with the counts of ok / failed
  jobs (naming the failed ones) and a non-zero exit status when any job failed. The jobs themselves
  never raise (failures are recorded in ``result.json``), so the sweep always reaches this point. Only
  this sweep's own outcomes are counted: jobs another process ran or runs in the same folder (the same
  command started twice) are listed apart, after waiting for those still running.
* :class:`ReportCallback`: after each job, refresh ``<sweep dir>/report.html`` (a light page: counts,
  the status table and a metric table, auto-refreshing), so a browser tab on it is a live monitor;
  at the end of the multirun, write the full aggregate (tables, plots, summary, report) into
  ``<sweep dir>/aggregate/`` when ``final`` is true.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

log = logging.getLogger("ptycho_exp.callbacks")


def _sweep_dir(config: Any) -> Path | None:
    try:
        return Path(str(config.hydra.sweep.dir))
    except Exception:  # noqa: BLE001 - a single run has no sweep dir worth reporting on
        return None


def _is_multirun(config: Any) -> bool:
    try:
        from hydra.types import RunMode

        return config.hydra.mode == RunMode.MULTIRUN
    except Exception:  # noqa: BLE001
        return False


class ReportCallback(Callback):
    """Keep ``report.html`` of a sweep current while it runs; aggregate it when it ends."""

    def __init__(self, live: bool = True, final: bool = True) -> None:
        self.live = live
        self.final = final

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        if not self.live or not _is_multirun(config):
            return
        sweep = _sweep_dir(config)
        if sweep is None:
            return
        try:
            from ptycho_exp.report.page import write_live_report

            write_live_report(sweep)
        except Exception as exc:  # noqa: BLE001 - a report must never sink a job
            log.warning("live report not refreshed: %s: %s", type(exc).__name__, exc)

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep = _sweep_dir(config)
        if sweep is None or not sweep.is_dir():
            return
        try:
            if self.final:
                from ptycho_exp.aggregate import aggregate

                aggregate([sweep], sweep / "aggregate")
                log.info("aggregate written: %s", sweep / "aggregate" / "report.html")
            elif self.live:
                from ptycho_exp.report.page import write_live_report

                write_live_report(sweep)
        except Exception as exc:  # noqa: BLE001
            log.warning("final aggregate skipped: %s: %s (run `ptycho-exp aggregate %s`)",
                        type(exc).__name__, exc, sweep)


class FailureSummaryCallback(Callback):
    """One summary line at the end of a multirun; exit status 1 when any job of this sweep failed.

    At the start of the multirun it gives the sweep a run id (:data:`ptycho_exp.results.RUN_ENV`, inherited by
    its jobs, recorded in their ``result.json``), so that the summary counts only this sweep's own outcomes:
    a job another process ran (a second sweep started into the same folder) or runs now is listed apart.
    With ``wait_for_others`` the summary first waits for jobs another live process is running.
    """

    def __init__(self, exit_nonzero: bool = True, wait_for_others: bool = True, poll_s: float = 2.0) -> None:
        self.exit_nonzero = exit_nonzero
        self.wait_for_others = wait_for_others
        self.poll_s = poll_s
        self.run: str | None = None
        self.started = time.time()

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        from ptycho_exp.results import RUN_ENV, new_run_id

        self.run = new_run_id()
        self.started = time.time()
        os.environ[RUN_ENV] = self.run

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep = _sweep_dir(config)
        if sweep is None or not sweep.is_dir():
            return
        if self.wait_for_others:
            wait_for_other_processes(sweep, self.run, self.poll_s)
        out = sweep_outcomes(sweep, self.run, self.started)
        line = summary_line(sweep, out)
        failed = out["failed"]
        print(line, file=sys.stderr if failed else sys.stdout, flush=True)
        if failed and self.exit_nonzero:
            raise SystemExit(1)


def _others_running(sweep: Path, run: str | None) -> list[tuple[Path, Any]]:
    from ptycho_exp.analysis.collect import find_job_dirs
    from ptycho_exp.results import claim_owner

    out = []
    for job in find_job_dirs(sweep):
        owner = claim_owner(job)
        if owner is not None and (run is None or owner.run != run):
            out.append((job, owner))
    return out


def wait_for_other_processes(sweep: Path, run: str | None, poll_s: float = 2.0) -> None:
    """Wait until no job folder of ``sweep`` is claimed by a live process of another run (logging what it
    waits for once per change)."""
    said = None
    while True:
        running = _others_running(sweep, run)
        if not running:
            return
        names = ", ".join(f"{job.name} ({owner.describe()})" for job, owner in running)
        if names != said:
            log.info("waiting for jobs running in another process: %s", names)
            said = names
        time.sleep(poll_s)


def sweep_outcomes(sweep: Path, run: str | None, started: float) -> dict[str, list]:
    """This sweep's outcomes, by kind, each a list of ``(job name, detail)``.

    ``ok``: ok results of this run, or finished before it started (a resumed sweep skips them);
    ``failed``: failed results of this run, and jobs with neither a result nor a live owner;
    ``other_ok``/``other_failed``: results another process wrote while this run went on (detail: who);
    ``running``: jobs a live process of another run holds (detail: who); ``unreadable``: result files that
    are not job records (detail: why; never counted as ok or failed).
    """
    from ptycho_exp.analysis.collect import find_job_dirs
    from ptycho_exp.files import RESULT_FILE
    from ptycho_exp.results import UnreadableResult, claim_owner, describe_run, load_result

    out: dict[str, list] = {k: [] for k in ("ok", "failed", "other_ok", "other_failed", "running", "unreadable")}
    for job in find_job_dirs(sweep):
        owner = claim_owner(job)
        if owner is not None and (run is None or owner.run != run):
            out["running"].append((job.name, owner.describe()))
            continue
        try:
            res = load_result(job)
        except UnreadableResult as exc:
            log.warning("skipped unreadable result file %s", exc)
            out["unreadable"].append((job.name, exc.reason))
            continue
        if res is None:
            out["failed"].append((job.name, f"no {RESULT_FILE}"))
            continue
        ok = res.get("status") in ("ok", "skipped")
        mine = res.get("run") in (None, run)  # a job that records no run (its environment lost it) counts as ours
        try:
            earlier = (job / RESULT_FILE).stat().st_mtime < started
        except OSError:
            earlier = False
        if mine or earlier or run is None:
            detail = str(res.get("error") or "").splitlines()[0][:120] if not ok else ""
            out["ok" if ok else "failed"].append((job.name, detail))
        else:
            out["other_ok" if ok else "other_failed"].append((job.name, describe_run(res.get("run"))))
    return out


def summary_line(sweep: Path, out: dict[str, list]) -> str:
    """The one summary line of :func:`sweep_outcomes`."""
    ok, failed = out["ok"], out["failed"]
    line = f"ptycho_exp: sweep {sweep}: {len(ok)}/{len(ok) + len(failed)} jobs ok"
    if failed:
        shown = [f"{name} ({err or 'no detail'})" for name, err in failed[:10]]
        line += f", {len(failed)} failed: " + "; ".join(shown) + (" ..." if len(failed) > 10 else "")
    other = out["other_ok"] + out["other_failed"]
    if other:
        who = ", ".join(dict.fromkeys(d for _, d in other))
        line += (f"; {_jobs(other)} run by another process ({who}): {len(out['other_ok'])} ok, "
                 f"{len(out['other_failed'])} failed")
    for name, who in out["running"]:
        line += f"; job {name} is running in another process ({who}); skipped"
    if out["unreadable"]:
        n = len(out["unreadable"])
        line += f"; {n} unreadable result file{'s' if n > 1 else ''} skipped"
    return line


def _jobs(items: list) -> str:
    names = [name for name, _ in items]
    return ("job " if len(names) == 1 else "jobs ") + ", ".join(names)
