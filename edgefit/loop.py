"""The closed loop: solve -> apply (prune, fine-tune, quantise) -> measure -> learn -> re-solve.

Accuracy is a hard limit here (`--max-accuracy-drop`), measured after apply, never just
predicted. The loop walks the planner's own Pareto front of the objective metric (latency by
default) against predicted accuracy cost:

1. round 1 applies the most accurate plan within the limits (the ordinary solve);
2. each measured round is a point (predicted accuracy cost -> measured drop, predicted cost ->
   measured cost). The ratio measured drop / predicted cost at the nearest measured point
   recalibrates the accuracy estimate; a measured cost above its prediction tightens that limit;
3. the next round takes the cheapest unmeasured front plan between the worst failing and the
   best passing plan that the recalibrated estimate says will pass; it stops when no such plan
   is left (converged) or after N rounds.

If even the most accurate plan within the limits misses the accuracy limit, the answer is the
best plan found, what it misses by, and - when a round is left - the cheapest plan beyond the
limits that does meet it (what the limit would have to become).

With ``LoopSettings.candidates`` = k > 1 a step applies k plans at once (rounds numbered on,
each a ``Round`` with its ``batch``): the first step the ordinary solve and the cheapest plan
within the limits (both ends of the front), later steps the k cheapest plans the rule above
would take one after the other. `evaluate_many` applies a step's plans together: training stays
on the driver, the host timings go through the execution seam (:func:`apply_batch_evaluator`).

The logic is torch-free: `evaluate(plan, round)` does the applying, so tests can drive it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgefit_common.errors import PlanError
from edgefit_common.fsutil import atomic_write_text
from planner.pareto import FrontPoint, sweep
from planner.plan import Plan
from planner.problem import Problem
from planner.problem import crossed as problem_crossed
from planner.resolve import LIMIT_METRIC, fp32_latency_ms, problem_from_plan, with_result
from planner.result import BINDING_FRACTION, SolveResult, SolverOptions
from workloads.refs import ModelSource

OBJECTIVES = tuple(LIMIT_METRIC)  # latency, flash, ram, energy
LOOP_REPORT_VERSION = 3  # 2: rounds say which options were dropped, and why; 3: their batch
# a layer whose measured latency exceeds its prediction by both is dropped from later rounds
# (the profiles are per-layer medians; 1.5x and 2 us are well above their run-to-run noise)
MISS_RATIO = 1.5
MISS_ABS_MS = 0.002


@dataclass(frozen=True)
class LoopSettings:
    rounds: int = 4
    objective: str = "latency"  # the cost minimised under the accuracy limit
    front_points: int = 16  # limit values swept to build the front (distinct plans are fewer)
    safety: float = 0.1  # aim the predicted drop this fraction below the limit
    time_limit_s: float = 5.0  # per solve of the sweep
    candidates: int = 1  # plans applied together in one step (their host timing fanned out)

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise PlanError(f"--loop {self.rounds}: the number of rounds must be at least 1")
        if self.candidates < 1:
            raise PlanError(f"--loop-candidates {self.candidates}: the plans applied per step "
                            "are at least 1")
        if self.objective not in OBJECTIVES:
            raise PlanError(f"--objective {self.objective!r}: choose one of "
                            f"{', '.join(OBJECTIVES)}")


@dataclass(frozen=True)
class Measurement:
    """What one apply measured. `costs` holds only what was really measured for the target,
    in solver units (flash_bytes always; latency_ms only when the target is this machine)."""

    drop_pp: float
    accuracy: float
    fp32_accuracy: float
    costs: dict[str, float] = field(default_factory=dict)
    checks_ok: bool = True
    report: str | None = None
    # each layer's measured latency in the applied model (ms; the host target only), and the
    # uncompressed model's, measured in the same run (how loaded the machine was)
    layer_ms: dict[str, float] = field(default_factory=dict)
    fp32_latency_ms: float | None = None


@dataclass
class Round:
    number: int
    why: str
    options: dict[str, str]
    predicted: dict[str, float]
    within_limits: bool  # as predicted, against the user's limits
    measured: Measurement | None = None
    verdict: str = ""  # pass / fail: what failed
    learned: str = ""
    dropped: list[str] = field(default_factory=list)  # "layer:option" measured over prediction
    batch: int | None = None  # the step it was applied in, when a step applies several plans


@dataclass
class LoopResult:
    status: str  # met | not met
    summary: str
    best_round: int | None
    best_plan: Plan | None
    rounds: list[Round]
    objective: str
    accuracy_limit_pp: float
    front_size: int

    def to_json(self) -> dict[str, Any]:
        return {
            "loop_report_version": LOOP_REPORT_VERSION,
            "status": self.status,
            "summary": self.summary,
            "objective": self.objective,
            "accuracy_limit_pp": self.accuracy_limit_pp,
            "front_plans": self.front_size,
            "best_round": self.best_round,
            "rounds": [asdict(r) for r in self.rounds],
            "how": "each round's drop is measured by `edgefit apply` on the held-out split; "
                   "the next round is chosen from the planner's Pareto front with the "
                   "accuracy estimate recalibrated on the measured rounds",
        }

    def save(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(self.to_json(), indent=2) + "\n")


Evaluate = Callable[[Plan, int], Measurement]
EvaluateMany = Callable[[list[tuple[Plan, int]]], list[Measurement]]
"""Apply several (plan, round number) at once; their measurements in the same order."""


@dataclass(frozen=True)
class _Candidate:
    picks: dict[str, str]
    totals: dict[str, float]
    within_limits: bool


def closed_loop(plan: Plan, evaluate: Evaluate, settings: LoopSettings | None = None,
                evaluate_many: EvaluateMany | None = None) -> LoopResult:
    """Run the loop from a solved plan (it carries every alternative and the limits).
    ``evaluate_many`` applies each step's plans together when ``settings.candidates`` > 1
    (a step may hold fewer plans, when the rule finds fewer); without it, or with one
    candidate a step, they are applied one by one with ``evaluate``: the same rounds either
    way."""
    settings = settings or LoopSettings()
    limit_pp = plan.limits.accuracy_drop
    if limit_pp is None:
        raise PlanError("the closed loop needs an accuracy limit (--max-accuracy-drop, e.g. 1pp)")
    if not plan.feasible:
        raise PlanError(f"the plan's status is {plan.status}: no plan meets the cost limits, "
                        "so there is nothing to apply")
    metric = LIMIT_METRIC[settings.objective]
    problem = problem_from_plan(plan)
    front = _front(plan, problem, metric, settings)
    state = _State(problem, limit_pp, settings, _plain_fp32(plan), fp32_latency_ms(plan))
    number, batch = 0, 0
    while number < settings.rounds:
        k = min(settings.candidates, settings.rounds - number)
        picks = _picks(front, plan, state, metric, k, first=number == 0)
        if not picks:
            break
        batch += 1
        plans = [_plan_for(plan, problem, cand) for cand, _ in picks]
        numbers = list(range(number + 1, number + len(picks) + 1))
        if evaluate_many is not None and settings.candidates > 1:  # even a step of one left
            measured = evaluate_many(list(zip(plans, numbers, strict=True)))
        else:
            measured = [evaluate(p, n) for p, n in zip(plans, numbers, strict=True)]
        dropped = False
        for (cand, why), candidate_plan, n, m in zip(picks, plans, numbers, measured,
                                                     strict=True):
            rnd = Round(n, why, dict(cand.picks), dict(cand.totals), cand.within_limits,
                        batch=batch if settings.candidates > 1 else None)
            rnd.measured = m
            state.record(cand, rnd)
            state.plans[n] = candidate_plan
            dropped = dropped or bool(rnd.dropped)
        number += len(picks)
        if dropped:  # the front again, without the options whose measurements missed
            front = [c for c in _front(plan, state.remaining(), metric, settings)
                     if not state.uses_dropped(c)]
    return state.result(settings.objective, len(front))


def _picks(front: list[_Candidate], plan: Plan, state: _State, metric: str, k: int,
           first: bool) -> list[tuple[_Candidate, str]]:
    """The plans of one step: the first step the ordinary solve (and, for k > 1, the cheapest
    plan within the limits, then plans spread between them); later steps what the rule would
    pick k times in a row, each pick counted as taken."""
    picks: list[tuple[_Candidate, str]] = []
    if first:
        picks.append(_first(front, plan))
        within = [c for c in front if c.within_limits and c.picks != plan.options()]
        for i in _spread(len(within), k - 1):
            picks.append((within[i], "the cheapest plan within the limits" if i == 0 else
                          "a plan between the cheapest and the most accurate within the "
                          "limits (several applied at once)"))
        return picks
    while len(picks) < k:
        pick = state.next(front, metric, taken=[c.picks for c, _ in picks])
        if pick is None:
            break
        picks.append(pick)
    return picks


def _spread(n: int, k: int) -> list[int]:
    """k distinct indices of 0..n-1 from the first, evenly spread (fewer when n < k)."""
    if n <= 0 or k <= 0:
        return []
    return sorted({round(i * (n - 1) / max(1, k)) for i in range(min(k, n))})


def _plain_fp32(plan: Plan) -> set[tuple[str, str]]:
    """(layer, option) of each layer's uncompressed option: the baseline is never dropped."""
    full = {g.name: g.channels for g in plan.channel_groups}
    return {(name, a.option) for name, lp in plan.layers.items() for a in lp.alternatives
            if not a.techniques and all(full.get(g) == w for g, w in a.widths.items())}


def _front(plan: Plan, problem: Problem, metric: str, settings: LoopSettings
           ) -> list[_Candidate]:
    """Distinct plans from cheapest to most accurate in `metric`, including plans beyond the
    user's limit on it (they answer "what would the limit have to be")."""
    options = SolverOptions(time_limit_s=settings.time_limit_s)
    points: list[FrontPoint] = sweep(problem, [metric], settings.front_points, options)
    seen: dict[tuple[tuple[str, str], ...], _Candidate] = {}
    for p in points:
        key = tuple(sorted(p.picks.items()))
        seen.setdefault(key, _Candidate(dict(p.picks), dict(p.totals),
                                        problem.feasible(p.totals)))
    own = _Candidate(plan.options(), _totals(plan), True)
    seen.setdefault(tuple(sorted(own.picks.items())), own)
    return sorted(seen.values(), key=lambda c: (c.totals[metric], c.totals["acc_loss"]))


def _totals(plan: Plan) -> dict[str, float]:
    assert plan.totals is not None
    return {k: float(v) for k, v in plan.totals.model_dump().items() if v is not None}


def _first(front: list[_Candidate], plan: Plan) -> tuple[_Candidate, str]:
    own = next(c for c in front if c.picks == plan.options())
    return own, "the most accurate plan within the limits (the ordinary solve)"


class _State:
    """Measured rounds and what was learned from them."""

    def __init__(self, problem: Problem, limit_pp: float, settings: LoopSettings,
                 baseline: set[tuple[str, str]] | None = None,
                 fp32_predicted_ms: float | None = None) -> None:
        self.problem = problem
        self.baseline = baseline or set()
        self.fp32_predicted_ms = fp32_predicted_ms
        self.dropped: set[tuple[str, str]] = set()
        self.limit_pp = limit_pp
        self.settings = settings
        self.rounds: list[Round] = []
        self.measured: list[tuple[_Candidate, Round]] = []
        self.cost_scale: dict[str, float] = {}  # metric -> measured / predicted (worst seen)
        self.plans: dict[int, Plan] = {}

    # --- learning from one round
    def record(self, cand: _Candidate, rnd: Round) -> None:
        m = rnd.measured
        assert m is not None
        failures = []
        if m.drop_pp > self.limit_pp + 1e-9:
            failures.append(f"accuracy drop {m.drop_pp:.2f} pp > {self.limit_pp:g} pp")
        learned = self._drop_missed(cand, rnd)
        for metric, value in m.costs.items():
            predicted = cand.totals.get(metric, 0.0)
            if metric == "latency_ms" and rnd.dropped:
                pass  # the miss is the dropped options': the others keep their predictions
            elif predicted > 0 and value > predicted * 1.001:
                ratio = value / predicted
                if ratio > self.cost_scale.get(metric, 1.0):
                    self.cost_scale[metric] = ratio
                    learned.append(f"{metric} measured {ratio:.3f}x its prediction: later "
                                   "rounds count it at that ratio")
            limit = self.problem.limits.get(metric)
            if limit is not None and value > limit + 1e-9:
                failures.append(f"{metric} measured {value:.6g} > limit {limit:.6g}")
        if not cand.within_limits:
            failures.append("beyond the cost limits (asked only to say what they would need)")
        if not m.checks_ok:
            failures.append("apply's artifact checks failed (see its report)")
        if cand.totals["acc_loss"] > 0:
            learned.append(f"accuracy: {m.drop_pp:.3g} pp measured for a predicted cost of "
                           f"{cand.totals['acc_loss']:.4g}")
        rnd.verdict = "pass" if not failures else "fail: " + "; ".join(failures)
        rnd.learned = "; ".join(learned)
        self.rounds.append(rnd)
        self.measured.append((cand, rnd))

    def _drop_missed(self, cand: _Candidate, rnd: Round) -> list[str]:
        """Options whose measured layer latency missed its prediction (by MISS_RATIO and
        MISS_ABS_MS) leave the problem: later rounds choose among options whose predictions
        held. The uncompressed option stays (it is the baseline, not a choice to learn)."""
        assert rnd.measured is not None
        learned = []
        load = self._load(rnd.measured)
        crossed = problem_crossed(self.problem.latency_pairs, cand.picks)
        for layer, measured_ms in rnd.measured.layer_ms.items():
            option = cand.picks.get(layer)
            if option is None or (layer, option) in self.baseline:
                continue
            predicted_ms = load * (next(c.latency_ms for c in self.problem.choices[layer]
                                        if c.option == option) + crossed.get(layer, 0.0))
            if (measured_ms > MISS_RATIO * predicted_ms
                    and measured_ms - predicted_ms > load * MISS_ABS_MS):
                self.dropped.add((layer, option))
                rnd.dropped.append(f"{layer}:{option}")
                learned.append(f"{layer} at {option} measured {measured_ms:.4g} ms, predicted "
                               f"{predicted_ms:.4g} ms" + (f" (x{load:.2f}, the fp32 model's "
                                                          "measured / predicted)" if load > 1
                                                          else "")
                               + ": dropped from later rounds")
        return learned

    def _load(self, m: Measurement) -> float:
        """How much slower than its profile the machine ran the fp32 model in the same apply
        (>= 1): a loaded machine slows every layer, which is no option's fault."""
        if m.fp32_latency_ms is None or not self.fp32_predicted_ms:
            return 1.0
        return max(1.0, m.fp32_latency_ms / self.fp32_predicted_ms)

    def remaining(self) -> Problem:
        """The problem without the dropped options (a layer keeps at least its baseline)."""
        import dataclasses

        return dataclasses.replace(self.problem, choices={
            layer: tuple(c for c in row if (layer, c.option) not in self.dropped)
            for layer, row in self.problem.choices.items()})

    def uses_dropped(self, cand: _Candidate) -> bool:
        return any((layer, o) in self.dropped for layer, o in cand.picks.items())

    def _passes(self, rnd: Round) -> bool:
        return rnd.verdict == "pass"

    def _predicted_drop(self, cand: _Candidate) -> float | None:
        """The measured drop interpolated at this plan's predicted accuracy cost: piecewise
        linear through (0, 0) and the measured rounds, made monotone (a larger cost never
        predicts a smaller drop; never below 0); None beyond the largest measured cost (never
        extrapolated: a round there must be measured, not predicted)."""
        points = sorted((c.totals["acc_loss"], r.measured.drop_pp) for c, r in self.measured
                        if r.measured is not None and c.totals["acc_loss"] > 0)
        cost = cand.totals["acc_loss"]
        if cost <= 0:
            return 0.0
        if not points or cost > points[-1][0]:
            return None
        xs = [0.0, *(c for c, _ in points)]
        ys = np.maximum.accumulate([0.0, *(d for _, d in points)])
        return float(np.interp(cost, xs, ys))

    def _fits_costs(self, cand: _Candidate) -> bool:
        return all(cand.totals.get(m, 0.0) * s <= self.problem.limits[m] + 1e-9
                   for m, s in self.cost_scale.items() if m in self.problem.limits)

    # --- choosing the next round
    def next(self, front: list[_Candidate], metric: str,
             taken: list[dict[str, str]] | None = None) -> tuple[_Candidate, str] | None:
        """The next plan to apply; ``taken``: plans already picked for this step (applied
        with it, not measured yet)."""
        taken = taken or []
        done = [c.picks for c, _ in self.measured] + taken
        passing = [c for c, r in self.measured if self._passes(r)]
        acc_fail = [c for c, r in self.measured
                    if r.measured is not None and r.measured.drop_pp > self.limit_pp]
        if not passing:
            return None if taken else self._beyond(front, metric, done)
        ceiling = min(c.totals[metric] for c in passing)
        floor = max((c.totals[metric] for c in acc_fail if c.totals[metric] < ceiling),
                    default=float("-inf"))
        allowed = [c for c in front if c.picks not in done and c.within_limits
                   and floor < c.totals[metric] < ceiling and self._fits_costs(c)]
        if not allowed:
            return None
        target = self.limit_pp * (1.0 - self.settings.safety)
        safe = [c for c in allowed if (d := self._predicted_drop(c)) is not None and d <= target]
        if safe:
            c = safe[0]  # the front is sorted cheapest first
            return c, (f"the cheapest plan predicted to drop <= {target:.3g} pp: "
                       f"{self._predicted_drop(c):.3g} pp, interpolated between the measured "
                       "rounds")
        c = allowed[-1]
        return c, ("none is predicted to pass; the cheapest step below the best passing plan "
                   "is probed")

    def _beyond(self, front: list[_Candidate], metric: str, done: list[dict[str, str]]
                ) -> tuple[_Candidate, str] | None:
        """The most accurate plan within the limits failed: find the cheapest plan beyond
        them that is predicted to pass (what the limit would need)."""
        if any(not c.within_limits for c, _ in self.measured):
            return None  # asked once already
        target = self.limit_pp * (1.0 - self.settings.safety)
        beyond = [c for c in front if not c.within_limits and c.picks not in done]
        safe = [c for c in beyond if (d := self._predicted_drop(c)) is not None and d <= target]
        if not safe:
            return None
        return safe[0], (f"no plan within the limits meets the accuracy limit: the cheapest plan "
                         f"beyond them predicted to (its {metric} says what the limit would "
                         "need)")

    # --- the answer
    def result(self, objective: str, front_size: int) -> LoopResult:
        metric = LIMIT_METRIC[objective]
        passing = [(c, r) for c, r in self.measured if self._passes(r)]
        if passing:
            c, r = min(passing, key=lambda cr: (cr[0].totals[metric], cr[0].totals["acc_loss"]))
            assert r.measured is not None
            summary = (f"met in round {r.number} of {len(self.rounds)}: measured drop "
                       f"{r.measured.drop_pp:.2f} pp <= {self.limit_pp:g} pp at {metric} "
                       + _cost_text(c, r, metric))
            return LoopResult("met", summary, r.number, self.plans[r.number], self.rounds,
                              objective, self.limit_pp, front_size)
        within = [(c, r) for c, r in self.measured if c.within_limits]
        c, r = min(within, key=lambda cr: cr[1].measured.drop_pp if cr[1].measured else 1e9)
        assert r.measured is not None
        if r.measured.drop_pp <= self.limit_pp:  # accuracy met: a measured cost failed
            summary = (f"not met: the most accurate plan within the limits (round {r.number}) "
                       f"meets the accuracy limit ({r.measured.drop_pp:.2f} pp) but fails on "
                       f"what was measured: {r.verdict.removeprefix('fail: ')}")
        else:
            summary = (f"not met: the best plan within the limits (round {r.number}) drops "
                       f"{r.measured.drop_pp:.2f} pp, "
                       f"{r.measured.drop_pp - self.limit_pp:.2f} pp over the "
                       f"{self.limit_pp:g} pp limit")
        over = [(c2, r2) for c2, r2 in self.measured if not c2.within_limits and r2.measured
                and r2.measured.drop_pp <= self.limit_pp]
        if over:
            c2, r2 = over[0]
            assert r2.measured is not None
            limit = self.problem.limits.get(metric)
            summary += (f"; a plan with {metric} {c2.totals[metric]:.6g} (limit "
                        f"{limit if limit is not None else 'none'}) meets it: measured "
                        f"{r2.measured.drop_pp:.2f} pp (round {r2.number})")
        return LoopResult("not met", summary, r.number, self.plans[r.number], self.rounds,
                          objective, self.limit_pp, front_size)


def _cost_text(cand: _Candidate, rnd: Round, metric: str) -> str:
    """The round's ``metric`` as measured when it was (the host target's latency, flash),
    else the prediction, said as such."""
    measured = rnd.measured.costs.get(metric) if rnd.measured is not None else None
    if measured is None:
        return f"{cand.totals[metric]:.6g} (predicted, not measured)"
    return f"{measured:.6g} (measured; predicted {cand.totals[metric]:.6g})"


def _plan_for(plan: Plan, problem: Problem, cand: _Candidate) -> Plan:
    """The full plan.json of one front point (costs per layer, as the planner predicted)."""
    binding = tuple(m for m, lim in problem.limits.items()
                    if cand.totals.get(m, 0.0) >= BINDING_FRACTION * lim)
    result = SolveResult(status="FEASIBLE", picks=dict(cand.picks), totals=dict(cand.totals),
                         binding=binding, backend="cp-sat (closed-loop front)",
                         resolution=dict(plan.solver.resolution),
                         options_considered=plan.solver.options_considered)
    return with_result(plan, problem, result)


def apply_evaluator(out_dir: Path, source: ModelSource | None = None) -> Evaluate:
    """Each round: apply its plan into out_dir/round-N (the plan, the artifacts and the report
    as one set), read back what was measured. `source`: the model the command line named (a
    module:factory), else each plan's own."""

    def run(plan: Plan, number: int) -> Measurement:
        from edgefit.applying import apply_plan

        report = apply_plan(plan, out_dir / f"round-{number}", source)
        return measurement_from_report(plan, report)

    return run


def apply_batch_evaluator(out_dir: Path, source: ModelSource | None = None) -> EvaluateMany:
    """A step's plans applied together, each into out_dir/round-N as :func:`apply_evaluator`
    does: every apply (pruning, fine-tuning, export, accuracy on the held-out split) runs
    here on the driver, one after the other; then the host checks' onnxruntime timings of all
    of them go through the execution seam (edgefit.applying.host_timings: on a cluster, the
    nodes with this host's CPU, one at a time per node; in-process, here), and each report is
    completed with its timing and who measured it."""

    def run(batch: list[tuple[Plan, int]]) -> list[Measurement]:
        from edgefit.applying import apply_pending, host_timings

        pending = [apply_pending(plan, out_dir / f"round-{number}", source)
                   for plan, number in batch]
        timings = host_timings([p.job for p in pending])
        return [measurement_from_report(plan, p.finish(timing, who))
                for (plan, _), p, (timing, who) in zip(batch, pending, timings, strict=True)]

    return run


def measurement_from_report(plan: Plan, report: dict[str, Any]) -> Measurement:
    """Only what was measured for the target: the stored image's bytes always; latency only
    when the target is this machine (elsewhere it stays a prediction)."""
    acc = report["accuracy"]
    # the runtime and unplanned weights as planned, plus the whole deployed file: the stored
    # image (header too), or the model.tflite when the plan counts it and apply wrote it
    tflite = report.get("tflite") or {}
    costs: dict[str, float] = {}
    if "tflite_frame_bytes" not in plan.fixed:
        costs["flash_bytes"] = (plan.fixed.get("flash_bytes", 0.0)
                                - plan.fixed.get("image_overhead_bytes", 0.0)
                                + float(report["artifacts"]["flash_image_bytes"]))
    elif tflite.get("written"):  # the plan counts model.tflite: measured when apply wrote it
        costs["flash_bytes"] = (plan.fixed.get("flash_bytes", 0.0)
                                - plan.fixed["tflite_frame_bytes"] + float(tflite["bytes"]))
    layer_ms: dict[str, float] = {}
    fp32_ms = None
    if plan.target.device == "host":
        row = report["host_check"]["rows"][0]
        if row.get("measured") is not None:
            costs["latency_ms"] = float(row["measured"])
        layer_ms = {r["layer"]: float(r["measured_ms"])
                    for r in report["host_check"].get("layers", [])}
        base = report["host_check"]["rows"][1]
        fp32_ms = float(base["measured"]) if base.get("measured") is not None else None
    return Measurement(drop_pp=float(acc["drop_pp"]), accuracy=float(acc["compressed"]),
                       fp32_accuracy=float(acc["fp32"]), costs=costs,
                       checks_ok=bool(report["verification"]["ok"]),
                       report=report.get("report_path"), layer_ms=layer_ms,
                       fp32_latency_ms=fp32_ms)
