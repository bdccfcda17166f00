"""Real SLURM: a study sweep through hydra-submitit-launcher (hardware=slurm_cpu).

Needs a running cluster with accounting (``scripts/slurm-dev-cluster.sh up``); every test is
marked ``slurm`` and is skipped, with the reason, when ``sinfo`` is missing or the node cannot
take jobs. Run: ``pytest -m slurm tests/test_slurm.py``.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[2]

# Test-speed knobs on top of study=quick (the study sweeps model x seed; these keys override it).
FAST = [
    "model=pinn",
    "data.N=32", "data.object_size=96", "data.n_train=32", "data.n_test=16",
    "train.epochs=1", "train.batch_size=16", "train.save_model=false", "train.tensorboard=false",
    "eval.figures=false", "eval.save_recon=false", "eval.upsample_factor=10",
    # scheduling only (task/none: not enforced); small so a 7 GB CI runner still runs 4 at once
    "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=20",
]
FAULTS = ("none", "raise", "exit")
SEEDS = (1, 2)


def _run(cmd: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def slurm_cluster() -> str:
    """The node's state; skips the test when there is no usable SLURM cluster."""
    if shutil.which("sinfo") is None:
        pytest.skip("no SLURM here: `sinfo` not on PATH (start one: scripts/slurm-dev-cluster.sh up)")
    try:
        out = _run(["sinfo", "-h", "-o", "%T"])
    except subprocess.TimeoutExpired:
        pytest.skip("SLURM not responding: `sinfo` timed out")
    states = out.stdout.split()
    if out.returncode != 0 or not states:
        pytest.skip(f"SLURM controller not reachable: sinfo rc={out.returncode} {out.stderr.strip()!r} "
                    "(scripts/slurm-dev-cluster.sh up)")
    usable = [s for s in states if s.rstrip("*~#") in ("idle", "mixed")]
    if not usable:
        pytest.skip(f"no idle SLURM node (sinfo states: {', '.join(states)})")
    return usable[0]


def test_accounting_enabled(slurm_cluster: str) -> None:
    """submitit needs `sacct` to notice jobs that die without a result; without it they hang."""
    out = _run(["sacct", "-n", "-X", "-o", "JobID"])
    assert out.returncode == 0, f"sacct failed (accounting off? slurmdbd down?): {out.stderr.strip()}"
    assert "accounting storage is disabled" not in out.stderr.lower()


def _job_dirs(sweep: Path) -> list[Path]:
    return sorted((p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


def test_sweep_through_slurm_records_every_outcome(slurm_cluster: str, tmp_path: Path) -> None:
    """fault={none,raise,exit} x seed={1,2}: 6 array tasks (array_parallelism 4) on real SLURM.

    The sweep exits non-zero; ok jobs say ok; a raising job is failed with its error; a job that
    dies with os._exit is failed too, recorded by the isolating parent inside the SLURM task.
    """
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "ptycho_exp", "-m", "study=quick", "hardware=slurm_cpu",
           f"hydra.sweep.dir={sweep}", f"fault={','.join(FAULTS)}", f"seed={','.join(map(str, SEEDS))}",
           *FAST]
    env = {**os.environ, "PTYCHO_EXP_CACHE": str(tmp_path / "cache")}
    t0 = time.time()
    proc = subprocess.run(cmd, check=False, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=1500)
    elapsed = time.time() - t0
    log = f"$ {' '.join(cmd)}\n--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}"
    print(f"SLURM sweep of {len(FAULTS) * len(SEEDS)} jobs: {elapsed:.1f}s, rc={proc.returncode}")

    assert proc.returncode != 0, "a sweep with failed jobs must exit non-zero\n" + log

    # it really went through SLURM: submitit's sbatch script is in the sweep dir
    scripts = list(sweep.glob(".submitit/*/*_submission.sh"))
    assert scripts, "no submitit submission script under the sweep dir\n" + log
    assert "#SBATCH --array=0-5%4" in scripts[0].read_text(), scripts[0].read_text()

    dirs = _job_dirs(sweep)
    assert [d.name for d in dirs] == [str(i) for i in range(len(FAULTS) * len(SEEDS))], log

    seen = set()
    for d in dirs:
        rfile = d / "result.json"
        assert rfile.is_file(), f"{d} has no result.json\n" + log
        res = json.loads(rfile.read_text())
        fault, seed = res["config"]["fault"], res["config"]["seed"]
        seen.add((fault, seed))
        where = f"job {d.name} (fault={fault}, seed={seed}): {json.dumps(res)[:1500]}"
        assert res["config"]["hardware"]["name"] == "slurm_cpu", where
        assert res.get("provenance", {}).get("slurm_job_id"), "job did not run inside SLURM: " + where
        if fault == "none":
            assert res["status"] == "ok", where
            assert res["metrics"], where
        elif fault == "raise":
            assert res["status"] == "failed", where
            assert res["error_type"] == "RuntimeError" and "fault=raise" in res["error"], where
        else:  # exit: os._exit in the child; the parent inside the SLURM task records it
            assert res["status"] == "failed", where
            assert res["error_type"] == "ProcessDied", where
            assert "without writing a result" in res["error"], where
    assert seen == {(f, s) for f in FAULTS for s in SEEDS}


def _wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert proc.poll() is None, f"the sweep ended before {what}"
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def test_preempted_job_is_requeued_and_finishes(slurm_cluster: str, tmp_path: Path) -> None:
    """SIGUSR2 (what SLURM sends before a time limit or a preemption) to a running sweep task:
    submitit checkpoints and requeues it (max_num_timeout), the job's child is not recorded as
    failed, and the requeued task finishes the job ok."""
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "ptycho_exp", "-m", "study=quick", "hardware=slurm_cpu", "seed=1",
           f"hydra.sweep.dir={sweep}", "fault=sleep", *FAST]
    env = {**os.environ, "PTYCHO_EXP_CACHE": str(tmp_path / "cache"), "PTYCHO_EXP_FAULT_SLEEP": "15"}
    out = open(tmp_path / "sweep.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        # the job's isolated child is sleeping once it has written its config
        _wait_for(lambda: (sweep / "0" / "job_config.json").is_file(), 300, "the job to start", proc)
        logs = list(sweep.glob(".submitit/*/*_0_log.out"))
        job_id = logs[0].parent.name if logs else None  # submitit_folder is .submitit/%j
        assert job_id, list(sweep.rglob("*"))
        time.sleep(1)
        sig = _run(["scancel", "--signal=USR2", job_id])
        assert sig.returncode == 0, sig.stderr
        _wait_for(lambda: "Requeued job" in "".join(p.read_text() for p in logs[0].parent.glob("*_log.*")),
                  120, "submitit to requeue the job", proc)
        # SLURM holds a requeued job for ~2 minutes (BeginTime); release it now to keep the test short
        deadline = time.time() + 60
        while "Reason=BeginTime" not in _run(["scontrol", "show", "job", job_id]).stdout \
                and time.time() < deadline:
            time.sleep(0.5)
        _run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"])
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = (tmp_path / "sweep.log").read_text()[-5000:]
    assert proc.returncode == 0, log
    submitit_log = "".join(p.read_text() for p in sweep.glob(".submitit/*/*_0_log.*"))
    assert "Caught signal SIGUSR2" in submitit_log and "preempted" in submitit_log, submitit_log[-3000:]
    assert "Requeued job" in submitit_log, submitit_log[-3000:]
    assert "without writing a result" not in (sweep / "0" / "job.log").read_text()  # child not failed
    res = json.loads((sweep / "0" / "result.json").read_text())
    assert res["status"] == "ok" and res["metrics"], res
    # two runs of the same SLURM job (the first one requeued), one result
    acct = _run(["sacct", "-n", "-X", "-D", "-j", job_id, "-o", "JobID,State"])
    assert acct.stdout.count(job_id) >= 2 and "REQUEUE" in acct.stdout, acct.stdout


def _task_main_pid(job_dir: Path) -> int:
    """PID of the SLURM task process (submitit) whose isolated child runs the job in ``job_dir``."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if b"ptycho_exp.run" in argv and str(job_dir).encode() in argv:
                return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])  # ppid
        except OSError:
            continue
    raise AssertionError(f"no running child process for {job_dir}")


@pytest.mark.parametrize("how", ["TERM", "KILL"])
def test_cancelled_job_is_recorded_and_the_sweep_goes_on(slurm_cluster: str, tmp_path: Path, how: str) -> None:
    """scancel one array task of a 2-job sweep: the other job finishes ok, the cancelled one gets a
    failed result.json, and the sweep exits 1 with its summary line instead of aborting.

    TERM (plain scancel): the isolating parent outlives its child and records ProcessDied (SIGTERM).
    KILL (the task's main process SIGKILLed, as by the OOM killer; the child dies with it): nobody
    inside the task can write, so the launcher records SlurmJobLost with the SLURM job id instead of
    aborting on submitit's UncompletedJobError.
    """
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "ptycho_exp", "-m", "study=quick", "hardware=slurm_cpu", "seed=1",
           f"hydra.sweep.dir={sweep}", "fault=none,sleep", *FAST]
    env = {**os.environ, "PTYCHO_EXP_CACHE": str(tmp_path / "cache"), "PTYCHO_EXP_FAULT_SLEEP": "900"}
    out = open(tmp_path / "sweep.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(lambda: (sweep / "1" / "job_config.json").is_file(), 300, "job 1 to start", proc)
        logs = [p for p in sweep.glob(".submitit/*/*_1_0_log.out")]
        assert logs, list(sweep.rglob("*"))
        task_id = logs[0].name[: -len("_0_log.out")]  # <array job id>_1
        if how == "TERM":
            cancel = _run(["scancel", task_id])
            assert cancel.returncode == 0, cancel.stderr
        else:  # SIGKILL the task's main process (what the OOM killer does): its child dies with it
            os.kill(_task_main_pid(sweep / "1"), signal.SIGKILL)
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = (tmp_path / "sweep.log").read_text()[-6000:]
    assert proc.returncode == 1, log
    assert "Traceback" not in log, log
    assert [line for line in log.splitlines() if line.startswith("ptycho_exp: sweep ")] and "1/2 jobs ok" in log, log
    ok = json.loads((sweep / "0" / "result.json").read_text())
    assert ok["status"] == "ok", ok
    lost = json.loads((sweep / "1" / "result.json").read_text())
    assert lost["status"] == "failed", lost
    if how == "TERM":
        assert lost["error_type"] == "ProcessDied" and "SIGTERM" in lost["error"], lost["error"]
        assert "scancel" in lost["error"], lost["error"]
    else:
        assert lost["error_type"] == "SlurmJobLost" and task_id in lost["error"], lost["error"]
    assert lost["config"]["fault"] == "sleep"  # the job's own config, as its child saw it


def test_slurm_gpu_config_composes() -> None:
    """hardware=slurm_gpu composes (no cluster needed): GPU via gres, submitit folder in the sweep dir."""
    out = _run([sys.executable, "-m", "ptycho_exp", "hardware=slurm_gpu", "--cfg", "all"], timeout=120)
    assert out.returncode == 0, out.stderr
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(out.stdout)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    assert launcher["_target_"] == "ptycho_exp.sweep.launchers.ResilientSlurmLauncher"
    assert launcher["gres"] == "gpu:1" and launcher["gpus_per_node"] is None
    assert launcher["partition"] is None and launcher["max_num_timeout"] == 3
    assert launcher["submitit_folder"].startswith("${hydra.sweep.dir}/")
    assert OmegaConf.to_container(cfg.hardware) == {
        "name": "slurm_gpu", "device": "gpu", "isolate": True,
        "intra_op_threads": 0, "inter_op_threads": 0, "retries": 0}
