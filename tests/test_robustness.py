"""Robustness and security (issue 8): bad inputs, safe loading, disk and memory failures, determinism.

Every bad input runs through a real entry point (``python -m ptycho_exp`` or ``ptycho-exp`` in a
subprocess whose working folder is the case's own) and must exit with status 2 and ONE clear stderr
line naming the field or file and the fix, no traceback, and no new or changed file anywhere: the
case folder (its files, the run or sweep folder, the dataset cache and the working folder) is
compared before and after. TensorFlow is made unimportable in those runs (a guard package on
PYTHONPATH), which proves that bad configs and bad NPZ files are refused before it would load. Each run is a
fork of one process that imported the entry modules first (``tests/helpers/preloaded.py``): the entry module
still runs as ``__main__`` in a process of its own, without paying the interpreter's start-up 190 times.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from tests.bad_inputs.corpus import all_cases, build_case, valid_arrays
from tests.helpers.cli import ROOT, TINY, onednn_expected, run_cli
from tests.helpers.preloaded import PreloadedRunner

PKG = ROOT / "ptycho_exp"
TF_MARKER = "TENSORFLOW_IMPORTED_DURING_A_BAD_INPUT_RUN"
FIX_WORDS = re.compile(r"fix|choose|must|use |set |remove|save|re-save|re-copy|check the path|chmod", re.IGNORECASE)
CASES = all_cases()
TINY_JOB = ["data.N=16", "data.object_size=64", "data.n_train=16", "data.test_stride=8", "train.epochs=1",
            "train.tensorboard=false", "train.save_model=false", "eval.figures=false", "eval.upsample_factor=10"]
ENTRY = {"run": "ptycho_exp", "cli": "ptycho_exp.cli"}
# What the entry points import before they look at their arguments (none of it imports TensorFlow; not the
# entry modules themselves, which runpy must find unimported).
PRELOAD = ["ptycho_exp.run", "ptycho_exp.sweep.plan", "ptycho_exp.data.npz", "hydra.main"]


def _no_tf_env(folder: Path) -> dict:
    """PYTHONPATH with packages named tensorflow/keras that refuse to import."""
    for name in ("tensorflow", "keras"):
        pkg = folder / name
        pkg.mkdir(parents=True, exist_ok=True)
        (pkg / "__init__.py").write_text(f"raise ImportError('{TF_MARKER}: {name}')\n")
    return {"PYTHONPATH": os.pathsep.join([str(folder), str(ROOT)])}


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry below ``folder`` (not following links): relative path -> (type bits, size, mtime)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            out[os.path.relpath(path, folder)] = (st.st_mode >> 12, st.st_size if name in filenames else 0,
                                                  st.st_mtime_ns if name in filenames else 0)
    return out


@pytest.fixture(scope="module")
def corpus_runs(request, tmp_path_factory):
    """Build every selected case and run them all (a few at a time, each in its own folder, which is also its
    working folder and holds its dataset cache); ``{name: (case, folder, proc, seconds, before, after)}``."""
    selected = {item.callspec.params["name"] for item in request.session.items
                if getattr(item, "originalname", "") == "test_bad_input_fails_with_one_clear_line_and_writes_nothing"}
    root = tmp_path_factory.mktemp("bad_inputs")
    guard = _no_tf_env(root / "_guard")

    def one(case):
        folder = root / case.name
        args = build_case(case, folder)
        env = {**os.environ, **guard, "PTYCHO_EXP_CACHE": str(folder / "cache"), "CUDA_VISIBLE_DEVICES": "",
               "TF_CPP_MIN_LOG_LEVEL": "2", "HYDRA_FULL_ERROR": ""}
        before = snapshot(folder)
        t0 = time.time()
        try:
            proc = runner.run(ENTRY[case.entry], args, cwd=folder, env=env, timeout=60)
        except subprocess.TimeoutExpired as exc:
            proc = subprocess.CompletedProcess(exc.cmd, -1, str(exc.stdout), f"timed out after {exc.timeout} s")
        return case.name, (case, folder, proc, time.time() - t0, before, snapshot(folder))

    server_env = {**os.environ, **guard, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    with PreloadedRunner(PRELOAD, server_env, cwd=root) as runner, \
            ThreadPoolExecutor(max_workers=max(3, min(6, os.cpu_count() or 2))) as pool:
        return dict(pool.map(one, [c for c in CASES if c.name in selected]))


def test_corpus_has_at_least_100_distinct_cases_over_every_entry_point():
    names = [c.name for c in CASES]
    assert len(names) >= 100 and len(set(names)) == len(names)
    assert {c.kind for c in CASES} == {"config", "npz", "path", "cli"}
    commands = {" ".join(a for a in c.overrides[:2] if not a.startswith("{")) for c in CASES if c.entry == "cli"}
    for command in ("status", "aggregate", "plan", "predict", "rerun", "data inspect", "data split",
                    "data simulate", "data import", "data export", "score"):
        assert any(c.split()[:len(command.split())] == command.split() for c in commands), command
    assert any("-m" in c.overrides for c in CASES) and any(c.quick for c in CASES)


def test_the_corpus_base_file_is_itself_valid(tmp_path):
    from ptycho_exp.data.npz import contract_header, load_contract_npz

    path = tmp_path / "good.npz"
    np.savez(path, **valid_arrays())
    assert contract_header(path)["M"] == 64
    assert load_contract_npz(path).diffraction.shape == (64, 32, 32)


def test_a_preloaded_run_is_what_a_fresh_interpreter_gives(tmp_path):
    """The corpus's runner: same exit status, output and working folder as ``python -m``; the TensorFlow guard
    holds in its children; a run that ends by an exception exits 1 with the traceback, as Python does."""
    guard = _no_tf_env(tmp_path / "_guard")
    env = {**os.environ, **guard, "PTYCHO_EXP_CACHE": str(tmp_path / "cache")}
    env["PYTHONPATH"] += os.pathsep + str(tmp_path)
    tf_probe = tmp_path / "tf_probe.py"
    tf_probe.write_text("import os\nprint(os.getcwd())\nimport tensorflow\n")
    runs = [("ptycho_exp", ["data.N=abc"]), ("ptycho_exp.cli", ["status", str(tf_probe)]),
            ("tf_probe", [])]
    with PreloadedRunner(PRELOAD, env) as runner:
        for module, args in runs:
            fresh = subprocess.run([sys.executable, "-m", module, *args], cwd=tmp_path, env=env,
                                   capture_output=True, text=True, timeout=60)
            forked = runner.run(module, args, cwd=tmp_path, env=env)
            assert (forked.returncode, forked.stdout) == (fresh.returncode, fresh.stdout), (module, forked, fresh)
            assert forked.stderr.splitlines()[-1] == fresh.stderr.splitlines()[-1], (forked.stderr, fresh.stderr)
    assert fresh.returncode == 1 and TF_MARKER in fresh.stderr and fresh.stdout.strip() == str(tmp_path)


@pytest.mark.parametrize("name", [c.name for c in CASES])
def test_bad_input_fails_with_one_clear_line_and_writes_nothing(corpus_runs, name):
    case, folder, proc, seconds, before, after = corpus_runs[name]
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, f"{name}: exit status {proc.returncode}\n{out[-2000:]}"
    assert TF_MARKER not in out, f"{name}: TensorFlow was imported before the error\n{out[-2000:]}"
    assert "Traceback" not in out, f"{name}: traceback shown\n{out[-3000:]}"
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"{name}: expected one stderr line, got {len(lines)}:\n{proc.stderr[-3000:]}"
    line = lines[0]
    assert line.startswith("ptycho_exp:" if case.entry == "run" else "ptycho-exp"), line
    for needle in case.needles:
        assert needle in line, f"{name}: {needle!r} not in {line!r}"
    assert FIX_WORDS.search(line), f"{name}: no fix in {line!r}"
    new = sorted(set(after) - set(before))
    changed = sorted(k for k in before if after.get(k) != before[k])
    assert not new and not changed, f"{name}: wrote {new}, changed {changed}"
    # A FIFO, a device or an absurd header ends as fast as any bad input: 5 s beyond what starting the same
    # entry point costs on this machine now (its median case, with room for a busy machine's jitter).
    same = [r for r in corpus_runs.values() if r[0].entry == case.entry]
    others = sorted(r[3] for r in same if not r[0].quick) or sorted(r[3] for r in same)
    typical = others[len(others) // 2]
    assert seconds < (5 + 1.5 * typical if case.quick else 20 + 2 * typical), f"{name} took {seconds:.1f} s"


def _ends_within(seconds: float, fn, *args):
    """Run ``fn(*args)`` in a thread; return what it raised (or None), failing if it is still running."""
    import threading

    box: dict = {}

    def target():
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - returned to the test
            box["exc"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{fn.__name__}{args} still running after {seconds} s"
    return box.get("exc")


def test_a_fifo_or_a_device_is_refused_before_it_is_opened(tmp_path):
    from ptycho_exp.data.npz import DataPathError, contract_header, load_contract_npz

    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    for fn, path, kind in ((contract_header, fifo, "FIFO"), (load_contract_npz, fifo, "FIFO"),
                           (contract_header, "/dev/zero", "character device")):
        exc = _ends_within(5, fn, str(path))
        assert isinstance(exc, DataPathError) and kind in str(exc) and str(path) in str(exc), exc
    link = tmp_path / "zero.npz"
    link.symlink_to("/dev/zero")
    exc = _ends_within(5, contract_header, str(link))
    assert isinstance(exc, DataPathError) and "character device" in str(exc)


def test_a_header_that_claims_more_than_the_file_holds_is_refused_at_once(tmp_path):
    from tests.bad_inputs.corpus import _absurd_header, _lying_zip_directory

    from ptycho_exp.data.npz import DataContractError, contract_header, load_contract_npz

    for writer, words in ((_absurd_header, "declares shape"), (_lying_zip_directory, "the file holds")):
        path = tmp_path / f"{writer.__name__}.npz"
        writer(path)
        for fn in (contract_header, load_contract_npz):
            exc = _ends_within(5, fn, str(path))
            assert isinstance(exc, DataContractError) and words in str(exc) and "diffraction" in str(exc), exc


def test_all_zero_diffraction_is_refused(tmp_path):
    from ptycho_exp.data.npz import DataContractError, load_contract_npz

    arrays = valid_arrays()
    arrays["diffraction"] = np.zeros_like(arrays["diffraction"])
    np.savez(tmp_path / "zero.npz", **arrays)
    with pytest.raises(DataContractError, match="zero in all 64 patterns"):
        load_contract_npz(tmp_path / "zero.npz")


def test_an_optuna_sweep_is_checked_on_each_value_of_its_search_space():
    """One job at the first values plus one per other value (an interval's two ends), not the product."""
    from ptycho_exp.sweep.plan import expand_sweep

    jobs, base = expand_sweep(["study=optuna"])
    params = dict(base.hydra.sweeper.params)
    assert len(jobs) == 1 + sum(len(str(v).split(",")) - 1 if "choice" in str(v) else 1 for v in params.values())
    lr = {o for job in jobs for o in job if o.startswith("train.learning_rate=")}
    assert lr == {"train.learning_rate=0.0001", "train.learning_rate=0.01"}
    assert {o for job in jobs for o in job if o.startswith("train.batch_size=")} == {"train.batch_size=16",
                                                                                    "train.batch_size=32"}
    full, _ = expand_sweep(["seed=1,2,3", "model=pinn,baseline"])
    assert len(full) == 6


def test_the_check_before_a_run_names_the_first_bad_job_of_a_sweep_and_skips_info_flags():
    from ptycho_exp.__main__ import check_before_run

    assert "data.N=48" in check_before_run(["-m", "seed=1,2", "data.N=16,48"])
    assert check_before_run(["-m", "seed=1,2", "data.N=16,32"]) is None
    assert check_before_run(["data.N=48", "--cfg", "job"]) is None
    assert check_before_run(["data.NN=3"]) is None  # Hydra itself reports what does not compose


def test_verbose_shows_the_traceback(cli, tmp_path):
    res = cli(["data.NN=3", "hydra.verbose=true", f"hydra.run.dir={tmp_path / 'run'}"])
    assert res.returncode != 0
    assert "Traceback" in res.stderr and "NN" in res.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 file anyway; the path checks cover "
                                              "missing files and directories")
def test_unreadable_npz_names_the_file(cli, tmp_path):
    path = tmp_path / "secret.npz"
    np.savez(path, **valid_arrays())
    path.chmod(0)
    res = cli(["data=npz", f"data.train_path={path}", f"data.test_path={path}", "data.N=32", "data.n_train=16",
               f"hydra.run.dir={tmp_path / 'run'}"])
    assert res.returncode != 0 and "data.train_path" in res.stderr and "readable" in res.stderr


# --------------------------------------------------------------------------- disk and memory
def _fake_ok_result(job_dir: Path) -> str:
    job_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"status": "ok", "config_hash": "previous", "metrics": {"phase_ssim": 0.9}})
    (job_dir / "result.json").write_text(text)
    return text


@pytest.fixture
def tmpfs(tmp_path):
    """A 4 MiB tmpfs mounted in tmp_path (root only); unmounted afterwards."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True, check=False)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({res.stderr.decode().strip()}): the path-under-a-file "
                    "corpus cases still prove the probe")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)


def test_read_only_output_dir_fails_before_work_and_keeps_the_previous_result(cli, tmp_path, tmpfs):
    job = tmpfs / "job"
    before = _fake_ok_result(job)
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    t0 = time.time()
    res = cli([*TINY_JOB, f"hydra.run.dir={job}"])
    assert res.returncode != 0 and time.time() - t0 < 30
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "hydra.run.dir" in lines[0] and "not writable" in lines[0], res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    assert (job / "result.json").read_text() == before
    assert not (tmp_path / "cache").exists()  # no data was simulated


def test_full_disk_fails_before_work_and_keeps_the_previous_result(cli, tmp_path, tmpfs):
    job = tmpfs / "job"
    before = _fake_ok_result(job)
    filler = tmpfs / "filler"
    with open(filler, "wb") as fh:
        try:
            fh.write(b"\0" * (8 << 20))
        except OSError:
            pass
    res = cli([*TINY_JOB, f"hydra.run.dir={job}"])
    assert res.returncode != 0
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "MiB free" in lines[0], res.stderr
    assert (job / "result.json").read_text() == before


def test_a_disk_that_fills_during_a_job_is_recorded_as_full_and_its_debris_removed(cli, tmp_path, tmpfs):
    """The job starts with room (the start check is lowered to 1 MiB) and fills the 4 MiB file system with its
    own training backup: the record says the disk is full, not the signal the child died of, and neither the
    backup nor a temp file is left to fill the disk for the next job."""
    job = tmpfs / "job"
    res = cli(["model=pinn", "seed=1", *TINY, f"hydra.run.dir={job}"], env={"PTYCHO_EXP_MIN_FREE_MB": "1"})
    assert res.returncode == 1, res.stdout[-2000:] + res.stderr[-3000:]
    rec = json.loads((job / "result.json").read_text())
    assert rec["status"] == "failed" and rec["error_type"] == "DiskFull", rec["error"]
    assert rec["error"].startswith(f"the disk holding {job} is full (No space left on device"), rec["error"]
    assert "job failed: the disk holding" in res.stderr
    left = sorted(p.name for p in job.iterdir())
    assert not [n for n in left if n.startswith((".train_backup-", ".tmp-", ".claim")) or n.endswith(".tmp")], left
    assert shutil.disk_usage(tmpfs).free > 3 << 20  # the next job finds the space free again


def test_a_write_that_hits_a_full_disk_leaves_the_old_file_whole(tmp_path):
    """RLIMIT_FSIZE makes the atomic write fail part-way (like ENOSPC): the old file stays, no temp file."""
    target = tmp_path / "result.json"
    target.write_text('{"status": "ok"}')
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096));"
            "from ptycho_exp.results import write_json;"
            f"write_json({str(target)!r}, {{'status': 'ok', 'blob': 'x' * 100000}})")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)
    assert res.returncode != 0 and ("File too large" in res.stderr or "Errno 27" in res.stderr), res.stderr
    assert target.read_text() == '{"status": "ok"}'
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_oom_killed_job_is_recorded_failed_with_its_peak_memory(cli, tmp_path):
    job = tmp_path / "job"
    res = cli([*TINY_JOB, "fault=oom", f"hydra.run.dir={job}"], env={"PTYCHO_EXP_FAULT_OOM_MB": "300"})
    assert res.returncode != 0
    rec = json.loads((job / "result.json").read_text())
    assert rec["status"] == "failed" and rec["exit_code"] == -9
    assert "SIGKILL" in rec["error"] and "out of memory" in rec["error"]
    assert rec["resources"]["peak_rss_mb"] >= 300
    assert "job failed" in res.stderr and "SIGKILL" in res.stderr


# --------------------------------------------------------------------------- safe loading
UNSAFE = [
    (r"\b(c?pickle|dill|cloudpickle|joblib|shelve|marshal)\.loads?\(", "unpickling"),
    (r"allow_pickle\s*=\s*True", "allow_pickle=True"),
    (r"\byaml\.(load|load_all|unsafe_load|full_load)\(", "yaml.load without SafeLoader"),
    (r"safe_mode\s*=\s*False", "safe_mode=False"),
    (r"(?<![\w.])eval\(", "eval()"),
    (r"(?<![\w.])exec\(", "exec()"),
    (r"torch\.load\(", "torch.load"),
    (r"UNSAFE_DISABLE_EXECUTION_CHECKS", "Hydra execution checks disabled"),
]


def _safe_yaml_call(code: str, source: str) -> bool:
    """``yaml.load(..., Loader=X)`` where X is a SafeLoader (named inline or bound to one in the file)."""
    if "SafeLoader" in code:
        return True
    m = re.search(r"Loader\s*=\s*(\w+)", code)
    return bool(m) and re.search(rf"^\s*{m.group(1)}\s*=.*SafeLoader", source, flags=re.MULTILINE) is not None


def test_the_package_has_no_unsafe_loaders():
    hits = []
    for path in sorted(PKG.rglob("*.py")):
        source = path.read_text()
        for lineno, line in enumerate(source.splitlines(), 1):
            code = line.split("#", 1)[0]
            for pattern, what in UNSAFE:
                if re.search(pattern, code) and not (what.startswith("yaml") and _safe_yaml_call(code, source)):
                    hits.append(f"{path.relative_to(ROOT)}:{lineno}: {what}: {line.strip()}")
    assert not hits, "\n".join(hits)


def test_the_unsafe_loader_grep_catches_what_it_should():
    unsafe = ["pickle.loads(b)", "x = np.load(p, allow_pickle=True)", "yaml.load(fh)",
              "keras.saving.load_model(p, safe_mode=False)", "eval(text)", "exec(code)", "dill.load(fh)"]
    for line in unsafe:
        assert any(re.search(pattern, line) for pattern, _ in UNSAFE), line
    assert not _safe_yaml_call("yaml.load(fh)", "")
    assert _safe_yaml_call("yaml.load(fh, Loader=loader)", "    loader = getattr(yaml, 'CSafeLoader', yaml.SafeLoader)")
    assert not any(re.search(pattern, "model.evaluate(x); literal_eval(s)") for pattern, _ in UNSAFE)


def test_every_npz_load_in_the_package_passes_allow_pickle_false():
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\bnp\.load\(", line.split("#", 1)[0]) and "allow_pickle=False" not in line:
                bad.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()}")
    assert not bad, "\n".join(bad)


def test_object_array_is_refused_without_unpickling(tmp_path):
    """A file whose object array would run code when unpickled is refused, and the code never runs."""
    from ptycho_exp.data.npz import DataContractError, load_contract_npz

    flag = tmp_path / "pwned"
    arrays = valid_arrays()
    evil = np.empty(1, dtype=object)
    evil[0] = _Exploit(str(flag))
    arrays["xcoords"] = evil
    path = tmp_path / "evil.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataContractError, match="pickle"):
        load_contract_npz(path)
    assert not flag.exists()


class _Exploit:
    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


@pytest.mark.parametrize("value,ok", [
    ("ptycho_exp.sweep.callbacks.ReportCallback", True), ("optuna.samplers.TPESampler", True),
    ("hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", True),
    ("os.system", False), ("builtins.eval", False), ("subprocess.Popen", False), ("ptycho_exp_evil.x", False),
])
def test_target_allow_list(value, ok):
    from ptycho_exp.config import ConfigError, check_targets

    cfg = {"model": {"name": "pinn"}, "objective": [{"deep": {"_target_": value}}]}
    if ok:
        check_targets(cfg)
    else:
        with pytest.raises(ConfigError, match=r"objective\.0\.deep\._target_"):
            check_targets(cfg)


def test_the_entry_point_passes_hydra_an_execution_whitelist():
    from ptycho_exp.__main__ import EXECUTION_WHITELIST

    assert EXECUTION_WHITELIST and "*" not in EXECUTION_WHITELIST
    assert all(p.startswith(("ptycho_exp.", "optuna.", "hydra_plugins.", "submitit.", "logging."))
               for p in EXECUTION_WHITELIST)


# --------------------------------------------------------------------------- secrets
@pytest.mark.parametrize("url,expected", [
    ("postgresql://alice:S3cret@db.example:5432/optuna", "postgresql://alice:***@db.example:5432/optuna"),
    ("mysql+pymysql://bob:p%40ss:w0rd@host/db", "mysql+pymysql://bob:***@host/db"),
    ("sqlite:///multirun/x/optuna.db", "sqlite:///multirun/x/optuna.db"),
    ("postgresql://alice@host/db", "postgresql://alice@host/db"),
])
def test_redact_url_hides_only_the_password(url, expected):
    from ptycho_exp.results import redact_secrets
    from ptycho_exp.sweep.sweeper import redact_url

    assert redact_url(url) == expected
    assert redact_secrets(f"storage={url} rest") == f"storage={expected} rest"


def test_a_job_record_never_holds_a_storage_password(cli, tmp_path):
    """The password of a storage URL on the command line reaches neither result.json nor stderr."""
    job = tmp_path / "job"
    res = cli([*TINY_JOB, "fault=raise", "+hydra.sweeper.storage=postgresql://alice:S3cretPw@127.0.0.1:1/optuna",
               f"hydra.run.dir={job}"])
    assert res.returncode != 0
    assert json.loads((job / "result.json").read_text())["status"] == "failed"
    for name in ("result.json", "job.log", "job_config.json"):  # the job's own records
        if (job / name).exists():
            assert "S3cretPw" not in (job / name).read_text(errors="replace"), name
    assert "S3cretPw" not in res.stderr + res.stdout


@pytest.mark.e2e
def test_an_optuna_study_with_an_unreachable_password_storage_fails_without_printing_it(cli, tmp_path):
    sweep = tmp_path / "sweep"
    res = cli(["study=optuna", "hydra.sweeper.n_trials=1", *TINY_JOB,
               "hydra.sweeper.storage=postgresql://alice:S3cretPw@127.0.0.1:9/optuna",
               f"hydra.sweep.dir={sweep}"], timeout=120)
    assert res.returncode != 0
    assert "S3cretPw" not in res.stderr + res.stdout, res.stderr[-2000:]
    for path in _files(tmp_path):
        if path.name in ("result.json",) or path.suffix in (".log", ".html", ".csv", ".md"):
            assert "S3cretPw" not in path.read_text(errors="replace"), path


# --------------------------------------------------------------------------- determinism and rerun
@pytest.mark.e2e
def test_same_config_and_seed_give_bit_identical_metrics_and_rerun_reproduces_them(cli, tmp_path):
    job = tmp_path / "job"
    res = cli([*TINY_JOB, f"hydra.run.dir={job}"])
    assert res.returncode == 0, res.stderr[-3000:]
    rec = json.loads((job / "result.json").read_text())
    assert rec["status"] == "ok" and rec["config"]["train"]["deterministic"] is True
    assert rec["provenance"]["versions"]["tensorflow"] and rec["seed"] == rec["config"]["seed"]
    assert rec["onednn"] is onednn_expected()  # the job's process got oneDNN (TF leaves it off on AVX2-only CPUs)

    again = tmp_path / "again"
    res = run_cli(["rerun", str(job), "--out", str(again)], tmp_path, module="ptycho_exp.cli")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "bit-identical" in res.stdout
    new = json.loads((again / "result.json").read_text())
    assert new["metrics"] == rec["metrics"] and new["config_hash"] == rec["config_hash"]
    assert new["rerun_of"] == str(job.resolve())

    # A record whose metrics do not reproduce (as a non-deterministic run would leave): exit 1 and a table.
    rec["metrics"]["phase_ssim"] += 1e-9
    (job / "result.json").write_text(json.dumps(rec))
    res = run_cli(["rerun", str(job), "--out", str(tmp_path / "third")], tmp_path, module="ptycho_exp.cli")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "1 of" in res.stdout and "phase_ssim" in res.stdout and "abs diff" in res.stdout


def test_rerun_refuses_a_folder_that_is_not_a_finished_job(tmp_path):
    res = run_cli(["rerun", str(tmp_path)], tmp_path, module="ptycho_exp.cli")
    assert res.returncode == 2 and "result.json" in res.stderr and "Traceback" not in res.stderr
    (tmp_path / "result.json").write_text(json.dumps({"status": "failed", "config": {}, "metrics": {}}))
    res = run_cli(["rerun", str(tmp_path)], tmp_path, module="ptycho_exp.cli")
    assert res.returncode == 2 and "not ok" in res.stderr


def test_metric_comparison_is_bit_exact_and_tabulated():
    from ptycho_exp.rerun import compare_metrics, diff_table

    old = {"a": 0.1 + 0.2, "b": 1.0, "c": None, "d": 2.0}
    new = {"a": 0.30000000000000004, "b": 1.0 + 2 ** -52, "c": None, "e": 3.0}
    diffs = compare_metrics(old, new)
    assert [k for k, _, _ in diffs] == ["b", "d", "e"]
    table = diff_table(diffs)
    assert table.splitlines()[0].split() == ["metric", "original", "rerun", "abs", "diff"]
    assert "2.22e-16" in table and "<missing>" in table


def test_a_storage_password_from_the_environment_reaches_no_file(cli, tmp_path):
    """The documented way: ``${oc.env:VAR}`` in the URL; Hydra saves the interpolation, not the secret.

    (A password typed literally on the command line is hidden in result.json, logs and messages, but
    Hydra's own ``.hydra/hydra.yaml`` records the raw override; hence this advice.)
    """
    job = tmp_path / "job"
    res = cli([*TINY_JOB, "fault=raise", "+hydra.sweeper.storage=postgresql://alice:${oc.env:PTYCHO_TEST_PW}@h:1/db",
               f"hydra.run.dir={job}"], env={"PTYCHO_TEST_PW": "S3cretPw"})
    assert res.returncode != 0 and (job / "result.json").exists()
    leaks = [p for p in _files(job) if "S3cretPw" in p.read_text(errors="replace")]
    assert not leaks and "S3cretPw" not in res.stdout + res.stderr


def test_rerun_of_a_sweep_job_lands_outside_the_sweep(tmp_path):
    """A rerun must not become an extra job of the sweep it reproduces (status / aggregate would count it)."""
    from ptycho_exp.rerun import _default_out

    sweep = tmp_path / "multirun" / "s1"
    (sweep / "3").mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    assert _default_out(sweep / "3") == tmp_path / "multirun" / "s1_reruns" / "3"
    single = tmp_path / "outputs" / "12-00-00"
    single.mkdir(parents=True)
    assert _default_out(single) == tmp_path / "outputs" / "12-00-00_rerun"
    (tmp_path / "outputs" / "12-00-00_rerun").mkdir()
    (tmp_path / "outputs" / "12-00-00_rerun" / "result.json").write_text("{}")
    assert _default_out(single) == tmp_path / "outputs" / "12-00-00_rerun_2"


def test_a_job_clears_what_a_killed_run_left_in_its_folder(tmp_path):
    from ptycho_exp.run import remove_job_debris

    debris = [tmp_path / ".result.json.k2j4.tmp", tmp_path / "compare_amp_phase.png.tmp", tmp_path / ".write_probe"]
    keep = [tmp_path / "result.json", tmp_path / ".hydra" / "config.yaml"]
    keep[1].parent.mkdir()
    for p in debris + keep:
        p.write_text("x")
    assert sorted(remove_job_debris(tmp_path)) == sorted(debris)
    assert not any(p.exists() for p in debris) and all(p.exists() for p in keep)
