"""Every error edgefit raises on purpose. The CLI turns these into one line on stderr + exit 2."""

from __future__ import annotations

from collections.abc import Iterable


class EdgefitError(Exception):
    """Base class: a problem with the user's input or environment, reported without a traceback."""


class UnitError(EdgefitError, ValueError):
    """A quantity that does not parse, is out of range, or is in the wrong unit family."""


class SpecError(EdgefitError):
    """A device spec, budget or plan file that is malformed or violates its schema."""


class UnknownTargetError(EdgefitError):
    """A target name that is neither in the catalog nor a path to a spec file."""


class MachineMismatchError(SpecError):
    """Timings taken on another machine than the device they would calibrate."""


class ModelLoadError(EdgefitError):
    """A model file that is missing, unreadable, unsafe (pickle) or of an unknown kind."""


class DataError(EdgefitError):
    """A data set that is missing or malformed."""


class PlanError(EdgefitError):
    """A plan that does not fit the model or cannot be applied."""


class ClusterError(EdgefitError):
    """A --cluster / --workers / EDGEFIT_CLUSTER setting that does not parse, or a Ray cluster
    that cannot be started or reached (edgefit_common.execution)."""


class TaskFailedError(EdgefitError):
    """A task fanned out on a cluster that still failed after its retries; the message names
    the work items (e.g. the (layer, option) pairs) it belonged to."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for the closest of `choices` to a mistyped `word` (difflib), or
    an empty string when none is close: to follow the word in a one-line error."""
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
