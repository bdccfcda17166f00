"""``python -m ptycho_exp [overrides]``: the one Hydra entry point (a thin wrapper)."""
from __future__ import annotations

from ptycho_exp.compose import CONF_DIR, CONFIG_NAME  # the config tree ships inside the package

from ptycho_exp.errors import EXECUTION_WHITELIST  # targets this app's configs may instantiate


_NO_RUN_FLAGS = ("-c", "--cfg", "-i", "--info", "-h", "--help", "--hydra-help", "-sc", "--shell-completion",
                 "-p", "--package", "--experimental-rerun", "-cp", "--config-path", "-cn",
                 "--config-name", "-cd", "--config-dir")


def check_before_run(argv: list[str]) -> str | None:
    """Why the run these arguments ask for would be refused, or None: every job of it (a sweep's
    expansion) composed with Hydra's compose API and checked as the job would check itself
    (:func:`ptycho_exp.sweep.plan.check_overrides`), before Hydra makes any folder.

    A sweep whose overrides do not compose is refused here too (Hydra would make the sweep folder
    first); a single run's are left to Hydra, whose error becomes one line below, as are command
    lines that name another config or only ask for information.
    """
    if any(a in _NO_RUN_FLAGS or a.startswith(tuple(f + "=" for f in _NO_RUN_FLAGS if f.startswith("--")))
           for a in argv):
        return None
    from ptycho_exp.config import ConfigError
    from ptycho_exp.sweep.plan import check_overrides

    multirun = any(a in ("-m", "--multirun") or a.replace(" ", "") == "hydra.mode=MULTIRUN" for a in argv)
    try:
        check_overrides([a for a in argv if not a.startswith("-")], multirun)
    except ConfigError as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - overrides that do not compose
        from omegaconf.errors import InterpolationResolutionError

        from ptycho_exp.errors import one_line_error

        if multirun and not isinstance(exc, InterpolationResolutionError):
            return one_line_error(exc)  # Hydra's sweep would make its folder before composing a job
        return None  # a single run's Hydra reports it in one line before making a folder (or needs a
        #              ${hydra:...} value that only exists inside the run)
    return None


def main() -> None:
    import sys
    import warnings

    import hydra

    # version_base=None is the documented choice for 1.4; its migration warning is noise here.
    warnings.filterwarnings("ignore", message=".*version_base parameter is deprecated.*")

    from ptycho_exp.config import register_configs
    from ptycho_exp.run import hydra_task, register_plugins, wants_multirun

    register_configs()
    register_plugins()
    if wants_multirun(sys.argv[1:]):  # study=... sets hydra.mode: MULTIRUN, which Hydra 1.4 reads only here
        sys.argv.append("--multirun")
    # Bad input -> one line naming the key and the fix (ptycho_exp.errors); tracebacks only on request.
    import os

    from ptycho_exp.errors import check_output_dirs, one_line_error, wants_traceback

    verbose = wants_traceback(sys.argv[1:], bool(os.environ.get("HYDRA_FULL_ERROR")))
    problem = check_output_dirs(sys.argv[1:])
    if problem:
        print(f"ptycho_exp: configuration error: {problem}", file=sys.stderr)
        sys.exit(2)
    problem = check_before_run(sys.argv[1:])
    if problem:
        print(f"ptycho_exp: configuration error: {problem}", file=sys.stderr)
        sys.exit(2)
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises; we print one line (or the traceback)
    try:
        hydra.main(version_base=None, config_path=CONF_DIR, config_name=CONFIG_NAME,
                   execution_whitelist=EXECUTION_WHITELIST)(hydra_task)()
    except Exception as exc:
        if verbose:
            raise
        print(f"ptycho_exp: configuration error: {one_line_error(exc)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
