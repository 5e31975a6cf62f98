"""The precision boundaries' latency (cost_models.boundary_latency, issue #22): a Q/DQ node where
an int8 layer and a float one meet, costed as a pair term of both choices; plan.json keeps it,
the totals and the host check's per-layer predictions count it."""

from __future__ import annotations

import dataclasses

import pytest

from cost_models.analytical import build_cost_table
from cost_models.boundary_latency import (
    BOUNDARY_BYTES_PER_ELEMENT,
    boundary_latency_terms,
    boundary_ms,
)
from edgefit.planning import build_problem
from tests.cost_models.test_runtime_memory import (
    HOST_FIELDS,
    INT8_PATHS,
    spec_with,
    weighted_graph,
)


def _table():  # type: ignore[no-untyped-def]
    g = weighted_graph()
    return g, build_cost_table(g, spec_with({**HOST_FIELDS, **INT8_PATHS}))


def _options(table, layer: str, int8: bool) -> set[str]:  # type: ignore[no-untyped-def]
    return {c.option for c in table.options[layer] if c.int8_activations == int8}


def test_each_crossing_is_one_term_of_the_tensor_s_size() -> None:
    """conv -> fc: int8 codes read by a float fc (DequantizeLinear) and a float tensor read by
    an int8 fc (QuantizeLinear), each over the conv output's elements."""
    g, table = _table()
    terms = boundary_latency_terms(g, table)
    assert terms and all(a == "conv" and b == "fc" for a, _, b, _, _ in terms)
    from cost_models.ram_terms import _layer_reads

    (numel,) = {tensor.numel for _, _, _, tensor in _layer_reads(g, table)}
    dq = [t for t in terms if set(t[1]) <= _options(table, "conv", True)]
    q = [t for t in terms if set(t[1]) <= _options(table, "conv", False)]
    assert dq and q
    assert all(set(t[3]) == _options(table, "fc", False) for t in dq)
    assert all(set(t[3]) == _options(table, "fc", True) for t in q)
    full = [t for t in terms if "fp32" in t[1]]
    assert full[0][4] == pytest.approx(boundary_ms(table, numel))
    # the formula: the profile's per-op overhead + bytes moved at its bandwidth
    assert boundary_ms(table, 1000) == pytest.approx(
        table.boundary_overhead_ms + table.boundary_ms_per_byte * BOUNDARY_BYTES_PER_ELEMENT * 1000)


def test_uniform_plans_cross_none_and_mixed_ones_pay_it() -> None:
    g, table = _table()
    problem = build_problem(g, table, {})
    assert problem.latency_pairs
    names = {ly: [c.option for c in problem.choices[ly]] for ly in problem.layers}

    def latency(conv: str, fc: str) -> float:
        return problem.totals({"conv": names["conv"].index(conv),
                               "fc": names["fc"].index(fc)})["latency_ms"]

    def own(conv: str, fc: str) -> float:
        plain = dataclasses.replace(problem, latency_pairs=())
        return plain.totals({"conv": names["conv"].index(conv),
                             "fc": names["fc"].index(fc)})["latency_ms"]

    assert latency("int8", "int8") == pytest.approx(own("int8", "int8"))
    assert latency("fp32", "fp32") == pytest.approx(own("fp32", "fp32"))
    assert latency("int8", "fp32") > own("int8", "fp32")
    assert latency("fp32", "int8") > own("fp32", "int8")


def test_no_boundary_cost_without_the_profile_s_constants() -> None:
    g, table = _table()
    off = dataclasses.replace(table, boundary_overhead_ms=0.0, boundary_ms_per_byte=0.0)
    assert boundary_latency_terms(g, off) == []


def test_plan_json_keeps_the_boundaries(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """plan.json's `boundaries` rebuild Problem.latency_pairs; the plan reports the crossing
    by reader layer."""
    from planner.plan import Plan
    from planner.problem import Choice, LatencyPair, Problem
    from planner.resolve import problem_from_plan, resolve
    from tests.planner.test_workspace import _plan_of

    a = (Choice("int8", 1.0, 100, 0.1, 1, 0.1), Choice("fp32", 1.0, 400, 0.1, 4, 0.3))
    b = (Choice("int8", 1.0, 100, 0.1, 1, 0.4), Choice("fp32", 1.0, 400, 0.1, 4, 0.0))
    dq = LatencyPair("a", ("int8",), "b", ("fp32",), 0.5, 0.05)
    p = Problem(("a", "b"), {"a": a, "b": b}, {"ram_bytes": 1e9}, {},
                ((("a", 100),), (("a", 100), ("b", 100))), latency_pairs=(dq,))
    plan = _plan_of(dataclasses.replace(p, latency_pairs=()))
    from device_specs.budget import Limits

    plan = plan.model_copy(update={"boundaries": [("a", ["int8"], "b", ["fp32"], 0.5, 0.05)],
                                   "limits": Limits(latency="2.2ms")})
    plan.save(tmp_path / "plan.json")
    loaded = Plan.load(tmp_path / "plan.json")
    assert problem_from_plan(loaded).latency_pairs == (dq,)
    assert p.totals({"a": 0, "b": 1})["latency_ms"] == pytest.approx(2.5)
    solved = resolve(loaded)
    assert solved.options() == {"a": "fp32", "b": "fp32"}  # int8 -> fp32 breaks 2.2 ms
    assert solved.boundary_ms_by_reader() == {}
    pinned = resolve(loaded, pins={"a": "int8", "b": "fp32"}, limits=Limits(latency="3ms"))
    assert pinned.totals is not None and pinned.totals.latency_ms == pytest.approx(2.5)
    assert pinned.boundary_ms_by_reader() == {"b": 0.5}
