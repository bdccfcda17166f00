"""``python -m ptycho_exp [overrides]``: the one Hydra entry point (a thin wrapper)."""
from __future__ import annotations

from ptycho_exp.compose import CONF_DIR, CONFIG_NAME  # the config tree ships inside the package

# Targets this app's configs may instantiate (Hydra 1.4 warns about any other): our callbacks and
# sweeper, Optuna's samplers, and the logging handlers of conf/hydra/job_logging.
EXECUTION_WHITELIST = ["ptycho_exp.*", "optuna.samplers.*", "logging.*"]


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
