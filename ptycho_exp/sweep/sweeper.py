"""An Optuna sweeper that resumes: ``n_trials`` is the TOTAL of completed trials in the study.

hydra-optuna-sweeper runs ``n_trials`` more trials on every invocation and numbers job folders
from 0 again; re-running a killed study would overwrite its folders and overshoot. This
subclass (selected with ``hydra.sweeper._target_``) keeps the upstream search-space handling and
changes only the loop: trials left RUNNING by a killed run are marked FAIL, job folders continue
at the study's trial number, failed (NaN) trials are told as FAIL and re-asked, and it stops at
``n_trials`` COMPLETE trials (or after 2×n_trials attempts in this invocation).
"""
from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Any

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper

log = logging.getLogger("ptycho_exp.sweeper")


def redact_url(url: Any) -> Any:
    """Hide the password of a storage URL (``postgresql://user:***@host/db``)."""
    if not isinstance(url, str):
        return url
    return re.sub(r"(://[^:/@]+:).*@", r"\1***@", url)


def redact_text(text: str, url: Any) -> str:
    """``text`` with the storage URL's password (and any ``scheme://user:pw@`` form) hidden."""
    text = re.sub(r"(://[^:/@\s]+:)[^@\s]*@", r"\1***@", text)
    m = re.search(r"://[^:/@]+:([^@]*)@", url) if isinstance(url, str) else None
    return text.replace(m.group(1), "***") if m and m.group(1) else text


def _ensure_sqlite_dir(storage: Any) -> None:
    if isinstance(storage, str) and storage.startswith("sqlite:///"):
        Path(storage[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)


def _values(ret: Any, n_obj: int) -> list[float] | None:
    """Objective values of a job return, or None when it failed / returned NaN."""
    try:
        raw = ret.return_value
    except Exception as exc:  # noqa: BLE001 - the job raised inside the launcher
        log.warning("trial failed: %s", exc)
        return None
    raw = [raw] if n_obj == 1 and not isinstance(raw, (list, tuple)) else list(raw or [])
    try:
        values = [float(v) for v in raw]
    except (TypeError, ValueError):
        return None
    if len(values) != n_obj or any(math.isnan(v) or math.isinf(v) for v in values):
        return None
    return values


def _resumable_impl_class() -> type:
    """The sweeper implementation class (built on first use: importing Optuna costs ~0.6 s)."""
    from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl, create_params_from_overrides

    class _ResumableImpl(OptunaSweeperImpl):
        def sweep(self, arguments: list[str]) -> None:
            import optuna

            self._process_searchspace_config()
            params_conf = self._parse_sweeper_params_config()
            params_conf.extend(arguments)
            space, fixed_params, fixed_overrides = create_params_from_overrides(params_conf)
            for name in fixed_params:
                space.pop(name, None)
            directions = self._get_directions()
            _ensure_sqlite_dir(self.storage)
            try:
                study = optuna.create_study(study_name=self.study_name, storage=self.storage,
                                            sampler=self.sampler, directions=directions, load_if_exists=True)
            except Exception as exc:  # noqa: BLE001 - a driver's message may quote the URL
                raise RuntimeError(f"cannot open Optuna storage {redact_url(self.storage)}: "
                                   f"{type(exc).__name__}: {redact_text(str(exc), self.storage)}") from None
            stale = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.RUNNING]
            for t in stale:  # left behind by a killed invocation
                study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)

            def complete() -> int:
                return sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.get_trials(deepcopy=False))
            log.info("Optuna study %r in %s: %d complete, %d stale marked failed, target %d complete",
                     study.study_name, redact_url(self.storage), complete(), len(stale), self.n_trials)
            self.job_idx = len(study.trials)
            attempts, max_attempts = 0, 2 * self.n_trials
            while complete() < self.n_trials and attempts < max_attempts:
                batch = min(self.n_jobs, self.n_trials - complete(), max_attempts - attempts)
                trials = [study.ask() for _ in range(batch)]
                overrides = self._configure_trials(trials, space, fixed_params, fixed_overrides)
                self.job_idx = trials[0].number
                returns = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
                attempts += batch
                failures = 0
                for trial, ret in zip(trials, returns):
                    values = _values(ret, len(directions))
                    if values is None:
                        failures += 1
                        study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    else:
                        study.tell(trial, values)
                if failures / len(returns) > self.max_failure_rate and failures == len(returns) and batch > 1:
                    raise RuntimeError(f"all {failures} trials of a batch failed (max_failure_rate="
                                       f"{self.max_failure_rate}); see the job folders' result.json")
            n_fail = sum(t.state == optuna.trial.TrialState.FAIL for t in study.trials)
            if n_fail / max(len(study.trials), 1) > self.max_failure_rate:
                log.error("%d of %d trials failed (max_failure_rate=%s)", n_fail, len(study.trials),
                          self.max_failure_rate)
            self._save_results(study, directions)

        def _save_results(self, study: Any, directions: list) -> None:
            import optuna

            done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
            if not done:
                out: dict[str, Any] = {"name": "optuna", "completed": 0}
            elif len(directions) < 2:
                out = {"name": "optuna", "best_params": study.best_trial.params, "best_value": study.best_value,
                       "completed": len(done)}
            else:
                out = {"name": "optuna", "completed": len(done),
                       "solutions": [{"params": t.params, "values": t.values} for t in study.best_trials]}
            out["study_name"] = study.study_name
            out["storage"] = redact_url(self.storage)
            from omegaconf import OmegaConf

            from ptycho_exp.files import atomic_write_text

            atomic_write_text(Path(self.config.hydra.sweep.dir) / "optimization_results.yaml",
                              OmegaConf.to_yaml(OmegaConf.create(out)))

    return _ResumableImpl


class ResumableOptunaSweeper(OptunaSweeper):
    """hydra-optuna-sweeper with total-trial semantics and safe resume (see module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sweeper.__class__ = _resumable_impl_class()
