"""What `edgefit scenarios` and `plan --scenario` print: the catalog, the header lines saying
which limit came from the scenario and which from a flag, and a battery's lifetime at the
plan's energy. Torch-free (it runs before `plan` imports torch)."""

from __future__ import annotations

from typing import Any

from device_specs.scenario import Scenario, battery_energy, load_scenario, scenario_names
from edgefit_common import units

_FAMILY = {"latency": units.TIME, "flash": units.BYTES, "ram": units.BYTES,
           "energy": units.ENERGY, "accuracy_drop": units.ACCURACY, "update_time": units.TIME}
_SHOWN_UNIT = {"latency": "ms", "flash": None, "ram": None, "energy": "mJ", "accuracy_drop": "pp",
               "update_time": "s"}


def fmt_limit(key: str, value: float) -> str:
    return units.format_quantity(value, _FAMILY[key], _SHOWN_UNIT[key])


def example_command(scn: Scenario) -> str:
    shape = scn.example_input_shape
    shape_flag = f" --input-shape {'x'.join(str(d) for d in shape)}" if shape else ""
    return f"plan --scenario {scn.name} --model {scn.example_model}{shape_flag}"


def scenario_record(scn: Scenario) -> dict[str, Any]:
    """One scenario for `edgefit scenarios --json`: limits in canonical units (keys carry them)
    with their provenance, the battery arithmetic, the example run."""
    limits = scn.limit_values()
    provenance = scn.limit_provenance()
    keys = {"latency": "latency_ms", "flash": "flash_bytes", "ram": "ram_bytes",
            "energy": "energy_mj", "accuracy_drop": "accuracy_drop_pp",
            "update_time": "update_time_ms"}
    record: dict[str, Any] = {
        "name": scn.name, "title": scn.title, "target": scn.target,
        "target_note": scn.target_note, "profile": scn.profile,
        "period_ms": scn.period.value if scn.period else None,
        "limits": {keys[k]: {"value": v, "provenance": provenance[k]} for k, v in limits.items()},
        "accuracy_metric": scn.accuracy.metric if scn.accuracy else None,
        "example": example_command(scn), "sources": scn.sources,
        "link": None if scn.link is None else {"name": scn.link.name,
                                                "provenance": scn.link.provenance},
        "ab_slots": scn.ab_slots,
    }
    if (energy := scn.battery_energy()) is not None and scn.battery is not None:
        record["battery"] = {"description": scn.battery.description,
                             "capacity_mah": scn.battery.capacity_mah.value,
                             "voltage_v": scn.battery.voltage_v.value,
                             "lifetime_days": scn.battery.lifetime_days.value,
                             "battery_energy_j": energy.battery_energy_j,
                             "average_power_limit_mw": energy.average_power_limit_mw,
                             "energy_per_inference_limit_mj":
                                 energy.energy_per_inference_limit_mj}
    return record


def all_records() -> list[dict[str, Any]]:
    return [scenario_record(load_scenario(name)) for name in scenario_names()]


def print_scenarios(console: Any = None) -> None:
    """The scenario catalog as a table, like `edgefit devices`."""
    from rich.console import Console
    from rich.table import Table

    con = console or Console()
    table = Table(title="scenario catalog (edgefit scenarios)", title_justify="left")
    table.add_column("name", no_wrap=True)
    table.add_column("target", no_wrap=True)
    table.add_column("limits (provenance)")
    for name in scenario_names():
        scn = load_scenario(name)
        kinds = scn.limit_kinds()
        rows = [f"{k} {fmt_limit(k, v)} ({kinds[k]})" for k, v in scn.limit_values().items()]
        if scn.period is not None:
            rows.insert(0, f"period {units.format_quantity(scn.period.value, units.TIME, 's')} "
                           f"({scn.period.provenance.split(':', 1)[0]})")
        if scn.link is not None:  # the link its updates travel over (docs/delivery.md)
            rows.append(f"updates over {scn.link.name} "
                        f"({scn.link.provenance.split(':', 1)[0]})")
        table.add_row(name, scn.target, "\n".join(rows))
    con.print(table)
    con.print("example runs (a built-in model or an MLPerf Tiny reference network):")
    for name in scenario_names():
        con.print(f"  {example_command(load_scenario(name))}", soft_wrap=True, highlight=False)
    con.print("provenance: source (a key of the file's sources), derived (a formula) or "
              "unverified (a reason); the files are device_specs/scenarios/*.yaml, "
              "`edgefit scenarios --json` prints every provenance in full")


def header_lines(resolved: Any) -> list[str]:
    """`plan --scenario`: the scenario, then every limit with where it came from."""
    scn: Scenario | None = resolved.scenario
    if scn is None:
        return []
    budget = resolved.budget
    origins = resolved.origins
    lines = [f"scenario: {scn.name} ({scn.title})"]
    if scn.target_note and budget.target == scn.target:
        lines.append(f"  target note: {' '.join(scn.target_note.split())}")
    provenance = scn.limit_provenance()
    for key, value in budget.limits.given().items():
        origin = origins.get(key, "?")
        why = f"; {provenance[key]}" if key in provenance and origin.startswith("scenario") \
            else ""
        lines.append(f"  {key}: {fmt_limit(key, value)}  [{origin}{why}]")
    if budget.period is not None:
        lines.append(f"  period: {units.format_quantity(budget.period, units.TIME, 'ms')}  "
                     f"[{origins.get('period', '?')}]")
    if budget.link is not None:
        why = (f"scenario {scn.name}; {scn.link.provenance}"
               if scn.link is not None and scn.link.name == budget.link else "--link flag")
        lines.append(f"  link: {budget.link}  [{' '.join(why.split())}]")
    if scn.battery is not None and budget.period is not None:
        energy = battery_energy(scn.battery, budget.period)
        b = scn.battery
        lines.append(f"  battery: {b.description}: {b.capacity_mah.value:g} mAh x "
                     f"{b.voltage_v.value:g} V, {b.lifetime_days.value:g} days")
        lines += [f"    {line}" for line in energy.lines()]
        if origins.get("energy", "").startswith("--max-energy"):
            lines.append("    (--max-energy given: the flag's limit is used instead)")
    return lines


def lifetime_line(resolved: Any, plan: Any) -> str | None:
    """A battery scenario's lifetime at the plan's predicted energy per inference."""
    scn: Scenario | None = resolved.scenario
    period = resolved.budget.period
    if scn is None or scn.battery is None or period is None or plan.totals is None:
        return None
    energy_mj = plan.totals.energy_mj
    if not energy_mj or energy_mj <= 0:
        return None
    days = battery_energy(scn.battery, period).lifetime_days_at(energy_mj)
    return (f"battery lifetime at the plan's {energy_mj:.3f} mJ per inference (idle floor "
            f"included, predicted): {days:.2f} days on {scn.battery.description} "
            f"(asked: {scn.battery.lifetime_days.value:g} days)")
