"""Tests of ptycho_exp/iterative."""
