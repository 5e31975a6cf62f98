"""The JSON Schemas in docs/schemas are the files' real schemas: every example budget, every
catalog YAML and a freshly written plan.json validate against them (and a broken one does not)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from device_specs.catalog import CATALOG_DIR

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "docs" / "schemas"


def _validator(name: str) -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMAS / name).read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


@pytest.mark.parametrize("path", sorted((ROOT / "examples" / "budgets").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_example_budgets_validate(path: Path) -> None:
    _validator("budget.schema.json").validate(yaml.safe_load(path.read_text()))


@pytest.mark.parametrize("path", sorted(CATALOG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_catalog_files_validate(path: Path) -> None:
    _validator("device-spec.schema.json").validate(yaml.safe_load(path.read_text()))


def test_a_written_plan_validates(lenet5_plan_factory, tmp_path: Path) -> None:
    plan, _ = lenet5_plan_factory(latency="60ms")
    plan.save(tmp_path / "plan.json")
    doc = json.loads((tmp_path / "plan.json").read_text())
    validator = _validator("plan.schema.json")
    validator.validate(doc)
    doc["limits"]["latency"] = {"not": "a quantity"}
    assert not validator.is_valid(doc)


def test_a_broken_budget_fails() -> None:
    validator = _validator("budget.schema.json")
    assert not validator.is_valid({"target": "host", "limits": {"latency": [1, 2]}})
    assert not validator.is_valid({"target": "host", "telepathy": 1})


def test_the_timing_examples_validate() -> None:
    """examples/timing: the JSON file as it is, the CSV file in its JSON form."""
    from cost_models.timing_file import csv_to_dict

    validator = _validator("timing.schema.json")
    examples = ROOT / "examples" / "timing"
    validator.validate(json.loads((examples / "stm32f746-hale.json").read_text()))
    csv_path = examples / "stm32f746-plumerai.csv"
    validator.validate(csv_to_dict(csv_path.read_text(), csv_path))
    assert not validator.is_valid({"format": "edgefit-timing", "format_version": 1,
                                   "runtime": "TFLM", "models": []})  # no cpu, no models
