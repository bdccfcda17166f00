"""Tests of ptycho_exp/analysis."""
