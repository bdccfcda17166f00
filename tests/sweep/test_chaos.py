"""Crash-and-resume chaos test (issue 8): SIGKILL a 12-job sweep at 10 seeded random moments.

A tiny sweep (pinn, baseline × 6 seeds, N=16) followed by ``ptycho-exp aggregate`` runs as one
process group; the group is SIGKILLed at random (seeded) moments -- seven anywhere in the next job or
two (job start-up, simulation, training, evaluation, result writing), one right after the last job,
two in the tail (skip-if-done bookkeeping, aggregation) -- and the same command is re-run after each
kill; the test prints where each kill landed. In the
end the aggregated ``results.csv`` (metric columns) and every job's metrics equal those of an
uninterrupted run with the same seeds; every job reached ``ok`` exactly once (an ok record is
never recomputed); no file is truncated (every .json parses, every .npz loads, no temp file).
``PTYCHO_CHAOS_SEED=<int>`` draws other kill moments (a stress run: loop over seeds).
"""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from tests.helpers.cli import ROOT

N_JOBS = 12
N_KILLS = 10
SWEEP = ["-m", "model=pinn,baseline", "seed=1,2,3,4,5,6", "data.N=16", "data.object_size=64", "data.n_train=16",
         "data.test_stride=8", "train.epochs=1", "train.tensorboard=false", "train.save_model=false",
         "eval.figures=false", "eval.upsample_factor=10", "++hydra.callbacks.report.live=false",
         "++hydra.callbacks.report.final=false"]
# Columns of results.csv that depend on wall time, not on the science.
TIMING_WORDS = ("time", "seconds", "per_s", "peak_rss", "throughput", "finished", "started")


def _command(sweep: Path) -> str:
    py = sys.executable
    sweep_args = " ".join(f"'{a}'" for a in SWEEP)
    return (f"'{py}' -m ptycho_exp {sweep_args} 'hydra.sweep.dir={sweep}' && "
            f"'{py}' -m ptycho_exp.cli aggregate '{sweep}' --out '{sweep}/aggregate' --no-plots")


def _env(cache: Path) -> dict:
    return {**os.environ, "PTYCHO_EXP_CACHE": str(cache), "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}


def _start(sweep: Path, cache: Path, log: Path) -> subprocess.Popen:
    with open(log, "ab") as fh:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(["bash", "-c", _command(sweep)], cwd=ROOT, env=_env(cache), stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _phase(pgid: int, sweep: Path) -> str:
    """What the killed process group was doing (for the test's report only)."""
    try:
        out = subprocess.run(["ps", "-ww", "-eo", "pgid=,args="], capture_output=True, text=True, timeout=5,
                             check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return "?"
    mine = [line.split(None, 1)[1] for line in out.splitlines()
            if len(line.split(None, 1)) == 2 and line.split(None, 1)[0] == str(pgid)]
    mine = [a for a in mine if not a.startswith("bash")]  # the shell's own line names every step
    if any("ptycho_exp.cli aggregate" in a for a in mine):
        return "aggregation"
    child = next((a for a in mine if "ptycho_exp.run " in a), None)
    if child is None:
        return "sweep bookkeeping (no job running)"
    log = Path(child.rsplit(" ", 1)[-1]) / "job.log"
    last = log.read_text().strip().splitlines()[-1] if log.exists() and log.read_text().strip() else ""
    if "cache miss" in last:
        return "simulation"
    if "simulated" in last or "cache hit" in last:
        return "data ready, TensorFlow start-up"
    if "parameters" in last or "epoch" in last:
        return "training/evaluation/writing results"
    if ": ok" in last or ": failed" in last:
        return "job exit"
    return f"job ({last[11:80] or 'starting'})"


def _ok_records(sweep: Path) -> dict[str, str]:
    """``{job: finished_at}`` of every ok result."""
    out = {}
    for res in sweep.glob("*/result.json"):
        rec = json.loads(res.read_text())
        if rec.get("status") == "ok":
            out[res.parent.name] = rec["provenance"]["finished_at"] + "|" + str(rec["provenance"].get("pid"))
    return out


def _metrics(sweep: Path) -> dict[str, dict]:
    return {res.parent.name: json.loads(res.read_text())["metrics"] for res in sweep.glob("*/result.json")}


def _timing(name: str) -> bool:
    return name.endswith("_s") or any(w in name for w in TIMING_WORDS)


def _science_table(path: Path) -> list[dict]:
    """results.csv without the rows/columns of wall-time quantities (train_s, patterns/s, peak memory)."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows, f"{path} is empty"
    return [{k: v for k, v in row.items() if not _timing(k)} for row in rows if not _timing(row.get("metric", ""))]


def _check_no_torn_files(*folders: Path) -> None:
    for folder in folders:
        for path in folder.rglob("*"):
            if not path.is_file():
                continue
            assert not path.name.endswith(".tmp") and not path.name.startswith(".tmp-"), f"temp file left: {path}"
            if path.suffix == ".json":
                json.loads(path.read_text())
            elif path.suffix == ".npz":
                with np.load(path, allow_pickle=False) as z:
                    for key in z.files:
                        z[key]


def _run_until(proc: subprocess.Popen, seconds: float, done=None) -> bool:
    """Wait ``seconds`` (or, with ``done``, until ``done()`` holds, then ``seconds`` more); True if it exited."""
    if done is not None:
        while not done():
            try:
                proc.wait(timeout=0.3)
                return True
            except subprocess.TimeoutExpired:
                pass
    try:
        proc.wait(timeout=seconds)
        return True
    except subprocess.TimeoutExpired:
        return False


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sigkill_at_random_moments_then_resume_gives_the_uninterrupted_results(tmp_path):
    ref, chaos = tmp_path / "ref", tmp_path / "chaos"
    log = tmp_path / "chaos.log"

    t0 = time.time()
    proc = _start(ref, tmp_path / "cache_ref", tmp_path / "ref.log")
    assert proc.wait(timeout=600) == 0, (tmp_path / "ref.log").read_text()[-3000:]
    t_job = (time.time() - t0) / N_JOBS
    t1 = time.time()  # a second pass skips every job and aggregates again: the length of the tail
    proc = _start(ref, tmp_path / "cache_ref", tmp_path / "ref.log")
    assert proc.wait(timeout=600) == 0, (tmp_path / "ref.log").read_text()[-3000:]
    t_tail = time.time() - t1

    # Kills 0-6 land anywhere in the first job or two of what is left (simulation, training, writing);
    # kill 7 right after the last job (its bookkeeping or aggregation); kills 8-9 in the tail (skips,
    # aggregation). Every delay is drawn from one seeded generator.
    rng = np.random.default_rng(int(os.environ.get("PTYCHO_CHAOS_SEED", 20260822)))  # other seeds: a stress run
    cache = tmp_path / "cache_chaos"
    seen_ok: dict[str, str] = {}
    phases = []
    for kill in range(N_KILLS):
        proc = _start(chaos, cache, log)
        if kill < 7:
            exited = _run_until(proc, float(rng.uniform(0.5, 2.0)) * t_job)
        elif kill == 7:
            exited = _run_until(proc, float(rng.uniform(0.0, 0.6)) * t_tail,
                                done=lambda: len(_ok_records(chaos)) == N_JOBS)
        else:
            exited = _run_until(proc, float(rng.uniform(0.2, 1.0)) * t_tail)
        if exited:
            phases.append("finished before the kill")
        else:
            phases.append(_phase(proc.pid, chaos))
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        now_ok = _ok_records(chaos)
        for job, stamp in seen_ok.items():  # an ok job is never recomputed or lost
            assert now_ok.get(job) == stamp, f"kill {kill}: job {job}'s ok record changed or vanished"
        seen_ok = now_ok

    proc = _start(chaos, cache, log)
    assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
    final_ok = _ok_records(chaos)
    assert len(final_ok) == N_JOBS, sorted(final_ok)
    for job, stamp in seen_ok.items():
        assert final_ok[job] == stamp, f"job {job} ran to ok twice"

    assert _metrics(chaos) == _metrics(ref)  # bit-identical floats (JSON round-trip is exact)
    assert _science_table(chaos / "aggregate" / "results.csv") == _science_table(ref / "aggregate" / "results.csv")
    _check_no_torn_files(chaos, cache)
    print(f"per job {t_job:.1f} s, tail {t_tail:.1f} s; kills landed in: {phases}; total {time.time() - t0:.0f} s")
