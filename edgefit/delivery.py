"""Model delivery as a planned limit: A/B slots in flash and the update's time over a link.

What an update sends is the deployed model file compressed with zstd (level 19, formats.entropy):
model.tflite for a TFLite profile, else the packed image model.flash.bin. The solver sums
per-layer costs, so each alternative gets a linear share of it: its flash bytes x the zstd ratio
measured, at plan time, on this model's own weights stored in that alternative's form (every
planned layer written as a flash image in that form, up to SAMPLE_BYTES of it compressed).
Weight-shared alternatives keep ratio 1 (their indices are already Huffman-coded); the file's
framing and unplanned weights count uncompressed. A plan's transfer bytes are therefore an
estimate; `apply` compresses the file it wrote and checks the measured bytes against the limit.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from device_specs.budget import Budget
from device_specs.links import load_link
from planner.plan import Delivery, Plan

SAMPLE_BYTES = 4 << 20
"""zstd at level 19 runs at a few MB/s: a ratio is measured on at most this much of the image."""


def zstd_bytes(data: bytes) -> int:
    from formats.entropy import zstd_encode

    return len(zstd_encode(data))


def storage_ratios(module: Any, layers: list[str], forms: set[str]) -> dict[str, float]:
    """zstd ratio of this model's planned layers stored in each form (fp32, int8, int4, ...)."""
    from techniques.flash_image import FlashLayer, write_flash_image

    modules = dict(module.named_modules())
    weighted = [(n, modules[n]) for n in layers
                if n in modules and getattr(modules[n], "weight", None) is not None]
    ratios = {}
    with tempfile.TemporaryDirectory() as tmp:
        for form in sorted(forms):
            path = Path(tmp) / f"{form}.bin"
            write_flash_image(path, [FlashLayer(
                n, form, m.weight.detach().float().numpy(),
                None if getattr(m, "bias", None) is None else m.bias.detach().float().numpy())
                for n, m in weighted])
            data = path.read_bytes()[:SAMPLE_BYTES]
            ratios[form] = zstd_bytes(data) / max(len(data), 1)
    return ratios


def with_delivery(plan: Plan, budget: Budget, runtime_flash_bytes: float,
                  module: Any | None) -> Plan:
    """`plan` (the base plan, unsolved) with its delivery: slots, the link and every
    alternative's transfer bytes. Unchanged when the budget has one slot and no link."""
    if budget.link is None and budget.ab_slots == 1:
        return plan
    delivery = Delivery(ab_slots=budget.ab_slots, runtime_flash_bytes=runtime_flash_bytes)
    if budget.link is None:
        return plan.model_copy(update={"delivery": delivery})
    from techniques.quantize import weight_precision

    link = load_link(budget.link)
    forms = {weight_precision(a.techniques) for lp in plan.layers.values()
             for a in lp.alternatives}
    if module is not None:
        ratios = storage_ratios(module, list(plan.layers), forms)
        how = ("estimated: each alternative's flash bytes x the zstd-19 ratio of this model's "
               "layers stored in its form (" + ", ".join(f"{f} {r:.3f}" for f, r in
                                                        sorted(ratios.items()))
               + "; weight-shared 1.0), framing uncompressed; apply measures the file")
    else:
        ratios = dict.fromkeys(forms, 1.0)
        how = ("estimated: uncompressed (an ONNX model's weights are not read at plan time), "
               "an upper bound; apply measures the file")
    layers = {name: lp.model_copy(update={"alternatives": [
        a.model_copy(update={"transfer_bytes": a.flash_bytes * _ratio(a.techniques, ratios)})
        for a in lp.alternatives]}) for name, lp in plan.layers.items()}
    model_fixed = plan.fixed.get("flash_bytes", 0.0) - runtime_flash_bytes
    delivery = delivery.model_copy(update={
        "link": budget.link, "link_bytes_per_s": link.effective_bytes_per_s,
        "link_provenance": link.provenance(), "transfer": how,
        "link_overhead": link.overhead.value, "fleet": budget.fleet})
    return plan.model_copy(update={"layers": layers, "delivery": delivery,
                                   "fixed": {**plan.fixed, "transfer_bytes": model_fixed}})


def _ratio(techniques: list[Any], ratios: Mapping[str, float]) -> float:
    from techniques.quantize import weight_precision

    if any(getattr(t, "technique", "") == "share" for t in techniques):
        return 1.0
    return ratios.get(weight_precision(techniques), 1.0)


def measured_delivery(plan: Plan, image: Path, tflite: Mapping[str, Any] | None
                      ) -> dict[str, Any] | None:
    """apply's delivery record: the file an update sends, compressed, against the limit."""
    d = plan.delivery
    if d is None or d.link is None or d.link_bytes_per_s is None:
        return None
    sent = Path(tflite["path"]) if tflite and tflite.get("written") else image
    raw = sent.read_bytes()
    compressed = zstd_bytes(raw)
    update_ms = compressed / d.link_bytes_per_s * 1e3
    limit_ms = plan.limits.update_time
    planned = plan.totals.transfer_bytes if plan.totals else None
    cost = d.cost_per_device_month(compressed)  # at the user's price (docs/delivery.md)
    max_cost = None if d.fleet is None else d.fleet.max_cost
    return {"link": d.link, "file": str(sent), "file_bytes": len(raw),
            "zstd_bytes": compressed, "planned_transfer_bytes": planned,
            "update_time_ms": update_ms, "limit_ms": limit_ms,
            "limit_met": None if limit_ms is None else update_ms <= limit_ms,
            "cost_per_device_month": cost,
            "currency": None if d.fleet is None else d.fleet.currency,
            "max_cost_per_device_month": max_cost,
            "cost_limit_met": None if max_cost is None or cost is None else cost <= max_cost,
            "how": "measured: zstd level 19 of the file apply wrote"}


def delivery_check(delivery: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """apply's pass/fail lines for the update-time and cost limits (none without a limit)."""
    if delivery is None:
        return []
    return _time_check(delivery) + _cost_check(delivery)


def _cost_check(delivery: Mapping[str, Any]) -> list[dict[str, Any]]:
    from device_specs.fleet import fmt_money

    limit, cost = delivery.get("max_cost_per_device_month"), delivery.get("cost_per_device_month")
    if limit is None or cost is None:
        return []
    cur = delivery.get("currency")
    return [{"check": f"update cost within {fmt_money(limit, cur)} per device per month "
             "(zstd of the file written, your data price)", "ok": bool(cost <= limit),
             "detail": f"{delivery['zstd_bytes']:,} B compressed -> {fmt_money(cost, cur)} per "
                       "device per month"}]


def _time_check(delivery: Mapping[str, Any]) -> list[dict[str, Any]]:
    if delivery["limit_ms"] is None:
        return []
    return [{"check": f"update over {delivery['link']} within {delivery['limit_ms'] / 1e3:g} s "
             "(zstd of the file written)", "ok": bool(delivery["limit_met"]),
             "detail": f"{delivery['zstd_bytes']:,} B compressed ({delivery['file_bytes']:,} B "
                       f"file) -> {delivery['update_time_ms'] / 1e3:.3g} s; planned "
                       f"{(delivery['planned_transfer_bytes'] or 0):,.0f} B (estimated)"}]
