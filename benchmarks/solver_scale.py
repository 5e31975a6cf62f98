"""Solver at scale (issue #6 benchmark): synthetic ResNet-50-sized and 500-layer
transformer-style problems, >= 30 options per layer, four additive limits + peak RAM, at loose,
medium, tight, just-feasible and just-infeasible budgets; CP-SAT and CBC; next to a
HAWQ-V3-style formulation (bits only, one limit, PuLP).

The costs are synthetic but shaped like the real ones (latency ~ MACs / rate(bits) x kept
fraction + overhead, flash ~ params x bits, accuracy loss ~ sensitivity x quantisation and
pruning error); see make_*(). Prints what it measured; asserts nothing.
Run: .venv/bin/python benchmarks/solver_scale.py [--time-limit 10]
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time
from collections.abc import Callable

import pulp

from planner.problem import Choice, Problem
from planner.result import SolverOptions
from planner.solve import solve

BITS = (2, 3, 4, 5, 6, 8, 16, 32)
PRUNE = (0.0, 0.25, 0.5, 0.75)


def _options(rng: random.Random, params: int, macs: int, sens: float) -> tuple[Choice, ...]:
    out = []
    for bits in BITS:
        # int8 kernels are the fastest; sub-8-bit ones unpack first, so smaller is not faster
        # (as measured on this host, see docs): latency and flash pull in different directions
        rate = {2: 2.5, 3: 2.0, 4: 3.0, 5: 2.0, 6: 2.0, 8: 4.0, 16: 2.0, 32: 1.0}[bits] * 5e9
        for p in PRUNE:
            kept = 1.0 - p
            latency = 0.01 + 1e3 * macs * kept / rate
            out.append(Choice(
                option=f"w{bits}p{int(100 * p)}",
                latency_ms=latency,
                flash_bytes=float(int(params * kept * bits / 8) + 4 * 64),
                energy_mj=2.0 * latency,
                act_bytes=(1 if bits <= 8 else bits // 8) * kept,
                acc_loss=sens * (2.0 ** (-bits) * 4 + 0.8 * p**2) * (1 + 0.1 * rng.random()),
            ))
    return tuple(out)


def make_resnet50(seed: int = 0) -> Problem:
    """54 weighted layers: stem, 16 bottlenecks (1x1, 3x3, 1x1) + 4 downsample, fc."""
    rng = random.Random(seed)
    layers: list[tuple[str, int, int, int]] = [("stem", 9408, 118_013_952, 802_816)]
    hw, cin = 56, 64
    for stage, (blocks, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512),
                                                strict=True)):
        for b in range(blocks):
            stride_hw = hw // 2 if (b == 0 and stage > 0) else hw
            cout = width * 4
            for name, ci, co, k, out_hw in (("a", cin, width, 1, hw),
                                            ("b", width, width, 3, stride_hw),
                                            ("c", width, cout, 1, stride_hw)):
                params = ci * co * k * k
                layers.append((f"s{stage}b{b}{name}", params, params * out_hw * out_hw,
                               co * out_hw * out_hw))
            if b == 0:
                layers.append((f"s{stage}b{b}down", cin * cout, cin * cout * stride_hw**2,
                               cout * stride_hw**2))
            hw, cin = stride_hw, cout
    layers.append(("fc", 2048 * 1000, 2048 * 1000, 1000))
    names = tuple(n for n, *_ in layers)
    choices = {n: _options(rng, p, m, rng.uniform(0.2, 2.0)) for n, p, m, _ in layers}
    # a residual block keeps its input live while its three convs run
    steps = []
    prev = names[0]
    for i, (n, _, _, out) in enumerate(layers):
        block_input = prev if n.endswith(("a", "down")) or i == 0 else None
        live = [(n, out)]
        if i > 0:
            live.append((names[i - 1], layers[i - 1][3]))
        if block_input and block_input != n:
            live.append((block_input, layers[names.index(block_input)][3]))
        steps.append(tuple(live))
        if n.endswith("c"):
            prev = n
    return Problem(names, choices, {}, {"ram_bytes": 50_000}, tuple(steps), False)


def make_transformer(n_layers: int = 500, seed: int = 1) -> Problem:
    """Linear layers of encoder blocks (q, k, v, o, mlp1, mlp2); the residual stream of each
    block stays live across it."""
    rng = random.Random(seed)
    d, ff, seq = 384, 1536, 128
    shapes = {"q": (d, d), "k": (d, d), "v": (d, d), "o": (d, d), "mlp1": (d, ff),
              "mlp2": (ff, d)}
    names, specs = [], []
    for i in range(n_layers):
        kind = list(shapes)[i % 6]
        ci, co = shapes[kind]
        names.append(f"blk{i // 6}.{kind}")
        specs.append((ci * co, ci * co * seq, co * seq))
    choices = {n: _options(rng, p, m, rng.uniform(0.2, 2.0))
               for n, (p, m, _) in zip(names, specs, strict=True)}
    steps = []
    for i, n in enumerate(names):
        block_start = names[i - i % 6 - 1] if i >= 6 else names[0]
        live = [(n, specs[i][2]), (names[max(0, i - 1)], specs[max(0, i - 1)][2]),
                (block_start, d * seq)]
        steps.append(tuple(live))
    return Problem(tuple(names), choices, {}, {"ram_bytes": 1_000_000}, tuple(steps), False)


BUILTIN = (("lenet300-mnist", "arduino-nano-33-ble"), ("lenet5-mnist", "arduino-nano-33-ble"),
           ("fashion-cnn", "raspberry-pi-4"), ("lenet5-mnist", "jetson-orin-nano"),
           ("minilm-l6", "raspberry-pi-4"))
"""Built-in models on catalog targets: the real problems `plan` builds (measured accuracy
estimates, the device's options incl. channel widths, low rank, sharing, N:M where offered)."""


def builtin_problems(only: set[str] | None = None) -> list[tuple[str, Problem]]:
    from device_specs.budget import Budget
    from edgefit.planning import make_plan

    out = []
    for model, target in BUILTIN:
        if only is not None and model not in only:
            continue
        _, ctx = make_plan(Budget(target=target, limits={"latency": "1000s"}, model=model),
                           "bench")
        out.append((f"{model} on {target}/{ctx.profile}", ctx.problem))
    return out


def _range(problem: Problem, metric: str) -> tuple[float, float]:
    if metric == "ram_bytes":  # peak RAM grows with every layer's act_bytes
        acts = {ly: [c.act_bytes for c in cs] for ly, cs in problem.choices.items()}
        lo = problem.totals({ly: a.index(min(a)) for ly, a in acts.items()})[metric]
        hi = problem.totals({ly: a.index(max(a)) for ly, a in acts.items()})[metric]
        return lo, hi
    lo = problem.fixed.get(metric, 0) + sum(min(c.metric(metric) for c in cs)
                                            for cs in problem.choices.values())
    hi = problem.fixed.get(metric, 0) + sum(max(c.metric(metric) for c in cs)
                                            for cs in problem.choices.values())
    return lo, hi


def with_budget(problem: Problem, fraction: float) -> Problem:
    """Every limit at `fraction` of the way from its own minimum to its maximum."""
    limits = {}
    for metric in ("latency_ms", "flash_bytes", "energy_mj", "ram_bytes"):
        lo, hi = _range(problem, metric)
        limits[metric] = lo + fraction * (hi - lo)
    return problem.with_limits(limits)


def edge_fraction(problem: Problem, options: SolverOptions) -> tuple[float, float, bool]:
    """Bisection on the budget fraction for the feasibility edge (every limit moves together):
    (last infeasible, first feasible, whether every step below was *proven* infeasible). A
    time-out (UNKNOWN) is not a proof: it moves the lower end but clears the flag."""
    lo, hi, proven = -0.01, 0.3, True
    for _ in range(16):
        mid = (lo + hi) / 2
        r = solve(with_budget(problem, mid), options, explain=False, explain_infeasible=False)
        if r.feasible:
            hi = mid
        else:
            lo, proven = mid, proven and r.status == "INFEASIBLE"
    return lo, hi, proven


def _precision_only(option: str) -> bool:
    """A bits-only option: synthetic "w4p0" (no pruning), or a real plain kernel ("int8",
    not "int8+s50")."""
    return option.endswith("p0") if option.startswith("w") else "+" not in option


def hawq_style(problem: Problem, time_limit: float) -> tuple[str, float]:
    """HAWQ-V3's ILP: bits only (no pruning), one latency limit, PuLP/CBC."""
    m = pulp.LpProblem("hawq", pulp.LpMinimize)
    x = {}
    for li, ly in enumerate(problem.layers):
        opts = [(i, c) for i, c in enumerate(problem.choices[ly]) if _precision_only(c.option)]
        for i, _ in opts:
            x[ly, i] = pulp.LpVariable(f"x{li}_{i}", cat=pulp.LpBinary)
        m += pulp.lpSum(x[ly, i] for i, _ in opts) == 1
    lat = pulp.lpSum(problem.choices[ly][i].latency_ms * v for (ly, i), v in x.items())
    lo, hi = _range(problem, "latency_ms")
    m += lat <= lo + 0.5 * (hi - lo)
    m += pulp.lpSum(problem.choices[ly][i].acc_loss * v for (ly, i), v in x.items())
    start = time.perf_counter()
    m.solve(pulp.PULP_CBC_CMD(msg=False, timeLimit=time_limit))
    return pulp.LpStatus[m.status], time.perf_counter() - start


def row(inst: Problem, backend: str, options: SolverOptions) -> tuple[str, str, float, float]:
    """One table row's cells after the budget: status, gap, time, an exact check of the plan
    against the limits, and (infeasible only) the time with the explanation. Also returns
    (status, seconds, gap) for the goal summary (gap inf when unknown)."""
    start = time.perf_counter()
    r = solve(inst, options, backend=backend.split()[0], explain=False,
              explain_infeasible=False)
    took = time.perf_counter() - start
    gap = "-" if r.gap is None else f"{100 * r.gap:.3g} %"
    holds = ("yes" if inst.feasible(r.totals) else "NO") if r.feasible else "-"
    explained = "-"
    if r.status == "INFEASIBLE":
        start = time.perf_counter()
        solve(inst, options, backend=backend.split()[0], explain=False)
        explained = f"{time.perf_counter() - start:.2f}"
    cells = (f"{backend} | {r.status} | {gap} | {took:.2f} | {holds} | {explained} | "
             f"{r.dominated_removed} |")
    return cells, r.status, took, math.inf if r.gap is None else r.gap


def builtin_summary(results: list[tuple[str, str, bool | None, str, float, float]]
                    ) -> list[str]:
    """What this run's built-in rows show, counted (CP-SAT exact runs)."""
    exact = [r for r in results if r[1] == "cpsat"]
    feasible = [r for r in exact if r[2]]
    infeasible = [r for r in exact if r[2] is False]
    return [f"- proven optimal by CP-SAT (feasible budgets): "
            f"{sum(r[3] == 'OPTIMAL' for r in feasible)} of {len(feasible)} runs, slowest "
            f"{max((r[4] for r in feasible), default=0):.2f} s",
            f"- infeasible budget proven INFEASIBLE: "
            f"{sum(r[3] == 'INFEASIBLE' for r in infeasible)} of {len(infeasible)} runs"]


def goals(results: list[tuple[str, str, bool | None, str, float, float]]) -> list[str]:
    """The issue's three goals, counted from this run's rows (instance, backend, budget
    feasible? (None: the bisection could not prove it infeasible), status, seconds, gap)."""
    def count(label: str, rows: list[tuple[str, str, bool | None, str, float, float]],
              ok: Callable[[str, float, float], bool]) -> str:
        met = sum(ok(st, t, g) for *_, st, t, g in rows)
        return f"- {label}: {met} of {len(rows)} runs"
    lines = [count("ResNet-50 size proven optimal in < 1 s (CP-SAT exact, feasible budgets)",
                   [r for r in results if r[0].startswith("resnet") and r[1] == "cpsat"
                    and r[2] is True], lambda st, t, g: st == "OPTIMAL" and t < 1.0)]
    for backend in sorted({r[1] for r in results if r[1].startswith("cpsat")}):
        lines.append(count(f"500 layers within 0.5 % of the bound in < 5 s ({backend}, feasible "
                           "budgets)", [r for r in results if r[0].startswith("transformer")
                                        and r[1] == backend and r[2] is True],
                           lambda st, t, g: st in ("OPTIMAL", "FEASIBLE") and g <= 0.005
                           and t < 5.0))
    lines.append(count("infeasible budget proven INFEASIBLE in < 5 s (CP-SAT runs)",
                       [r for r in results if r[1].startswith("cpsat") and r[2] is False],
                       lambda st, t, g: st == "INFEASIBLE" and t < 5.0))
    return lines


NOTES = [
    "How the solve goes now (planner/cpsat.py, planner/lp.py): presolve drops dominated "
    "options (vectorised); the LP relaxation of the accuracy model (GLOP, on CP-SAT's integer "
    "data) runs first. If it has no solution, an elastic LP decides: when even the relaxation "
    "needs a limit loosened by more than 1e-6 of it, the budget is infeasible (a proof; no "
    "CP-SAT search). Otherwise every layer the LP decides integrally is fixed and CP-SAT "
    "solves the few split layers (LP-and-fix, <= 1 s; again with the split layers' RAM-step "
    "and channel-group neighbours freed when that plan is not within 0.1 % or the asked gap "
    "of the LP bound): the plan is checked in exact "
    "arithmetic and becomes CP-SAT's hint, and the LP value is a lower bound for the gap. "
    "With a relative gap asked, a hint already within it of the LP bound is returned without "
    "search. OPTIMAL is reported only when the bound closes (CP-SAT also says OPTIMAL when "
    "merely within relative_gap_limit; that is FEASIBLE here).",
    "",
    "The earlier table's CBC FEASIBLE on the 500-layer \"just infeasible\" budget: the budget "
    "was not infeasible. The bisection that built it counted a CP-SAT time-out (UNKNOWN) as "
    "infeasible; CBC's plan met every limit (this script's `limits hold` check, on the old "
    "edge budget, in a run before this one). The bisection now "
    "moves its infeasible end only on a proof, and labels the row \"edge, unproven\" "
    "otherwise; the `limits hold` column re-checks every returned plan exactly. (GLOP also "
    "gave up, ABNORMAL, on this budget's LP until the objective was scaled to coefficients "
    "<= 1; CP-SAT then had no hint there.)",
    "",
    "Columns: time = one solve call without explanations (accuracy phase + tie-break phase; "
    "`cpsat gap` rows give the tie-break 1 s); explained = the same call with the "
    "infeasibility explanation (per-limit relaxations, minima, joint relaxation), which is "
    "several more solves.",
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--time-limit", type=float, default=10.0)
    ap.add_argument("--backends", default="cpsat,cbc")
    ap.add_argument("--instances", default="synthetic",
                    help="synthetic (ResNet-50-like + 500-layer), builtin (the built-in models "
                    "on catalog targets), or a comma list of built-in model names")
    ap.add_argument("--out", default="docs/bench-solver-scale.md")
    ap.add_argument("--goal-gap", type=float, default=0.005,
                    help="also run CP-SAT with this relative gap and a 1 s tie-break (0: no)")
    args = ap.parse_args(argv)
    load_start = os.getloadavg()[0]
    options = SolverOptions(time_limit_s=args.time_limit, workers=4)
    runs = [(b, options) for b in args.backends.split(",")]
    if args.goal_gap:
        runs.append((f"cpsat gap {100 * args.goal_gap:g} %", SolverOptions(
            time_limit_s=args.time_limit, workers=4, relative_gap=args.goal_gap,
            tie_break_time_s=1.0)))
    rows = ["| instance | layers | options/layer | budget | backend | status | gap | "
            "time (s) | limits hold | explained (s) | dominated removed |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    results: list[tuple[str, str, bool | None, str, float, float]] = []
    if args.instances == "synthetic":
        instances = [("resnet50-like", make_resnet50()), ("transformer-500", make_transformer())]
    else:
        instances = builtin_problems(None if args.instances == "builtin"
                                     else set(args.instances.split(",")))
    for name, problem in instances:
        per_layer = round(sum(len(c) for c in problem.choices.values()) / len(problem.layers))
        start = time.perf_counter()
        below, edge, proven = edge_fraction(problem, SolverOptions(time_limit_s=args.time_limit))
        print(f"{name}: edge bisection {time.perf_counter() - start:.1f} s, below {below:.6f} "
              f"{'proven' if proven else 'NOT proven'} infeasible", flush=True)
        budgets = {"loose": (0.8, True), "medium": (0.5, True), "tight": (0.2, True),
                   f"just feasible ({edge:.6f})": (edge, True),
                   f"just infeasible ({below:.6f})" if proven
                   else f"edge, unproven ({below:.6f})": (below, False if proven else None)}
        for label, (fraction, feasible) in budgets.items():
            for backend, opts in runs:
                cells, status, took, gap = row(with_budget(problem, fraction), backend, opts)
                rows.append(f"| {name} | {len(problem.layers)} | {per_layer} | {label} | "
                            + cells)
                results.append((name, backend, feasible, status, took, gap))
                print(rows[-1], flush=True)
        status, took = hawq_style(problem, args.time_limit)
        bits_only = round(sum(_precision_only(c.option) for cs in problem.choices.values()
                              for c in cs) / len(problem.layers))
        rows.append(f"| {name} | {len(problem.layers)} | {bits_only} | medium latency only | "
                    f"HAWQ-V3-style (bits only, PuLP) | {status} | - | {took:.2f} | - | - | - |")
        print(rows[-1], flush=True)
    summary = goals(results) if args.instances == "synthetic" else builtin_summary(results)
    print("\n".join([*rows, "", *summary]))
    text = "\n".join([
        "# Solver at scale", "",
        f"Made by `.venv/bin/python benchmarks/solver_scale.py --time-limit {args.time_limit:g}"
        f" --instances {args.instances} --out {args.out}"
        f"` on this machine ({os.cpu_count()} cores; 1-minute load average {load_start:.2f} "
        f"at the start, {os.getloadavg()[0]:.2f} at the end: above about 1 another job shared "
        "them; times are noisy, compare rows of one run, not runs), CP-SAT with 4 workers. "
        + ("Synthetic costs shaped like real ones (see the script)."
           if args.instances == "synthetic" else
           "The built-in models' real problems (the options `plan` offers on each target, "
           "options/layer is the mean; measured accuracy estimates), every limit set at the "
           "given fraction of its own range.") + "", "",
        "Goal (issue #6, reported, not asserted), as this run met it:", "", *summary, "",
        *(NOTES if args.instances == "synthetic" else []), "", *rows, ""])
    from pathlib import Path

    from planner.plan import atomic_write_text

    atomic_write_text(Path(__file__).parents[1] / args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
