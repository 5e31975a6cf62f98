"""Export the JSON Schemas of the file formats users write or read."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from cost_models.timing_file import TimingFile
from device_specs.budget import Budget
from device_specs.scenario import Scenario
from device_specs.schema import DeviceSpec
from edgefit.sweep_file import SweepFile
from planner.plan import Plan, atomic_write_text

SCHEMAS: dict[str, type[BaseModel]] = {
    "plan.schema.json": Plan,
    "budget.schema.json": Budget,
    "device-spec.schema.json": DeviceSpec,
    "timing.schema.json": TimingFile,
    "scenario.schema.json": Scenario,
    "sweep.schema.json": SweepFile,
}


def schema_text(model: type[BaseModel]) -> str:
    return json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n"


def write_schemas(out_dir: Path) -> list[Path]:
    paths = []
    for name, model in SCHEMAS.items():
        path = out_dir / name
        atomic_write_text(path, schema_text(model))
        paths.append(path)
    return paths
