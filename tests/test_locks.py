"""Job folders run by one process at a time, and result files that are read with suspicion.

* Claims (:func:`ptycho_exp.results.claim_job`): exclusive creation, staleness by PID on this host and by
  heartbeat for another host, takeover by exactly one of many racing processes, release never touching
  another owner's claim.
* Two identical sweeps started into one folder: every job trains once, each launcher's summary counts only its
  own outcomes, and the aggregate equals an uninterrupted sweep's.
* Result files that are not job records (metrics as text, ``[]``, truncated, binary): each is named in one
  warning line, skipped and counted by ``status``, ``aggregate``, ``plan`` and the sweep summary.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.helpers.cli import ROOT, TINY, run_cli
from tests.helpers.synthetic import write_synthetic_sweep

from ptycho_exp import results
from ptycho_exp.files import CLAIM_FILE, RESULT_FILE

HOST = socket.gethostname()


# --------------------------------------------------------------------------- claims
def _write_claim(job_dir: Path, *, pid: int, host: str, age_s: float = 0.0, run: str | None = None,
                 pid_start: str | None = None) -> Path:
    job_dir.mkdir(parents=True, exist_ok=True)
    path = job_dir / CLAIM_FILE
    path.write_text(json.dumps({"pid": pid, "host": host, "started_at": "2026-01-01T00:00:00+00:00", "run": run,
                                "token": "t" * 16, "pid_start": pid_start}))
    t = time.time() - age_s
    os.utime(path, (t, t))
    return path


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


_CLAIM_IN_CHILD = ("import sys; from ptycho_exp import results\n"
                   "try:\n    results.claim_job(sys.argv[1])\nexcept results.JobClaimed as e:\n"
                   "    print(e); sys.exit(3)\nprint('claimed')\n")


def _claim_in_another_process(job_dir: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _CLAIM_IN_CHILD, str(job_dir)], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, **(env or {})}, timeout=60)


def test_a_claim_is_exclusive_while_its_owner_lives_and_released_after(tmp_path):
    job = tmp_path / "job"
    claim = results.claim_job(job)
    assert claim.pid == os.getpid() and claim.host == HOST and results.is_running(job)
    other = _claim_in_another_process(job)
    assert other.returncode == 3, other.stdout + other.stderr
    assert f"running in another process (pid {os.getpid()} on host {HOST}" in other.stdout
    results.release_claim(claim)
    assert not (job / CLAIM_FILE).exists() and not results.is_running(job)
    assert _claim_in_another_process(job).returncode == 0  # free again (its owner exited: stale, not running)
    assert not results.is_running(job)


def test_a_claim_whose_pid_is_gone_on_this_host_is_stale_and_taken_over(tmp_path):
    job = tmp_path / "job"
    _write_claim(job, pid=_dead_pid(), host=HOST)
    assert not results.is_running(job)
    claim = results.claim_job(job)
    assert results.read_claim(job).token == claim.token and claim.pid == os.getpid()


def test_a_reused_pid_does_not_keep_a_claim_alive(tmp_path):
    """Same host, the PID alive but started at another time than the claim's owner: a newer process."""
    job = tmp_path / "job"
    _write_claim(job, pid=os.getpid(), host=HOST, pid_start="1")
    assert results.process_start(os.getpid()) not in (None, "1")
    assert not results.is_running(job)


def test_a_claim_from_another_host_lives_while_its_heartbeat_is_fresh(tmp_path):
    job = tmp_path / "job"
    _write_claim(job, pid=1, host="elsewhere.example", age_s=5)
    assert results.is_running(job)  # PID 1 means nothing here: only the heartbeat counts
    with pytest.raises(results.JobClaimed, match="pid 1 on host elsewhere.example"):
        results.claim_job(job)
    old = time.time() - results.CLAIM_STALE_S - 5
    os.utime(job / CLAIM_FILE, (old, old))
    assert not results.is_running(job)
    assert results.claim_job(job).pid == os.getpid()


def test_the_heartbeat_refreshes_the_claim(tmp_path):
    job = tmp_path / "job"
    claim = results.claim_job(job)
    old = time.time() - 1000
    os.utime(claim.path, (old, old))
    with results.heartbeat_thread(claim, interval=0.05):
        time.sleep(0.5)
    assert time.time() - claim.path.stat().st_mtime < 5
    results.beat(claim)
    assert time.time() - claim.path.stat().st_mtime < 1


def test_a_claim_left_by_the_same_sweep_run_is_taken_over(tmp_path, monkeypatch):
    """A requeued SLURM task (another host, fresh heartbeat) of the same sweep run takes its job back."""
    job = tmp_path / "job"
    _write_claim(job, pid=1, host="elsewhere.example", run="sweep-run-1")
    monkeypatch.setenv(results.RUN_ENV, "sweep-run-2")
    with pytest.raises(results.JobClaimed):
        results.claim_job(job)
    monkeypatch.setenv(results.RUN_ENV, "sweep-run-1")
    assert results.claim_job(job).run == "sweep-run-1"


def test_release_never_removes_another_owners_claim(tmp_path):
    job = tmp_path / "job"
    mine = results.claim_job(job)
    _write_claim(job, pid=1, host="elsewhere.example")  # someone took over meanwhile
    results.release_claim(mine)
    assert (job / CLAIM_FILE).exists()


def test_of_many_processes_racing_for_a_stale_claim_exactly_one_wins(tmp_path):
    job = tmp_path / "job"
    _write_claim(job, pid=_dead_pid(), host=HOST)
    code = ("import sys, time; from ptycho_exp import results\n"
            "time.sleep(max(0.0, float(sys.argv[2]) - time.time()))\n"
            "try:\n    results.claim_job(sys.argv[1])\nexcept results.JobClaimed:\n    sys.exit(3)\n"
            "time.sleep(3)\n")  # hold the claim while the others try
    start = time.time() + 4.0
    procs = [subprocess.Popen([sys.executable, "-c", code, str(job), str(start)], cwd=ROOT) for _ in range(6)]
    codes = [p.wait(timeout=60) for p in procs]
    assert sorted(codes) == [0, 3, 3, 3, 3, 3], codes


# --------------------------------------------------------------------------- two sweeps, one folder
SWEEP = ["-m", "model=pinn", "seed=1,2,3", *TINY, "++hydra.callbacks.report.live=false",
         "++hydra.callbacks.report.final=false"]


def _env(tmp_path: Path) -> dict:
    return {**os.environ, "PTYCHO_EXP_CACHE": str(tmp_path / "cache"), "CUDA_VISIBLE_DEVICES": "",
            "TF_CPP_MIN_LOG_LEVEL": "2"}


def _start(args: list[str], tmp_path: Path, name: str) -> tuple[subprocess.Popen, Path]:
    log = tmp_path / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "ptycho_exp", *args], cwd=ROOT, env=_env(tmp_path),
                                stdout=out, stderr=subprocess.STDOUT)
    return proc, log


def _summary(text: str) -> str:
    lines = [line for line in text.splitlines() if line.startswith("ptycho_exp: sweep ")]
    assert len(lines) == 1, text[-4000:]
    return lines[0]


def _quality_table(sweep: Path, out: Path):
    import pandas as pd

    from ptycho_exp.aggregate import aggregate

    aggregate([sweep], out, plots=False)
    raw = pd.read_csv(out / "raw_results_all_trials.csv")
    cols = ["model", "seed", "status"] + sorted(c for c in raw.columns if c.startswith(("amp_", "phase_", "reg_")))
    table = pd.read_csv(out / "results.csv")
    table = table[table["metric"].str.startswith(("amp_", "phase_", "reg_"))]  # not timings, memory, throughput
    return raw[cols].sort_values("seed").reset_index(drop=True), table.reset_index(drop=True)


@pytest.mark.e2e  # trains networks in real jobs: the e2e stage
def test_two_identical_sweeps_into_one_folder_train_each_job_once(tmp_path):
    sweep = tmp_path / "sweep"
    args = [*SWEEP, f"hydra.sweep.dir={sweep}"]
    first, first_log = _start(args, tmp_path, "first")
    deadline = time.time() + 300
    while not (sweep / "0" / CLAIM_FILE).exists():  # the second starts while the first runs job 0
        assert first.poll() is None and time.time() < deadline, first_log.read_text()[-3000:]
        time.sleep(0.1)
    second, second_log = _start(args, tmp_path, "second")
    assert first.wait(timeout=900) == 0, first_log.read_text()[-4000:]
    assert second.wait(timeout=900) == 0, second_log.read_text()[-4000:]
    logs = {"first": first_log.read_text(), "second": second_log.read_text()}

    recs = {n: json.loads((sweep / n / RESULT_FILE).read_text()) for n in ("0", "1", "2")}
    assert all(r["status"] == "ok" for r in recs.values()), recs
    for n in recs:  # trained exactly once: one first epoch in its log, and no claim left behind
        assert (sweep / n / "job.log").read_text().count("pinn epoch 1/2") == 1, n
        assert not (sweep / n / CLAIM_FILE).exists()
    assert "job 0 is running in another process" in logs["second"], logs["second"][-3000:]

    # each summary counts its own jobs as its own and names the other process for the rest
    runs = {n: r["run"] for n, r in recs.items()}
    own_counts = []
    for text in logs.values():
        line = _summary(text)
        m = re.search(r": (\d+)/(\d+) jobs ok", line)
        assert m and m.group(1) == m.group(2), line
        own = int(m.group(1))
        own_counts.append(own)
        if own < 3:
            other = re.search(r"run by another process \(pid (\d+) on host", line)
            assert other and f"{3 - own} ok, 0 failed" in line, line
            assert sum(f":{other.group(1)}:" in r for r in runs.values()) == 3 - own, (line, runs)
        assert "failed" not in line.split(";")[0], line
    assert sum(own_counts) == 3 and 0 not in own_counts, logs  # both trained: job 0 by the first
    assert sorted(own_counts) == sorted(list(runs.values()).count(r) for r in set(runs.values()))

    # the aggregate equals that of one uninterrupted sweep (CPU runs are bit-identical)
    alone = tmp_path / "alone"
    res = run_cli([*SWEEP, f"hydra.sweep.dir={alone}"], tmp_path, timeout=900)
    assert res.returncode == 0 and "3/3 jobs ok" in res.stdout, res.stdout[-2000:] + res.stderr[-3000:]
    raw_two, table_two = _quality_table(sweep, tmp_path / "agg_two")
    raw_one, table_one = _quality_table(alone, tmp_path / "agg_one")
    assert raw_two.equals(raw_one), (raw_two, raw_one)
    assert table_two.equals(table_one)


# --------------------------------------------------------------------------- result files read with suspicion
BAD_RESULTS = {
    "metrics_as_text": lambda rec: json.dumps({**rec, "metrics": "phase_ssim=0.9"}).encode(),
    "empty_list": lambda rec: b"[]",
    "truncated": lambda rec: json.dumps(rec).encode()[:100],
    "binary": lambda rec: bytes(range(256)) * 4,
    "metric_as_list": lambda rec: json.dumps({**rec, "metrics": {"phase_ssim": [0.9]}}).encode(),
    "unknown_status": lambda rec: json.dumps({**rec, "status": "done"}).encode(),
    "empty": lambda rec: b"",
}


def _sweep_with_bad(tmp_path: Path, kinds: list[str]) -> tuple[Path, list[Path]]:
    sweep = tmp_path / "sweep"
    jobs = write_synthetic_sweep(sweep, {"model": ["pinn", "baseline"], "seed": [1, 2, 3, 4]})
    bad = []
    for job, kind in zip(jobs, kinds):
        rec = json.loads((job / RESULT_FILE).read_text())
        (job / RESULT_FILE).write_bytes(BAD_RESULTS[kind](rec))
        bad.append(job / RESULT_FILE)
    return sweep, bad


@pytest.mark.parametrize("kind", sorted(BAD_RESULTS))
def test_a_result_file_that_is_not_a_job_record_is_refused_by_path(tmp_path, kind):
    sweep, (bad,) = _sweep_with_bad(tmp_path, [kind])
    with pytest.raises(results.UnreadableResult) as err:
        results.load_result(bad.parent)
    assert err.value.path == bad and str(bad) in str(err.value)
    assert results.read_result(bad.parent) is None
    assert results.load_result(tmp_path / "nothing_here") is None  # absent is not a problem


def test_valid_records_pass_the_check(tmp_path):
    sweep, _ = _sweep_with_bad(tmp_path, [])
    for job in sorted(p for p in sweep.iterdir() if p.is_dir()):
        assert results.load_result(job)["status"] in results.RESULT_STATUSES


def test_collect_skips_and_counts_unreadable_results(tmp_path, caplog):
    from ptycho_exp.analysis.collect import collect_jobs

    kinds = ["metrics_as_text", "empty_list", "truncated", "binary"]
    sweep, bad = _sweep_with_bad(tmp_path, kinds)
    df = collect_jobs(sweep)
    assert len(df) == 8 - len(kinds)
    assert [p.split(":")[0] for p in df.attrs["unreadable"]] == [str(p.resolve()) for p in bad]
    warned = [r.getMessage() for r in caplog.records if "unreadable result file" in r.getMessage()]
    assert len(warned) == len(kinds) and all(str(p.resolve()) in w for p, w in zip(bad, warned))


@pytest.mark.parametrize("command", ["status", "aggregate"])
def test_status_and_aggregate_name_each_bad_file_and_count_them(tmp_path, command):
    sweep, bad = _sweep_with_bad(tmp_path, ["metrics_as_text", "empty_list", "truncated", "binary"])
    args = [command, str(sweep)] + (["--no-plots", "--out", str(tmp_path / "agg")] if command == "aggregate" else [])
    res = run_cli(args, tmp_path, module="ptycho_exp.cli", timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    for path in bad:
        lines = [line for line in res.stderr.splitlines() if str(path.resolve()) in line]
        assert len(lines) == 1 and "unreadable result file" in lines[0], res.stderr
    assert "4 unreadable result file" in res.stdout, res.stdout
    assert ("pending 0" if command == "status" else "0 pending") in res.stdout, res.stdout  # not shown as pending


def test_the_sweep_summary_counts_unreadable_results_apart(tmp_path):
    from ptycho_exp.sweep.callbacks import summary_line, sweep_outcomes

    sweep, _ = _sweep_with_bad(tmp_path, ["binary", "truncated"])
    line = summary_line(sweep, sweep_outcomes(sweep, None, 0.0))
    assert line.endswith(": 6/6 jobs ok; 2 unreadable result files skipped"), line


def test_rerun_names_an_unreadable_result(tmp_path):
    from ptycho_exp.rerun import rerun_job

    sweep, (bad,) = _sweep_with_bad(tmp_path, ["metrics_as_text"])
    with pytest.raises(ValueError, match=re.escape(str(bad)) + ".*'metrics' is a str"):
        rerun_job(bad.parent)


def test_the_parent_beats_while_its_child_runs_and_keeps_the_childs_stderr_tail(tmp_path, monkeypatch):
    """A stand-in child (a module that writes a line to stderr and sleeps) instead of a real job."""
    from ptycho_exp import isolation

    (tmp_path / "sleeper_child.py").write_text(
        "import sys, time\nsys.stderr.write('OSError: [Errno 28] No space left on device\\n')\n"
        "sys.stderr.flush()\ntime.sleep(2.0)\nsys.exit(1)\n")
    monkeypatch.setattr(isolation, "CHILD_MODULE", "sleeper_child")
    beats = []
    child = isolation.run_child(tmp_path, {"PYTHONPATH": str(tmp_path)}, heartbeat=lambda: beats.append(1),
                                interval=0.3)
    assert child.exit_code == 1 and "No space left on device" in child.stderr_tail
    assert len(beats) >= 3, beats
    assert "is full (No space left on device" in isolation.disk_full(tmp_path, [child.stderr_tail])
    assert isolation.disk_full(tmp_path, ["exited with status 1"]) is None  # tmp_path has room


def test_the_sweep_summary_counts_only_its_own_outcomes(tmp_path):
    """Results written during this sweep by another run are listed apart, never counted as this sweep's; a
    failure of the other run does not fail this sweep; results from before it started count as done."""
    from ptycho_exp.sweep.callbacks import summary_line, sweep_outcomes

    sweep = tmp_path / "sweep"
    jobs = write_synthetic_sweep(sweep, {"model": ["pinn"], "seed": [1, 2, 3, 4, 5]}, failed=[2])
    started = time.time() + 100
    for job, run in zip(jobs, ["me", "other-host:4321:ab", "other-host:4321:ab", "me", None]):
        rec = json.loads((job / RESULT_FILE).read_text())
        (job / RESULT_FILE).write_text(json.dumps({**rec, "run": run}))
        os.utime(job / RESULT_FILE, (started + 1, started + 1))
    os.utime(jobs[3] / RESULT_FILE, (started - 50, started - 50))  # done before this sweep started
    _write_claim(jobs[4], pid=1, host="elsewhere.example", run="other-host:4321:ab")  # runs now elsewhere
    out = sweep_outcomes(sweep, "me", started)
    assert [n for n, _ in out["ok"]] == ["0", "3"] and not out["failed"], out
    assert [n for n, _ in out["other_ok"]] == ["1"] and [n for n, _ in out["other_failed"]] == ["2"]
    line = summary_line(sweep, out)
    assert line == (f"ptycho_exp: sweep {sweep}: 2/2 jobs ok; jobs 1, 2 run by another process (pid 4321 on host "
                    "other-host): 1 ok, 1 failed; job 4 is running in another process (pid 1 on host "
                    "elsewhere.example); skipped"), line


def test_a_claim_left_empty_by_a_writer_that_died_goes_stale_soon(tmp_path):
    job = tmp_path / "job"
    job.mkdir()
    (job / CLAIM_FILE).write_bytes(b"")
    assert results.is_running(job)  # it may be being written right now
    old = time.time() - results._TAKEOVER_STALE_S - 1
    os.utime(job / CLAIM_FILE, (old, old))
    assert not results.is_running(job)
    assert results.claim_job(job).pid == os.getpid()
    assert [p.name for p in job.iterdir()] == [CLAIM_FILE]  # the claim's temp file is gone
