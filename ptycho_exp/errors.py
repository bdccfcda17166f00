"""Bad input at the entry point -> one clear line on stderr (naming the key and the fix), no traceback.

Used by ``python -m ptycho_exp`` (:mod:`ptycho_exp.__main__`): Hydra's own composition errors
(typo'd key, wrong type, unknown group option, override syntax) are multi-line by default; here they
become one ``ptycho_exp: configuration error: <key>...: <problem>; fix: <fix>`` line. With
``hydra.verbose=true`` (or ``HYDRA_FULL_ERROR=1``) the full traceback is shown instead.
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
    refused = re.search(r"Target '([^']+)' is not in the Hydra execution whitelist", text)
    if refused:
        return (f"_target_={refused.group(1)!r} is not allowed: only targets under ptycho_exp and the "
                "libraries it names may be instantiated; fix: remove that override")
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
