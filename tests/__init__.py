"""The test suite; its folders mirror the package (tests/physics for ptycho_exp/physics, ...)."""
