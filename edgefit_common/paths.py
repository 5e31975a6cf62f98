"""Where edgefit keeps what it makes for itself (trained models, probes, prepared ONNX)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """$EDGEFIT_CACHE, else the user's cache directory (XDG on Linux)."""
    import platformdirs

    return Path(os.environ.get("EDGEFIT_CACHE", platformdirs.user_cache_dir("edgefit")))
