"""Studies as Hydra multiruns: real sweeps into tmp folders (local, parallel, Optuna), resume after
SIGKILL, failure isolation, retries, planning, and the study / experiment / hardware configs.

Every end-to-end test runs ``python -m ptycho_exp`` in a subprocess with the tiniest job that
still trains and evaluates (N=32, 32 training patterns, 1 epoch).
"""
from __future__ import annotations

import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from tests.helpers.cli import ROOT, run_cli

# Tiny jobs; the sweep's own callbacks are kept except the (slow) final aggregate/live report.
TINY = ["data.N=32", "data.object_size=64", "data.n_train=32", "data.n_test=16", "train.epochs=1",
        "train.tensorboard=false", "train.save_model=false", "eval.figures=false", "eval.save_recon=false",
        "eval.upsample_factor=10", "++hydra.callbacks.report.live=false", "++hydra.callbacks.report.final=false"]
CONF = ROOT / "ptycho_exp" / "conf"


# --------------------------------------------------------------------------- helpers
def _env(tmp_path: Path) -> dict:
    return {**os.environ, "PTYCHO_EXP_CACHE": str(tmp_path / "cache"), "CUDA_VISIBLE_DEVICES": "",
            "TF_CPP_MIN_LOG_LEVEL": "2"}


def _job_dirs(sweep: Path) -> list[Path]:
    return sorted((p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


def _results(sweep: Path) -> dict[str, dict]:
    out = {}
    for d in _job_dirs(sweep):
        f = d / "result.json"
        if f.is_file():
            out[d.name] = json.loads(f.read_text())
    return out


def _log(proc: subprocess.CompletedProcess) -> str:
    return f"rc={proc.returncode}\n--- stdout\n{proc.stdout[-5000:]}\n--- stderr\n{proc.stderr[-5000:]}"


def _t(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def _start_killable(args: list[str], tmp_path: Path, name: str) -> subprocess.Popen:
    """Start ``python -m ptycho_exp args`` in its own process group (so the whole sweep can be killed)."""
    out = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - closed by the OS when the test ends
    return subprocess.Popen([sys.executable, "-m", "ptycho_exp", *args], cwd=ROOT, env=_env(tmp_path),
                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _kill_group_when(proc: subprocess.Popen, ready, timeout: float = 300) -> None:
    """SIGKILL the process group of ``proc`` as soon as ``ready()`` is true."""
    deadline = time.time() + timeout
    try:
        while not ready():
            assert proc.poll() is None, "the sweep ended before it could be killed mid-way"
            assert time.time() < deadline, "the sweep did not reach the kill point in time"
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def _ok_count(sweep: Path) -> int:
    return sum(r.get("status") == "ok" for r in _results(sweep).values()) if sweep.is_dir() else 0


def _debris(sweep: Path) -> list[Path]:
    return [p for p in sweep.rglob("*") if p.is_file() and (p.name.endswith((".tmp", ".partial"))
                                                            or p.name == ".write_probe")]


def _summary_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("ptycho_exp: sweep ")]


# --------------------------------------------------------------------------- local: kill, resume
@pytest.mark.e2e
def test_quick_study_killed_mid_way_resumes_without_recomputing(tmp_path: Path) -> None:
    """study=quick (4 jobs): SIGKILL the whole sweep after 2 jobs, re-run the same command."""
    sweep = tmp_path / "sweep"
    args = ["study=quick", *TINY, f"hydra.sweep.dir={sweep}"]
    proc = _start_killable(args, tmp_path, "first")
    # kill while job 2 runs: two results on disk, the third job folder created
    _kill_group_when(proc, lambda: _ok_count(sweep) >= 2 and (sweep / "2").is_dir())
    first = _results(sweep)
    done = {k: r for k, r in first.items() if r["status"] == "ok"}
    assert len(done) >= 2, (tmp_path / "first.log").read_text()[-3000:]
    stamps = {k: (r["provenance"]["finished_at"], (sweep / k / "result.json").stat().st_mtime_ns)
              for k, r in done.items()}

    # the plan of the same command shows what is done and estimates the rest from finished jobs
    plan = run_cli(["plan", *args], tmp_path, module="ptycho_exp.cli", timeout=60)
    assert plan.returncode == 0, _log(plan)
    assert f"{len(done)} done, {4 - len(done)} to run; estimated" in plan.stdout, plan.stdout

    second = run_cli(args, tmp_path, timeout=600)
    assert second.returncode == 0, _log(second)
    assert "4/4 jobs ok" in second.stdout, _log(second)
    final = _results(sweep)
    assert sorted(final) == ["0", "1", "2", "3"], _log(second)
    assert all(r["status"] == "ok" for r in final.values()), final
    # every (model, seed) arm ends ok exactly once
    arms = sorted((r["model"], r["seed"]) for r in final.values())
    assert arms == [("baseline", 1), ("baseline", 2), ("pinn", 1), ("pinn", 2)]
    for k, (finished_at, mtime) in stamps.items():  # finished jobs were skipped, not recomputed
        assert final[k]["provenance"]["finished_at"] == finished_at, k
        assert (sweep / k / "result.json").stat().st_mtime_ns == mtime, k
        assert "skip:" in (sweep / k / "job.log").read_text(), k
    assert not _debris(sweep), _debris(sweep)
    # the plan now shows all done
    plan = run_cli(["plan", *args], tmp_path, module="ptycho_exp.cli", timeout=60)
    assert "4 done, 0 to run" in plan.stdout and plan.stdout.count(" ok ") == 4, plan.stdout


# --------------------------------------------------------------------------- parallel
@pytest.mark.e2e
def test_parallel_quick_study_runs_two_jobs_at_a_time(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    res = run_cli(["study=quick", "hardware=parallel", *TINY, f"hydra.sweep.dir={sweep}"], tmp_path)
    assert res.returncode == 0, _log(res)
    results = _results(sweep)
    assert len(results) == 4 and all(r["status"] == "ok" for r in results.values()), _log(res)
    spans = [(_t(r["provenance"]["started_at"]), _t(r["provenance"]["finished_at"])) for r in results.values()]

    # (second resolution: strict inequalities never call sequential jobs concurrent)
    def concurrent(t: float) -> int:
        return sum(a <= t < b for a, b in spans)

    most = max(concurrent(a) for a, _ in spans)
    assert most == 2, f"expected 2 jobs at once (n_jobs=2), saw at most {most}: {spans}"
    assert len({r["provenance"]["pid"] for r in results.values()}) == 4  # a fresh process per job


# --------------------------------------------------------------------------- failures, retries
@pytest.mark.e2e
@pytest.mark.parametrize("hardware", ["local", "parallel"])
def test_failing_and_crashing_jobs_never_stop_the_sweep(tmp_path: Path, hardware: str) -> None:
    """fault=none,raise,exit: the ok job finishes, both failures are recorded, exit 1 with one line.

    The local variant also sets hardware.retries=1: each failed job runs twice.
    """
    sweep = tmp_path / "sweep"
    retries = 1 if hardware == "local" else 0
    res = run_cli(["study=quick", f"hardware={hardware}", "model=pinn", "seed=1", "fault=none,raise,exit",
                   f"hardware.retries={retries}", *TINY, f"hydra.sweep.dir={sweep}"], tmp_path)
    assert res.returncode == 1, _log(res)
    lines = _summary_lines(res.stderr)
    assert len(lines) == 1, _log(res)
    assert "1/3 jobs ok, 2 failed" in lines[0] and "fault=raise" in lines[0], lines[0]
    by_fault = {r["config"]["fault"]: (k, r) for k, r in _results(sweep).items()}
    assert sorted(by_fault) == ["exit", "none", "raise"], _log(res)
    ok = by_fault["none"][1]
    assert ok["status"] == "ok" and ok["metrics"]["phase_ssim"] is not None
    k, raised = by_fault["raise"]
    assert raised["status"] == "failed" and raised["error_type"] == "RuntimeError", raised
    assert "fault injection: fault=raise" in raised["error"] and "Traceback" in raised["traceback"]
    k_exit, crashed = by_fault["exit"]
    assert crashed["status"] == "failed" and crashed["error_type"] == "ProcessDied", crashed
    assert crashed["exit_code"] == 1 and "exited with status 1" in crashed["error"], crashed
    if retries:
        assert raised["attempts"] == 2 and crashed["attempts"] == 2
        log = (sweep / k / "job.log").read_text()
        assert log.count("job failed: RuntimeError: fault injection") == 2, log
        assert "retry 1/1" in (sweep / k_exit / "job.log").read_text()
        assert "attempts" not in ok
    assert not _debris(sweep)


# --------------------------------------------------------------------------- Optuna
def _optuna_trials(sweep: Path, name: str) -> list:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{sweep / 'optuna.db'}")
    return study.get_trials(deepcopy=False)


def _states(trials: list) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in trials:
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


@pytest.mark.e2e
def test_optuna_failed_trials_are_told_fail(tmp_path: Path) -> None:
    """Every trial raises: each is told FAIL (NaN objective), the sweep stops at 2 x n_trials attempts."""
    sweep = tmp_path / "sweep"
    res = run_cli(["study=optuna", "hydra.sweeper.n_trials=2", "fault=raise", *TINY, f"hydra.sweep.dir={sweep}"],
                  tmp_path, timeout=300)
    assert res.returncode == 1, _log(res)
    assert _states(_optuna_trials(sweep, "ptycho_exp_optuna")) == {"FAIL": 4}
    assert len(_results(sweep)) == 4 and all(r["status"] == "failed" for r in _results(sweep).values())
    assert yaml.safe_load((sweep / "optimization_results.yaml").read_text())["completed"] == 0


@pytest.mark.e2e
def test_optuna_storage_password_is_redacted(tmp_path: Path) -> None:
    from ptycho_exp.sweep.sweeper import redact_url

    assert redact_url("postgresql://me:pa@ss@db.example.org:5432/optuna") == \
        "postgresql://me:***@db.example.org:5432/optuna"
    assert redact_url("sqlite:///x/optuna.db") == "sqlite:///x/optuna.db"
    url = "postgresql://ptycho:S3cretPw@127.0.0.1:9/optuna"  # nothing listens on port 9
    res = run_cli(["study=optuna", f"hydra.sweeper.storage={url}", *TINY, f"hydra.sweep.dir={tmp_path / 's'}"],
                  tmp_path, timeout=120)
    assert res.returncode != 0
    assert "S3cretPw" not in res.stdout + res.stderr, _log(res)
    assert "postgresql://ptycho:***@127.0.0.1:9/optuna" in res.stderr, _log(res)


@pytest.mark.e2e
def test_pareto_study_runs_two_trials_and_resumes_to_the_same_total(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    tiny = [o for o in TINY if not o.startswith(("train.epochs=", "data.n_train="))]
    args = ["study=pareto", "hydra.sweeper.n_trials=2", "hardware.isolate=false", *tiny,
            "train.epochs=int(interval(1,2))", "data.n_train=choice(32,48)", f"hydra.sweep.dir={sweep}"]
    res = run_cli(args, tmp_path, timeout=400)
    assert res.returncode == 0, _log(res)
    trials = _optuna_trials(sweep, "ptycho_exp_pareto")
    assert _states(trials) == {"COMPLETE": 2}
    for t in trials:  # two objectives: phase SSIM and training seconds, as in the job's result
        r = json.loads((sweep / str(t.number) / "result.json").read_text())
        assert t.values == pytest.approx([r["metrics"]["phase_ssim"], r["timings"]["train_s"]])
    again = run_cli(args, tmp_path, timeout=120)  # n_trials is a total: nothing left to run
    assert again.returncode == 0, _log(again)
    assert _states(_optuna_trials(sweep, "ptycho_exp_pareto")) == {"COMPLETE": 2}
    assert len(_job_dirs(sweep)) == 2


@pytest.mark.slow  # ~45-60 s; the pareto test covers total-trial resume in the fast set
def test_optuna_killed_then_resumed_ends_with_exactly_n_complete_trials(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    args = ["study=optuna", "hydra.sweeper.n_trials=6", "hardware.isolate=false", *TINY,
            f"hydra.sweep.dir={sweep}"]
    proc = _start_killable(args, tmp_path, "first")
    _kill_group_when(proc, lambda: _ok_count(sweep) >= 2)
    before = {k: r["provenance"]["finished_at"] for k, r in _results(sweep).items() if r["status"] == "ok"}
    res = run_cli(args, tmp_path, timeout=600)
    assert res.returncode == 0, _log(res)
    trials = _optuna_trials(sweep, "ptycho_exp_optuna")
    states = _states(trials)
    assert states["COMPLETE"] == 6, states
    assert set(states) <= {"COMPLETE", "FAIL"}, states  # a trial killed mid-run is FAIL, none RUNNING
    results = _results(sweep)
    for t in trials:
        if t.state.name == "COMPLETE":
            r = results[str(t.number)]
            assert r["status"] == "ok" and t.value == pytest.approx(r["metrics"]["phase_ssim"])
    for k, finished_at in before.items():  # trials finished before the kill kept their folders
        assert results[k]["provenance"]["finished_at"] == finished_at
    assert yaml.safe_load((sweep / "optimization_results.yaml").read_text())["completed"] == 6


# --------------------------------------------------------------------------- planning
def test_plan_generalization_lists_model_size_seed_jobs_fast(tmp_path: Path) -> None:
    t0 = time.time()
    res = run_cli(["plan", "study=generalization"], tmp_path, module="ptycho_exp.cli", timeout=60)
    elapsed = time.time() - t0
    assert res.returncode == 0, _log(res)
    assert elapsed < 5, f"plan took {elapsed:.1f}s"
    rows = [line for line in res.stdout.splitlines() if "model=" in line]
    assert len(rows) == 2 * 4 * 3, res.stdout
    for model in ("pinn", "baseline"):
        for n in (512, 1024, 2048, 4096):
            for seed in (1, 2, 3):
                assert any(f"model={model} data.n_train={n} seed={seed}" in r and "pending" in r for r in rows), \
                    (model, n, seed)
    assert "0 done, 24 to run" in res.stdout and "Traceback" not in res.stderr
    assert "Warning" not in res.stderr, res.stderr


def test_plan_hash_matches_the_job_hash() -> None:
    """The plan hashes a job exactly as the job hashes itself (so 'done' means the same config)."""
    from ptycho_exp import results
    from ptycho_exp.compose import job_config_dict
    from ptycho_exp.compose import compose_job_config
    from ptycho_exp.sweep.plan import plan

    rows, _ = plan(["study=quick", "data.N=32"])
    assert len(rows) == 4
    for row, (model, seed) in zip(rows, [("pinn", 1), ("pinn", 2), ("baseline", 1), ("baseline", 2)]):
        cfg = compose_job_config(["study=quick", "data.N=32", f"model={model}", f"seed={seed}",
                                  "hardware=parallel", "tag=x"])  # launcher and tag never change a result
        assert row["hash"] == results.config_hash(job_config_dict(cfg)), row


# --------------------------------------------------------------------------- configs
def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


STUDIES = sorted(p.stem for p in (CONF / "study").glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def test_the_study_and_experiment_sets_are_complete() -> None:
    assert set(STUDIES) >= {"generalization", "dose_vs_size", "grid3d", "architecture", "optuna", "pareto",
                            "quick"}
    assert set(EXPERIMENTS) >= {"paper_lines_gs1", "paper_lines_gs2", "production", "quick"}


@pytest.mark.parametrize("override", [f"study={s}" for s in STUDIES] + [f"experiment={e}" for e in EXPERIMENTS])
def test_every_study_and_experiment_composes(override: str) -> None:
    from hydra.types import RunMode

    from ptycho_exp.config import validate
    from ptycho_exp.run import wants_multirun
    from ptycho_exp.compose import compose_job_config

    cfg = compose_job_config([override], return_hydra=True)
    job = compose_job_config([override])
    validate(job)
    multirun = cfg.hydra.mode == RunMode.MULTIRUN
    assert multirun == (not override.startswith("experiment=paper")), override
    assert wants_multirun([override]) == multirun  # the entry point adds --multirun itself
    if multirun:
        assert cfg.hydra.sweeper.params, override


def _geometric(values: list[float]) -> bool:
    ratios = [b / a for a, b in itertools.pairwise(values)]
    return all(math.isclose(r, ratios[0], rel_tol=0.2) for r in ratios) and ratios[0] > 1  # 1-3-10 counts


LOG_KEYS = ("data.nphotons", "data.n_train", "train.learning_rate")


@pytest.mark.parametrize("study", STUDIES)
def test_log_scale_values_are_written_as_such(study: str) -> None:
    params = ((_yaml(CONF / "study" / f"{study}.yaml").get("hydra") or {}).get("sweeper") or {}).get("params") or {}
    for key in LOG_KEYS:
        text = str(params.get(key, ""))
        if not text or "(" in text:
            if key == "train.learning_rate" and text:
                assert text.startswith("tag(log,"), f"{study}: {key}: {text}"  # Optuna: a log interval
            continue
        values = [float(v) for v in text.split(",")]
        assert _geometric(values), f"{study}: {key}={text} is not on a log scale"
        if key == "data.nphotons":
            assert all(v.strip().startswith("1e") for v in text.split(",")), f"{study}: {key}={text}"


@pytest.mark.parametrize("name,gridsize", [("paper_lines_gs1", 1), ("paper_lines_gs2", 2)])
def test_paper_presets_are_the_spec_reference_protocol(name: str, gridsize: int) -> None:
    """docs/CONTRACT.md §7: lines, N=64, 1e9 photons, 60 epochs, amplitude-only, ideal disk probe, g=1 / g=2."""
    from ptycho_exp.compose import compose_job_config

    cfg = compose_job_config([f"experiment={name}"])
    d = cfg.data
    assert (d.kind, d.object, d.object_phase, d.N, d.nphotons, d.gridsize, d.probe) == \
        ("simulate", "lines", "none", 64, 1e9, gridsize, "ideal_disk")
    assert (d.object_size, d.scan, d.train_stride, d.test_stride) == (392, "grid", 4, 10)  # 83x83 / 33x33
    assert d.noise is True
    assert cfg.train.epochs == 60 and cfg.model.name == "pinn" and cfg.model.nll_weight == 1.0


def test_production_is_full_size_with_five_seeds() -> None:
    from ptycho_exp.compose import compose_job_config
    from ptycho_exp.sweep.plan import expand_sweep

    cfg = compose_job_config(["experiment=production"])
    assert cfg.data.N == 64 and cfg.data.object_size == 392 and cfg.train.epochs >= 50
    jobs, base = expand_sweep(["experiment=production"])
    assert base.hydra.sweeper.params.seed == "1,2,3,4,5"
    assert len(jobs) == 2 * 4 * 5
    assert base.hydra.launcher._target_.endswith("JoblibLauncher")


def test_generalization_arms_share_one_test_set() -> None:
    from ptycho_exp.data.cache import dataset_key
    from ptycho_exp.compose import compose_job_config

    arms = [compose_job_config(["study=generalization", "model=pinn", "data.n_train=512", "seed=1"]),
            compose_job_config(["study=generalization", "model=baseline", "data.n_train=4096", "seed=3"])]
    test_keys = {dataset_key(a.data, "test") for a in arms}
    assert len(test_keys) == 1
    assert arms[0].data.test_seed == arms[1].data.test_seed == 12345
    swept = _yaml(CONF / "study" / "generalization.yaml")["hydra"]["sweeper"]["params"]
    assert not any(k.startswith("data.test") for k in swept)


# --------------------------------------------------------------------------- hardware
def test_child_env_round_robins_gpus_and_splits_threads() -> None:
    from ptycho_exp.isolation import child_env, parallel_jobs
    from ptycho_exp.compose import compose_job_config

    cfg = compose_job_config(["hardware=parallel"])
    assert cfg.hardware.device == "auto" and cfg.hardware.intra_op_threads == 0
    gpus = ["0", "1", "2"]
    got = [child_env(cfg, k, 2, gpus=gpus, n_cpus=16)["CUDA_VISIBLE_DEVICES"] for k in range(6)]
    assert got == ["0", "1", "2", "0", "1", "2"]
    env = child_env(cfg, 0, 2, gpus=gpus, n_cpus=16)
    assert env["PTYCHO_EXP_INTRA_THREADS"] == env["OMP_NUM_THREADS"] == "8"
    assert child_env(cfg, 5, 4, gpus=["0"], n_cpus=2)["PTYCHO_EXP_INTRA_THREADS"] == "1"
    assert "CUDA_VISIBLE_DEVICES" not in child_env(cfg, 1, 2, gpus=["0"], n_cpus=4)  # one GPU: shared
    assert child_env(cfg, 1, 2, gpus=["0"], n_cpus=4)["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"  # ... on demand
    assert "TF_FORCE_GPU_ALLOW_GROWTH" not in child_env(cfg, 1, 2, gpus=gpus, n_cpus=4)  # one GPU each
    assert "CUDA_VISIBLE_DEVICES" not in child_env(cfg, 1, 1, gpus=gpus, n_cpus=4)  # one job: sees all
    assert "PTYCHO_EXP_INTRA_THREADS" not in child_env(cfg, 1, 1, gpus=gpus, n_cpus=4)
    local = compose_job_config(["hardware=local"])
    assert child_env(local, 3, 1, gpus=gpus)["CUDA_VISIBLE_DEVICES"] == ""  # cpu: no GPU
    assert [parallel_jobs(n, n_cpus=8) for n in (None, 1, 2, -1, -2)] == [1, 1, 2, 8, 7]



def test_jobs_get_tensorflow_settings_unless_the_caller_sets_them() -> None:
    from ptycho_exp.isolation import child_env, tensorflow_env
    from ptycho_exp.compose import compose_job_config

    assert tensorflow_env({}) == {"TF_CPP_MIN_LOG_LEVEL": "2", "TF_ENABLE_ONEDNN_OPTS": "1"}
    assert tensorflow_env({"TF_ENABLE_ONEDNN_OPTS": "0"})["TF_ENABLE_ONEDNN_OPTS"] == "0"  # the user's choice wins
    env = child_env(compose_job_config(["hardware=local"]), 0, 1)
    assert env["TF_ENABLE_ONEDNN_OPTS"] == os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1")


@pytest.mark.parametrize("name", ["slurm_cpu", "slurm_gpu"])
def test_slurm_hardware_requeues_on_timeout(name: str) -> None:
    from ptycho_exp.compose import compose_job_config

    cfg = compose_job_config([f"hardware={name}"], return_hydra=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.max_num_timeout >= 1
    assert launcher.array_parallelism >= 1 and launcher.timeout_min > 0 and launcher.mem_gb > 0
    assert cfg.hardware.isolate is True
