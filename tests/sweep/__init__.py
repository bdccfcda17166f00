"""Tests of ptycho_exp/sweep (plans, callbacks, sweeper, launchers; SLURM; kill and resume)."""
