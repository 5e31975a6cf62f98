"""A TFLite plan's flash made exact before apply: the chosen plan's model.tflite is built
(executors.tflite_exact), its framing replaces the fitted one, and the plan is solved again
with it, so the flash total, the limits table and binding limits hold the file's real size.

If the re-solve picks other options (the measured framing moved a plan over the flash limit),
that plan's file is built in turn, up to ``ROUNDS`` times; the plan keeps a note of the exact
size only when its own options' file was built (executors.tflite_exact.exact_bytes), and
apply then checks the written file against it to the byte.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgefit_common.progress import task
from executors.tflite_exact import NOTE_KEY, available, note, options_digest, tflite_bytes
from planner.plan import Plan
from planner.resolve import resolve
from workloads.models import LoadedModel

ROUNDS = 3
EXACT_FLASH = ("exact: this plan's model.tflite was built before apply (apply's converter and "
               "quantiser, the plan's structure without fine-tuning) and its size is the "
               "model's flash; apply checks the written file against it to the byte")


def with_exact_tflite(plan: Plan, loaded: LoadedModel, calib_x: np.ndarray | None,
                      options: Any = None, backend: str = "cpsat") -> Plan:
    """``plan`` with its model.tflite's exact size in its flash (unchanged when it cannot be
    had: no tool virtualenv, EDGEFIT_TFLITE=off, an ONNX-only model, no calibration data)."""
    if calib_x is None or not available(plan, loaded):
        return plan
    for _ in range(ROUNDS):
        with task("model.tflite of the plan, for its exact size"):
            size = tflite_bytes(plan, loaded, calib_x)
        if size is None:
            return plan
        before = options_digest(plan)
        new = resolve(_with_frame(plan, size), options=options, backend=backend)
        if not new.feasible:
            return new
        if options_digest(new) == before:
            return new.model_copy(update={
                "provenance": {**new.provenance, NOTE_KEY: note(size, new)},
                "uncertainty": {**new.uncertainty, "flash": EXACT_FLASH}})
        plan = new
    return plan


def _with_frame(plan: Plan, size: int) -> Plan:
    """The fixed framing set so that the plan's layers + framing (+ unplanned weights) are
    ``size`` bytes."""
    layers = sum(lp.predicted.flash_bytes for lp in plan.layers.values() if lp.predicted)
    frame = size - layers - plan.fixed.get("unplanned_weight_bytes", 0.0)
    delta = frame - plan.fixed["tflite_frame_bytes"]
    fixed = {**plan.fixed, "tflite_frame_bytes": frame,
             "flash_bytes": plan.fixed["flash_bytes"] + delta}
    return plan.model_copy(update={"fixed": fixed})
