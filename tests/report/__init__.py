"""Tests of ptycho_exp/report (the HTML page, figures, three-way comparison)."""
