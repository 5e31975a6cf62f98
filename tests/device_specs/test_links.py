"""The link catalog (device_specs/links.yaml): every entry loads under the strict schema with
provenance on every number, the derived throughputs match their formulas recomputed here, and
a budget's delivery fields are checked."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from device_specs.budget import Budget
from device_specs.links import LINKS_FILE, Link, link_catalog, link_names, load_link
from edgefit_common.errors import SpecError

NAMES = link_names()


def test_the_catalog_has_the_links_of_issue_20() -> None:
    assert {"ble-1m", "ble-2m", "lora-eu868-sf7", "lora-eu868-sf12", "lte-m", "nb-iot",
            "wifi-n"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_every_link_number_has_provenance_and_a_sane_rate(name: str) -> None:
    link = load_link(name)
    for field, quantity in link.quantities():
        kind = quantity.provenance.split(":")[0]
        assert kind in ("source", "derived", "measured", "unverified"), field
        if kind == "source":
            assert quantity.source is not None
            assert quantity.source.split()[0] in link_catalog().sources, field
    assert 0 < link.throughput.value <= link.phy_rate.value
    assert 0 < link.effective_bytes_per_s <= link.throughput.value
    # the time to send 1 MB and the bytes sent in that time are inverse
    ms = link.update_time_ms(1e6)
    assert link.max_artifact_bytes(ms) == pytest.approx(1e6)


def lora_airtime_s(payload_bytes: int, sf: int, bw_hz: float = 125e3, preamble: int = 8,
                   ldro: bool = False) -> float:
    """Semtech SX1276 time on air: explicit header, CRC on, coding rate 4/5."""
    t_sym = 2**sf / bw_hz
    n = 8 + max(math.ceil((8 * payload_bytes - 4 * sf + 28 + 16)
                          / (4 * (sf - 2 * ldro))) * 5, 0)
    return (preamble + 4.25) * t_sym + n * t_sym


@pytest.mark.parametrize(("name", "app_bytes", "phy_bytes", "sf", "ldro"), [
    ("lora-eu868-sf7", 222, 235, 7, False), ("lora-eu868-sf12", 51, 64, 12, True)])
def test_lora_throughput_is_its_airtime_formula(name: str, app_bytes: int, phy_bytes: int,
                                                sf: int, ldro: bool) -> None:
    link = load_link(name)
    expected = app_bytes / lora_airtime_s(phy_bytes, sf, ldro=ldro)
    assert link.throughput.value == pytest.approx(expected, rel=1e-3)
    assert link.duty == 0.01  # EU868: 1 % duty cycle multiplies the update time by 100


@pytest.mark.parametrize(("name", "bits_per_s", "preamble", "ack_bytes"), [
    ("ble-1m", 1e6, 1, 10), ("ble-2m", 2e6, 2, 11)])
def test_ble_throughput_is_its_packet_timing(name: str, bits_per_s: float, preamble: int,
                                             ack_bytes: int) -> None:
    packet = preamble + 4 + 2 + 251 + 4 + 3  # preamble, access address, header, DLE, MIC, CRC
    period_s = (8 * packet + 8 * ack_bytes) / bits_per_s + 2 * 150e-6
    assert load_link(name).throughput.value == pytest.approx(244 / period_s, rel=1e-3)


def test_a_source_key_missing_from_sources_is_refused(tmp_path: Path) -> None:
    data = yaml.safe_load(LINKS_FILE.read_text())
    data["links"]["ble-1m"]["phy_rate"]["source"] = "S-NOPE (not listed)"
    path = tmp_path / "links.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match="S-NOPE"):
        link_catalog.__wrapped__(path)


def test_extra_fields_and_impossible_values_are_refused() -> None:
    good = yaml.safe_load(LINKS_FILE.read_text())["links"]["ble-1m"]
    with pytest.raises(ValidationError):
        Link.model_validate({**good, "colour": "blue"})
    with pytest.raises(ValidationError, match="duty_cycle"):
        Link.model_validate({**good, "duty_cycle": {"value": 2, "unverified": "x"}})
    with pytest.raises(ValidationError, match="above the PHY rate"):
        Link.model_validate({**good, "throughput": {"value": "1MB/s", "unverified": "x"}})


def test_an_unknown_link_names_the_known_ones() -> None:
    with pytest.raises(SpecError, match="ble-1m"):
        load_link("ble-3m")


def test_budget_delivery_fields() -> None:
    budget = Budget(target="arduino-nano-33-ble", limits={"update_time": "30s"}, link="ble-1m",
                    ab_slots=2)
    assert budget.limits.update_time == 30_000.0
    with pytest.raises(ValidationError, match="needs a link"):
        Budget(target="arduino-nano-33-ble", limits={"update_time": "30s"})
    with pytest.raises(ValidationError, match="unknown link"):
        Budget(target="arduino-nano-33-ble", link="carrier-pigeon")
    with pytest.raises(ValidationError, match="ab_slots"):
        Budget(target="arduino-nano-33-ble", ab_slots=0)
    with pytest.raises(ValidationError, match="update_time"):
        Budget(target="arduino-nano-33-ble", limits={"update_time": "-3s"}, link="ble-1m")


def _scenario_with(tmp_path: Path, **extra: object) -> Path:
    from device_specs.scenario import SCENARIOS_DIR

    data = yaml.safe_load((SCENARIOS_DIR / "kws-cortex-m4.yaml").read_text())
    limits = extra.pop("limits", {})
    data["limits"] = {**data["limits"], **limits}  # type: ignore[dict-item]
    data.update(extra)
    path = tmp_path / "kws-cortex-m4.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_scenario_may_plan_its_delivery(tmp_path: Path) -> None:
    from device_specs.scenario import load_scenario_file
    from edgefit_common.yamlio import validate

    path = _scenario_with(tmp_path, link={"name": "ble-2m", "unverified": "a product choice"},
                          ab_slots=2, limits={
        "update_time": {"value": "30s", "unverified": "a product choice"}})
    scn = load_scenario_file(path)
    budget = validate(scn.budget_fields(), Budget, path=str(path))
    assert budget.link == "ble-2m" and budget.ab_slots == 2
    assert budget.limits.update_time == 30_000.0
    assert scn.limit_provenance()["update_time"].startswith("unverified")


def test_a_scenario_update_time_without_a_link_is_refused(tmp_path: Path) -> None:
    from device_specs.scenario import load_scenario_file

    path = _scenario_with(tmp_path, link=None, limits={  # kws-cortex-m4 names ble-1m
        "update_time": {"value": "30s", "unverified": "a product choice"}})
    with pytest.raises(SpecError, match="needs link"):
        load_scenario_file(path)
