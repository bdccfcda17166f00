"""Hydra callbacks of every sweep (wired in ``conf/config.yaml``; parent side, no TensorFlow).

* :class:`FailureSummaryCallback`: at the end of a multirun, one line with the counts of ok / failed
  jobs (naming the failed ones) and a non-zero exit status when any job failed. The jobs themselves
  never raise (failures are recorded in ``result.json``), so the sweep always reaches this point.
* :class:`ReportCallback`: after each job, refresh ``<sweep dir>/report.html`` (a light page: counts,
  the status table and a metric table, auto-refreshing), so a browser tab on it is a live monitor;
  at the end of the multirun, write the full aggregate (tables, plots, summary, report) into
  ``<sweep dir>/aggregate/`` when ``final`` is true.
"""
from __future__ import annotations

import logging
import sys
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
    """One summary line at the end of a multirun; exit status 1 when any job failed."""

    def __init__(self, exit_nonzero: bool = True) -> None:
        self.exit_nonzero = exit_nonzero

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep = _sweep_dir(config)
        if sweep is None or not sweep.is_dir():
            return
        from ptycho_exp.results import read_result
        from ptycho_exp.analysis.collect import find_job_dirs

        counts: dict[str, int] = {}
        failed: list[str] = []
        for job in find_job_dirs(sweep):
            res = read_result(job) or {}
            status = res.get("status", "missing")
            counts[status] = counts.get(status, 0) + 1
            if status not in ("ok", "skipped"):
                err = str(res.get("error") or "no result.json").splitlines()[0][:120]
                failed.append(f"{job.name} ({err})")
        total = sum(counts.values())
        ok = counts.get("ok", 0) + counts.get("skipped", 0)
        line = f"ptycho_exp: sweep {sweep}: {ok}/{total} jobs ok"
        if failed:
            line += f", {len(failed)} failed: " + "; ".join(failed[:10]) + (" ..." if len(failed) > 10 else "")
        print(line, file=sys.stderr if failed else sys.stdout, flush=True)
        if failed and self.exit_nonzero:
            raise SystemExit(1)
