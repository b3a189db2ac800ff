"""radiolib: correlation via synthesis, a radiogenomics study with tested code."""

__version__ = "0.1.0"
