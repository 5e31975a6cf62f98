"""The scenario catalog (device_specs/scenarios): every file loads under the strict schema,
every `source:` names a key of its file, and the battery arithmetic matches a hand computation."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from device_specs.budget import Budget
from device_specs.scenario import (
    SCENARIOS_DIR,
    Scenario,
    load_scenario,
    load_scenario_file,
    scenario_files,
    scenario_names,
)
from edgefit_common.errors import SpecError
from edgefit_common.yamlio import validate

REQUIRED = {"kws-cortex-m4", "person-detection-esp32s3", "image-classification-rpi4-30fps",
            "sentence-embeddings-phone", "battery-sensor"}


def test_the_catalog_has_the_five_scenarios_of_issue_20() -> None:
    assert set(scenario_names()) >= REQUIRED


@pytest.mark.parametrize("path", scenario_files(), ids=lambda p: p.stem)
def test_every_scenario_file_loads_and_every_number_has_provenance(path: Path) -> None:
    scn = load_scenario_file(path)
    assert scn.name == path.stem
    assert scn.quantities(), "a scenario states at least one number"
    for where, quantity in scn.quantities():
        assert quantity.provenance.split(":")[0] in ("source", "derived", "measured",
                                                     "unverified"), where
    # what it stands for is a valid budget (the budget parses every limit it writes)
    budget = validate(scn.budget_fields(), Budget, path=str(path))
    assert budget.limits.given() == pytest.approx(scn.limit_values())


@pytest.mark.parametrize("path", scenario_files(), ids=lambda p: p.stem)
def test_round_trip_through_yaml(path: Path, tmp_path: Path) -> None:
    scn = load_scenario_file(path)
    dumped = scn.model_dump(mode="json", exclude_none=True)
    copy = tmp_path / path.name
    copy.write_text(yaml.safe_dump(dumped, sort_keys=False))
    again = load_scenario_file(copy)
    assert again == scn


def _raw(name: str = "battery-sensor") -> dict:
    return yaml.safe_load((SCENARIOS_DIR / f"{name}.yaml").read_text())


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize("edit, words", [
    (lambda d: d.update(colour="red"), "colour"),
    (lambda d: d["limits"]["latency"].pop("derived"), "needs exactly one of"),
    (lambda d: d["battery"]["capacity_mah"].update(source="S-NOWHERE (x)"), "S-NOWHERE"),
    (lambda d: d.update(target="a-phone"), "not a board of the device catalog"),
    (lambda d: d.pop("period"), "battery: needs period"),
    (lambda d: d["limits"].update(energy={"value": "5mJ", "unverified": "x"}), "derives"),
    (lambda d: d["accuracy"].update(min_accuracy={"value": "90%", "unverified": "x"}),
     "exactly one of max_drop and min_accuracy"),
    (lambda d: d["limits"]["latency"].update(value="fast"), "latency"),
])
def test_a_bad_scenario_file_is_one_line(tmp_path: Path, edit, words: str) -> None:
    data = _raw()
    edit(data)
    with pytest.raises(SpecError) as err:
        load_scenario_file(_write(tmp_path, data))
    assert words in str(err.value) and "\n" not in str(err.value)


def test_a_minimum_accuracy_needs_a_higher_reference(tmp_path: Path) -> None:
    data = _raw("kws-cortex-m4")
    data["accuracy"]["reference_accuracy"]["value"] = "89%"
    with pytest.raises(SpecError, match="must be above min_accuracy"):
        load_scenario_file(_write(tmp_path, data))


def test_an_unknown_scenario_names_the_known_ones() -> None:
    with pytest.raises(SpecError) as err:
        load_scenario("kws-cortex-m5")
    text = str(err.value)
    assert "did you mean 'kws-cortex-m4'" in text
    assert all(name in text for name in scenario_names())


def test_battery_arithmetic_matches_a_hand_computation() -> None:
    scn = load_scenario("battery-sensor")
    assert scn.battery is not None and scn.period is not None
    # by hand: 2x L91 = 3000 mAh at 3.0 V = 3 Ah x 3600 s/h x 3 V = 32,400 J; a week is
    # 604,800 s, one inference a second -> 604,800 inferences; 32,400 J / 604,800
    # = 0.0535714 J = 53.5714 mJ per inference (= 53.5714 mW on average)
    energy = scn.battery_energy()
    assert energy is not None
    assert energy.battery_energy_j == pytest.approx(32_400.0)
    assert energy.lifetime_s == pytest.approx(604_800.0)
    assert energy.inferences_per_lifetime == pytest.approx(604_800.0)
    assert energy.energy_per_inference_limit_mj == pytest.approx(53.571428, rel=1e-6)
    assert energy.average_power_limit_mw == pytest.approx(53.571428, rel=1e-6)
    assert scn.limit_values()["energy"] == energy.energy_per_inference_limit_mj
    # spending exactly the limit lasts exactly the asked lifetime; twice as much, half as long
    assert energy.lifetime_days_at(energy.energy_per_inference_limit_mj) == pytest.approx(7.0)
    assert energy.lifetime_days_at(2 * energy.energy_per_inference_limit_mj) == pytest.approx(3.5)


def test_a_minimum_accuracy_becomes_a_drop_from_the_reference() -> None:
    scn = load_scenario("kws-cortex-m4")
    assert scn.accuracy is not None and scn.accuracy.min_accuracy is not None
    assert scn.limit_values()["accuracy_drop"] == 4.4  # 94.4 % reference - 90 % minimum


def test_scenario_schema_is_strict() -> None:
    assert Scenario.model_config.get("extra") == "forbid"


@pytest.mark.parametrize("path", scenario_files(), ids=lambda p: p.stem)
def test_scenario_files_validate_against_the_published_json_schema(path: Path) -> None:
    import json

    import jsonschema

    schema = json.loads((Path(__file__).parents[2] / "docs" / "schemas"
                         / "scenario.schema.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    validator.validate(yaml.safe_load(path.read_text()))
    assert not validator.is_valid({**yaml.safe_load(path.read_text()), "colour": "red"})


# the device each product scenario is delivered to: its link, and why (issue #20 item 2)
PRODUCT_SCENARIOS = REQUIRED


@pytest.mark.parametrize("name", sorted(PRODUCT_SCENARIOS))
def test_every_product_scenario_names_a_catalog_link_with_its_reason(name: str) -> None:
    from device_specs.links import link_names

    scn = load_scenario(name)
    assert scn.link is not None, f"{name} names no link its updates travel over"
    assert scn.link.name in link_names()
    assert scn.link.provenance.split(":")[0] in ("source", "unverified")
    assert scn.budget_fields()["link"] == scn.link.name
    # no scenario sets an update-time limit without a source for it
    assert scn.limits.update_time is None or scn.limits.update_time.source is not None


@pytest.mark.parametrize("edit, words", [
    (lambda d: d.update(link={"name": "ble-1m"}), "exactly one reason"),
    (lambda d: d.update(link={"name": "ble-1m", "source": "S-L91 x", "unverified": "y"}),
     "exactly one reason"),
    (lambda d: d.update(link={"name": "carrier-pigeon", "unverified": "x"}), "unknown link"),
    (lambda d: d.update(link={"name": "ble-1m", "source": "S-NOWHERE (x)"}), "S-NOWHERE"),
    (lambda d: d.update(link="ble-1m"), "link"),
    (lambda d: d.update(link={"name": "ble-1m", "unverified": "x", "speed": 3}), "speed"),
])
def test_a_bad_scenario_link_is_one_line(tmp_path: Path, edit, words: str) -> None:
    data = _raw()
    edit(data)
    with pytest.raises(SpecError) as err:
        load_scenario_file(_write(tmp_path, data))
    assert words in str(err.value) and "\n" not in str(err.value)
