"""The CBC backend writes its own MPS from planner.formulation.Arrays and runs the CBC binary
PuLP ships (issue #18 item 3: no PuLP model or MPS writer on the hot path). What CBC reads must
be the model, every number exact; its solution file must be read as PuLP read it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pulp
import pytest
from ortools.linear_solver.python import model_builder_helper as mbh

from planner import cbc
from planner.bruteforce import brute_force
from planner.exact import LOOSE, SAFE
from planner.problem import Choice, Problem
from planner.result import SolverOptions
from planner.solve import solve
from tests.planner.test_coupling import random_coupled_problem
from tests.planner.test_exact_solver import FINE, _binding_instance
from tests.planner.test_pairs import instance as pairs_instance


def _read_back(text: str) -> Any:
    model: Any = mbh.ModelBuilderHelper()
    model.import_from_mps_string(text)
    return model


def _expected_rows(model: cbc._Model) -> list[tuple[dict[int, float], float, float]]:
    """Each row as {variable: coefficient} (summed per variable, zeros dropped), lo, hi."""
    out = []
    for index, coef, lo, hi in model.rows + model._phase:
        terms: dict[int, float] = {}
        for k, c in zip(index.tolist(), coef.tolist(), strict=True):
            terms[k] = terms.get(k, 0) + c
        out.append(({k: c for k, c in terms.items() if c}, lo, hi))
    return out


@pytest.mark.parametrize("problem", [FINE[37], FINE[3], pairs_instance(5),
                                     random_coupled_problem(1601, n_layers=4)],
                         ids=["fine37", "fine3", "pairs", "coupled"])
@pytest.mark.parametrize("rounding", [LOOSE, SAFE], ids=["loose", "safe"])
def test_the_mps_is_the_model_with_every_number_exact(problem: Problem, rounding) -> None:  # type: ignore[no-untyped-def]
    """Read back (OR-Tools' MPS reader), the file has every row, bound, sense and objective
    coefficient of the model exactly: ~1e9 integer coefficients included (OR-Tools' own
    exporter writes 6 digits, which turned a proven optimum wrong on FINE[37])."""
    model = cbc._Model(problem, problem.limits, "t", rounding)
    objective = model.cost_row("acc_loss")
    model.phase(objective, ((objective[0], objective[1], 12345.5),))  # a phase row too
    back = _read_back(model.mps())
    assert back.num_variables() == model.n_vars
    for k in range(model.n_vars):
        assert back.var_is_integral(k) and back.var_lower_bound(k) == 0
        assert back.var_upper_bound(k) == 1 and back.var_name(k) == f"v{k}"
        assert back.var_objective_coefficient(k) == model.objective[k]
    expected = _expected_rows(model)
    assert back.num_constraints() == len(expected)
    for i, (terms, lo, hi) in enumerate(expected):
        got = dict(zip(back.constraint_var_indices(i), back.constraint_coefficients(i),
                       strict=True))
        assert got == terms
        assert (back.constraint_lower_bound(i), back.constraint_upper_bound(i)) == (lo, hi)


def test_large_coefficients_are_written_in_full() -> None:
    """Integers beyond 6 and beyond 15 significant digits survive the text."""
    values = np.array([123456789012.0, -987654321.0, 3.0, 2.0**53 + 2])
    assert [int(v) for v in cbc._numbers(values)] == [int(v) for v in values]
    halves = np.array([1.5, 1234567890.5])
    assert [float(v) for v in cbc._numbers(halves)] == halves.tolist()


SOLUTION = """{status}
      0 r0                     1                       0
      1 r1               2600000                       0
** 2 r2                  4000                       0
      0 v0                     0                7.22e+08
      1 v1                     1                8.19e+08
**    2 v2                     1                       0
"""


@pytest.mark.parametrize(("first_line", "status"), [
    ("Optimal - objective value 819000000.00000000", "OPTIMAL"),
    ("Stopped on time - objective value 819000000.00000000", "FEASIBLE"),
    ("Stopped on iterations - objective value 12", "FEASIBLE"),
    ("Stopped on time", "UNKNOWN"),
    ("Infeasible - objective value 0.00000000", "INFEASIBLE"),
    ("Integer infeasible - objective value 0.00000000", "INFEASIBLE"),
    ("Unbounded - objective value 0", "UNKNOWN"),
])
def test_the_solution_file_is_read_as_pulp_read_it(first_line: str, status: str) -> None:
    """The status from the first line (PuLP's get_status rules), each variable's value from
    its line (rows and '**'-marked lines included), variables not printed 0."""
    got, values = cbc._read_solution(SOLUTION.format(status=first_line), 4)
    assert got == status
    assert values.tolist() == [0.0, 1.0, 1.0, 0.0]


def test_the_mip_start_file_round_trips() -> None:
    start = np.array([0, 1, 1, 0, 1])
    status, values = cbc._read_solution(cbc._solution_text(start), len(start))
    assert status == "FEASIBLE" and values.tolist() == start.tolist()


def test_a_cbc_solve_builds_no_pulp_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """The backend's answer is brute force's optimum without a PuLP model or PuLP's writer."""
    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("PuLP model built")

    monkeypatch.setattr(pulp.LpProblem, "__init__", refuse)
    c = (Choice("fp32", 4.0, 4000, 1.0, 4, 0.0), Choice("int8", 1.0, 1000, 0.25, 1, 0.5),
         Choice("int4", 0.6, 600, 0.15, 1, 0.9))
    problem = Problem(("a", "b", "c"), {"a": c, "b": c, "c": c},
                      {"latency_ms": 8.5, "flash_bytes": 100_000, "energy_mj": 5.0})
    r = solve(problem, backend="cbc", explain=False)
    reference = brute_force(problem)
    assert reference is not None and r.status == "OPTIMAL"
    assert r.totals["acc_loss"] == pytest.approx(reference[0])


def test_a_run_without_a_solution_file_is_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    """CBC exits without writing a solution (killed, or its time ran out first): UNKNOWN, not
    a crash and not INFEASIBLE."""
    monkeypatch.setattr(cbc, "cbc_path", lambda: "false")  # exits 1, writes nothing
    problem = FINE[3]
    model = cbc._Model(problem, problem.limits, "t")
    model.phase(model.cost_row("acc_loss"))
    assert model.solve(SolverOptions(time_limit_s=1)) == "UNKNOWN"


def test_cbc_reads_the_mip_start(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The files the backend writes, given to the CBC binary as the backend gives them: CBC
    reads a value for every variable and takes the start as its first solution."""
    import subprocess

    problem = _binding_instance()
    model = cbc._Model(problem, problem.limits, "t", LOOSE)
    model.phase(model.cost_row("acc_loss"))
    assert model.warm_start({"a": 1, "b": 1, "c": 1}) and model._start is not None
    (tmp_path / "m.mps").write_text(model.mps())
    (tmp_path / "m.mst").write_text(cbc._solution_text(model._start))
    log = subprocess.run([cbc.cbc_path(), str(tmp_path / "m.mps"), "-mips",
                          str(tmp_path / "m.mst"), "-solve"], capture_output=True, text=True,
                         check=True).stdout
    assert f"MIPStart values read for {model.n_vars} variables" in log
    # three int8 layers: 3 x 0.5 accuracy cost, in 1e-9 units
    assert "MIPStart provided solution with cost 1.5e+09" in log
