"""``python -m ptycho_exp [overrides]``: the one Hydra entry point (a thin wrapper)."""
from __future__ import annotations

from pathlib import Path

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def main() -> None:
    import warnings

    import hydra

    # version_base=None is the documented choice for 1.4; its migration warning is noise here.
    warnings.filterwarnings("ignore", message=".*version_base parameter is deprecated.*")

    from ptycho_exp.config import register_configs
    from ptycho_exp.run import hydra_task

    register_configs()
    hydra.main(version_base=None, config_path=CONF_DIR, config_name="config")(hydra_task)()


if __name__ == "__main__":
    main()
