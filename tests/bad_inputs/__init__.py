"""Bad-input corpus: generated into a tmp folder by a fixture (no binaries are committed)."""
