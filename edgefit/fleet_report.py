"""A plan's fleet cost in the user's terms: the bytes an update moves, its time over the link,
its cost per device and for the fleet a month (device_specs.fleet), each with where it comes
from. Torch-free: edgefit.report prints these lines and puts the record in `plan --json`."""

from __future__ import annotations

from typing import Any

from device_specs.fleet import fmt_money
from edgefit_common.units import fmt_bytes
from planner.plan import Plan
from planner.resolve import cost_limit_bytes

PRICE_PROVENANCE = "given by you (your data contract; edgefit holds no tariff)"


def cost_binds(plan: Plan) -> bool:
    """The cost limit is the transfer-byte limit the solver held, and it binds."""
    d = plan.delivery
    cost_bytes = cost_limit_bytes(plan)
    if d is None or cost_bytes is None or "transfer_bytes" not in plan.binding:
        return False
    update_ms = plan.limits.update_time
    if update_ms is None or d.link_bytes_per_s is None:
        return True
    return cost_bytes <= update_ms / 1e3 * d.link_bytes_per_s * (1.0 - plan.margin)


def time_binds(plan: Plan) -> bool:
    return "transfer_bytes" in plan.binding and not cost_binds(plan)


def cost_row(plan: Plan) -> tuple[str, str, str, str, str] | None:
    """The limits table's row: cost per device per month against the cost limit."""
    d, totals = plan.delivery, plan.totals
    if d is None or d.fleet is None or totals is None or totals.transfer_bytes is None:
        return None
    cost = d.cost_per_device_month(totals.transfer_bytes)
    if cost is None:
        return None
    limit = d.fleet.max_cost
    cur = d.fleet.currency
    status = ("no limit" if limit is None else
              "binds (+10 % would buy accuracy)" if cost_binds(plan) else "ok")
    return ("update cost / device / month", fmt_money(cost, cur),
            "-" if limit is None else fmt_money(limit, cur),
            "-" if limit is None else f"{100 * (1 - cost / limit):.1f} %", status)


def fleet_lines(plan: Plan) -> list[str]:
    """How the fleet cost was obtained (under the limits table's provenance lines)."""
    record = fleet_record(plan)
    d = plan.delivery
    if record is None or d is None or d.fleet is None:
        return []
    lines = [f"  fleet: {d.fleet.describe()}",
             f"  billed bytes per update = transfer bytes x (1 + overhead {d.link_overhead:g}, "
             f"device_specs/links.yaml) = {record['billed_bytes_per_update']:,.0f} B"]
    cur = d.fleet.currency
    if record["cost_per_device_month"] is not None:
        text = (f"  cost = billed bytes x {d.fleet.updates:g} update(s) a month x "
                f"{fmt_money(d.fleet.data_price or 0.0, cur)}/MB = "
                f"{fmt_money(record['cost_per_device_month'], cur)} per device per month")
        if record["cost_fleet_month"] is not None:
            text += (f"; {fmt_money(record['cost_fleet_month'], cur)} a month for the fleet of "
                     f"{d.fleet.size:,}")
        lines.append(text + " (the transfer bytes are the plan's zstd estimate)")
    elif record["fleet_bytes_month"] is not None:
        lines.append(f"  the fleet moves {fmt_bytes(record['fleet_bytes_month'])} a month "
                     "(no --data-price: no cost)")
    return lines


def fleet_record(plan: Plan) -> dict[str, Any] | None:
    """`plan --json`'s delivery.fleet: every figure with its provenance (None: no fleet)."""
    d, totals = plan.delivery, plan.totals
    if d is None or d.fleet is None or d.link_overhead is None:
        return None
    f = d.fleet
    out: dict[str, Any] = {
        "fleet_size": f.size, "updates_per_month": f.updates,
        "data_price_per_mb": f.data_price, "currency": f.currency,
        "max_cost_per_device_month": f.max_cost,
        "link_overhead": d.link_overhead,
        "provenance": {
            "transfer_bytes": d.transfer,
            "update_time": f"{d.link}: {d.link_provenance} (device_specs/links.yaml)",
            "overhead": f"{d.link}'s overhead (device_specs/links.yaml: {d.link_provenance})",
            "updates_per_month": "default (1)" if f.updates_per_month is None else
                                 "given by you",
            "fleet_size": None if f.size is None else "given by you",
            "data_price": None if f.data_price is None else PRICE_PROVENANCE},
        "billed_bytes_per_update": None, "update_time_ms": None,
        "cost_per_device_month": None, "cost_fleet_month": None, "fleet_bytes_month": None}
    if totals is None or totals.transfer_bytes is None:
        return out
    billed = totals.transfer_bytes * (1.0 + d.link_overhead)
    cost = d.cost_per_device_month(totals.transfer_bytes)
    out.update({
        "billed_bytes_per_update": billed,
        "update_time_ms": d.update_time_ms(totals.transfer_bytes),
        "cost_per_device_month": cost,
        "cost_fleet_month": None if cost is None or f.size is None else cost * f.size,
        "fleet_bytes_month": None if f.size is None else billed * f.updates * f.size})
    return out


def cost_relaxation(plan: Plan, best: float | None, minimum: float | None) -> str:
    """An infeasible plan's update limit in money: what the reachable artifacts cost at the
    user's price ('' when the plan has no price)."""
    d = plan.delivery
    if d is None or d.fleet is None or d.fleet.data_price is None:
        return ""
    cur = d.fleet.currency
    price = f"{fmt_money(d.fleet.data_price, cur)}/MB ({'given by you'})"
    parts = []
    if best is not None and (cost := d.cost_per_device_month(best)) is not None:
        parts.append(f"at {price} that is {fmt_money(cost, cur)} per device per month")
    if minimum is not None and (low := d.cost_per_device_month(minimum)) is not None:
        parts.append(f"the smallest model costs {fmt_money(low, cur)} per device per month"
                     + ("" if parts else f" at {price}"))
    limit = d.fleet.max_cost
    tail = f"; cost limit {fmt_money(limit, cur)} per device per month" if limit else ""
    return ("; " + "; ".join(parts) if parts else "") + tail
