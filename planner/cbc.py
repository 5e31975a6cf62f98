"""CBC backend (the CBC binary PuLP ships) over the same Problem as CP-SAT: data -> variables ->
constraints -> objective -> solve -> extract. It uses the same two roundings of the data as CP-SAT
(planner.exact: LOOSE first, SAFE when LOOSE's plan breaks a limit by rounding), at coarser
latency and energy units (CBC_UNITS_PER_TOTAL: its tolerances are absolute), and the same
tie-break costs, so both backends answer the same question about the measured costs and must
agree;
used to cross-check CP-SAT and as the `--solver cbc` choice. Each phase is warm-started (CBC's
MIP start) from the best plan held, and the answer is the best plan held, checked exactly.
"""

from __future__ import annotations

import itertools
import math
import re
import subprocess
import tempfile
from functools import partial
from pathlib import Path

import numpy as np
import pulp
from scipy import sparse

from planner.cpsat import Run, gap_to, index_hint, separable_optimum
from planner.exact import (
    CBC_UNITS_PER_TOTAL,
    LOOSE,
    Attempt,
    Pool,
    Rounding,
    loss_units,
    search,
    tie_break_array,
)
from planner.formulation import arrays
from planner.problem import Problem
from planner.result import SolveResult, SolverOptions

# + 0.5 on an integer bound: room for CBC's tolerance on ~1e9 coefficients (without it CBC can
# call a plan of exactly that bound infeasible)
_INTEGER_SLACK = 0.5

# (indices, coefficients, lower bound, upper bound): one linear row over all the variables
_Row = tuple[np.ndarray, np.ndarray, float, float]


class _CbcFailed(Exception):
    """CBC exited with an error or wrote no solution file."""


def cbc_path() -> str:
    """The CBC executable PuLP ships (the one its PULP_CBC_CMD runs; its class attribute, so
    no deprecation warning for constructing it)."""
    return str(pulp.PULP_CBC_CMD.pulp_cbc_path)


class _Model:
    """The CBC model of a problem under its limits in one rounding, assembled from
    planner.formulation.Arrays (variables in CP-SAT's layout: x per option, y per group
    width, z per pair term, all binary) and kept for every phase of a solve (`phase`): each
    phase only sets its objective and its own rows (cuts, the tie-break's accuracy bound).

    Each solve writes the model as MPS with OR-Tools' exporter (C++, from one sparse
    matrix) and the MIP start as CBC's solution file, then runs the CBC binary PuLP ships
    with PuLP's command line: the same solver as PULP_CBC_CMD, without PuLP's per-variable
    Python model and MPS writer (about 2 CPU-s per solve on a 500-layer instance)."""

    def __init__(self, problem: Problem, limits: dict[str, float], name: str,
                 rounding: Rounding = LOOSE) -> None:
        self.p = problem
        self.a = a = arrays(problem)
        self.name = name
        self.rounding = rounding.at(problem, CBC_UNITS_PER_TOTAL)
        self.data = self.rounding.data(problem)
        self.n_vars = a.z0 + len(a.pair_keys)
        one = partial(np.ones, dtype=np.int64)
        rows: list[_Row] = [(np.arange(lo, hi), one(hi - lo), 1, 1)
                            for lo, hi in itertools.pairwise(a.start.tolist())]
        by_group: dict[str, list[int]] = {}
        for n, (g, _) in enumerate(a.group_widths):
            by_group.setdefault(g, []).append(a.n + n)
        rows += [(np.array(ys), one(len(ys)), 1, 1) for ys in by_group.values()]
        for gw, index in a.coupling:  # the same (group, width) links as the CP-SAT model
            rows.append((np.append(index, a.n + gw), np.append(one(len(index)), -1), 0, 0))
        for n, (ia, ib) in enumerate(a.pair_x):  # z >= x[a, A] + x[b, B] - 1
            both = np.concatenate((ia, ib))
            rows.append((np.append(both, a.z0 + n), np.append(-one(len(both)), 1), -1,
                         np.inf))
        for metric, limit in limits.items():
            room = self.rounding.room(problem, metric, limit)
            limit_rows = (self.data.ram_rows if metric == "ram_bytes"
                          else [self.cost_row(metric)])
            rows += [(index, coef, -np.inf, room) for index, coef in limit_rows]
        self.rows = rows
        self.objective = np.zeros(self.n_vars)
        self._phase: list[_Row] = []  # the current phase's own rows
        self._start: np.ndarray | None = None  # the MIP start of the next solve
        self.values = np.zeros(self.n_vars)  # the last solve's plan

    def cost_row(self, metric: str) -> tuple[np.ndarray, np.ndarray]:
        return self.a.metric_row(self.data, metric)

    def phase(self, objective: tuple[np.ndarray, np.ndarray],
              rows: tuple[tuple[np.ndarray, np.ndarray, float], ...] = ()) -> None:
        """A new phase: the previous phase's rows dropped, these rows (index, coef, at most)
        added, this objective set."""
        self._phase = [(index, coef, -np.inf, most) for index, coef, most in rows]
        self.objective = np.zeros(self.n_vars)
        np.add.at(self.objective, objective[0], objective[1])

    def warm_start(self, picks: dict[str, int] | None) -> bool:
        """CBC's MIP start from a plan (x, the groups' widths, the pair terms); False: none."""
        self._start = None
        if not picks or len(picks) != len(self.p.layers):
            return False
        a = self.a
        chosen = np.zeros(self.n_vars, dtype=np.int64)
        chosen[a.flat(picks)] = 1
        for n, (g, w) in enumerate(a.group_widths):
            first = a.members[g][0]
            chosen[a.n + n] = self.p.choices[first][picks[first]].width(g) == w
        for n, (ka, ia, kb, ib) in enumerate(a.pair_keys):
            chosen[a.z0 + n] = picks[ka] in ia and picks[kb] in ib
        self._start = chosen
        return True

    def solve(self, options: SolverOptions, start: dict[str, int] | None = None) -> str:
        self.warm_start(start)
        try:
            status = self._run(options)
        except _CbcFailed:
            # CBC ended without a solution file (its time ran out before it wrote one): as a
            # time-out, nothing is known
            return "UNKNOWN"
        if status == "INFEASIBLE":
            # CBC 2.10's integer preprocessing can call a feasible model with ~1e9
            # coefficients infeasible (seen on a 3-layer model): confirm without it. Without
            # it CBC proves a truly infeasible model so ("tightenPrimalBounds") and then
            # crashes writing the solution file: the verdict stands.
            try:
                status = self._run(options, ["-preprocess", "off"])
            except _CbcFailed:
                status = "INFEASIBLE"
        return status

    def mps(self) -> str:
        """The model with this phase's rows and objective as MPS text (variables v<k>, rows
        r<i>) in PuLP's layout (CBC reads MPS by columns), every number written exactly
        (OR-Tools' exporter keeps only 6 digits)."""
        rows = self.rows + self._phase
        matrix = sparse.csc_matrix(
            (np.concatenate([r[1] for r in rows]).astype(float),
             (np.repeat(np.arange(len(rows)), [len(r[0]) for r in rows]),
              np.concatenate([r[0] for r in rows]))), shape=(len(rows), self.n_vars))
        matrix.sum_duplicates()
        lo = np.array([r[2] for r in rows], dtype=float)
        hi = np.array([r[3] for r in rows], dtype=float)
        sense = np.where(lo == hi, "E", np.where(np.isinf(lo), "L", "G"))
        if np.any(np.isfinite(lo) & np.isfinite(hi) & (lo != hi)):
            raise ValueError("a ranged row: the model never has one")
        rhs = np.where(sense == "G", lo, hi)
        out = [f"NAME          {self.name}", "ROWS", " N  COST"]
        out += [f" {s}  r{i}" for i, s in enumerate(sense.tolist())]
        out += ["COLUMNS", "    MARK      'MARKER'                 'INTORG'"]
        # every entry by column, the objective's first (row -1: COST); a column in no row
        # and without a cost still gets a zero cost, so every variable is declared
        declared = np.flatnonzero(self.objective) if np.diff(matrix.indptr).all() else (
            np.arange(self.n_vars))
        col = np.concatenate((declared, np.repeat(np.arange(self.n_vars),
                                                  np.diff(matrix.indptr))))
        row = np.concatenate((np.full(len(declared), -1), matrix.indices))
        value = np.concatenate((self.objective[declared], matrix.data))
        order = np.argsort(col, kind="stable")
        names = [*(f"r{i}" for i in range(len(rows))), "COST"]  # names[-1]: row -1
        out += [f"    {f'v{c}':<8}  {names[r]:<8}  {v}" for c, r, v in zip(
            col[order].tolist(), row[order].tolist(), _numbers(value[order]), strict=True)]
        out += ["    MARK      'MARKER'                 'INTEND'", "RHS"]
        keep = np.flatnonzero(rhs)
        out += [f"    RHS       {f'r{i}':<8}  {v}"
                for i, v in zip(keep.tolist(), _numbers(rhs[keep]), strict=True)]
        out += ["BOUNDS", *(f" BV BND       v{k}" for k in range(self.n_vars)), "ENDATA", ""]
        return "\n".join(out)

    def _run(self, options: SolverOptions, extra: list[str] | None = None) -> str:
        """One CBC run (PuLP's command line); its status, self.values set from its plan."""
        with tempfile.TemporaryDirectory(prefix="edgefit-cbc-") as tmp:
            d = Path(tmp)
            (d / "model.mps").write_text(self.mps())
            args = [cbc_path(), str(d / "model.mps")]
            if self._start is not None:
                (d / "start.mst").write_text(_solution_text(self._start))
                args += ["-mips", str(d / "start.mst")]
            args += ["-sec", f"{max(options.time_limit_s, 0.01):g}"]
            args += extra or []
            if options.relative_gap:
                args += ["-ratio", f"{options.relative_gap:g}"]
            args += ["-timeMode", "elapsed", "-solve", "-printingOptions", "all",
                     "-solution", str(d / "solution.txt")]
            done = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  stdin=subprocess.DEVNULL, check=False)
            solution = d / "solution.txt"
            if done.returncode != 0 or not solution.exists():
                raise _CbcFailed(f"cbc exited {done.returncode}")
            status, self.values = _read_solution(solution.read_text(), self.n_vars)
        if status == "OPTIMAL" and options.relative_gap:
            return "FEASIBLE"  # within the asked gap: not a proof
        return status

    def picks(self) -> dict[str, int]:
        return self.a.picks(self.values[:self.a.n])


def _numbers(values: np.ndarray) -> list[str] | list[int]:
    """Numbers written in full: integers as integers (the model's data are integers), else
    repr's shortest round-trip form."""
    if np.all(values == np.round(values)) and np.all(np.abs(values) < 2**62):
        return list(values.astype(np.int64).tolist())
    return [repr(v) for v in values.tolist()]


def _solution_text(values: np.ndarray) -> str:
    """A plan in CBC's solution-file format (what PuLP writes as a MIP start)."""
    lines = ["Stopped on time - objective value 0\n"]
    lines += [f"{k:>7} v{k} {v:>15} {0:>23}\n" for k, v in enumerate(values.tolist())]
    return "".join(lines)


_VARIABLE_LINE = re.compile(r"^\s*(?:\*\*\s*)?\d+\s+v(\d+)\s+(\S+)", re.MULTILINE)


def _read_solution(text: str, n_vars: int) -> tuple[str, np.ndarray]:
    """CBC's status (as PuLP's get_status reads it: OPTIMAL, FEASIBLE when stopped with a
    plan, INFEASIBLE, else UNKNOWN) and every variable's value (0 when not printed)."""
    words = text.partition("\n")[0].split()
    first = words[0] if words else ""
    if first == "Optimal":
        status = "OPTIMAL"
    elif first in ("Infeasible", "Integer"):
        status = "INFEASIBLE"
    elif first == "Stopped" and len(words) >= 5 and words[4] == "objective":
        status = "FEASIBLE"
    else:
        status = "UNKNOWN"
    values = np.zeros(n_vars)
    # "index name value reduced-cost" per row, then per variable; "**" marks an infeasible one
    found = _VARIABLE_LINE.findall(text)
    if found:
        index, value = zip(*found, strict=True)
        values[np.array(index, dtype=np.int64)] = np.array(value, dtype=float)
    return status, values


def _model(problem: Problem, rounding: Rounding) -> _Model:
    """The problem's model in this rounding, built on first use and kept (with its Arrays)
    for the other phases of the solve."""
    memo = arrays(problem).memo
    key, limits = f"cbc {rounding.name}", tuple(sorted(problem.limits.items()))
    if key not in memo or memo[key][0] != limits:  # one model per rounding: the last limits
        memo[key] = (limits, _Model(problem, problem.limits, "edgefit", rounding))
    model: _Model = memo[key][1]
    return model


def _attempt(problem: Problem, run: Run, rounding: Rounding, hint: dict[str, int] | None,
             cuts: tuple[dict[str, int], ...] = ()) -> Attempt:
    """The accuracy phase on `rounding`'s integers without the plans `cuts`; its bound is the
    optimum when proven."""
    model = _model(problem, rounding)
    model.phase(model.cost_row("acc_loss"), tuple(
        (index := model.a.flat(cut), np.ones(len(index), dtype=np.int64), len(cut) - 1)
        for cut in cuts))
    status = model.solve(run.search_options(), hint)
    if status not in ("OPTIMAL", "FEASIBLE"):
        return Attempt(status)
    picks = model.picks()
    return Attempt(status, picks, loss_units(problem, picks) if status == "OPTIMAL" else None)


def solve(problem: Problem, options: SolverOptions | None = None,
          hint: dict[str, str] | None = None, explain_infeasible: bool = True) -> SolveResult:
    """Minimise accuracy loss, then latency + flash normalised, as the CP-SAT backend does."""
    from planner import lp

    run = Run(problem, options or SolverOptions(), backend="cbc", units=CBC_UNITS_PER_TOTAL)
    loose = separable_optimum(problem)  # no limit binds: the exact answer without a model
    if loose is not None:
        return run.result(loose, "OPTIMAL", 0.0)
    given = index_hint(problem, hint)
    # the LP relaxation proves an infeasible budget at once (CBC alone may time out on it)
    relaxation = lp.relax(problem)
    if relaxation.value is None and lp.proven_infeasible(problem):
        return run.no_plan("INFEASIBLE", explain_infeasible, given)
    pool = Pool(problem)
    pool.offer(given, "the warm start")
    outcome = search(problem, partial(_attempt, problem, run), pool.best)
    pool.offer(outcome.picks, "the search")
    if pool.best is None or pool.loss is None:
        # the explanation is the same question for either backend; CP-SAT answers it
        return run.no_plan(outcome.status, explain_infeasible, given, outcome.note)
    proven = outcome.bound is not None and pool.loss <= outcome.bound
    note = "" if proven else outcome.note
    tie_note = _tie_break_phase(problem, run, pool)
    lp_bound = relaxation.value if relaxation.value is not None else -math.inf
    gap = 0.0 if proven else gap_to(pool.loss, lp_bound)
    return run.result(pool.best, "OPTIMAL" if proven else "FEASIBLE", gap,
                      "; ".join(n for n in (note, tie_note) if n), bool(note))


def _tie_break_phase(problem: Problem, run: Run, pool: Pool) -> str:
    """CP-SAT's tie-break costs among plans as accurate as the best held, warm-started from it,
    in the tie-break's slice; a note when not proven."""
    assert pool.best is not None
    second = _model(problem, LOOSE)
    second.phase((np.arange(second.a.n), tie_break_array(problem)),
                 ((*second.cost_row("acc_loss"), (pool.loss or 0) + _INTEGER_SLACK),))
    status = second.solve(run.tie_break_options(), pool.best)
    if status in ("OPTIMAL", "FEASIBLE"):
        found = second.picks()
        pool.offer(found, "the tie-break")
        if status == "OPTIMAL" and pool.key(found) == pool.key(pool.best):
            return ""
    return ("the tie-break (latency + flash among equally accurate plans) is not proven "
            "optimal: its time slice ran out")
