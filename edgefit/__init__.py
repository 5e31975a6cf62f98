"""edgefit: device budget -> per-layer compression plan -> measured model."""

from edgefit_common import __version__

__all__ = ["__version__"]
