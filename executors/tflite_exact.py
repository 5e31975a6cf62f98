"""The exact size of a plan's model.tflite, before apply (issue #17 item 2).

The solver sees a .tflite's bytes per option: constants and quantisation parameters exact, the
flatbuffer's framing fitted (cost_models.tflite_size; within 0.5 % of the files). To make the
plan's flash the file's size to the byte, the chosen plan's model is built as apply builds its
structure (channel pruning, factorisation, sharing and sparsity applied; no fine-tuning) and
written by the same converter and quantiser (executors.tflite.convert, the tool virtualenv).
The file's size does not depend on the weights' values (LeNet-5, one mixed plan: 81,360 B
trained and at random initialisation), so apply's fine-tuned model writes the same bytes, and
apply checks them exactly. Sizes are cached by (weights hash, profile, the layers' options).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

import numpy as np

from edgefit_common.fsutil import atomic_write_text
from edgefit_common.paths import cache_dir
from executors.tflite import (
    SWITCH_ENV,
    Refused,
    ToolFailed,
    convert,
    layer_request,
    target_profile,
    tool_python,
)
from planner.plan import Plan
from workloads.models import LoadedModel

NOTE_KEY = "tflite_exact"  # Plan.provenance key: the size and the options it was built for
CACHE_VERSION = 1
_NOTE = re.compile(r"^(\d+) B for options ([0-9a-f]{16})")


def options_digest(plan: Plan) -> str:
    """The layers' chosen options (what the file's structure follows)."""
    options = {n: lp.option for n, lp in plan.layers.items()}
    return hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:16]


def note(size: int, plan: Plan) -> str:
    return (f"{size} B for options {options_digest(plan)}: model.tflite built for this plan "
            "before apply (its structure, no fine-tuning: the size does not follow the "
            "weights' values), written by apply's converter and quantiser")


def exact_bytes(plan: Plan) -> int | None:
    """The exact .tflite size recorded for the plan's current options (None: none, or the
    options changed since, e.g. by a re-solve)."""
    m = _NOTE.match(plan.provenance.get(NOTE_KEY, ""))
    if m is None or m.group(2) != options_digest(plan):
        return None
    return int(m.group(1))


def available(plan: Plan, loaded: LoadedModel) -> bool:
    """Whether the exact size can be had: a TFLite profile's plan of a torch model, the tool
    virtualenv present and the .tflite not switched off."""
    return (plan.feasible and "tflite_frame_bytes" in plan.fixed
            and loaded.module is not None and os.environ.get(SWITCH_ENV) != "off"
            and tool_python() is not None)


def tflite_bytes(plan: Plan, loaded: LoadedModel, calib_x: np.ndarray) -> int | None:
    """The size of the model.tflite apply would write for the plan (None: the runtime refuses
    a layer's form or the tool failed; apply says why)."""
    key = _cache_key(plan, loaded)
    cached = cache_dir() / "tflite-size" / f"{key}.json"
    if cached.exists():
        return int(json.loads(cached.read_text())["bytes"])
    structure = _structure(plan, loaded)
    try:
        layers = layer_request(plan)
        with tempfile.TemporaryDirectory(prefix="edgefit-tflite-size-") as name:
            tmp = Path(name)
            path = tmp / "model.tflite"
            convert(layers, structure, calib_x[:1], path, target_profile(plan), tmp)
            size = path.stat().st_size
    except (Refused, ToolFailed):
        return None
    cached.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cached, json.dumps({"bytes": size}))
    return size


def _structure(plan: Plan, loaded: LoadedModel) -> object:
    """The plan's float model as apply builds it before fine-tuning (executors.apply)."""
    from executors.apply import channel_pruned
    from techniques.fakequant import pruned_copy
    from techniques.prune import ChannelPruneConfig

    module = loaded.torch_module()
    techniques = {name: [t for t in lp.techniques if not isinstance(t, ChannelPruneConfig)]
                  for name, lp in plan.layers.items()}
    narrow = channel_pruned(module, plan, loaded.input_shape)
    return pruned_copy(narrow, techniques)


def _cache_key(plan: Plan, loaded: LoadedModel) -> str:
    parts = [str(CACHE_VERSION), plan.model.weights_sha256, plan.target.device,
             plan.target.profile, "x".join(map(str, loaded.input_shape)),
             json.dumps({n: [t.model_dump(mode="json") for t in lp.techniques]
                         for n, lp in plan.layers.items()}, sort_keys=True)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]
