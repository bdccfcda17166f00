"""Hydra plugins and planning for sweeps: the pre-run plan, the Optuna sweeper, the SLURM launcher and the
sweep callbacks."""
