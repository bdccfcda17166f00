"""A SLURM launcher whose sweep survives jobs that end without a result (``scancel``, node failure).

hydra-submitit-launcher collects results with ``[j.results()[0] for j in jobs]``: one array task
that dies without a result (cancelled, its node lost, the whole task OOM-killed) raises
``UncompletedJobError`` there and the multirun aborts, listing nothing. Selected in
``conf/hardware/slurm_*.yaml`` (``hydra.launcher._target_``), :class:`ResilientSlurmLauncher`
collects each job on its own: a lost job gets a ``failed`` ``result.json`` in its folder naming the
SLURM job and its state, and returns the NaN objective a failed job returns (Optuna: FAIL), so
the rest of the sweep is collected and the failure summary lists it.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

log = logging.getLogger("ptycho_exp.launchers")


class ResilientSlurmLauncher(SlurmLauncher):
    """``SlurmLauncher`` that records a job lost by SLURM as failed instead of aborting the sweep."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        """Upstream ``BaseSubmititLauncher.launch`` (1.4.0rc3), collecting each job on its own."""
        import os

        import submitit
        from hydra.core.singleton import Singleton
        from hydra.core.utils import filter_overrides
        from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
        from omegaconf import OmegaConf

        assert self.config is not None and len(job_overrides) > 0
        self._job_overrides = [list(o) for o in job_overrides]
        self._initial_job_idx = initial_job_idx
        specific_init_keys = {"max_num_timeout", "python"}
        init_params = {"folder": self.params["submitit_folder"],
                       **{f"{self._EXECUTOR}_{k}": v for k, v in self.params.items() if k in specific_init_keys}}
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init_params)
        baseparams = set(OmegaConf.structured(BaseQueueConf).keys())
        init_keys = specific_init_keys | {"submitit_folder"}
        executor.update_parameters(**{k if k in baseparams else f"{self._EXECUTOR}_{k}": v
                                      for k, v in self.params.items() if k not in init_keys})
        log.info("Submitit '%s' sweep output dir : %s", self._EXECUTOR, self.config.hydra.sweep.dir)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        job_params = []
        for i, overrides in enumerate(job_overrides):
            idx = initial_job_idx + i
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}",
                               Singleton.get_state()))
        jobs = executor.map_array(self, *zip(*job_params))
        return [self._collect(job, i) for i, job in enumerate(jobs)]

    def _collect(self, job: Any, index: int) -> JobReturn:
        from submitit.core.utils import UncompletedJobError

        try:
            return job.results()[0]
        except UncompletedJobError as exc:  # includes FailedJobError: the job died without a result
            return self.lost_job(job, index, exc)

    def lost_job(self, job: Any, index: int, exc: BaseException) -> JobReturn:
        """Record job ``index`` of this batch as failed in its folder; a NaN-objective return."""
        from ptycho_exp import results
        from ptycho_exp.files import JOB_CONFIG_FILE, RESULT_FILE
        from ptycho_exp.run import failed_result, objective_value

        idx = self._initial_job_idx + index
        overrides = self._job_overrides[index]
        job_dir = Path(str(self.config.hydra.sweep.dir)) / str(idx)
        state = _state(job)
        error = (f"SLURM job {job.job_id} ended without a result (state {state}: its task was killed, "
                 "cancelled, or its node lost)")
        log.error("job #%d lost: %s", idx, error)
        job_cfg = _job_config(job_dir / JOB_CONFIG_FILE, overrides)
        res = failed_result(job_cfg, error, "SlurmJobLost", time.time(), slurm_state=state,
                            overrides=overrides, detail=str(exc))
        res["provenance"]["slurm_job_id"] = str(job.job_id)
        owner = results.claim_owner(job_dir)
        try:
            prev = results.load_result(job_dir)
        except results.UnreadableResult as exc:
            log.warning("%s; replaced by the record of the lost job", exc)
            prev = None
        if owner is not None and owner.run != results.current_run():
            log.warning("job #%d is running in another process (%s); its folder is left alone", idx,
                        owner.describe())
        elif not (prev and prev.get("status") == "ok"):  # never overwrite a finished job
            results.write_json(job_dir / RESULT_FILE, res)
        ret = JobReturn()
        ret.overrides = overrides
        ret.working_dir = str(job_dir)
        ret.task_name = "job"
        ret.status = JobStatus.COMPLETED
        ret.return_value = objective_value(res, self.config.get("objective"))
        return ret


def _state(job: Any) -> str:
    try:
        return str(job.state)
    except Exception:  # noqa: BLE001 - sacct may be unreachable
        return "UNKNOWN"


def _job_config(path: Path, overrides: list[str]) -> dict:
    """The job's config as its child saw it, else a stub naming the overrides (job never started)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        model = next((o.split("=", 1)[1] for o in overrides if o.startswith("model=")), "unknown")
        return {"model": {"name": model}, "overrides": overrides}
