"""ptycho_exp: Hydra-configured experiment framework for ML ptychography studies.

Import-light by design: nothing heavy (TensorFlow, pandas, matplotlib) is imported here.
"""
__version__ = "0.1.0"
