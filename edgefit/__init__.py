"""edgefit: device budget -> per-layer compression plan -> measured model."""

__version__ = "0.1.0"
