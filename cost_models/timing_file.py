"""The timing file: latencies a user measured with any runtime (TFLM's MicroProfiler,
X-CUBE-AI's validation report, MLPerf Tiny's runner, a stopwatch around `Invoke()`), written by
hand or a small script, for `edgefit calibrate`.

Two spellings of one content (:class:`TimingFile`), detected by the file's suffix:

* JSON (``format: edgefit-timing``, ``format_version: 1``): the machine once (``cpu`` is
  required; ``core``, ``board``, ``device``, ``runtime``, ``runtime_family``, ``source``), then
  ``models``: per model its file, the end-to-end ``latency_ms`` (one run or several; the median
  is used), optionally ``layers_ms`` (per layer: its name, or ``#i`` = the i-th layer in
  edgefit's order, the order of plan.json's ``layers``), ``option`` (the profile kernel every
  layer ran), ``energy_mj`` (kept in the calibration file, not fitted).
* CSV (``.csv``): a header row, one row per end-to-end run (``layer`` empty) or per layer
  (``layer`` set, its time in ``latency_ms``). Columns: ``model``, ``layer``, ``latency_ms``,
  ``option``, ``energy_mj`` and the machine columns (``cpu``, ``core``, ``board``, ``device``,
  ``runtime``, ``runtime_family``, ``source``), which must agree wherever a row fills them.
  Lines starting with ``#`` are comments.

``model`` is a path relative to the timing file (an ``.onnx``, a ``.pt2``, the ``plan.json``
of the plan that was run, or the ``model.tflite`` in an ``edgefit apply`` folder, read through
the ``plan.json`` beside it) or a built-in model name. Resolving it to a layer graph is the
caller's job (``edgefit/calibrating.py``); this module only reads and checks the file.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from device_specs.quantities import Strict
from device_specs.schema import RuntimeFamily
from edgefit_common.errors import SpecError
from edgefit_common.fsutil import read_text
from edgefit_common.jsonio import loads_json
from edgefit_common.yamlio import check_format, validate

TIMING_FORMAT = "edgefit-timing"
TIMING_FORMAT_VERSION = 1
# the MCU runtime families the latency model knows (device_specs.schema), and the others
TimingRuntimeFamily = RuntimeFamily | Literal["tflite", "onnxruntime", "other"]
MACHINE_FIELDS = ("cpu", "core", "board", "device", "runtime", "runtime_family", "source")
CSV_COLUMNS = ("model", "layer", "latency_ms", "option", "energy_mj", *MACHINE_FIELDS)


def _positive(value: float, what: str) -> float:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{what} must be a positive number of milliseconds, got {value!r}")
    return value


class TimedModel(Strict):
    """One model's timings on the machine of the file."""

    model: str = Field(min_length=1, description="path relative to the timing file (.onnx, "
                       ".pt2, plan.json, model.tflite in an edgefit apply folder) or a "
                       "built-in model name")
    latency_ms: float | list[float] = Field(description="end-to-end latency of one inference "
                                            "(ms): one run or several (the median is used)")
    layers_ms: dict[str, float] = Field(
        default_factory=dict, description="per-layer latency (ms), keyed by layer name or by "
        "'#i' (the i-th layer in edgefit's order); optional")
    option: str | None = Field(default=None, description="the profile kernel every layer ran "
                               "(e.g. int8); default: the plan's kernels, else fp32")
    energy_mj: float | None = Field(default=None, description="energy of one inference (mJ); "
                                    "recorded, not fitted")
    note: str | None = None

    @field_validator("latency_ms")
    @classmethod
    def _runs(cls, v: float | list[float]) -> float | list[float]:
        runs = v if isinstance(v, list) else [v]
        if not runs:
            raise ValueError("latency_ms: give at least one run")
        for x in runs:
            _positive(x, "latency_ms")
        return v

    @field_validator("layers_ms")
    @classmethod
    def _layers(cls, v: dict[str, float]) -> dict[str, float]:
        for name, x in v.items():
            _positive(x, f"layers_ms[{name!r}]")
        return v

    @field_validator("energy_mj")
    @classmethod
    def _energy(cls, v: float | None) -> float | None:
        if v is not None and not (math.isfinite(v) and v > 0):
            raise ValueError(f"energy_mj must be a positive number, got {v!r}")
        return v

    @property
    def runs_ms(self) -> list[float]:
        return list(self.latency_ms) if isinstance(self.latency_ms, list) else [self.latency_ms]

    @property
    def median_ms(self) -> float:
        return float(statistics.median(self.runs_ms))


class TimingFile(Strict):
    """Latencies measured on one machine with one runtime."""

    format: Literal["edgefit-timing"] = "edgefit-timing"
    format_version: Literal[1] = 1
    cpu: str = Field(min_length=1, description="the CPU the timings ran on, as the vendor "
                     "names it (e.g. 'Arm Cortex-M7 @ 216 MHz'); compared with the device "
                     "profile's cpu")
    core: str | None = Field(default=None, description="the core type (e.g. cortex-m7, "
                             "cortex-a72, xtensa-lx7); compared with the device's")
    board: str | None = Field(default=None, description="the board (free text)")
    device: str | None = Field(default=None, description="the catalog name the timings are "
                               "for; calibrate refuses another --device")
    runtime: str = Field(min_length=1, description="runtime and version (free text, e.g. "
                         "'TFLM 2024-11-20 + CMSIS-NN')")
    runtime_family: TimingRuntimeFamily | None = None
    source: str | None = Field(default=None, description="how the times were taken (e.g. "
                               "'TFLM MicroProfiler', 'X-CUBE-AI validate', 'MLPerf Tiny "
                               "runner')")
    models: list[TimedModel] = Field(min_length=1)


def read_timing_file(path: Path) -> TimingFile:
    """A timing file (``.csv``: CSV, else JSON), checked; one-line SpecError naming the file."""
    path = Path(path)
    text = read_text(path, "timing file")
    if path.suffix.lower() == ".csv":
        return validate(csv_to_dict(text, path), TimingFile, path=path)
    data = loads_json(text, path)
    return timing_from_json(data, path)


def timing_from_json(data: Any, path: Path) -> TimingFile:
    check_format(data, path, TIMING_FORMAT, TIMING_FORMAT_VERSION, "an edgefit-timing file")
    return validate(data, TimingFile, path=path)


def csv_to_dict(text: str, path: Path) -> dict[str, Any]:
    """The JSON form of a CSV timing file (then validated as JSON is)."""
    text = text.removeprefix("\ufeff")  # spreadsheets save CSV with a byte-order mark
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    reader = csv.DictReader(io.StringIO("\n".join(lines)), skipinitialspace=True)
    header = [h.strip() for h in reader.fieldnames or []]
    unknown = [h for h in header if h not in CSV_COLUMNS]
    if unknown:
        raise SpecError(f"{path}: unknown column {unknown[0]!r} (columns: "
                        f"{', '.join(CSV_COLUMNS)})")
    for need in ("model", "latency_ms", "cpu", "runtime"):
        if need not in header:
            raise SpecError(f"{path}: the header has no {need!r} column")
    machine: dict[str, str] = {}
    models: dict[str, dict[str, Any]] = {}
    for row_no, raw in enumerate(reader, start=2):
        row = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
        if None in raw:
            raise SpecError(f"{path}: row {row_no}: more cells than columns")
        _machine_cells(row, machine, path, row_no)
        _model_row(row, models, path, row_no)
    return {"format": TIMING_FORMAT, "format_version": TIMING_FORMAT_VERSION, **machine,
            "models": list(models.values())}


def _machine_cells(row: dict[str, str], machine: dict[str, str], path: Path,
                   row_no: int) -> None:
    for key in MACHINE_FIELDS:
        value = row.get(key, "")
        if not value:
            continue
        if machine.setdefault(key, value) != value:
            raise SpecError(f"{path}: row {row_no}: {key} {value!r} differs from "
                            f"{machine[key]!r} above (one machine and runtime per file)")


def _number(text: str, what: str, path: Path, row_no: int) -> float:
    try:
        return float(text)
    except ValueError:
        raise SpecError(f"{path}: row {row_no}: {what} {text!r} is not a number") from None


def _model_row(row: dict[str, str], models: dict[str, dict[str, Any]], path: Path,
               row_no: int) -> None:
    name = row.get("model", "")
    if not name:
        raise SpecError(f"{path}: row {row_no}: model is empty")
    if not row.get("latency_ms"):
        raise SpecError(f"{path}: row {row_no}: latency_ms is empty")
    ms = _number(row["latency_ms"], "latency_ms", path, row_no)
    entry = models.setdefault(name, {"model": name, "latency_ms": [], "layers_ms": {}})
    for key in ("option", "energy_mj"):
        if row.get(key):
            value: Any = (_number(row[key], key, path, row_no) if key == "energy_mj"
                          else row[key])
            if entry.setdefault(key, value) != value:
                raise SpecError(f"{path}: row {row_no}: {key} of {name} differs from above")
    layer = row.get("layer", "")
    if not layer:
        entry["latency_ms"].append(ms)
    elif layer in entry["layers_ms"]:
        raise SpecError(f"{path}: row {row_no}: layer {layer!r} of {name} given twice")
    else:
        entry["layers_ms"][layer] = ms
