"""Tests of ptycho_exp/evaluate."""
