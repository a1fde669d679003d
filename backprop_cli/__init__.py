"""backprop: a YAML-driven neural-network trainer with a from-scratch NumPy engine."""

__version__ = "0.1.0"
