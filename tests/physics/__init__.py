"""Tests of ptycho_exp/physics."""
