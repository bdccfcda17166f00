"""Bad input at the entry point -> one clear line on stderr (naming the key and the fix), no traceback.

Used by ``python -m ptycho_exp`` (:mod:`ptycho_exp.__main__`): Hydra's own composition errors
(typo'd key, wrong type, unknown group option, override syntax) are multi-line by default; here they
become one ``ptycho_exp: configuration error: <key>...: <problem>; fix: <fix>`` line. With
``hydra.verbose=true`` (or ``HYDRA_FULL_ERROR=1``) the full traceback is shown instead.

It also holds what is checked before a run or sweep makes any folder (:func:`check_job_configs`, called
on every composed job by :func:`ptycho_exp.sweep.plan.check_overrides`): the config's ranges, the
data files' headers and values, the probe file, the number of training positions and the Hydra
``_target_`` s. Bad input therefore exits 2 with nothing written.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

# Space a job needs at least in its output folder (MiB); override with PTYCHO_EXP_MIN_FREE_MB.
MIN_FREE_MB = 50.0
_DIR_KEYS = ("hydra.run.dir", "hydra.sweep.dir")
_INFO_FLAGS = ("-c", "--cfg", "-i", "--info", "-h", "--help", "--hydra-help", "-sc", "--shell-completion")


def wants_traceback(argv: list[str], full_error_env: bool = False) -> bool:
    """True when the user asked for full tracebacks (``hydra.verbose=...`` other than false, or HYDRA_FULL_ERROR)."""
    if full_error_env:
        return True
    for arg in argv:
        if arg.lstrip("+~").startswith("hydra.verbose="):
            return arg.split("=", 1)[1].strip().lower() not in ("false", "0", "null", "[]", "")
    return False


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _first_line(text: str) -> str:
    return next((line.strip() for line in str(text).splitlines() if line.strip()), "")


def one_line_error(exc: BaseException) -> str:
    """A one-line description of a composition/startup error: the key, the problem and the fix.

    Passwords of ``scheme://user:password@host`` URLs (e.g. an Optuna storage) are replaced by ``***``.
    """
    from ptycho_exp.results import redact_secrets

    return redact_secrets(_describe(exc))


def _describe(exc: BaseException) -> str:
    from omegaconf.errors import OmegaConfBaseException

    text = str(exc)
    missing = re.search(r"Could not find '([\w/]+)/([^']+)'", text)
    if missing:
        group, option = missing.groups()
        options = [o.strip() for o in re.findall(r"^\t(\S+)$", text, flags=re.MULTILINE) if not o.endswith("_schema")]
        fix = f"choose one of {', '.join(options)}" if options else f"see conf/{group}/ for the options"
        return f"{group.replace('/', '.')}={option} is invalid: no such config option; fix: {fix}"
    for cause in _chain(exc):
        if isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None):
            key = cause.full_key
            problem = _first_line(str(cause).split("full_key:")[0])
            if "not in" in problem or "Key '" in problem:
                fix = (f"remove {key} or fix its spelling (`python -m ptycho_exp --cfg job` lists every key)")
            else:
                fix = f"give {key} a value of the type shown by `python -m ptycho_exp --cfg job`"
            return f"{key}: {problem}; fix: {fix}"
    refused = re.search(r"Target '([^']+)'", text)
    if refused and ("whitelist" in text or "blacklisted" in text or "authorized" in text):
        key = re.search(r"full_key: (\S+)", text)
        where = f"{key.group(1)}._target_" if key else "_target_"
        return (f"{where}={refused.group(1)!r} is not allowed: only targets under ptycho_exp and the "
                f"libraries it names may be instantiated; fix: remove the override that sets {where}")
    if type(exc).__name__ in ("OverrideParseException", "LexerNoViableAltException"):
        return f"cannot parse the overrides ({_first_line(text)}); fix: write each one as key=value"
    if isinstance(exc, OSError) and exc.filename:
        return (f"output folder {exc.filename!r}: {exc.strerror}; fix: choose a writable folder with "
                "hydra.run.dir=... or hydra.sweep.dir=...")
    return f"{type(exc).__name__}: {_first_line(text)} (add hydra.verbose=true for the traceback)"


def _literal_dir(value: str) -> str:
    """The part of a (possibly interpolated) folder override before the first ``${``."""
    value = value.strip().strip("'\"")
    head = value.split("${", 1)[0]
    return head if head == value else os.path.dirname(head) or "."


def check_output_dirs(argv: list[str], cwd: str | None = None) -> str | None:
    """Why the output folder named on the command line cannot be written, or None.

    Checks ``hydra.run.dir=`` / ``hydra.sweep.dir=`` (or the working folder when neither is given)
    before Hydra creates anything: the nearest existing ancestor must be a writable directory with
    at least ``PTYCHO_EXP_MIN_FREE_MB`` (default 50) MiB free. As root, permission bits do not stop
    writes, but a read-only mount, a full disk or a path under a regular file still do.
    """
    if any(a in _INFO_FLAGS or a.startswith(("--cfg=", "--info=")) for a in argv):
        return None  # nothing will be written
    given = {a.lstrip("+").split("=", 1)[0]: a.split("=", 1)[1] for a in argv
             if "=" in a and a.lstrip("+").split("=", 1)[0] in _DIR_KEYS}
    targets = [(k, _literal_dir(v)) for k, v in given.items()] or [("working folder", cwd or os.getcwd())]
    min_free = float(os.environ.get("PTYCHO_EXP_MIN_FREE_MB", MIN_FREE_MB))
    for key, folder in targets:
        path = Path(folder).absolute()
        ancestor = path
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        label = f"{key}={folder!r}" if key in _DIR_KEYS else f"the {key} {folder!r}"
        if not ancestor.is_dir():
            return (f"{label} is not writable: {str(ancestor)!r} is a file, not a folder; "
                    "fix: choose a writable folder with hydra.run.dir=... or hydra.sweep.dir=...")
        if not os.access(ancestor, os.W_OK | os.X_OK):
            return (f"{label} is not writable ({str(ancestor)!r} is read-only or not permitted); "
                    "fix: choose a writable folder with hydra.run.dir=... or hydra.sweep.dir=...")
        free_mb = shutil.disk_usage(ancestor).free / 2**20
        if free_mb < min_free:
            return (f"{label} has only {free_mb:.1f} MiB free (a job needs >= {min_free:g} MiB); "
                    "fix: free some space or choose another folder with hydra.run.dir=...")
    return None


# --------------------------------------------------------------------------- checks before any folder exists
# Targets this app's configs may instantiate (Hydra 1.4 warns about any other): our callbacks and
# sweeper, Optuna's samplers, and the logging handlers of conf/hydra/job_logging.
EXECUTION_WHITELIST = ["ptycho_exp.*", "optuna.samplers.*", "logging.*"]
# Files larger than this are value-checked by the job itself, not before the run (the parent stays light).
VALUE_CHECK_MAX_BYTES = 2 << 30
_HYDRA_TARGET_NODES = ("callbacks", "sweeper", "launcher")


def _targets(node, path: str):
    """(dotted key, value) of every ``_target_`` below a plain dict/list."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        here = f"{path}.{key}"
        if key == "_target_":
            yield here, value
        else:
            yield from _targets(value, here)


def check_hydra_targets(hydra_cfg) -> None:
    """Refuse a ``_target_`` under ``hydra.callbacks``, ``hydra.sweeper`` or ``hydra.launcher`` that is
    neither Hydra's own, a Hydra plugin, nor on :data:`EXECUTION_WHITELIST` (e.g.
    ``+hydra.callbacks.x._target_=os.system``), before Hydra would try to instantiate it.

    Raises
    ------
    ptycho_exp.config.ConfigError
        Naming the key, the target and the fix.
    """
    from fnmatch import fnmatch

    from omegaconf import OmegaConf

    from ptycho_exp.config import TARGET_ALLOW_PREFIXES, ConfigError

    for name in _HYDRA_TARGET_NODES:
        node = OmegaConf.select(hydra_cfg, name)
        if node is None:
            continue
        plain = OmegaConf.to_container(node, resolve=False) if OmegaConf.is_config(node) else node
        for key, value in _targets(plain, f"hydra.{name}"):
            target = str(value)
            if target.startswith(TARGET_ALLOW_PREFIXES) or any(fnmatch(target, p) for p in EXECUTION_WHITELIST):
                continue
            raise ConfigError(f"{key}={target!r} is not allowed: only targets under "
                              f"{', '.join(p.rstrip('.') for p in TARGET_ALLOW_PREFIXES)} may be instantiated; "
                              f"fix: remove the override that sets {key}")


def _config_error(key: str, path, exc: Exception):
    from ptycho_exp.config import ConfigError

    return ConfigError(f"{key}={str(path)!r} is invalid: {exc}")


def check_data_values(cfg) -> None:
    """What needs the data's values, checked before a run makes any folder.

    ``data=npz``: each file is loaded with the contract loader's value checks (NaN/Inf, negative or
    all-zero amplitude, NaN positions, ground-truth patches ``Y`` of the wrong length), reading only
    the sizes its validated headers declare. Simulated data: a ``data.probe=file`` probe is loaded
    and matched to ``data.N``, and ``data.n_train`` is compared with the positions the scan has.

    Raises
    ------
    ptycho_exp.config.ConfigError
        Naming the key, the file and the fix.
    """
    from ptycho_exp.config import NETWORK_MODELS, ConfigError

    d = cfg.data
    needs_train = cfg.model.name in NETWORK_MODELS
    if d.kind not in ("simulate", "npz"):
        return  # a measured file (data=cxi|ptylab_h5): validate() checked it; its import checks the values
    if d.kind == "npz":
        from ptycho_exp.data.npz import DataContractError, load_contract_npz

        for key in ("train_path", "test_path"):
            path = d[key]
            if path is None or (key == "train_path" and not needs_train):
                continue
            if os.path.getsize(path) > VALUE_CHECK_MAX_BYTES:
                continue  # the job checks its values when it loads it
            try:
                load_contract_npz(str(path), check_intensity=False)
            except DataContractError as exc:
                raise _config_error(f"data.{key}", path, exc) from None
        return
    if d.probe == "file" and d.probe_path:
        from ptycho_exp.data.npz import DataPathError, require_regular_file
        from ptycho_exp.physics.probe import load_probe

        try:
            require_regular_file(str(d.probe_path), "probe file", "set data.probe_path to an NPZ holding "
                                                                   "'probeGuess'")
            probe = load_probe(str(d.probe_path))
        except (DataPathError, FileNotFoundError, ValueError) as exc:
            fix = "" if "fix" in str(exc).lower() else ("; fix: point data.probe_path to an NPZ whose probeGuess is "
                                                       f"a finite ({d.N}, {d.N}) array")
            raise _config_error("data.probe_path", d.probe_path, f"{exc}{fix}") from None
        if probe.shape != (d.N, d.N):
            raise ConfigError(f"data.probe_path={str(d.probe_path)!r} is invalid: its probeGuess is "
                              f"{probe.shape[0]}x{probe.shape[1]} but data.N={d.N}; fix: set "
                              f"data.N={probe.shape[0]} or save a ({d.N}, {d.N}) probe")
    if needs_train:
        m = _simulated_train_positions(d)
        if m is not None and d.n_train > m:
            raise ConfigError(f"data.n_train={d.n_train} is invalid: the training scan has only {m} positions "
                              f"(one sample per centre); fix: use data.n_train<={m}, more objects "
                              "(data.n_train_objects) or a denser scan (smaller data.train_stride, larger "
                              "data.object_size or more data.n_random_positions)")


def _simulated_train_positions(d) -> int | None:
    """Positions of the simulated training scan (all objects), counted as
    :func:`ptycho_exp.physics.scan.grid_positions` lays them out (jitter moves them, it adds none);
    None when the values are out of range (config validation names those)."""
    import math

    if d.scan == "random":
        per_object = int(d.n_random_positions)
    else:
        span, stride = float(d.object_size) - float(d.N), float(d.train_stride)
        if not (span >= 0 and stride > 0 and math.isfinite(span / stride)):
            return None
        per_object = (math.floor(span / stride + 1e-9) + 1) ** 2
    return per_object * int(d.n_train_objects)


def check_job_configs(cfgs, hydra_cfg=None) -> None:
    """:func:`ptycho_exp.config.validate` and :func:`check_data_values` on each distinct job config, and
    :func:`check_hydra_targets` on the Hydra config: everything a run would refuse, before it starts.

    Raises
    ------
    ptycho_exp.config.ConfigError
        The first problem, naming the key and the fix.
    """
    from omegaconf import OmegaConf

    from ptycho_exp.config import NETWORK_MODELS, validate
    from ptycho_exp.results import config_hash

    if hydra_cfg is not None:
        check_hydra_targets(hydra_cfg)
    seen_cfg, seen_data = set(), set()
    for cfg in cfgs:
        job = OmegaConf.to_container(cfg, resolve=True)
        job.pop("hydra", None)
        h = config_hash(job)
        if h in seen_cfg:
            continue
        seen_cfg.add(h)
        validate(cfg)
        data_key = config_hash({"data": job["data"], "trains": job["model"]["name"] in NETWORK_MODELS})
        if data_key not in seen_data:
            seen_data.add(data_key)
            check_data_values(cfg)
