"""Tests of ptycho_exp/data."""
