"""Readable terminal output for plans, apply reports and the device list (rich tables)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from device_specs.fleet import fmt_money
from edgefit.fleet_report import (
    cost_binds,
    cost_relaxation,
    cost_row,
    fleet_lines,
    fleet_record,
    time_binds,
)
from edgefit_common.units import fmt_bytes, fmt_mj, fmt_ms, fmt_rate
from planner.plan import Plan
from planner.problem import Problem

if TYPE_CHECKING:
    from device_specs.schema import DeviceSpec, Profile

LIMIT_ROWS = (  # budget field, plan metric, formatter
    ("latency", "latency_ms", fmt_ms),
    ("flash", "flash_bytes", fmt_bytes),
    ("ram", "ram_bytes", fmt_bytes),
    ("energy", "energy_mj", fmt_mj),
)


def _console() -> Console:
    return make_console()


def make_console(stderr: bool = False) -> Console:
    # markup off: model paths, limits and check marks contain square brackets
    return Console(width=120, highlight=False, markup=False, stderr=stderr)


def silent_console() -> Console:
    """A console that prints nothing (the tables of a --json run)."""
    import io

    return Console(file=io.StringIO(), width=120, highlight=False, markup=False)


def header_lines(model: str | None, model_origin: str, device: str, profile: str,
                 target_origin: str | None) -> list[str]:
    """`model: NAME [where it came from]` and `target: DEVICE / PROFILE [where from]`."""
    target = f"target: {device} / {profile}"
    return [f"model:  {model}  [{model_origin}]",
            target + (f"  [{target_origin}]" if target_origin else "")]


def _int(n: float) -> str:
    return f"{int(n):,}"


def print_plan(plan: Plan, path: Path, console: Console | None = None,
               header: bool = True) -> None:
    """The plan as tables; `header`: its model and target first (`plan` prints those before
    it starts, so it passes False)."""
    con = console or _console()
    if header:
        for line in header_lines(plan.model.name, plan.model.origin, plan.target.device,
                                 plan.target.profile, None):
            con.print(line)
    if not plan.feasible:
        _print_infeasible(plan, con)
        con.print(f"wrote {path} (status {plan.status})")
        return
    sv = plan.solver
    gap = "" if sv.gap is None else f", gap {100 * sv.gap:.2g} %"
    unmeasured = plan.accuracy_unit == "none"
    acc_col = "acc cost" if plan.labels else "fidelity cost"  # no labels: the KL is all there is
    table = Table(title=f"plan ({sv.backend} {sv.status}{gap}, {sv.wall_time_s:.2f} s, "
                  f"{sv.options_considered} options, {sv.dominated_removed} dominated "
                  "removed)", title_justify="left")
    for col in ("layer", "type", "params", "MACs", "option", "latency", "flash", "peak RAM",
                acc_col):
        table.add_column(col, justify="left" if col in ("layer", "type", "option") else "right")
    for name, lp in plan.layers.items():
        p = lp.cost
        table.add_row(name, lp.op_type, _int(lp.params), _int(lp.macs), lp.option,
                      fmt_ms(p.latency_ms), fmt_bytes(p.flash_bytes),
                      fmt_bytes(p.ram_bytes or 0),
                      "not measured" if unmeasured else f"{p.acc_loss:.2e}")
    con.print(table)
    crossed = plan.boundary_ms_by_reader()
    if crossed:
        con.print("precision boundaries (a Q/DQ node where an int8 layer and a float one meet; "
                  "in the totals, not in the rows): " + ", ".join(
                      f"into {ly} {fmt_ms(ms)}" for ly, ms in crossed.items()), soft_wrap=True)
    if sv.note:
        con.print(f"solver: {sv.note}", soft_wrap=True)
    con.print(f"{acc_col}: {plan.accuracy_unit}; latency/flash/peak RAM: predicted for the target")
    if not plan.labels:
        con.print("no labels (inputs only): the model is judged by its fidelity to the fp32 "
                  "model's outputs, here and in apply (top-1 agreement for class outputs, "
                  "1 - relative squared error for others)", soft_wrap=True)
    if plan.metric is not None:
        con.print(f"metric: apply scores accuracy with {plan.metric}(labels, outputs), higher "
                  "is better", soft_wrap=True)
    if unmeasured and any(lp.techniques for lp in plan.layers.values()):
        con.print("[WARN] no data: the accuracy cost of every option was NOT measured (counted "
                  "as 0, --allow-unmeasured): this plan may lose any amount of accuracy; give "
                  "--data to measure it", style="bold yellow", soft_wrap=True)
    con.print(_limits_table(plan))
    con.print("how these costs were obtained:")
    for line in delivery_lines(plan):
        con.print(line, soft_wrap=True)
    for key, text in plan.provenance.items():
        con.print(f"  {key}: {text}", soft_wrap=True)
    for key, text in plan.uncertainty.items():
        con.print(f"  {key} uncertainty: {text}", soft_wrap=True)
    if plan.latency_band is not None and plan.margin < plan.latency_band:
        con.print(f"  note: the latency model's typical error ({100 * plan.latency_band:.0f} %) "
                  f"exceeds the safety margin ({100 * plan.margin:g} %); consider "
                  f"--margin {100 * plan.latency_band:.0f}%", soft_wrap=True)
    con.print(f"wrote {path}")


_FIELD = {metric: field for field, metric, _ in LIMIT_ROWS}


def _limits_table(plan: Plan) -> Table:
    assert plan.totals is not None
    given = plan.limits.given()
    table = Table(title="totals against limits (runtime included)", title_justify="left")
    for col in ("limit", "predicted", "limit value", "headroom", ""):
        table.add_column(col, justify="right" if col not in ("limit", "") else "left")
    for field, metric, fmt in LIMIT_ROWS:
        value = getattr(plan.totals, metric)
        if metric == "flash_bytes" and plan.delivery is not None and plan.delivery.ab_slots > 1:
            field = f"flash ({plan.delivery.ab_slots} model slots)"
            value = plan.delivery.flash_with_slots(value)
            limit_value = given.get("flash")
            if limit_value is not None:
                given = {**given, field: limit_value}
        if field in given:
            limit = given[field]
            status = ("ok"  # the cap row below carries the binding
                      if metric == "latency_ms" and _cap(plan) is not None else
                      _binding(plan, metric))
            if metric == "latency_ms" and plan.latency_backed is False:
                status += "; no published measurement of this board backs the model"
            table.add_row(field, fmt(value), fmt(limit), f"{100 * (1 - value / limit):.1f} %",
                          status)
        else:
            table.add_row(field, fmt(value), "-", "-", "no limit")
    for metric, loss in plan.sensitivity.items():
        label = _FIELD.get(metric, metric if metric != "transfer_bytes" else
                           "update cost" if cost_binds(plan) else "update time")
        table.add_row(f"{label} +10 %", f"acc cost {loss:.3g}",
                      f"now {plan.totals.acc_loss:.3g}", "-", "value of more")
    if "accuracy_drop" in given:
        table.add_row("accuracy drop" if plan.labels else "top-1 disagreement with fp32 "
                      "(no labels)", "measured by apply", f"{given['accuracy_drop']:g}pp",
                      "-", "checked after apply")
    _update_row(plan, table)
    _fp32_row(plan, table)
    return table


def _binding(plan: Plan, metric: str) -> str:
    return ("binds (+10 % would buy accuracy)" if metric in plan.binding else
            "binding unknown (its check timed out)" if metric in plan.binding_unknown else "ok")


def _cap(plan: Plan) -> float | None:
    """The fp32 plan's latency where it is tighter than the asked latency limit
    (planner.resolve.latency_cap: compressing never makes the model slower)."""
    from planner.resolve import latency_cap, solver_limits

    return latency_cap(plan, solver_limits(plan.limits, plan.margin))


def _fp32_row(plan: Plan, table: Table) -> None:
    """With a latency limit looser than the fp32 plan, that plan's latency is the limit the
    solver holds: say so where the limits are."""
    assert plan.totals is not None
    cap = _cap(plan)
    if cap is None:
        return
    value = plan.totals.latency_ms
    table.add_row("latency <= fp32", fmt_ms(value), fmt_ms(cap),
                  f"{100 * (1 - value / cap):.1f} %",
                  f"{_binding(plan, 'latency_ms')}; the fp32 plan's predicted latency: "
                  "compressing never makes it slower")


def _update_row(plan: Plan, table: Table) -> None:
    """The update over the plan's link: its time (transfer bytes / the link's rate)."""
    d, totals = plan.delivery, plan.totals
    if d is None or totals is None or totals.transfer_bytes is None:
        return
    used = d.update_time_ms(totals.transfer_bytes)
    assert used is not None
    limit = plan.limits.update_time
    status = ("no limit" if limit is None else
              "binds (+10 % would buy accuracy)" if time_binds(plan) else "ok")
    table.add_row(f"update over {d.link}", f"{fmt_ms(used)} ({fmt_bytes(totals.transfer_bytes)})",
                  "-" if limit is None else fmt_ms(limit),
                  "-" if limit is None else f"{100 * (1 - used / limit):.1f} %", status)
    if (row := cost_row(plan)) is not None:  # docs/delivery.md, Fleet cost
        table.add_row(*row)


def delivery_lines(plan: Plan) -> list[str]:
    """How the update and the slots were costed (printed under the limits table)."""
    d = plan.delivery
    if d is None:
        return []
    lines = []
    if d.ab_slots > 1:
        lines.append(f"  flash: {d.ab_slots} model slots (A/B update): runtime "
                     f"{fmt_bytes(d.runtime_flash_bytes)} once + {d.ab_slots} x the model image")
    if d.link is not None:
        lines.append(f"  update over {d.link}: {d.link_provenance}; "
                     f"{d.link_bytes_per_s:,.2f} B/s of artifact (device_specs/links.yaml)")
        lines.append(f"  transfer bytes: {d.transfer}")
    return lines + fleet_lines(plan)


def _slotted(plan: Plan, metric: str) -> bool:
    return (metric == "flash_bytes" and plan.delivery is not None
            and plan.delivery.ab_slots > 1)


def _delivery_relaxation(plan: Plan, metric: str, asked: float,
                         best: float | None) -> str:
    """An infeasible plan's update or A/B flash limit in the user's terms: seconds over the
    named link, or the flash of every slot (the solver's own numbers are one image's)."""
    d = plan.delivery
    assert d is not None
    minimum = plan.explanation.minimum.get(metric) if plan.explanation else None
    if metric == "transfer_bytes":
        assert d.link_bytes_per_s is not None
        rate = f"{fmt_bytes(d.link_bytes_per_s)}/s"
        limit = plan.limits.update_time
        text = f"  update over {d.link}: "
        if best is None:
            text += "relaxing only this limit does not help"
        else:
            text += (f"needs >= {fmt_ms(best / d.link_bytes_per_s * 1e3)} ({fmt_bytes(best)} at "
                     f"{rate}) with the other limits kept")
        if minimum is not None:
            text += (f"; the smallest model needs {fmt_ms(minimum / d.link_bytes_per_s * 1e3)} "
                     f"({fmt_bytes(minimum)} at {rate})")
        return (text + (f"; limit {fmt_ms(limit)}" if limit is not None else "")
                + cost_relaxation(plan, best, minimum))
    slots = f"flash ({d.ab_slots} model slots)" if d.ab_slots > 1 else "flash"
    text = f"  {slots}: "
    if best is None:
        text += "relaxing only this limit does not help"
    else:
        text += f"needs {fmt_bytes(d.flash_with_slots(best))} with the other limits kept"
    if minimum is not None:
        text += f"; the smallest model needs {fmt_bytes(d.flash_with_slots(minimum))}"
    return text + f"; limit {fmt_bytes(plan.limits.flash or 0)}"


def _cap_note(plan: Plan, metric: str) -> str:
    if metric != "latency_ms" or _cap(plan) is None or plan.limits.latency is None:
        return ""
    return (f"; that is the fp32 plan's latency, below your {fmt_ms(plan.limits.latency)}: "
            "a compressed plan is never slower than fp32")


def _print_infeasible(plan: Plan, con: Console) -> None:
    if plan.solver.note:
        con.print(f"solver: {plan.solver.note}", soft_wrap=True)
    if plan.explanation is None:  # e.g. hand-edited in `review` past a limit, not re-solved
        con.print(f"The plan's status is {plan.status}: re-solve it (`edgefit resolve`) for an "
                  "explanation.", style="bold")
        return
    fmts = {metric: fmt for _, metric, fmt in LIMIT_ROWS}
    con.print("The budget cannot be met. What is reachable instead:", style="bold")
    for r in plan.explanation.relaxations:
        if r.limit in ("transfer_bytes", "flash_bytes") and plan.delivery is not None:
            con.print(_delivery_relaxation(plan, r.limit, r.asked, r.best_reachable),
                      soft_wrap=True)
            continue
        fmt = fmts[r.limit]
        name = r.limit.split("_")[0]
        if r.best_reachable is None:
            con.print(f"  {name}: relaxing only this limit does not help (asked {fmt(r.asked)})")
        else:
            con.print(f"  {name}: needs {fmt(r.best_reachable)} instead of {fmt(r.asked)} "
                      "(with the other limits kept)" + _cap_note(plan, r.limit))
    joint = {m: v for m, v in plan.explanation.joint_relaxation.items()
             if v > 0 and m in _FIELD and not _slotted(plan, m)}
    if joint:
        asked = {m: plan.limits.given()[_FIELD[m]] for m in joint}
        if "latency_ms" in asked and (cap := _cap(plan)) is not None:
            asked["latency_ms"] = cap
        parts = [f"{fmts[m](asked[m] + v)} {_FIELD[m]} (+{fmts[m](v)})"
                 for m, v in joint.items()]
        con.print("  smallest joint relaxation: " + " and ".join(parts))
    for metric, value in plan.explanation.minimum.items():
        if metric in ("transfer_bytes", "flash_bytes") and plan.delivery is not None:
            continue  # said above, in the delivery's terms
        con.print(f"  smallest {metric.split('_')[0]} this model reaches on "
                  f"{plan.target.device}: {fmts[metric](value)} (runtime included)")


def task_line(t: Mapping[str, Any]) -> str:
    """apply's line for an encoder's task metric (edgefit.applying.encoder_task)."""
    return (f"   task metric: {t['metric']} on the {t['task']}: fp32 {100 * t['fp32']:.2f} % "
            f"-> compressed {100 * t['compressed']:.2f} % (drop {t['drop_pp']:.2f} pp; the "
            f"probe's predictions from the two agree on {100 * t['agreement']:.2f} % of the "
            f"sentences; {t['how']})")


def print_report(report: dict[str, Any], console: Console | None = None) -> None:
    con = console or _console()
    con.print(f"apply report — {report['plan']}", style="bold")
    target = report["target_predicted"]
    con.print(f"1. predicted on the target ({target['device']}/{target['profile']}, "
              f"{target['source']}): latency {fmt_ms(target['latency_ms'])}, "
              f"flash {fmt_bytes(target['flash_bytes'])}, peak RAM "
              f"{fmt_bytes(target['ram_bytes'])}, energy {fmt_mj(target['energy_mj'])}")
    acc = report["accuracy"]
    measure = {"fidelity to fp32": "fidelity to the fp32 model (no labels)",
               "metric": "the metric"}.get(acc.get("measure", ""), "accuracy")
    values = ((f"{acc['fp32']:.4g}", f"{acc['compressed']:.4g}")  # the user's own scale
              if acc.get("measure") == "metric" else
              (f"{100 * acc['fp32']:.2f} %", f"{100 * acc['compressed']:.2f} %"))
    line = (f"2. {measure} on the held-out split ({acc['test_size']} images of {acc['data']}): "
            f"fp32 {values[0]} -> compressed {values[1]} "
            f"(drop {acc['drop_pp']:.2f} pp; {acc['how']})")
    if acc.get("limit_pp") is not None:
        line += f"; limit {acc['limit_pp']:g} pp: {'met' if acc['limit_met'] else 'NOT met'}"
    con.print(line)
    if acc.get("task"):  # an encoder's task metric, beside its cosine
        con.print(task_line(acc["task"]), soft_wrap=True)
    if acc.get("outputs"):
        con.print(f"   the accuracy reads the first of {len(acc['outputs'])} outputs; each output "
                  "against the fp32 model's: " + "; ".join(
                      f"{r['output']} " + (f"top-1 agreement {100 * r['top1_agreement']:.2f} %"
                                          if r["kind"] == "class" else
                                          f"relative squared error {r['rel_sq_error']:.3g}")
                      + ("" if r["ok"] else " (FAR OFF)") for r in acc["outputs"]),
                  soft_wrap=True)
    host = report["host_check"]
    table = Table(title=f"3. cost-model check on THIS machine ({host['cpu']}), not the target",
                  title_justify="left")
    for col in ("quantity", "host predicted", "host measured", "measured/predicted"):
        table.add_column(col, justify="left" if col == "quantity" else "right")
    for row in host["rows"]:
        ratio = (f"{row['measured'] / row['predicted']:.2f}" if row["predicted"] and
                 row["measured"] is not None else "-")
        fmt = {"ms": fmt_ms, "B": fmt_bytes}[row["unit"]]
        table.add_row(row["quantity"], fmt(row["predicted"]),
                      fmt(row["measured"]) if row["measured"] is not None else "-", ratio)
    con.print(table)
    for row in host["rows"]:
        con.print(f"  {row['quantity']}: {row['how']}", soft_wrap=True)
    files = report["artifacts"]
    con.print(f"artifacts: {files['onnx']} ({fmt_bytes(files['onnx_bytes'])}, runnable), "
              f"{files['flash_image']} ({fmt_bytes(files['flash_image_bytes'])} packed image, "
              f"payload {fmt_bytes(files['flash_payload_bytes'])}; plan predicted "
              f"{fmt_bytes(files['planned_flash_bytes'])}, "
              f"{'match' if files['flash_match'] else 'MISMATCH'})")
    con.print(f"verified from the files: {report['verification']['summary']}")
    from executors.tflite import summary_lines  # the .tflite, for a runtime that loads one

    for line in summary_lines(report.get("tflite")):
        con.print(line, soft_wrap=True)
    if (d := report.get("delivery")) is not None:
        con.print(f"update over {d['link']}: {Path(d['file']).name} {d['file_bytes']:,} B, zstd "
                  f"{d['zstd_bytes']:,} B -> {fmt_ms(d['update_time_ms'])} ({d['how']}; the "
                  f"plan estimated {(d['planned_transfer_bytes'] or 0):,.0f} B)"
                  + ("" if d.get("cost_per_device_month") is None else
                     f"; {fmt_money(d['cost_per_device_month'], d.get('currency'))} per "
                     "device per month at your data price"), soft_wrap=True)
    for check in report["checks"]:
        mark = "ok  " if check["ok"] else "FAIL"
        con.print(f"  [{mark}] {check['check']}: {check['detail']}")
    for warning in report.get("warnings", []):
        con.print(f"  [WARN] {warning}", soft_wrap=True)
    con.print(f"report: {report['report_path']}")


def print_loop(result: Any, path: Path, console: Console | None = None) -> None:
    """Every round of the closed loop (edgefit.loop.LoopResult): predicted next to measured."""
    con = console or _console()
    metric = {"latency": "latency_ms", "flash": "flash_bytes", "ram": "ram_bytes",
              "energy": "energy_mj"}[result.objective]
    fmt = {"latency_ms": fmt_ms, "flash_bytes": fmt_bytes, "ram_bytes": fmt_bytes,
           "energy_mj": fmt_mj}[metric]
    table = Table(title=f"closed loop: minimise {result.objective} with accuracy drop <= "
                  f"{result.accuracy_limit_pp:g} pp measured ({result.front_size} plans on the "
                  "front)", title_justify="left")
    for col in ("round", f"{result.objective} (pred.)", "acc cost (pred.)", "drop (measured)",
                "verdict"):
        table.add_column(col, justify="left" if col == "verdict" else "right")
    for r in result.rounds:
        drop = f"{r.measured.drop_pp:.2f} pp" if r.measured else "-"
        table.add_row(str(r.number), fmt(r.predicted[metric]), f"{r.predicted['acc_loss']:.2e}",
                      drop, r.verdict)
    con.print(table)
    for r in result.rounds:
        con.print(f"  round {r.number}: {r.why}" + (f"; learned: {r.learned}" if r.learned
                                                     else ""), soft_wrap=True)
    con.print(result.summary, soft_wrap=True)
    con.print(f"loop report: {path}")


def print_devices(console: Console | None = None) -> None:
    from cost_models.host_probe import target_spec
    from device_specs.catalog import catalog_names

    con = console or _console()
    table = Table(title="device catalog (edgefit devices)", title_justify="left")
    for col in ("name", "kind", "RAM", "flash/storage", "profiles (default first)",
                "kernels of the default profile",
                "latency model vs published measurements (per profile)"):
        table.add_column(col)
    for name in catalog_names():
        spec = target_spec(name)
        profiles = [spec.default_profile] + [p for p in spec.profiles if p != spec.default_profile]
        kernels = ", ".join(f"{k} {fmt_rate(v.macs_per_s.value)}"
                            for k, v in spec.profile().kernels.items())
        if spec.kind == "host":
            evidence = "probed on this machine (no published points)"
        else:
            found = published_evidence(spec)
            evidence = "\n".join(f"{p}: {found[p]}" for p in profiles)
        table.add_row(name, spec.kind, fmt_bytes(spec.ram.value), fmt_bytes(spec.flash.value),
                      ", ".join(profiles), kernels, evidence)
    con.print(table)
    con.print("leave-one-out error: MAPE of each published point predicted by a fit on the "
              "others (docs/cost-model-fit.md; needs >= 3 points)")


def evidence_text(device: str, profile_name: str, profile: Profile) -> str:
    """How many published points the profile's fit has and its leave-one-out error, or why
    there is none (a fit is never implied where the points cannot support one)."""
    from cost_models.published import points
    from cost_models.published_fit import fit_profile

    n = len(points(device, profile_name, "fit"))
    aside = len(points(device, profile_name, "aside"))
    extra = f"; {aside} more kept aside as a test" if aside else ""
    family = (_family_evidence(device, profile.runtime_family)
              if n < 3 and profile.runtime_family is not None else "")
    extra += family
    if n == 0:
        return ("no published points of this board" if family else
                "no published points: analytical constants only") + extra
    if n == 1:
        return "1 point: no fit error" + extra
    if n == 2:
        return "2 points: fitted, too few for a leave-one-out error" + extra
    fit = fit_profile(points(device, profile_name, "fit"), profile)
    if fit.loo_mape is None:
        return f"{n} points: no leave-one-out fold could be predicted" + extra
    return (f"{n} points: leave-one-out error {100 * fit.loo_mape:.0f} % "
            f"({len(fit.loo)} of {n} predicted)" + extra)


def _family_evidence(device: str, family: str) -> str:
    """The MCU runtime family's MLPerf Tiny fit (cost_models.mcu_fit), in a few words."""
    from cost_models.mcu_fit import mcu_family_fit
    from cost_models.uncertainty import mcu_band
    from device_specs.catalog import load_spec

    fit = mcu_family_fit(family)
    if fit is None:
        return ""
    if fit.held_out_error is None:
        stand_in = mcu_family_fit(fit.assumed_from or "")
        err = None if stand_in is None else stand_in.held_out_error
        return (f"; {family}: no MLPerf Tiny row, parameters assumed from {fit.assumed_from}"
                + ("" if err is None else f" (±{100 * err:.0f} % held out there)"))
    band = mcu_band(load_spec(device), family)
    where = "this board in them" if band is not None and band.backed else "clock-scaled"
    basis = "board" if fit.lobo_mape is not None else "model"
    return (f"; {family} fit: ±{100 * fit.held_out_error:.0f} % leave-one-{basis}-out on "
            f"{fit.n_rows} MLPerf Tiny rows ({where})")


def published_evidence(spec: DeviceSpec) -> dict[str, str]:
    """evidence_text per profile of a catalog device. Cached under cache_dir(), keyed by the
    points file, the device's YAML and the fitting code: the leave-one-out fits take seconds."""
    import hashlib
    import json

    from cost_models import fit, mcu_fit, published, published_fit
    from device_specs.catalog import CATALOG_DIR
    from edgefit_common.fsutil import atomic_write_text
    from edgefit_common.paths import cache_dir

    sources = [published.POINTS_FILE, CATALOG_DIR / f"{spec.name}.yaml",
               Path(fit.__file__), Path(published_fit.__file__),  # the fitting code
               Path(mcu_fit.__file__), mcu_fit.DATA_FILE, Path(__file__)]
    digest = hashlib.sha256(b"\0".join(p.read_bytes() if p.is_file() else b"" for p in sources))
    path = cache_dir() / "device-evidence" / f"{spec.name}.{digest.hexdigest()[:16]}.json"
    try:
        cached = json.loads(path.read_text())
        if isinstance(cached, dict) and set(cached) == set(spec.profiles):
            return {str(k): str(v) for k, v in cached.items()}
    except (OSError, ValueError):
        pass
    out = {name: evidence_text(spec.name, name, prof) for name, prof in spec.profiles.items()}
    with contextlib.suppress(OSError):  # an unwritable cache only costs the next call time
        atomic_write_text(path, json.dumps(out, indent=1))
    return out


def write_pareto(plan: Plan, problem: Problem, metrics: list[str], out: Path,
                 console: Console | None = None) -> list[Path]:
    """Sweep, then write <out>.pareto.csv and .png and print the front as a table."""
    from planner.pareto import plot, sweep, to_csv
    from planner.plan import atomic_write_text

    con = console or _console()
    points = sweep(problem, metrics)
    stem = out.with_suffix("")
    csv_path, png_path = Path(f"{stem}.pareto.csv"), Path(f"{stem}.pareto.png")
    atomic_write_text(csv_path, to_csv(points, metrics))
    chosen = None
    if plan.totals is not None:
        chosen = {**plan.totals.model_dump(), "ram_bytes": plan.totals.ram_bytes or 0.0}
    plot(points, metrics, chosen, png_path,
         f"{plan.model.name} on {plan.target.device}/{plan.target.profile}",
         plan.accuracy_unit, limits=problem.limits)
    fmts = {metric: fmt for _, metric, fmt in LIMIT_ROWS}
    table = Table(title=f"Pareto front ({len(points)} plans)", title_justify="left")
    for col in (*metrics, "acc cost", "options"):
        table.add_column(col)
    for p in points:
        counts: dict[str, int] = {}
        for option in p.picks.values():
            counts[option] = counts.get(option, 0) + 1
        table.add_row(*(fmts[m](p.totals[m]) for m in metrics), f"{p.totals['acc_loss']:.3g}",
                      ", ".join(f"{k}x{v}" for k, v in counts.items()))
    con.print(table)
    con.print(f"wrote {csv_path} and {png_path}")
    return [csv_path, png_path]


_LIMIT_KEYS = {"latency": "latency_ms", "flash": "flash_bytes", "ram": "ram_bytes",
               "energy": "energy_mj", "accuracy_drop": "accuracy_drop_pp",
               "update_time": "update_time_ms"}


def plan_summary(plan: Plan, written: list[Path], target_origin: str | None,
                 command: str = "plan") -> dict[str, Any]:
    """What `plan --json` prints: status, totals against limits, the option of every layer,
    the binding limits and the files written (units in the key names)."""
    sv = plan.solver
    return {
        "command": command,
        "status": plan.status,
        "feasible": plan.feasible,
        "model": {"name": plan.model.name, "kind": plan.model.kind, "path": plan.model.path,
                  "origin": plan.model.origin},
        "target": {"device": plan.target.device, "profile": plan.target.profile,
                   "origin": target_origin},
        "limits": {_LIMIT_KEYS[k]: v for k, v in plan.limits.given().items()},
        "margin": plan.margin,
        # the fp32 plan's latency where it is tighter than the asked limit (the solver's)
        "latency_cap_ms": _cap(plan),
        "totals": plan.totals.model_dump() if plan.totals is not None else None,
        "accuracy_unit": plan.accuracy_unit,
        "binding": list(plan.binding),
        "binding_unknown": list(plan.binding_unknown),
        "options": plan.options(),
        "solver": {"backend": sv.backend, "status": sv.status, "gap": sv.gap,
                   "wall_time_s": sv.wall_time_s, "options_considered": sv.options_considered,
                   "exact_check": sv.exact_check, "note": sv.note},
        "explanation": plan.explanation.model_dump() if plan.explanation is not None else None,
        "delivery": _delivery_summary(plan),
        "written": [str(p) for p in written],
    }


def _delivery_summary(plan: Plan) -> dict[str, Any] | None:
    """The slots and the update over the link for `--json` (None: the plan has neither)."""
    d = plan.delivery
    if d is None:
        return None
    out: dict[str, Any] = d.model_dump()
    if plan.totals is not None:
        out["flash_bytes_all_slots"] = d.flash_with_slots(plan.totals.flash_bytes)
        if plan.totals.transfer_bytes is not None:
            out["transfer_bytes"] = plan.totals.transfer_bytes
            out["update_time_ms"] = d.update_time_ms(plan.totals.transfer_bytes)
    out["fleet_cost"] = fleet_record(plan)
    return out


def apply_summary(report: dict[str, Any]) -> dict[str, Any]:
    """What `apply --json` prints: every check, the measured accuracy, the artifacts and the
    target's predicted costs (the full report is in report.json)."""
    predicted = {k: v for k, v in report["target_predicted"].items() if k != "provenance"}
    return {
        "command": "apply",
        "ok": all(check["ok"] for check in report["checks"]),
        "checks": report["checks"],
        "accuracy": report["accuracy"],
        "artifacts": report["artifacts"],
        "predicted": predicted,
        "verification": report["verification"].get("summary"),
        "report": report["report_path"],
    }


def loop_summary(result: Any, path: Path, best_plan: Path | None) -> dict[str, Any]:
    """The closed loop for `plan --loop --json` (every round is in loop.json)."""
    return {"status": result.status, "summary": result.summary, "objective": result.objective,
            "accuracy_limit_pp": result.accuracy_limit_pp, "rounds": len(result.rounds),
            "best_round": result.best_round, "report": str(path),
            "best_plan": None if best_plan is None else str(best_plan)}
