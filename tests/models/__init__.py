"""Tests of ptycho_exp/models."""
