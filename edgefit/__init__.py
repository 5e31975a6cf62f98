"""edgefit: device budget -> per-layer compression plan -> measured model.

The Python API (:mod:`edgefit.api`): ``edgefit.plan(model, target, limits=..., data=...)`` and
``edgefit.apply(plan, model, data=..., test_data=...)``; imported on first use, so importing
edgefit (the CLI does) stays light.
"""

from typing import Any

from edgefit_common import __version__

__all__ = ["ApplyResult", "__version__", "apply", "plan"]


def __getattr__(name: str) -> Any:
    if name in ("plan", "apply", "ApplyResult"):
        from edgefit import api

        return getattr(api, name)
    raise AttributeError(f"module 'edgefit' has no attribute {name!r}")
