"""Fleet cost inputs (device_specs.fleet): the price per MB read strictly, absurd values and a
cost limit without a price refused, the cost formula, and a budget's fleet needing a link."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from device_specs.budget import Budget
from device_specs.fleet import Fleet, parse_price


@pytest.mark.parametrize(("text", "per_mb", "code"), [
    ("0.05USD/MB", 0.05, "USD"), ("0.05/MB", 0.05, None), ("10eur/GB", 0.01, "EUR"),
    (" 2 / kB ", 2000.0, None), ("1e-2 GBP/MB", 0.01, "GBP")])
def test_a_price_is_read_per_mb_with_the_users_currency(text: str, per_mb: float,
                                                        code: str | None) -> None:
    value, currency = parse_price(text)
    assert value == pytest.approx(per_mb) and currency == code


@pytest.mark.parametrize(("text", "needle"), [
    ("0.05", "price per MB"), ("0.05USD", "price per MB"), ("-1/MB", "price per MB"),
    ("0/MB", "greater than zero"), ("50000/MB", "a typo"), ("1e-12/MB", "a typo"),
    ("0.05US/MB", "price per MB"), ("0.05USD/MiB", "price per MB"), ("nan/MB", "price per MB")])
def test_a_bad_price_is_refused_in_one_line(text: str, needle: str) -> None:
    with pytest.raises(ValidationError) as exc:
        Fleet(data_price=text)  # type: ignore[arg-type]
    assert needle in str(exc.value)


@pytest.mark.parametrize(("fields", "needle"), [
    ({"max_cost": "0.10"}, "needs a data price"),
    ({"data_price": "0.05/MB", "max_cost": "0"}, "greater than zero"),
    ({"data_price": "0.05/MB", "max_cost": "-1"}, "as an amount"),
    ({"data_price": "0.05USD/MB", "max_cost": "0.1EUR"}, "one currency"),
    ({"size": 0}, "greater than or equal to 1"),
    ({"size": 10**12}, "less than or equal to"),
    ({"updates_per_month": 0}, "greater than 0"),
    ({"updates_per_month": 1e6}, "less than or equal to"),
    ({"data_price": 0.05}, "with its unit"),
    ({"price": "0.05/MB"}, "Extra inputs"),
])
def test_absurd_or_incomplete_fleet_values_are_refused(fields: dict, needle: str) -> None:
    with pytest.raises(ValidationError) as exc:
        Fleet.model_validate(fields)
    assert needle in str(exc.value)


def test_the_cost_is_linear_in_the_bytes_and_a_limit_is_a_byte_limit() -> None:
    fleet = Fleet.model_validate({"size": 1000, "updates_per_month": 4,
                                  "data_price": "0.05USD/MB", "max_cost": "0.02USD"})
    # 100,000 B x 1.1 x 4 x 0.05 / 1e6 = 0.022
    assert fleet.cost_per_device_month(100_000, 0.10) == pytest.approx(0.022)
    cap = fleet.max_transfer_bytes(0.10)
    assert cap == pytest.approx(0.02 / (1.1 * 4 * 0.05e-6))
    assert fleet.cost_per_device_month(cap, 0.10) == pytest.approx(0.02)
    assert Fleet.model_validate({"max_cost": 1, "data_price": "1/MB"}).updates == 1.0


def test_a_fleet_round_trips_through_json_and_needs_a_link_in_a_budget() -> None:
    fleet = Fleet.model_validate({"size": 10, "data_price": "10USD/GB", "max_cost": 0.5})
    dumped = fleet.model_dump(mode="json")
    assert dumped["data_price"] == "0.01USD/MB" and dumped["currency"] == "USD"
    assert Fleet.model_validate(dumped) == fleet
    with pytest.raises(ValidationError, match="needs the link"):
        Budget(target="arduino-nano-33-ble", limits={"flash": "1MB"},
               fleet={"data_price": "0.05/MB"})
    budget = Budget(target="arduino-nano-33-ble", limits={"flash": "1MB"}, link="lte-m",
                    fleet={"data_price": "0.05/MB", "max_cost": "0.1"})
    assert budget.fleet is not None and budget.fleet.max_cost == 0.1


def test_the_example_fleet_budget_loads_and_matches_the_published_schema() -> None:
    import json
    from pathlib import Path

    import jsonschema
    import yaml

    from device_specs.budget import load_budget

    root = Path(__file__).parents[2]
    path = root / "examples" / "budgets" / "nano33-lte-fleet.yaml"
    budget = load_budget(path)
    assert budget.fleet is not None and budget.fleet.max_cost == 0.02
    assert budget.fleet.data_price == 0.05 and budget.fleet.currency == "USD"
    schema = json.loads((root / "docs" / "schemas" / "budget.schema.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    raw = yaml.safe_load(path.read_text())
    validator.validate(raw)
    assert not validator.is_valid({**raw, "fleet": {**raw["fleet"], "data_price": "0.05"}})
