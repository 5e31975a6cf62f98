"""`edgefit sweep SWEEP.yaml`: every model on every target under every budget, as plans, applied
where the file asks, in one table (sweep.csv, sweep.json) and one figure (sweep.png).

Work is never repeated: for each (model, target) the model is loaded once and planned once
(`make_plan`: capture, options, sensitivity, profiles, cost table, solve) under the first
budget; every further budget is a re-solve of that plan's problem with its own limits
(`planner.resolve`, no torch, about a second), which is what `plan` itself would solve, since a
plan's costs do not depend on its limits. The (model, target) plans run one after another on
the driver, with the executor of `--workers` / `--cluster` installed around them so each plan's
measurements fan out through edgefit_common.execution as `plan`'s do (the driver alone writes
the row cache, so a second target reuses the first one's rows where they are the same).

The output folder is built in a fresh folder and swapped into place whole
(edgefit_common.atomic_dir): an interrupted or failed sweep leaves the previous one as it was.
Inside it each cell has its own folder, `MODEL/TARGET/BUDGET/`, holding its plan.json (and,
applied, apply's artifacts and report.json).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefit.sweep_file import Cell, Sweep
from edgefit_common.atomic_dir import check_replaceable, fresh_dir
from edgefit_common.execution import Executor, using
from edgefit_common.progress import task
from planner.plan import Plan
from planner.result import SolverOptions

SWEEP_NAMES = ("sweep.csv", "sweep.json", "sweep.png")
"""What the sweep writes beside its cell folders."""


@dataclass
class CellResult:
    """One cell's plan, how it was made (`plan`: the full pipeline; `re-solve`: the first
    budget's plan solved again under this one), its folder under the output and, when
    applied, apply's report."""

    cell: Cell
    plan: Plan
    how: str
    folder: Path  # relative to the output folder
    report: dict[str, Any] | None = None


@dataclass
class SweepResult:
    out: Path
    cells: list[CellResult]
    full_plans: int
    re_solves: int
    applied: int
    executor: str
    written: list[Path]
    table: list[dict[str, Any]]  # the rows of sweep.csv / sweep.json

    def summary(self) -> dict[str, Any]:
        """What `edgefit sweep --json` prints: the counts, the files written and the rows."""
        return {"command": "sweep", "out": str(self.out), "full_plans": self.full_plans,
                "re_solves": self.re_solves, "applied": self.applied,
                "executor": self.executor, "written": [str(p) for p in self.written],
                "rows": self.table}


def check_out(out: Path) -> None:
    """The output folder is new, empty or a sweep's own (checked before any model loads)."""
    check_replaceable(out, SWEEP_NAMES)


def run_sweep(sweep: Sweep, out: Path, executor: Executor) -> SweepResult:
    """Plan every cell (on `executor`), apply those asked, write the table and the figure; the
    output folder appears whole at the end, or not at all."""
    from edgefit.sweep_table import rows, write_figure, write_tables

    check_out(out)
    options = SolverOptions(time_limit_s=sweep.spec.time_limit)
    with fresh_dir(out) as work:
        with using(executor):  # a local Ray instance stops once every plan is made
            results = _plan_all(sweep, options)
            where = executor.describe()  # what ran: "not started" when every row was cached
        for result in results:
            _write_cell(sweep, result, work)
        table = rows(sweep, results)
        counts = {"full_plans": sum(r.how == "plan" for r in results),
                  "re_solves": sum(r.how == "re-solve" for r in results),
                  "applied": sum(r.report is not None for r in results)}
        written = write_tables(work, table, {**counts, "sweep_file": str(sweep.path),
                                             "out": str(out), "executor": where})
        written.append(write_figure(work / "sweep.png", sweep, results))
    return SweepResult(out, results, executor=where, written=[out / p.name for p in written],
                       table=table, **counts)


def _plan_all(sweep: Sweep, options: SolverOptions) -> list[CellResult]:
    """Each (model, target): one full plan under its first budget, then a re-solve per
    further budget. The model and its calibration data are loaded once per model."""
    spec = sweep.spec
    results = []
    for m, model in enumerate(spec.models):
        loaded, calibration = _load(sweep, m)
        for t, target in enumerate(spec.targets):
            cells = [c for c in sweep.cells if c.model == m and c.target == t]
            with task(f"sweep: plan {model.label} on {target.label} "
                      f"({len(cells)} budget{'s' if len(cells) > 1 else ''})"):
                first = _full_plan(sweep, cells[0], options, loaded, calibration)
            results.append(_result(cells[0], first, "plan"))
            for cell in cells[1:]:
                with task(f"sweep: re-solve {model.label} on {target.label} under "
                          f"{spec.budgets[cell.budget].name}"):
                    plan = resolve_for(first, cell, options, spec.solver)
                results.append(_result(cell, plan, "re-solve"))
    return results


def _result(cell: Cell, plan: Plan, how: str) -> CellResult:
    return CellResult(cell, plan, how, cell.folder)


def _load(sweep: Sweep, m: int) -> tuple[Any, Any]:
    """The model (its factory allowed when the command line named it) and its calibration
    sample, loaded once for every target and budget."""
    from edgefit.planning import calibration_split
    from workloads.models import load_model_ref
    from workloads.refs import factory_allowed

    model = sweep.spec.models[m]
    factory = model.model if model.model in sweep.factories else None
    with task(f"load model {model.model}"), factory_allowed(factory):
        loaded = load_model_ref(model.model, model.weights,
                                tuple(model.input_shape) if model.input_shape else None)
    data = model.data or loaded.dataset
    if data is None:
        return loaded, None
    with task(f"load data {data}"):
        return loaded, calibration_split(data)


def _full_plan(sweep: Sweep, cell: Cell, options: SolverOptions, loaded: Any,
               calibration: Any) -> Plan:
    from edgefit.planning import make_plan

    plan, _ = make_plan(cell.fields, f"sweep file {sweep.path}", options,
                        backend=sweep.spec.solver, loaded=loaded, calibration=calibration)
    return plan


def resolve_for(first: Plan, cell: Cell, options: SolverOptions, backend: str) -> Plan:
    """`first` (a plan of the same model and target) solved under `cell`'s limits and margin,
    from scratch: its choices are cleared, so the solver starts as `plan` does (no warm start
    that could pick another of several equally good plans)."""
    from planner.resolve import resolve

    layers = {name: lp if lp.pinned else lp.model_copy(update={"option": None})
              for name, lp in first.layers.items()}
    unsolved = first.model_copy(update={"layers": layers, "margin": cell.fields.margin})
    return resolve(unsolved, limits=cell.fields.limits, options=options, backend=backend)


def _write_cell(sweep: Sweep, result: CellResult, work: Path) -> None:
    """The cell's folder, written whole: apply's artifacts (which include plan.json) when the
    cell is applied and its plan feasible, else plan.json alone."""
    folder = work / result.folder
    if result.plan.feasible and sweep.applies(result.cell):
        result.report = _apply(sweep, result, folder)
        return
    with fresh_dir(folder) as cell_dir:
        result.plan.save(cell_dir / "plan.json")


def _apply(sweep: Sweep, result: CellResult, folder: Path) -> dict[str, Any]:
    from edgefit.applying import apply_plan, plan_source
    from workloads.refs import ModelSource

    plan, model = result.plan, sweep.spec.models[result.cell.model]
    source = (ModelSource(model.model, model.weights, tuple(plan.model.input_shape),
                          trusted_factory=True)
              if model.model in sweep.factories else plan_source(plan))
    with task(f"sweep: apply {result.folder}"):
        return apply_plan(plan, folder, source)
