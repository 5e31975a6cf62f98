"""Solver at scale (issues #6 and #18): instances shaped like real networks, edgefit's solver next
to a plain CP-SAT model and a plain PuLP/CBC model of the same data, in the same run.

Instances (make_*): ResNet-50 (54 weighted layers), MobileNetV2 (53), a 24-block BERT (146
decision layers: 144 Linear + 2 embedding tables) and a 500-layer transformer stack, each with
the full technique product per layer (7 precisions x 3 unstructured sparsities x low rank or not
x the kept channel widths of its coupled groups: residual streams, depthwise, attention heads,
MLP width), four additive limits that pull apart (latency: compute or weight traffic, whichever
is slower, so sparsity helps memory-bound layers only; flash; energy: power by precision and
sparsity, plus weight traffic; accuracy cost by precision, sparsity, low rank and, once per
group, its width) and peak RAM over the execution steps (live tensors, residual inputs).
Budgets: every limit at a fraction of its own range (loose 0.8, medium 0.5, tight 0.2) and at
the feasibility edge, bisected with proofs (just feasible, just infeasible).

The plain models: one phase (minimise the accuracy cost), no presolve, no LP, no hint; the plain
CP-SAT model on the costs rounded up and limits down (edgefit's formulation before issue #18),
the plain PuLP model on the float costs. Every returned plan is checked in exact arithmetic.
Prints what it measured and writes the doc; asserts nothing.
Run: .venv/bin/python benchmarks/solver_scale.py [--time-limit 10] [--instances synthetic]
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pulp
from ortools.sat.python import cp_model

from planner.exact import holds
from planner.formulation import (
    coupling_links,
    pair_coefficients,
    pair_keys,
    scaled_down,
    scaled_up,
    step_coefficients,
)
from planner.presolve import remove_dominated
from planner.problem import Choice, Problem, owner_layer
from planner.result import SolverOptions
from planner.solve import solve

# ---------------------------------------------------------------- the instance generator

BITS = (2, 3, 4, 6, 8, 16, 32)
SPARSITY = (0.0, 0.5, 0.75)
# MAC/s relative to fp32: int8 kernels are the fastest; sub-8-bit ones unpack first
RATE = {2: 2.5, 3: 2.0, 4: 3.0, 6: 2.2, 8: 4.0, 16: 1.8, 32: 1.0}
POWER_W = {2: 0.7, 3: 0.7, 4: 0.7, 6: 0.75, 8: 0.75, 16: 0.9, 32: 1.0}  # active power
QUANT_ERR = {2: 0.7, 3: 0.2, 4: 0.06, 6: 0.016, 8: 0.004, 16: 1e-4, 32: 0.0}
SPARSE_ERR = {0.0: 0.0, 0.5: 0.02, 0.75: 0.09}
LOWRANK_ERR = 0.05
BASE_RATE = 5e6  # MAC per ms of an fp32 kernel (5 GMAC/s: a small SBC)
BANDWIDTH = 4e6  # bytes per ms (4 GB/s)
OVERHEAD_MS = 0.01
ENERGY_PER_BYTE = 2e-7  # mJ per weight byte read


@dataclass(frozen=True)
class Spec:
    """One decision layer. Groups name coupled channels: out_group its output channels, in_group
    its input channels (its producer's group); a depthwise layer has both the same."""

    name: str
    params: int
    macs: int
    out_elems: int
    out_ch: int
    in_group: str | None = None
    out_group: str | None = None
    lowrank: bool = True
    gather: bool = False  # an embedding table: reads only the rows it looks up


def _widths(spec: Spec, groups: dict[str, tuple[int, ...]]
            ) -> list[tuple[float, tuple[tuple[str, int], ...]]]:
    """(kept fraction of params and MACs, Choice.widths) for each width combination."""
    names = list(dict.fromkeys(g for g in (spec.out_group, spec.in_group) if g))
    out = []
    for combo in itertools.product(*(groups[g] for g in names)):
        frac = {g: w / groups[g][-1] for g, w in zip(names, combo, strict=True)}
        kept = math.prod(frac.values())
        out.append((kept, tuple(zip(names, combo, strict=True))))
    return out


def _choice(spec: Spec, bits: int, sparsity: float, lowrank: bool, kept: float,
            widths: tuple[tuple[str, int], ...], sens: float, width_err: float,
            noise: float) -> Choice:
    lr = 0.5 if lowrank else 1.0
    out_frac = dict(widths).get(spec.out_group, 0) / (spec.out_ch or 1) if spec.out_group \
        else 1.0
    params = spec.params * kept * lr
    density = 1.0 - sparsity
    flash = params * (bits / 8 * density + (1 / 8 if sparsity else 0)) + 4 * spec.out_ch + 16
    compute = spec.macs * kept * lr / (RATE[bits] * BASE_RATE)
    traffic = spec.out_elems * bits / 8 if spec.gather else flash
    latency = OVERHEAD_MS + max(compute, traffic / BANDWIDTH)
    energy = latency * POWER_W[bits] * (1 - 0.35 * sparsity) + traffic * ENERGY_PER_BYTE
    loss = sens * (QUANT_ERR[bits] + SPARSE_ERR[sparsity] + (LOWRANK_ERR if lowrank else 0)
                   ) * noise + width_err
    name = f"int{bits}" if bits <= 8 else f"fp{bits}"
    name += (f"+s{int(100 * sparsity)}" if sparsity else "") + ("+r50" if lowrank else "")
    name += "".join(f"+{g}={w}" for g, w in widths)
    return Choice(option=name, latency_ms=latency, flash_bytes=round(flash),
                  energy_mj=energy, act_bytes=(1 if bits <= 8 else bits // 8) * out_frac,
                  acc_loss=loss, widths=widths)


def build(specs: list[Spec], steps: list[list[tuple[str, int]]], width_fracs: tuple[float, ...],
          seed: int, fixed: dict[str, float]) -> Problem:
    """The Problem: every spec's full technique product; each group's width error charged on
    its first member (as edgefit charges a group's measured pruning cost once)."""
    rng = random.Random(seed)
    channels: dict[str, int] = {}
    for s in specs:
        for g in (s.out_group, s.in_group):
            if g and s.out_group == g:
                channels.setdefault(g, s.out_ch)
    groups = {g: tuple(sorted({max(1, round(c * f)) for f in width_fracs}))
              for g, c in channels.items()}
    first: dict[str, str] = {}
    for s in specs:
        for g in (s.out_group, s.in_group):
            if g:
                first.setdefault(g, s.name)
    group_sens = {g: rng.uniform(0.02, 0.6) for g in groups}
    choices = {}
    for s in specs:
        sens = rng.uniform(0.2, 2.0)
        opts = []
        for kept, widths in _widths(s, groups):
            width_err = sum(group_sens[g] * (1 - w / groups[g][-1]) ** 2
                            for g, w in widths if first[g] == s.name)
            for bits, sp, lr in itertools.product(BITS, SPARSITY, (False, True)):
                if lr and not s.lowrank:
                    continue
                opts.append(_choice(s, bits, sp, lr, kept, widths, sens, width_err,
                                    1 + 0.1 * rng.random()))
        choices[s.name] = tuple(opts)
    return Problem(tuple(s.name for s in specs), choices, {}, fixed,
                   tuple(tuple(step) for step in steps), False)


def _chain_steps(specs: list[Spec], block_input: dict[str, str]) -> list[list[tuple[str, int]]]:
    """Step i: layer i's output, its input (the previous layer's output) and, inside a residual
    block, the block's input, kept live for the skip connection."""
    elems = {s.name: s.out_elems for s in specs}
    steps = []
    for i, s in enumerate(specs):
        live = {s.name: s.out_elems}
        if i:
            live[specs[i - 1].name] = elems[specs[i - 1].name]
        keep = block_input.get(s.name)
        if keep:
            live[keep] = elems[keep]
        steps.append(list(live.items()))
    return steps


def make_resnet50(seed: int = 0) -> Problem:
    """Stem, 16 bottlenecks (1x1, 3x3, 1x1) + 4 downsample convs, fc: 54 layers. Groups: the
    stem, each bottleneck's two inner widths, each stage's residual stream (its 1x1 outputs,
    its downsample, the next blocks' inputs); widths 1/2 and full."""
    specs = [Spec("stem", 9408, 118_013_952, 802_816, 64, None, "stem", lowrank=False)]
    block_input: dict[str, str] = {}
    hw, cin, stream = 56, 64, "stem"
    for stage, (blocks, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512),
                                                strict=True)):
        for b in range(blocks):
            out_hw = hw // 2 if (b == 0 and stage > 0) else hw
            cout, tag, new_stream = width * 4, f"s{stage}b{b}", f"stage{stage}"
            prev_stream = stream
            specs += [
                Spec(f"{tag}a", cin * width, cin * width * hw * hw, width * hw * hw, width,
                     prev_stream, f"{tag}.a"),
                Spec(f"{tag}b", width * width * 9, width * width * 9 * out_hw ** 2,
                     width * out_hw ** 2, width, f"{tag}.a", f"{tag}.b"),
                Spec(f"{tag}c", width * cout, width * cout * out_hw ** 2, cout * out_hw ** 2,
                     cout, f"{tag}.b", new_stream)]
            if b == 0:
                specs.append(Spec(f"{tag}down", cin * cout, cin * cout * out_hw ** 2,
                                  cout * out_hw ** 2, cout, prev_stream, new_stream))
            block_in = specs[-4 if b == 0 else -3].name
            for s in specs[-4 if b == 0 else -3:]:
                block_input[s.name] = _producer(specs, block_in)
            hw, cin, stream = out_hw, cout, new_stream
    specs.append(Spec("fc", 2048 * 1000, 2048 * 1000, 1000, 1000, stream, None))
    return build(specs, _chain_steps(specs, block_input), (0.5, 1.0), seed,
                 {"ram_bytes": 50_000, "flash_bytes": 200_000})


def _producer(specs: list[Spec], name: str) -> str:
    """The layer before `name` (the block's input tensor's owner)."""
    i = [s.name for s in specs].index(name)
    return specs[max(0, i - 1)].name


def make_mobilenetv2(seed: int = 2) -> Problem:
    """Stem, 17 inverted residual blocks (expand 1x1, depthwise 3x3, project 1x1; the first
    without expand), the last 1x1 conv, fc: 53 layers. Groups: each block's expanded width
    (expand output = depthwise in and out = project input) and each stage's stream."""
    cfg = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
           (6, 160, 3, 2), (6, 320, 1, 1))
    specs = [Spec("stem", 864, 864 * 112 * 112, 32 * 112 * 112, 32, None, "stem",
                  lowrank=False)]
    block_input: dict[str, str] = {}
    hw, cin, stream, n = 112, 32, "stem", 0
    for t, c, reps, stride in cfg:
        group = f"stream{c}"
        for r in range(reps):
            out_hw = hw // stride if r == 0 else hw
            hidden, tag = cin * t, f"b{n}"
            in_stream, out_stream = stream, group  # a stage's blocks share its stream
            block = []
            if t != 1:
                block.append(Spec(f"{tag}.expand", cin * hidden, cin * hidden * hw * hw,
                                  hidden * hw * hw, hidden, in_stream, f"{tag}.hidden"))
            dw_in = f"{tag}.hidden" if t != 1 else in_stream
            block.append(Spec(f"{tag}.dw", hidden * 9, hidden * 9 * out_hw ** 2,
                              hidden * out_hw ** 2, hidden, dw_in, dw_in, lowrank=False))
            block.append(Spec(f"{tag}.project", hidden * c, hidden * c * out_hw ** 2,
                              c * out_hw ** 2, c, dw_in, out_stream))
            specs += block
            if r > 0:  # a residual add: the block input stays live
                for s in block:
                    block_input[s.name] = _producer(specs, block[0].name)
            hw, cin, stream, n = out_hw, c, out_stream, n + 1
    specs.append(Spec("last", 320 * 1280, 320 * 1280 * 49, 1280 * 49, 1280, stream, "last"))
    specs.append(Spec("fc", 1280 * 1000, 1280 * 1000, 1000, 1000, "last", None))
    return build(specs, _chain_steps(specs, block_input), (0.5, 1.0), seed,
                 {"ram_bytes": 50_000, "flash_bytes": 200_000})


def _transformer(n_blocks: int, d: int, ff: int, seq: int, embeddings: bool,
                 width_fracs: tuple[float, ...], seed: int, limit_layers: int | None = None
                 ) -> Problem:
    """Encoder blocks of six Linear layers (q, k, v, o, mlp1, mlp2). Groups per block: the
    attention width (q, k, v outputs = o's input: heads) and the MLP width (mlp1 output =
    mlp2 input). The residual stream stays live across each block."""
    specs: list[Spec] = []
    if embeddings:
        specs += [Spec("embed.word", 30522 * d, 0, seq * d, d, gather=True),
                  Spec("embed.pos", 512 * d, 0, seq * d, d, lowrank=False, gather=True)]
    block_input: dict[str, str] = {}
    for b in range(n_blocks):
        attn, mlp = f"blk{b}.attn", f"blk{b}.mlp"
        block = [Spec(f"blk{b}.{k}", d * d, d * d * seq, d * seq, d, None, attn)
                 for k in ("q", "k", "v")]
        block += [Spec(f"blk{b}.o", d * d, d * d * seq, d * seq, d, attn, None),
                  Spec(f"blk{b}.mlp1", d * ff, d * ff * seq, ff * seq, ff, None, mlp),
                  Spec(f"blk{b}.mlp2", ff * d, ff * d * seq, d * seq, d, mlp, None)]
        if specs:
            for s in block:
                block_input[s.name] = specs[-1].name
        specs += block
    specs = specs[:limit_layers]
    return build(specs, _chain_steps(specs, block_input), width_fracs, seed,
                 {"ram_bytes": 1_000_000, "flash_bytes": 2_000_000})


def make_bert24(seed: int = 3) -> Problem:
    """BERT-large shaped: 24 blocks, d 1024, MLP 4096, 128 tokens, its 2 embedding tables:
    146 decision layers; widths 1/2, 3/4, full."""
    return _transformer(24, 1024, 4096, 128, True, (0.5, 0.75, 1.0), seed)


def make_stack500(seed: int = 1) -> Problem:
    """500 Linear layers of 384-wide encoder blocks (84 blocks, the last cut short); widths
    1/2, 3/4, full."""
    return _transformer(84, 384, 1536, 128, False, (0.5, 0.75, 1.0), seed, limit_layers=500)


SYNTHETIC: dict[str, Callable[[], Problem]] = {
    "resnet50": make_resnet50, "mobilenetv2": make_mobilenetv2, "bert24": make_bert24,
    "stack500": make_stack500}

# ---------------------------------------------------------------- budgets

METRICS = ("latency_ms", "flash_bytes", "energy_mj", "ram_bytes")


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
    for metric in METRICS:
        lo, hi = _range(problem, metric)
        limits[metric] = lo + fraction * (hi - lo)
    return problem.with_limits(limits)


def edge_fraction(problem: Problem, options: SolverOptions, steps: int = 14
                  ) -> tuple[float, float, bool]:
    """Bisection on the budget fraction for the feasibility edge (every limit moves together):
    (last infeasible, first feasible, whether every step below was *proven* infeasible). A
    time-out (UNKNOWN) is not a proof: it moves the lower end but clears the flag."""
    lo, hi, proven = -0.01, 0.3, True
    for _ in range(steps):
        mid = (lo + hi) / 2
        r = solve(with_budget(problem, mid), options, explain=False, explain_infeasible=False)
        if r.feasible:
            hi = mid
        else:
            lo, proven = mid, proven and r.status == "INFEASIBLE"
    return lo, hi, proven

# ---------------------------------------------------------------- the plain models


@dataclass(frozen=True)
class Run:
    status: str
    seconds: float
    loss: float | None  # exact accuracy cost of the plan returned
    holds: bool | None  # the plan meets every limit in exact arithmetic (None: no plan)
    gap: float | None = None
    note: str = ""


def _check(problem: Problem, picks: dict[str, int] | None) -> tuple[float | None, bool | None]:
    if picks is None:
        return None, None
    return problem.totals(picks)["acc_loss"], holds(problem, picks)


def plain_cpsat(problem: Problem, options: SolverOptions) -> Run:
    """One CP-SAT model as a user would write it: x per option, exactly one per layer, a width
    per group, the limits on costs rounded up and limits rounded down, min the accuracy cost."""
    start = time.perf_counter()
    m = cp_model.CpModel()
    x = {(ly, i): m.new_bool_var("") for ly in problem.layers
         for i in range(len(problem.choices[ly]))}
    for ly in problem.layers:
        m.add_exactly_one(x[ly, i] for i in range(len(problem.choices[ly])))
    y = {(g, w): m.new_bool_var("") for g, ws in problem.groups.items() for w in ws}
    for g, ws in problem.groups.items():
        m.add_exactly_one(y[g, w] for w in ws)
    for key, (ly, idx) in coupling_links(problem):
        m.add(sum(x[ly, i] for i in idx) == y[key])
    z = {key: m.new_bool_var("") for key in pair_keys(problem)}
    for (a, ia, b, ib), var in z.items():
        m.add(var >= sum(x[a, i] for i in ia) + sum(x[b, j] for j in ib) - 1)
    expr = {metric: sum(scaled_up(c.metric(metric), metric) * x[ly, i] for ly in problem.layers
                        for i, c in enumerate(problem.choices[ly])) for metric in METRICS[:3]}
    for metric, limit in problem.limits.items():
        room = scaled_down(limit, metric) - scaled_up(problem.fixed.get(metric, 0.0), metric)
        if metric != "ram_bytes":
            m.add(expr[metric] <= room)
            continue
        for t, step in enumerate(problem.ram_steps or ((),)):
            coef = step_coefficients(problem, t, step)
            m.add(sum(k * x[key] for key, k in coef.items())
                  + sum(k * z[key] for key, k in pair_coefficients(problem, t))
                  + (expr["flash_bytes"] if problem.weights_in_ram else 0) <= room)
    m.minimize(sum(scaled_up(c.acc_loss, "acc_loss") * x[ly, i] for ly in problem.layers
                   for i, c in enumerate(problem.choices[ly])))
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = options.time_limit_s
    solver.parameters.num_workers = options.workers
    status = solver.solve(m)
    picks = None
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        picks = {ly: next(i for i in range(len(problem.choices[ly])) if solver.value(x[ly, i]))
                 for ly in problem.layers}
    loss, ok = _check(problem, picks)
    gap = None
    if picks is not None:
        value = solver.objective_value
        gap = 0.0 if status == cp_model.OPTIMAL else (value - solver.best_objective_bound) / max(
            value, 1e-12)
    return Run(solver.status_name(status), time.perf_counter() - start, loss, ok, gap)


def plain_cbc(problem: Problem, options: SolverOptions) -> Run:
    """The same model in PuLP on the float costs, solved by CBC."""
    start = time.perf_counter()
    m = pulp.LpProblem("plain", pulp.LpMinimize)
    x = {(ly, i): pulp.LpVariable(f"x{n}_{i}", cat=pulp.LpBinary)
         for n, ly in enumerate(problem.layers) for i in range(len(problem.choices[ly]))}
    for ly in problem.layers:
        m += pulp.lpSum(x[ly, i] for i in range(len(problem.choices[ly]))) == 1
    gi = {g: n for n, g in enumerate(problem.groups)}
    y = {(g, w): pulp.LpVariable(f"y{gi[g]}_{w}", cat=pulp.LpBinary)
         for g, ws in problem.groups.items() for w in ws}
    for g, ws in problem.groups.items():
        m += pulp.lpSum(y[g, w] for w in ws) == 1
    for key, (ly, idx) in coupling_links(problem):
        m += pulp.lpSum(x[ly, i] for i in idx) == y[key]
    z = {key: pulp.LpVariable(f"z{n}", cat=pulp.LpBinary)
         for n, key in enumerate(pair_keys(problem))}
    for (a, ia, b, ib), var in z.items():
        m += var >= pulp.lpSum(x[a, i] for i in ia) + pulp.lpSum(x[b, j] for j in ib) - 1
    expr = {metric: pulp.lpSum(c.metric(metric) * x[ly, i] for ly in problem.layers
                               for i, c in enumerate(problem.choices[ly]))
            for metric in METRICS[:3]}
    for metric, limit in problem.limits.items():
        room = limit - problem.fixed.get(metric, 0.0)
        if metric != "ram_bytes":
            m += expr[metric] <= room
            continue
        for t, step in enumerate(problem.ram_steps or ((),)):
            live = [n * c.entry_bytes(o) * x[owner_layer(o), i] for o, n in step
                    for i, c in enumerate(problem.choices[owner_layer(o)])]
            extra = [b * x[ly, i] for ly, i, b in problem.extra_terms(t)]
            pairs = [b * z[key] for key, b in problem.pair_terms(t)]
            weights = [expr["flash_bytes"]] if problem.weights_in_ram else []
            m += pulp.lpSum(live + extra + pairs + weights) <= room
    m += pulp.lpSum(c.acc_loss * x[ly, i] for ly in problem.layers
                    for i, c in enumerate(problem.choices[ly]))
    m.solve(pulp.PULP_CBC_CMD(msg=False, timeLimit=options.time_limit_s))
    status = {pulp.LpSolutionOptimal: "OPTIMAL", pulp.LpSolutionIntegerFeasible: "FEASIBLE"
              }.get(m.sol_status, "INFEASIBLE" if m.status == pulp.LpStatusInfeasible
                    else "UNKNOWN")
    picks = None
    if status in ("OPTIMAL", "FEASIBLE"):
        picks = {ly: max(range(len(problem.choices[ly])), key=lambda i: x[ly, i].value() or 0)
                 for ly in problem.layers}
    loss, ok = _check(problem, picks)
    return Run(status, time.perf_counter() - start, loss, ok, 0.0 if status == "OPTIMAL"
               else None)


def edgefit(problem: Problem, options: SolverOptions, backend: str) -> Run:
    start = time.perf_counter()
    r = solve(problem, options, backend=backend, explain=False, explain_infeasible=False)
    took = time.perf_counter() - start
    picks = None
    if r.feasible:
        picks = {ly: [c.option for c in problem.choices[ly]].index(o) for ly, o in r.picks.items()}
    loss, ok = _check(problem, picks)
    return Run(r.status, took, loss, ok, r.gap, r.note)

# ---------------------------------------------------------------- the report


def _fmt_loss(a: float | None, b: float | None) -> str:
    """edgefit's accuracy cost against the plain model's."""
    if a is None or b is None:
        return "-"
    if abs(a - b) <= 1e-9 * max(1.0, abs(b)):
        return "same"
    return f"{a / b:.4g}x" if b > 0 else f"{a:.4g} vs 0"


def _gap(r: Run) -> str:
    return "-" if r.gap is None else f"{100 * r.gap:.3g} %"


@dataclass(frozen=True)
class Result:
    instance: str
    budget: str
    feasible: bool | None  # the budget's truth as the bisection proved it (None: unproven)
    backend: str
    mine: Run
    plain: Run


def table(results: list[Result], per_layer: dict[str, tuple[int, int, int]]) -> list[str]:
    rows = ["| instance | layers | options/layer (after presolve) | budget | backend | edgefit "
            "status | gap | time (s) | plain status | plain time (s) | time ratio "
            "edgefit/plain | accuracy cost edgefit/plain | plans hold (edgefit, plain) | note |",
            "|" + "---|" * 14]
    for r in results:
        layers, opts, after = per_layer[r.instance]
        mine, plain = r.mine, r.plain
        hold = ", ".join("-" if h is None else ("yes" if h else "NO")
                         for h in (mine.holds, plain.holds))
        note = mine.note.split(";")[0][:90] if mine.note else ""
        rows.append(f"| {r.instance} | {layers} | {opts} ({after}) | {r.budget} | {r.backend} | "
                    f"{mine.status} | {_gap(mine)} | {mine.seconds:.2f} | {plain.status} | "
                    f"{plain.seconds:.2f} | {mine.seconds / max(plain.seconds, 1e-9):.2f} | "
                    f"{_fmt_loss(mine.loss, plain.loss)} | {hold} | {note} |")
    return rows


def ratios(results: list[Result]) -> list[str]:
    """Median time ratio edgefit / plain per instance and backend, and how often each side's
    plan was the more accurate."""
    lines = []
    for inst in dict.fromkeys(r.instance for r in results):
        for backend in dict.fromkeys(r.backend for r in results):
            rows = [r for r in results if r.instance == inst and r.backend == backend]
            if not rows:
                continue
            med = statistics.median(r.mine.seconds / max(r.plain.seconds, 1e-9) for r in rows)
            better = sum(r.mine.loss is not None and (r.plain.loss is None or r.mine.loss
                                                       < r.plain.loss - 1e-9) for r in rows)
            worse = sum(r.plain.loss is not None and (r.mine.loss is None or r.plain.loss
                                                       < r.mine.loss - 1e-9) for r in rows)
            lines.append(f"- {inst}, {backend}: median time ratio edgefit/plain {med:.2f} "
                         f"over {len(rows)} budgets; edgefit's plan more accurate in {better}, "
                         f"the plain model's in {worse}; claims the other side's plan "
                         f"contradicts: edgefit {sum(_contradicted(r.mine, r.plain) for r in rows)}"
                         f", plain {sum(_contradicted(r.plain, r.mine) for r in rows)}")
    return lines


def _contradicted(claim: Run, other: Run) -> bool:
    """`claim` says INFEASIBLE, or OPTIMAL, yet `other` holds a plan that meets every limit
    exactly and is more accurate (or, against INFEASIBLE, any such plan)."""
    if not other.holds or other.loss is None:
        return False
    if claim.status == "INFEASIBLE":
        return True
    return claim.status == "OPTIMAL" and claim.loss is not None and (
        other.loss < claim.loss - 1e-9 * max(1.0, abs(claim.loss)))


def goals(results: list[Result]) -> list[str]:
    """Issue #18's goals, counted from this run's edgefit CP-SAT rows."""
    rows = [r for r in results if r.backend == "cpsat"]

    def count(label: str, subset: list[Result], ok: Callable[[Run], bool]) -> str:
        return f"- {label}: {sum(ok(r.mine) for r in subset)} of {len(subset)} runs"

    def feasible(prefix: tuple[str, ...]) -> list[Result]:
        return [r for r in rows if r.instance.startswith(prefix) and r.feasible]

    return [
        count("ResNet-50 / MobileNetV2 proven optimal in < 1 s (feasible budgets)",
              feasible(("resnet", "mobilenet")),
              lambda m: m.status == "OPTIMAL" and m.seconds < 1.0),
        count("BERT-24 within 0.5 % in < 2 s (feasible budgets)", feasible(("bert",)),
              lambda m: m.gap is not None and m.gap <= 0.005 and m.seconds < 2.0),
        count("500 layers within 0.5 % in < 5 s (feasible budgets)", feasible(("stack",)),
              lambda m: m.gap is not None and m.gap <= 0.005 and m.seconds < 5.0),
        count("infeasible budgets proven INFEASIBLE in < 5 s",
              [r for r in rows if r.feasible is False],
              lambda m: m.status == "INFEASIBLE" and m.seconds < 5.0)]


BUILTIN = (("lenet300-mnist", "arduino-nano-33-ble"), ("lenet5-mnist", "arduino-nano-33-ble"),
           ("fashion-cnn", "raspberry-pi-4"), ("lenet5-mnist", "jetson-orin-nano"),
           ("minilm-l6", "raspberry-pi-4"))
"""Built-in models on catalog targets: the real problems `plan` builds (measured accuracy
estimates, the device's options incl. channel widths, low rank, sharing, N:M where offered)."""


def builtin_problems(only: set[str] | None = None) -> list[tuple[str, Problem]]:
    from device_specs.budget import Budget, Limits
    from edgefit.planning import make_plan

    out = []
    for model, target in BUILTIN:
        if only is not None and model not in only:
            continue
        limits = Limits.model_validate({"latency": "1000s"})
        _, ctx = make_plan(Budget(target=target, limits=limits, model=model), "bench")
        out.append((f"{model} on {target}/{ctx.profile}", ctx.problem))
    return out


NOTES = [
    "What edgefit's solve does (planner/cpsat.py, planner/exact.py): presolve drops dominated "
    "options; latency and energy are scaled to integers in units fine for the instance (its "
    "largest total about 1e9 units; CBC 1e6), bytes stay bytes; the LP relaxation (GLOP) on "
    "the costs rounded down and limits up (a relaxation of the measured costs) proves "
    "infeasibility or gives a bound and an LP-and-fix plan; "
    "CP-SAT searches the same relaxation, warm-started from the best plan held; a plan that "
    "breaks a limit in exact arithmetic (by the rounding) is cut off and the search repeated, "
    "then a search on costs rounded up, with the claim downgraded; the answer is the best plan "
    "held, checked exactly; a tie-break phase (latency + flash among equally accurate plans) "
    "gets 10 % of the time limit.",
    "",
    "Columns: time = one solve call without explanations, model building included, for "
    "edgefit and for the plain model alike (plain: one phase, no presolve, no LP, no hint; "
    "plain CP-SAT on costs rounded up and limits down, plain CBC on the float costs); gap = "
    "edgefit's reported relative gap; accuracy cost edgefit/plain = the ratio of the two "
    "plans' exact accuracy costs (same: equal); plans hold = each plan re-checked against "
    "every limit in exact arithmetic; note = edgefit's note, cut (why a claim is "
    "downgraded, or an unfinished tie-break).",
]


def header(args: argparse.Namespace, load_start: float, workers: int) -> list[str]:
    synthetic = args.instances == "synthetic" or set(args.instances.split(",")) <= set(SYNTHETIC)
    return [
        "# Solver at scale", "",
        f"Made by `.venv/bin/python benchmarks/solver_scale.py --time-limit {args.time_limit:g}"
        f" --instances {args.instances} --out {args.out}` on this machine ({os.cpu_count()} "
        f"cores; 1-minute load average {load_start:.2f} at the start, {os.getloadavg()[0]:.2f} "
        "at the end: above about 1 another job shared them; times are noisy, compare rows of "
        f"one run, not runs), CP-SAT with {workers} workers (the cores available), edgefit and "
        "the plain models alike. "
        + ("Instances generated from real networks' shapes with the full technique product "
           "(see the script's docstring and make_*)." if synthetic else
           "The built-in models' real problems (the options `plan` offers on each target, "
           "options/layer is the mean; measured accuracy estimates), every limit set at the "
           "given fraction of its own range."), ""]


def instances(spec: str) -> list[tuple[str, Problem]]:
    if spec == "synthetic":
        return [(name, make()) for name, make in SYNTHETIC.items()]
    if spec == "builtin":
        return builtin_problems(None)
    names = spec.split(",")
    if set(names) <= set(SYNTHETIC):
        return [(name, SYNTHETIC[name]()) for name in names]
    return builtin_problems(set(names))


def run_instance(name: str, problem: Problem, options: SolverOptions, backends: list[str]
                 ) -> list[Result]:
    start = time.perf_counter()
    below, edge, proven = edge_fraction(problem, options)
    print(f"{name}: edge bisection {time.perf_counter() - start:.1f} s, below {below:.6f} "
          f"{'proven' if proven else 'NOT proven'} infeasible", flush=True)
    budgets = {"loose": (0.8, True), "medium": (0.5, True), "tight": (0.2, True),
               f"just feasible ({edge:.6f})": (edge, True),
               f"just infeasible ({below:.6f})" if proven
               else f"edge, unproven ({below:.6f})": (below, False if proven else None)}
    plain = {"cpsat": plain_cpsat, "cbc": plain_cbc}
    out = []
    for label, (fraction, feasible) in budgets.items():
        inst = with_budget(problem, fraction)
        for backend in backends:
            out.append(Result(name, label, feasible, backend, edgefit(inst, options, backend),
                              plain[backend](inst, options)))
            r = out[-1]
            print(f"  {label} {backend}: edgefit {r.mine.status} {r.mine.seconds:.2f} s "
                  f"loss {r.mine.loss}, plain {r.plain.status} {r.plain.seconds:.2f} s "
                  f"loss {r.plain.loss}", flush=True)
    return out


# ---------------------------------------------------------------- build time (issue #18 item 3)

_IN_SOLVERS = [0.0]  # CPU-s spent inside CP-SAT's and GLOP's own solve calls


def _counted(solve_fn: Callable[..., object]) -> Callable[..., object]:
    def wrapper(*args: object, **kwargs: object) -> object:
        start = time.process_time()
        try:
            return solve_fn(*args, **kwargs)
        finally:
            _IN_SOLVERS[0] += time.process_time() - start
    return wrapper


def _count_solver_time() -> None:
    """Wrap the solver calls a solve makes (CP-SAT through planner.cpsat.solve_cpsat; GLOP
    through pywraplp or model_builder, whichever this planner uses): what is left of a solve
    call's CPU time is edgefit's own Python, model building first of all. CBC runs in a child
    process, so none of its search is in this process's CPU time."""
    import importlib

    import planner.cpsat

    planner.cpsat.solve_cpsat = _counted(planner.cpsat.solve_cpsat)  # type: ignore[assignment]
    for module, cls, name in (("ortools.linear_solver.pywraplp", "Solver", "Solve"), (
            "ortools.linear_solver.python.model_builder_helper", "ModelSolverHelper", "solve")):
        owner = getattr(importlib.import_module(module), cls)
        setattr(owner, name, _counted(getattr(owner, name)))


def lp_fractional(problem: Problem) -> str:
    """How many layers (and coupled groups) the LP relaxation leaves fractional: no option (no
    width) at 1 - 1e-6 or more (planner.lp's rule for a decided layer)."""
    from planner import lp

    relaxation = lp.relax(problem)
    if relaxation.status != "OPTIMAL":
        return f"LP {relaxation.status}"
    x = relaxation.x
    split = [ly for ly in problem.layers
             if max(x[ly, i] for i in range(len(problem.choices[ly]))) < 1 - 1e-6]
    groups = 0
    for g, members in problem.members().items():
        mass: dict[int, float] = {}
        for i, c in enumerate(problem.choices[members[0]]):
            w = c.width(g) or 0
            mass[w] = mass.get(w, 0.0) + x[members[0], i]
        groups += max(mass.values()) < 1 - 1e-6
    return (f"LP relaxation: {len(split)} of {len(problem.layers)} layers fractional, {groups}"
            f" of {len(problem.members())} coupled groups")


def lp_gap(names: list[str], fractions: list[float], options: SolverOptions) -> list[str]:
    """Item 4's measurement: per instance and budget (presolved), the LP relaxation's bound on
    the accuracy cost next to the best plan edgefit finds (CP-SAT and CBC each run; a proven
    optimum first, else the more accurate plan), the relative gap between them, how many layers
    and coupled groups the LP leaves fractional; and the LP bound again with every coupled
    group held at the best plan's width (what perfect width information, the most a
    group-level formulation can add, gives the LP). When that bound hardly moves, the gap is
    not where widths are coupled."""
    import dataclasses

    from planner import cbc, cpsat, lp
    from planner.formulation import RESOLUTION

    lines = []
    for name in names:
        problem = SYNTHETIC[name]()
        for fraction in fractions:
            reduced, _ = remove_dominated(with_budget(problem, fraction))
            relaxation = lp.relax(reduced)
            # the better of the two backends' plans (a proven optimum when either proves one)
            r = min((module.solve(reduced, options, explain_infeasible=False)
                     for module in (cpsat, cbc)),
                    key=lambda x: (x.status != "OPTIMAL", x.totals.get("acc_loss", math.inf)))
            best = r.totals.get("acc_loss")
            if relaxation.value is None or best is None:
                lines.append(f"{name} {fraction:g}: LP {relaxation.status}, {r.backend} "
                             f"{r.status}")
            else:
                bound = relaxation.value * RESOLUTION["acc_loss"]
                gap = (best - bound) / best if best > 0 else 0.0
                widths: dict[str, int | None] = {}
                for g, members in reduced.members().items():
                    chosen = next(c for c in reduced.choices[members[0]]
                                  if c.option == r.picks[members[0]])
                    widths[g] = chosen.width(g)
                held = dataclasses.replace(reduced, choices={
                    ly: tuple(c for c in cs if all(c.width(g) == w for g, w in widths.items()
                                                   if c.width(g) is not None))
                    for ly, cs in reduced.choices.items()})
                fixed = lp.relax(held).value
                fixed_text = ("LP infeasible" if fixed is None else
                              f"{fixed * RESOLUTION['acc_loss']:.6g} (gap "
                              f"{100 * (best - fixed * RESOLUTION['acc_loss']) / best:.3f} %)")
                lines.append(f"{name} {fraction:g}: LP bound {bound:.6g}, {r.backend} {r.status} "
                             f"{best:.6g} ({r.wall_time_s:.1f} s): LP gap {100 * gap:.3f} %; "
                             f"LP bound with the plan's group widths held {fixed_text}; "
                             f"{lp_fractional(reduced)}")
            print(lines[-1], flush=True)
    return lines


def build_time(names: list[str], fractions: list[float], options: SolverOptions,
               backends: list[str]) -> list[str]:
    """Per instance, budget and backend: the CPU-s of presolve and of one solve call outside
    the solvers' own calls (model building, LP assembly, checks), and inside them."""
    import planner
    from planner import cbc, cpsat

    _count_solver_time()
    warm_up = with_budget(_transformer(1, 64, 128, 8, False, (0.5, 1.0), 0), 0.5)
    for backend in backends:  # imports (scipy, pulp) and first calls outside the timing
        (cpsat if backend == "cpsat" else cbc).solve(
            warm_up, SolverOptions(time_limit_s=1), explain_infeasible=False)
    lines = [f"planner from {Path(planner.__file__).parent}"]
    print(lines[0], flush=True)
    for name in names:
        problem = SYNTHETIC[name]()
        for fraction in fractions:
            inst = with_budget(problem, fraction)
            start = time.process_time()
            reduced, _ = remove_dominated(inst)
            presolve = time.process_time() - start
            for backend in backends:
                module = cpsat if backend == "cpsat" else cbc
                _IN_SOLVERS[0] = 0.0
                start, wall = time.process_time(), time.perf_counter()
                r = module.solve(reduced, options, explain_infeasible=False)
                total = time.process_time() - start
                lines.append(
                    f"{name} {fraction:g} {backend}: presolve {presolve:.2f} CPU-s; solve call "
                    f"{total:.2f} CPU-s, of which outside the solvers {total - _IN_SOLVERS[0]:.2f}"
                    f", in CP-SAT/GLOP {_IN_SOLVERS[0]:.2f}; wall {time.perf_counter() - wall:.2f}"
                    f" s; {r.status}, accuracy cost {r.totals.get('acc_loss')}")
                print(lines[-1], flush=True)
            lines.append(f"{name} {fraction:g}: {lp_fractional(reduced)}")
            print(lines[-1], flush=True)
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--time-limit", type=float, default=10.0)
    ap.add_argument("--backends", default="cpsat,cbc")
    ap.add_argument("--instances", default="synthetic",
                    help="synthetic (the four generated instances), a comma list of them "
                    f"({', '.join(SYNTHETIC)}), builtin (the built-in models on catalog "
                    "targets), or a comma list of built-in model names")
    ap.add_argument("--out", default="docs/bench-solver-scale.md")
    ap.add_argument("--build-time", default="",
                    help="only time model building: a comma list of fractions of the budget "
                    "range (e.g. 0.5,0.2) on --instances (synthetic names); prints, writes "
                    "nothing")
    ap.add_argument("--baseline", default="",
                    help="with --build-time: first run the same timing with the planner "
                    "package of this directory (e.g. an older checkout), in a subprocess")
    ap.add_argument("--lp-gap", default="",
                    help="only item 4's measurement: a comma list of fractions of the budget "
                    "range on --instances (synthetic names): LP bound vs edgefit's best plan and "
                    "the LP's fractional layers; prints, writes nothing")
    args = ap.parse_args(argv)
    if args.lp_gap:
        names = list(SYNTHETIC) if args.instances == "synthetic" else args.instances.split(",")
        lp_gap(names, [float(f) for f in args.lp_gap.split(",")],
               SolverOptions(time_limit_s=args.time_limit))
        return 0
    if args.build_time:
        return _build_time_main(args)
    load_start = os.getloadavg()[0]
    options = SolverOptions(time_limit_s=args.time_limit)
    results: list[Result] = []
    per_layer: dict[str, tuple[int, int, int]] = {}
    for name, problem in instances(args.instances):
        n = len(problem.layers)
        reduced, _ = remove_dominated(problem)
        per_layer[name] = (n, round(sum(map(len, problem.choices.values())) / n),
                           round(sum(map(len, reduced.choices.values())) / n))
        print(f"{name}: {n} layers, {per_layer[name][1]} options/layer, "
              f"{per_layer[name][2]} after presolve, {len(problem.groups)} groups", flush=True)
        results += run_instance(name, problem, options, args.backends.split(","))
    summary = goals(results)
    text = "\n".join([
        *header(args, load_start, options.workers),
        "Goals (issue #18, reported, not asserted), edgefit with CP-SAT, as this run met them:",
        "", *summary, "", "Side by side with the plain models (same data, same run):", "",
        *ratios(results), "", *NOTES, "", *table(results, per_layer), ""])
    print(text)
    from edgefit_common.fsutil import atomic_write_text

    atomic_write_text(Path(__file__).parents[1] / args.out, text)
    return 0


def _build_time_main(args: argparse.Namespace) -> int:
    names = list(SYNTHETIC) if args.instances == "synthetic" else args.instances.split(",")
    if args.baseline:
        import subprocess

        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(Path(args.baseline).resolve()), str(Path(__file__).parents[1])])}
        subprocess.run([sys.executable, __file__, *_without_baseline(sys.argv[1:])],
                       env=env, check=True)
    build_time(names, [float(f) for f in args.build_time.split(",")],
               SolverOptions(time_limit_s=args.time_limit), args.backends.split(","))
    return 0


def _without_baseline(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--baseline":
            skip = True
        elif not a.startswith("--baseline="):
            out.append(a)
    return out


if __name__ == "__main__":
    sys.exit(main())
