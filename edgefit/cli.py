"""Command line: `plan ...` and `edgefit plan|apply|devices|schemas`.

Nothing here imports torch at module level, so `plan --help` starts fast; each command imports
what it needs. Exit codes mean one thing each (``EXIT_*`` below), and stderr gets one line: an
EdgefitError, a usage error or a file the OS refused is bad input (2); Ctrl-C is 130 (temporary
files removed on the way out); anything else is an internal error (3), its traceback written to
a log file under the cache folder that the one line names.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from edgefit_common.errors import EdgefitError


def _show_version(value: bool) -> None:
    if value:
        from edgefit_common import __version__

        typer.echo(f"edgefit {__version__}")
        raise typer.Exit(0)


class _Command(TyperCommand):
    """-h is --help, and help shows no `<bool>` after --help."""

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option


class _Group(TyperGroup):
    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option


HELP_NAMES = {"help_option_names": ["-h", "--help"]}

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  cls=_Group, context_settings=HELP_NAMES,
                  help="edgefit: device budget -> per-layer compression plan -> measured model.")

EXIT_OK = 0
EXIT_INFEASIBLE = 1
EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130

INTERRUPTED = "interrupted (temporary files removed; nothing half-written)"

Opt = typer.Option

METRIC_HELP = ("your accuracy metric, module:function (imported from the current directory "
               "first): metric(labels, outputs) -> float, HIGHER IS BETTER (outputs: the "
               "output array, or a list of arrays for several outputs); it replaces top-1 "
               "accuracy where accuracy is reported")


def Flag(*names: str, help: str) -> Any:
    """An on/off flag: `--apply`, not `--apply <bool>` in the help."""
    return Opt(*names, help=help, metavar="")


Quiet = Annotated[bool, Flag("--quiet", "-q", help="no progress and no header: the results "
                             "and errors only")]
Verbose = Annotated[bool, Flag("--verbose", "-v", help="progress (on stderr) with a line for "
                               "every step and its time")]
Version = Annotated[bool, Opt("--version", callback=_show_version, is_eager=True, metavar="",
                              help="print edgefit's version and exit")]
Workers = Annotated[int | None, Opt(help="measure on a local Ray instance of N workers (bound "
                                    "to 127.0.0.1; docs/scale-out.md)")]
Cluster = Annotated[str | None, Opt(help="measure on a running Ray cluster: auto, "
                                    "ray://HOST:PORT or HOST:PORT (default: $EDGEFIT_CLUSTER, "
                                    "else in this process)")]


@app.callback()
def _edgefit(version: Version = False) -> None:
    """edgefit: device budget -> per-layer compression plan -> measured model."""


@app.command("plan", cls=_Command)
def plan_cmd(
    target: Annotated[str | None, Opt(help="device: catalog name (see `edgefit devices`) or "
                                       "spec .yaml")] = None,
    max_latency: Annotated[str | None, Opt(help="e.g. 30ms, 0.5s")] = None,
    max_flash: Annotated[str | None, Opt(help="e.g. 1MB, 512KiB (model + runtime)")] = None,
    max_ram: Annotated[str | None, Opt(help="peak RAM, e.g. 256KB")] = None,
    max_energy: Annotated[str | None, Opt(help="per inference, e.g. 5mJ")] = None,
    max_accuracy_drop: Annotated[str | None, Opt(help="percentage points, e.g. 1pp (checked "
                                                 "after apply)")] = None,
    max_update_time: Annotated[str | None, Opt(help="delivering the compressed model over "
                                               "--link, e.g. 30s")] = None,
    link: Annotated[str | None, Opt(help="the link updates travel over (ble-1m, ble-2m, "
                                    "lora-eu868-sf7, lte-m, ...: device_specs/links.yaml)")] = None,
    ab_slots: Annotated[int | None, Opt(help="model images the flash holds (2: A/B "
                                        "updates); the flash limit counts each")] = None,
    fleet_size: Annotated[int | None, Opt(help="devices each update goes to (fleet cost, "
                                          "needs --link)")] = None,
    updates_per_month: Annotated[str | None, Opt(help="model updates per device a month "
                                                 "(default 1)")] = None,
    data_price: Annotated[str | None, Opt(help="your data contract's price, e.g. 0.05USD/MB "
                                          "(per MB or GB; the currency is yours)")] = None,
    max_update_cost: Annotated[str | None, Opt(help="update data's cost per device a month, "
                                               "e.g. 0.10 (needs --data-price)")] = None,
    sparsity_levels: Annotated[str | None, Opt(help="unstructured sparsity levels offered "
                                               "per layer, percent (default 50,75), e.g. "
                                               "50,75,90,95")] = None,
    model: Annotated[str | None, Opt(help="built-in name (lenet5-mnist, ...), a torch.export "
                                     ".pt2 file, an .onnx file, or package.module:factory "
                                     "(with --weights, --input-shape)")] = None,
    weights: Annotated[str | None, Opt(help="state_dict for module:factory")] = None,
    input_shape: Annotated[str | None, Opt(help="one sample's shape (no batch), e.g. "
                                           "1x28x28: for module:factory, and to fix an .onnx "
                                           "input's symbolic sizes")] = None,
    data: Annotated[str | None, Opt(help="data set: mnist, fashion-mnist, an .npz file or a "
                                    "folder of <class>/*.png")] = None,
    metric: Annotated[str | None, Opt(help=METRIC_HELP + "; recorded in plan.json")] = None,
    allow_unmeasured: Annotated[bool, Flag("--allow-unmeasured", help="without data, offer "
                                           "compressed options anyway (their accuracy cost "
                                           "unmeasured, counted as 0, flagged); default: "
                                           "only uncompressed layers")] = False,
    mean: Annotated[str | None, Opt(help="the model's input normalisation, with --std: "
                                    "(x - mean) / std on the data's [0, 1] inputs; one value "
                                    "or one per channel, e.g. 0.485,0.456,0.406")] = None,
    std: Annotated[str | None, Opt(help="see --mean")] = None,
    profile: Annotated[str | None, Opt(help="device profile (runtime); default: the "
                                        "spec's")] = None,
    budget: Annotated[Path | None, Opt(help="budget YAML; flags override its fields")] = None,
    scenario: Annotated[str | None, Opt(help="an application scenario (see `edgefit "
                                        "scenarios`): its target, limits and accuracy rule; "
                                        "flags override them")] = None,
    margin: Annotated[str | None, Opt(help="safety margin on every limit, e.g. 10%")] = None,
    period: Annotated[str | None, Opt(help="time between inferences, e.g. 1s (energy then "
                                      "includes the idle floor)")] = None,
    out: Annotated[Path, Opt(help="the plan FILE to write (for `edgefit apply`, --out is a "
                             "folder)")] = Path("plan.json"),
    time_limit: Annotated[float, Opt(help="solver time limit, seconds")] = 10.0,
    gap: Annotated[float, Opt(help="stop at this relative optimality gap (0 = prove "
                              "optimal)")] = 0.0,
    solver: Annotated[str, Opt(help="cpsat or cbc")] = "cpsat",
    search: Annotated[str, Opt(help="solver (exact, default), bayes (Optuna TPE baseline, "
                               "same decision space) or bayes-measured (TPE on the accuracy "
                               "each trial's plan measures when applied, on a validation "
                               "split; artifacts in --report-dir)")] = "solver",
    trials: Annotated[int, Opt(help="--search bayes: number of trials; bayes-measured: "
                               "number of applies (default 8 there)")] = 200,
    study: Annotated[Path | None, Opt(help="--search bayes: SQLite file to resume or "
                                      "inspect the study")] = None,
    pin: Annotated[list[str] | None, Opt(help="LAYER=OPTION, fixed before solving "
                                         "(repeatable)")] = None,
    exclude: Annotated[list[str] | None, Opt(help="an option (int4) or technique (quantize) "
                                             "no layer may take (repeatable)")] = None,
    pareto: Annotated[str | None, Opt(help="sweep one or two limits, e.g. latency or "
                                      "latency,flash: writes CSV + PNG beside --out")] = None,
    finetune: Annotated[int, Opt(help="epochs of distillation against the uncompressed model "
                                 "after pruning (0: none)")] = 0,
    qat: Annotated[bool, Flag("--qat", help="with --finetune: quantisation-aware fine-tuning "
                              "(trains through the planned quantisation; runs on "
                              "quantisation-only plans too)")] = False,
    student: Annotated[str | None, Opt(help="plan a smaller student distilled from the model "
                                       "(--finetune N epochs, default 3): width=0.5 (every "
                                       "channel group halved; ,init=fresh for fresh weights), "
                                       "depth=N (the last N residual blocks dropped) or "
                                       "package.module:factory")] = None,
    apply: Annotated[bool, Flag("--apply", help="apply the plan right away (artifacts in "
                                "--report-dir)")] = False,
    loop: Annotated[int, Opt(help="closed loop: up to N rounds of solve -> apply -> measure, "
                             "needs --max-accuracy-drop (0: off)")] = 0,
    objective: Annotated[str, Opt(help="--loop: the cost to minimise under the accuracy "
                                  "limit: latency, flash, ram or energy")] = "latency",
    loop_candidates: Annotated[int, Opt(help="--loop: plans applied together per step (their "
                                        "host timings on --workers / --cluster nodes with "
                                        "this CPU; training stays here)")] = 1,
    report_dir: Annotated[Path, Opt(help="the FOLDER --apply and --loop write artifacts to "
                                    "(replaced as a whole)")] = Path("out"),
    workers: Workers = None,
    cluster: Cluster = None,
    quiet: Quiet = False,
    verbose: Verbose = False,
    json_out: Annotated[bool, Flag("--json", help="a JSON summary on stdout (status, totals, "
                                   "options per layer, binding limits, files written; with "
                                   "--apply its checks) instead of the tables")] = False,
    version: Version = False,
) -> None:
    """Plan per-layer compression that meets the limits on TARGET; writes plan.json."""
    from edgefit.budgeting import resolve_budget

    _check_quiet(quiet, verbose)
    resolved = resolve_budget(
        Path.cwd(), budget_file=budget, target=target, profile=profile, model=model,
        weights=weights, data=data, margin=margin, period=period, input_shape=input_shape,
        limits={"latency": max_latency, "flash": max_flash, "ram": max_ram,
                "energy": max_energy, "accuracy_drop": max_accuracy_drop,
                "update_time": max_update_time},
        scenario=scenario, mean=mean, std=std, link=link, ab_slots=ab_slots,
        sparsity_levels=sparsity_levels, allow_unmeasured=allow_unmeasured,
        fleet={"size": fleet_size, "updates_per_month": updates_per_month,
               "data_price": data_price, "max_cost": max_update_cost},
    )
    from planner.resolve import parse_pins
    from planner.result import SolverOptions

    user_metric = _user_metric(metric)
    metrics = _pareto_metrics(pareto) if pareto else None
    loop_settings = _loop_settings(loop, objective, resolved.budget.limits.accuracy_drop,
                                   loop_candidates)
    options = _solver_options(SolverOptions, time_limit, gap)
    pins, backend = parse_pins(pin or []), _backend(solver)
    measured = _measured(search, trials, study, loop, apply)
    search_args = _search(search, trials, study) if measured is None else None
    epochs, quantization_aware = _epochs(finetune), _qat(qat, finetune)
    student_spec = _student_spec(student)
    from edgefit_common.execution import from_settings, using

    executor = from_settings(cluster, workers)  # checked here; Ray starts on first use
    with _feedback(quiet, verbose), _student_allowed(student_spec):
        from edgefit.precheck import check_plan_inputs

        checked = check_plan_inputs(resolved.budget, exclude or ())  # before torch
        if not quiet:
            _print_header(resolved, checked, epochs, quantization_aware,
                          apply or bool(loop) or measured is not None, to_stderr=json_out)
        with using(executor):  # a local Ray instance stops when the plan is made
            plan, ctx = _make_plan(resolved, options, pins, tuple(exclude or ()), backend,
                                   search_args, epochs, quantization_aware, user_metric,
                                   student_spec)
        plan.save(out)
        summary, code = _after_plan(plan, ctx, resolved, out, metrics, json_out, quiet)
        _scenario_after_plan(plan, resolved, summary, json_out)
        from edgefit.metric import metric_allowed

        allowed = metric_allowed(*user_metric) if user_metric else metric_allowed(None, None)
        if plan.feasible and measured is not None:
            with allowed:
                summary["search"], code = _measured_search(
                    plan, out, report_dir, measured, _plan_model(plan, resolved), json_out)
        elif plan.feasible and loop_settings is not None:
            with using(executor), allowed:  # started again, for the candidates' host timings only
                summary["loop"], code = _loop(plan, out, report_dir, loop_settings,
                                              _plan_model(plan, resolved), json_out)
        elif plan.feasible and apply:  # the plan just solved, never --out re-read
            from edgefit.report import apply_summary

            with allowed:  # the metric this command line named scores the plan it made
                report, code = _apply_plan(plan, report_dir, _plan_model(plan, resolved),
                                           json_out)
            summary["apply"] = apply_summary(report) if json_out else None
    if json_out:
        _print_json(summary)
    if code:
        raise typer.Exit(code)


def _after_plan(plan: Any, ctx: Any, resolved: Any, out: Path, metrics: list[str] | None,
                json_out: bool, quiet: bool) -> tuple[dict[str, Any], int]:
    """The plan's tables (unless --json) and its Pareto front: the --json summary so far (the
    files written) and the exit code (1: infeasible)."""
    from edgefit.report import plan_summary, print_plan, silent_console, write_pareto

    if not json_out:
        print_plan(plan, out, header=quiet)  # the header came first, unless -q
    written = [out]
    if metrics:
        written += write_pareto(plan, ctx.problem, metrics, out,
                                console=silent_console() if json_out else None)
    code = EXIT_OK if plan.feasible else EXIT_INFEASIBLE
    return plan_summary(plan, written, resolved.target_origin), code


def _scenario_after_plan(plan: Any, resolved: Any, summary: dict[str, Any],
                         json_out: bool) -> None:
    """--scenario: the scenario and where each limit came from in the --json summary, and a
    battery scenario's lifetime at the plan's energy (printed, and in the summary)."""
    if resolved.scenario is None:
        return
    from edgefit.scenarios_view import lifetime_line, scenario_record

    line = lifetime_line(resolved, plan)
    summary["scenario"] = {**scenario_record(resolved.scenario), "origins": resolved.origins,
                           "lifetime": line}
    if line is not None and not json_out:
        typer.echo(line)


def _make_plan(resolved: Any, options: Any, pins: dict[str, str], exclude: tuple[str, ...],
               backend: str, search_args: tuple[int, Path | None] | None, epochs: int,
               quantization_aware: bool, metric: tuple[str, Any] | None = None,
               student: Any = None) -> Any:
    """make_plan with the factory the user named allowed to run (torch is imported here)."""
    from edgefit_common.progress import task
    from workloads.refs import factory_allowed

    with task("start (import torch)"):
        from edgefit.planning import SearchSettings, make_plan
    search = SearchSettings(*search_args) if search_args is not None else None
    with factory_allowed(resolved.factory):  # only a factory the user named (--model)
        return make_plan(resolved.budget, resolved.model_origin, options, pins=pins,
                         exclude=exclude, backend=backend, search=search,
                         finetune_epochs=epochs, quantization_aware=quantization_aware,
                         metric=metric, student=student)


def _user_metric(ref: str | None) -> tuple[str, Any] | None:
    """--metric's function, imported now: a bad one is one line before any model loads."""
    if ref is None:
        return None
    from edgefit.metric import load_metric

    return ref, load_metric(ref)


def _check_quiet(quiet: bool, verbose: bool) -> None:
    if quiet and verbose:
        from edgefit_common.errors import SpecError

        raise SpecError("-q / --quiet and -v / --verbose: choose one")


def _feedback(quiet: bool, verbose: bool) -> Any:
    """Progress on stderr for the block (edgefit.feedback): a bar on a terminal, occasional
    lines otherwise, nothing with -q."""
    from edgefit.feedback import reporter_for
    from edgefit_common.progress import reporting

    return reporting(reporter_for(quiet, verbose))


def _print_header(resolved: Any, checked: Any, epochs: int, qat: bool, applies: bool,
                  to_stderr: bool = False) -> None:
    """The model and the target, and where each came from, before anything slow; and when
    fine-tuning runs (at apply, not while planning)."""
    from edgefit.report import header_lines, make_console

    con = make_console(stderr=to_stderr)
    lines = header_lines(resolved.budget.model, resolved.model_origin, checked.spec.name,
                         checked.profile, resolved.target_origin)
    if epochs:
        when = "after this plan, by --apply" if applies else "by `edgefit apply` on this plan"
        lines.append(f"finetune: {epochs} epoch{'s' if epochs > 1 else ''} of "
                     f"{'quantisation-aware ' if qat else ''}distillation, run {when}")
    budget = resolved.budget
    if budget.link is not None or budget.ab_slots > 1:  # docs/delivery.md
        parts = ([f"update over {budget.link}"] if budget.link else []) + (
            [f"{budget.ab_slots} model slots in flash"] if budget.ab_slots > 1 else [])
        lines.append("delivery: " + ", ".join(parts))
    from edgefit.scenarios_view import header_lines as scenario_lines

    for line in lines:
        con.print(line)
    for line in scenario_lines(resolved):
        con.print(line, soft_wrap=True, highlight=False)


def _print_json(summary: dict[str, Any]) -> None:
    import json

    typer.echo(json.dumps(summary, indent=2, default=str))


def _plan_model(plan: Any, resolved: Any) -> Any:
    """What `plan --apply` / `--loop` apply to: the factory the user named, else the plan's."""
    from workloads.refs import ModelSource, source_for_apply

    m = plan.model
    if resolved.factory is not None:
        return ModelSource(resolved.factory, resolved.budget.weights, tuple(m.input_shape),
                           trusted_factory=True)
    return source_for_apply(m.kind, m.name, m.path, m.input_shape)


def _loop_settings(rounds: int, objective: str, accuracy_drop: float | None,
                   candidates: int = 1) -> Any:
    """Checked before any model is loaded: a bad --loop fails in a second, not a minute."""
    if not rounds:
        return None
    from edgefit.loop import LoopSettings

    settings = LoopSettings(rounds=rounds, objective=objective, candidates=candidates)
    if accuracy_drop is None:
        from edgefit_common.errors import PlanError

        raise PlanError("--loop needs an accuracy limit: add --max-accuracy-drop, e.g. 1pp")
    return settings


def _loop(plan: Any, out: Path, report_dir: Path, settings: Any, source: Any,
          json_out: bool = False) -> tuple[dict[str, Any], int]:
    """The closed loop writes its best plan over --out and every round under report_dir; its
    summary for --json and the exit code."""
    from edgefit.loop import apply_batch_evaluator, apply_evaluator, closed_loop
    from edgefit.report import loop_summary, print_loop
    from edgefit_common.progress import task

    evaluate = apply_evaluator(report_dir, source)
    evaluate_many = apply_batch_evaluator(report_dir, source)
    with task("closed loop rounds", settings.rounds) as rounds:
        def counted(candidate: Any, number: int) -> Any:
            try:
                return evaluate(candidate, number)
            finally:
                rounds.advance()

        def counted_many(batch: Any) -> Any:
            try:
                return evaluate_many(batch)
            finally:
                rounds.advance(len(batch))

        result = closed_loop(plan, counted, settings, counted_many)
    path = report_dir / "loop.json"
    result.save(path)
    if result.best_plan is not None:
        result.best_plan.save(out)
    if not json_out:
        print_loop(result, path)
    code = EXIT_OK if result.status == "met" else EXIT_CHECK_FAILED
    return loop_summary(result, path, out if result.best_plan is not None else None), code


@app.command("resolve", cls=_Command)
def resolve_cmd(
    plan_file: Annotated[Path, typer.Argument(help="plan.json written by `plan`")],
    pin: Annotated[list[str] | None, Opt(help="LAYER=OPTION (repeatable)")] = None,
    exclude: Annotated[list[str] | None, Opt(help="option or technique to exclude "
                                             "(repeatable)")] = None,
    max_latency: Annotated[str | None, Opt(help="new latency limit")] = None,
    max_flash: Annotated[str | None, Opt(help="new flash limit")] = None,
    max_ram: Annotated[str | None, Opt(help="new peak-RAM limit")] = None,
    max_energy: Annotated[str | None, Opt(help="new energy limit")] = None,
    max_update_time: Annotated[str | None, Opt(help="new update-time limit (over the link "
                                               "the plan was made with)")] = None,
    data_price: Annotated[str | None, Opt(help="new data price, e.g. 0.05USD/MB")] = None,
    max_update_cost: Annotated[str | None, Opt(help="new cost limit per device a month")] = None,
    out: Annotated[Path | None, Opt(help="the plan FILE to write (default: PLAN_FILE's name "
                                        "with .resolved before .json, beside it)")] = None,
    in_place: Annotated[bool, Flag("--in-place", help="overwrite PLAN_FILE instead")] = False,
    time_limit: Annotated[float, Opt(help="solver time limit, seconds")] = 10.0,
    gap: Annotated[float, Opt(help="relative optimality gap")] = 0.0,
    solver: Annotated[str, Opt(help="cpsat or cbc")] = "cpsat",
    json_out: Annotated[bool, Flag("--json", help="a JSON summary on stdout (status, totals, "
                                   "options per layer, binding limits, the file written) "
                                   "instead of the tables")] = False,
) -> None:
    """Solve a plan again from plan.json alone (no model needed): pins, exclusions, limits.

    Writes PLAN.resolved.json beside PLAN_FILE (--out FILE elsewhere, --in-place over it)."""
    from edgefit.budgeting import merge_limits, refleet
    from edgefit.report import plan_summary, print_plan
    from planner.plan import Plan
    from planner.resolve import parse_pins, resolve
    from planner.result import SolverOptions

    target = _resolved_path(plan_file, out, in_place)
    plan = Plan.load(plan_file)
    if max_update_time is not None and (plan.delivery is None or plan.delivery.link is None):
        from edgefit_common.errors import SpecError

        raise SpecError(f"--max-update-time: {plan_file} was planned without a link; re-plan "
                        "with --link NAME (its transfer bytes are costed then)")
    plan = refleet(plan, plan_file, data_price, max_update_cost)  # docs/delivery.md
    limits = merge_limits(plan.limits, {"latency": max_latency, "flash": max_flash,
                                        "ram": max_ram, "energy": max_energy,
                                        "update_time": max_update_time})
    new = resolve(plan, pins=parse_pins(pin or []), exclude=exclude or (), limits=limits,
                  options=_solver_options(SolverOptions, time_limit, gap),
                  backend=_backend(solver))
    new.save(target)
    if json_out:
        _print_json(plan_summary(new, [target], None, command="resolve"))
    else:
        print_plan(new, target)
    if not new.feasible:
        raise typer.Exit(EXIT_INFEASIBLE)


def _resolved_path(plan_file: Path, out: Path | None, in_place: bool) -> Path:
    """Where `edgefit resolve` writes: --out, PLAN_FILE itself with --in-place, else beside it
    (plan.json -> plan.resolved.json): the input is never overwritten unasked."""
    if out is not None and in_place:
        from edgefit_common.errors import SpecError

        raise SpecError("--out and --in-place: choose one")
    if in_place:
        return plan_file
    return out or plan_file.with_name(f"{plan_file.stem}.resolved{plan_file.suffix or '.json'}")


@app.command("sweep", cls=_Command)
def sweep_cmd(
    sweep_file: Annotated[Path, typer.Argument(help="the sweep YAML: models, targets, budgets "
                                               "(docs/scale-out.md, examples/sweep.yaml)")],
    out: Annotated[Path | None, Opt(help="the output FOLDER (replaced as a whole; default: "
                                        "the file's `out`, else ./sweep-out)")] = None,
    allow_factory: Annotated[list[str] | None, Opt(help="a module:factory model the file "
                                                   "names that edgefit may import and run "
                                                   "(repeatable)")] = None,
    workers: Workers = None,
    cluster: Cluster = None,
    quiet: Quiet = False,
    verbose: Verbose = False,
    json_out: Annotated[bool, Flag("--json", help="a JSON summary on stdout (the counts, "
                                   "the files written and every row) instead of the lines")
                        ] = False,
) -> None:
    """Plan every model on every target under every budget: one table (CSV + JSON) and a plot.

    One full plan per (model, target); each further budget re-solves it. Every file, target and
    limit is checked before any model is loaded."""
    import os

    from edgefit.sweep import check_out
    from edgefit.sweep_file import load_sweep
    from edgefit_common.execution import from_settings

    _check_quiet(quiet, verbose)
    sweep = load_sweep(sweep_file, allow_factory or ())
    target = out or (Path(os.path.normpath(sweep_file.parent / sweep.spec.out))
                     if sweep.spec.out else Path("sweep-out"))
    check_out(target)
    executor = from_settings(cluster, workers)  # checked here; Ray starts on first use
    with _feedback(quiet, verbose):
        from edgefit.sweep import run_sweep
        from edgefit.sweep_table import summary_lines

        result = run_sweep(sweep, target, executor)
    if json_out:
        _print_json(result.summary())
        return
    for line in summary_lines(result):
        typer.echo(line)


@app.command("review", cls=_Command)
def review_cmd(
    plan_file: Annotated[Path, typer.Argument(help="plan.json written by `plan`")],
    report: Annotated[Path | None, Opt(help="report.json written by `edgefit apply` "
                                        "(adds a measured-flash column)")] = None,
) -> None:
    """Inspect, edit and re-solve a plan in the terminal (keyboard first; ? for help)."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        from edgefit_common.errors import SpecError

        raise SpecError("edgefit review needs a terminal (stdin and stdout are not one); use "
                        "`edgefit resolve PLAN --pin LAYER=OPTION ...` in scripts")
    from edgefit.review.app import run_review

    code = run_review(plan_file, report)
    if code:
        raise typer.Exit(code)


@app.command("apply", cls=_Command)
def apply_cmd(
    plan_file: Annotated[Path, typer.Argument(help="plan.json written by `plan`")],
    out_dir: Annotated[Path, Opt("--out", help="the artifact FOLDER (replaced as a whole: the "
                                 "plan, models, flash image and report of this run; for "
                                 "`plan`, --out is the plan file)")] = Path("out"),
    model: Annotated[str | None, Opt(help="the model to apply the plan to; needed for a "
                                     "module:factory model, which a plan file never imports "
                                     "(the plan's weights hash is checked)")] = None,
    weights: Annotated[str | None, Opt(help="state_dict for --model module:factory (default: "
                                       "the file the plan was made with, its hash "
                                       "checked)")] = None,
    metric: Annotated[str | None, Opt(help=METRIC_HELP + "; needed again when the plan "
                                      "records one (a plan file never imports code)")] = None,
    student: Annotated[str | None, Opt(help="the plan's student package.module:factory, "
                                       "needed again (a plan file never imports code)")] = None,
    quiet: Quiet = False,
    verbose: Verbose = False,
    json_out: Annotated[bool, Flag("--json", help="a JSON summary on stdout (checks, accuracy, "
                                   "artifacts, predicted costs) instead of the report")] = False,
) -> None:
    """Apply a plan: compressed ONNX + packed flash image + measured report."""
    from planner.plan import Plan
    from workloads.refs import source_for_apply

    _check_quiet(quiet, verbose)
    plan = Plan.load(plan_file)  # checked before torch is imported
    m = plan.model
    source = source_for_apply(m.kind, m.name, m.path, m.input_shape, model, weights,
                              m.weights_path)
    user_metric = _user_metric(metric)
    with _feedback(quiet, verbose), _student_allowed(_apply_student(plan, student)):
        report, code = _apply_plan(plan, out_dir, source, json_out,
                                   None if user_metric is None else user_metric[1])
    if json_out:
        from edgefit.report import apply_summary

        _print_json(apply_summary(report))
    if code:
        raise typer.Exit(code)


def _apply_plan(plan: Any, out_dir: Path, source: Any, json_out: bool = False,
                metric: Any = None) -> tuple[dict[str, Any], int]:
    """Apply and print the report (unless --json); the report and the exit code."""
    from edgefit_common.atomic_dir import APPLY_NAMES, check_replaceable

    check_replaceable(out_dir, APPLY_NAMES)  # before torch is imported or a model loaded
    from edgefit_common.progress import task

    with task("start apply (import its modules)"):
        from edgefit.applying import apply_plan
    from edgefit.report import print_report

    # the metric by keyword only when given: the 3-argument call is a seam tests replace
    report = apply_plan(plan, out_dir, source, **({} if metric is None else {"metric": metric}))
    if not json_out:
        print_report(report)
    ok = all(check["ok"] for check in report["checks"])
    return report, EXIT_OK if ok else EXIT_CHECK_FAILED


@app.command("measure", cls=_Command, context_settings={
    "allow_extra_args": True, "ignore_unknown_options": True, **HELP_NAMES})
def measure_cmd(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="an .onnx file")],
) -> None:
    """Time an ONNX model with onnxruntime: end to end, per node, peak RSS -> one JSON file.

    The same as `python edgefit_measure.py MODEL ...` — that single file needs only numpy and
    onnxruntime, so it can be copied to a board and run there. Options: --runs, --warmup,
    --threads, --opt-level, --profile-runs, --providers, --out, --input-shape (one sample's
    shape, e.g. 1x28x28: sizes for the input's symbolic dimensions) (see
    `edgefit-measure --help`).
    """
    import edgefit_measure

    raise typer.Exit(edgefit_measure.main([model, *ctx.args]))


@app.command("calibrate", cls=_Command)
def calibrate_cmd(
    files: Annotated[list[Path], typer.Argument(help="JSON files written by `edgefit measure` "
                                                "on the device, and/or timing files (.json / "
                                                ".csv, docs/calibrate.md) from any runtime")],
    device: Annotated[str, Opt(help="catalog name of the device they were measured on")],
    model: Annotated[list[Path] | None, Opt(help="the fp32 ONNX each measure file was made "
                                            "from (one for all, or one per measure file); "
                                            "timing files name their own models")] = None,
    profile: Annotated[str | None, Opt(help="device profile; default: the spec's")] = None,
    out_dir: Annotated[Path | None, Opt("--out", help="where the calibration goes "
                                        "(default: edgefit's cache)")] = None,
    min_layer_us: Annotated[float, Opt(help="ignore layers faster than this (profiler "
                                       "granularity)")] = 5.0,
    allow_other_machine: Annotated[bool, Flag(
        "--allow-other-machine", help="calibrate even when a file was timed on another CPU "
        "than the device's (warned, and recorded in the calibration)")] = False,
) -> None:
    """Fit DEVICE's cost-model parameters to measurements; `plan` then uses them and says so."""
    from cost_models.calibrate import calibrate, graphs_from_onnx, summary_lines
    from cost_models.calibration_file import calibration_path
    from edgefit.calibrating import sort_inputs, timed_runs
    from edgefit_common.errors import SpecError

    inputs = sort_inputs(files)
    measured, models = inputs.measure_files, model or []
    if measured and len(models) not in (1, len(measured)):
        raise SpecError(f"--model: give one model for all measure files or one per file "
                        f"({len(measured)}), not {len(models)}")
    if models and not measured:
        raise SpecError("--model is for edgefit-measure files; timing files name their models")
    graphs = graphs_from_onnx(models * len(measured) if len(models) == 1 else models)
    result = calibrate(device, measured, graphs, timed=timed_runs(inputs.timing_files),
                       profile=profile, out_dir=out_dir, min_layer_us=min_layer_us,
                       allow_other_machine=allow_other_machine)
    for warning in result.machine_warnings:
        typer.echo(f"WARNING: {warning}", err=True)
    for line in summary_lines(result):
        typer.echo(line)
    typer.echo(f"wrote {calibration_path(result.device, out_dir)}")


@app.command("devices", cls=_Command)
def devices_cmd() -> None:
    """List the device catalog with its key figures."""
    from edgefit.report import print_devices

    print_devices()


@app.command("scenarios", cls=_Command)
def scenarios_cmd(
    json_out: Annotated[bool, Flag("--json", help="every scenario with its limits, their "
                                   "provenance and the battery arithmetic, as JSON")] = False,
) -> None:
    """List the application scenarios (`plan --scenario NAME`) with their limits and sources."""
    from edgefit.scenarios_view import all_records, print_scenarios

    if json_out:
        _print_json({"scenarios": all_records()})
    else:
        print_scenarios()


@app.command("schemas", cls=_Command)
def schemas_cmd(
    out_dir: Annotated[Path, Opt("--out", help="directory for the JSON Schemas")] = Path("docs"),
) -> None:
    """Export the JSON Schemas of plan.json, budget files and device specs."""
    from edgefit.schemas import write_schemas

    for path in write_schemas(out_dir):
        typer.echo(f"wrote {path}")


cache_app = typer.Typer(add_completion=False, no_args_is_help=True,
                        pretty_exceptions_enable=False, cls=_Group, context_settings=HELP_NAMES,
                        help="The measurement rows plans reuse (content-addressed, in "
                        "$EDGEFIT_CACHE/rows.sqlite): count, export, merge.")
app.add_typer(cache_app, name="cache")
CacheFile = Annotated[Path, typer.Argument(help="a JSON file of rows (edgefit cache export)",
                                           metavar="FILE")]


@cache_app.command("info", cls=_Command)
def cache_info_cmd() -> None:
    """Rows per kind and the cache file's size."""
    from edgefit.cache_cmd import print_info

    print_info()


@cache_app.command("export", cls=_Command)
def cache_export_cmd(file: CacheFile) -> None:
    """Write every row to FILE (merge it into another machine's cache)."""
    from edgefit.cache_cmd import export

    export(file)


@cache_app.command("merge", cls=_Command)
def cache_merge_cmd(file: CacheFile) -> None:
    """Add the rows of FILE (idempotent: merging twice, or in any order, gives the same rows)."""
    from edgefit.cache_cmd import merge

    merge(file)


def _pareto_metrics(text: str) -> list[str]:
    from edgefit_common.errors import SpecError
    from planner.pareto import PARETO_METRICS

    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in PARETO_METRICS]
    if not names or len(names) > 2 or unknown:
        raise SpecError(f"--pareto {text!r}: one or two of {', '.join(PARETO_METRICS)}, "
                        "comma-separated")
    return [PARETO_METRICS[n] for n in names]


def _search(name: str, trials: int, study: Path | None) -> tuple[int, Path | None] | None:
    """(trials, study) of --search bayes (SearchSettings once torch may be imported); None for
    the exact solver."""
    from edgefit_common.errors import SpecError

    if name == "solver":
        return None
    if name != "bayes":
        raise SpecError(f"--search {name!r}: choose solver or bayes (scored by the "
                        "predicted accuracy) or bayes-measured (by the measured one)")
    if not 1 <= trials <= 100_000:
        raise SpecError(f"--trials {trials}: between 1 and 100000")
    return trials, study


def _measured(name: str, trials: int, study: Path | None, loop: int, apply: bool) -> Any:
    """--search bayes-measured's settings (the applies it may make), checked before torch;
    None for the other searches."""
    from edgefit_common.errors import SpecError

    if name != "bayes-measured":
        return None
    from edgefit.measured_search import MeasuredSettings

    applies = 8 if trials == 200 else trials  # 200: --trials not given (bayes's default)
    if not 1 <= applies <= 1000:
        raise SpecError(f"--trials {trials}: bayes-measured applies each trial; between 1 "
                        "and 1000")
    for given, flag in ((study, "--study"), (loop, "--loop"), (apply, "--apply")):
        if given:
            raise SpecError(f"--search bayes-measured with {flag}: the measured search applies "
                            "every trial itself (into --report-dir) and keeps no study; drop "
                            f"{flag}")
    return MeasuredSettings(applies=applies)


def _measured_search(plan: Any, out: Path, report_dir: Path, settings: Any, source: Any,
                     json_out: bool) -> tuple[dict[str, Any], int]:
    """The measured search writes its best plan over --out and every apply under report_dir."""
    from edgefit.measured_search import print_outcome, search_measured

    outcome = search_measured(plan, report_dir, settings, source)
    outcome.plan.save(out)
    if not json_out:
        print_outcome(outcome, report_dir / "search.json", out)
    found = outcome.search
    return ({"status": found.result.status, "applies": found.applies,
             "best_apply": found.best_apply, "best_validation_drop_pp": found.best_value,
             "report": str(report_dir / "search.json"), "best_plan": str(out)},
            EXIT_OK if found.result.feasible else EXIT_INFEASIBLE)


def _solver_options(options: Any, time_limit: float, gap: float) -> Any:
    """SolverOptions from --time-limit (seconds, up to a day) and --gap (0 to 1)."""
    import math

    from edgefit_common.errors import SpecError

    if not (math.isfinite(time_limit) and 0 < time_limit <= 86_400):
        raise SpecError(f"--time-limit {time_limit:g}: seconds, above 0 and at most 86400 "
                        "(one day)")
    if not (math.isfinite(gap) and 0 <= gap <= 1):
        raise SpecError(f"--gap {gap:g}: a fraction from 0 (prove optimal) to 1")
    return options(time_limit_s=time_limit, relative_gap=gap)


def _epochs(n: int) -> int:
    from edgefit_common.errors import SpecError

    if not 0 <= n <= 100:
        raise SpecError(f"--finetune {n}: between 0 and 100 epochs")
    return n


def _qat(qat: bool, epochs: int) -> bool:
    from edgefit_common.errors import SpecError

    if qat and not epochs:
        raise SpecError("--qat needs --finetune E (the epochs of quantisation-aware "
                        "fine-tuning), e.g. --finetune 2 --qat")
    return qat


def _student_spec(text: str | None) -> Any:
    """--student as a techniques.student.StudentSpec (None: no student)."""
    from techniques.student import parse_student

    return None if text is None else parse_student(text)


def _apply_student(plan: Any, text: str | None) -> Any:
    """apply's --student: the plan's factory named again (a plan never imports code)."""
    from edgefit_common.errors import SpecError

    spec = plan.student.spec if plan.student is not None else None
    wanted = spec.factory if spec is not None else None
    if text is not None and text != wanted:
        raise SpecError(f"--student {text[:60]!r}: the plan's student is "
                        + (repr(wanted) if wanted else "derived (nothing to name)" if spec
                           else "none (it plans the model itself)"))
    if wanted is not None and text is None:
        raise SpecError(f"the plan's student is the factory {wanted!r}: give --student "
                        f"{wanted} (edgefit imports a factory only when a command line names it)")
    return spec


def _student_allowed(spec: Any) -> Any:
    """Within the block the student's factory, which this command line named, may run."""
    from workloads.refs import factory_allowed

    return factory_allowed(spec.factory if spec is not None else None)


def _backend(name: str) -> str:
    from edgefit_common.errors import SpecError

    if name not in ("cpsat", "cbc"):
        raise SpecError(f"--solver {name!r}: choose cpsat or cbc")
    return name


def _non_ascii_number(argv: list[str]) -> str | None:
    """A flag value that is a number written with digits other than 0-9 ('３', '１e3'): typer
    would read it as that number; edgefit's parser refuses it, so the flags do too."""
    import unicodedata

    for token in argv:
        value = token.partition("=")[2] if token.startswith("--") and "=" in token else token
        if any(ch.isdigit() and not ch.isascii() for ch in value):
            try:
                float(unicodedata.normalize("NFKC", value))
            except ValueError:
                continue
            return value
    return None


def _run(command: typer.Typer, argv: list[str] | None = None) -> int:
    """Run a command; every way out is an exit code and at most one line on stderr."""
    bad = _non_ascii_number(sys.argv[1:] if argv is None else argv)
    if bad is not None:
        return _say(f"error: {bad!r} has digits other than 0-9; write numbers in ASCII",
                    EXIT_BAD_INPUT)
    try:
        code = command(args=argv, standalone_mode=False)  # returns the code of a typer.Exit
        if code == EXIT_INTERRUPTED:  # typer turns KeyboardInterrupt into a silent Exit(130)
            return _say(INTERRUPTED, EXIT_INTERRUPTED)
        if isinstance(code, int):
            return code
    except EdgefitError as exc:
        return _say(f"error: {exc}", EXIT_BAD_INPUT)
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except SystemExit as exc:  # --help, and click's own exits
        return int(exc.code or 0) if isinstance(exc.code, int) else EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return _say(INTERRUPTED, EXIT_INTERRUPTED)
    except typer.Abort:  # end of input where a prompt waited
        return _say("error: aborted: no input", EXIT_BAD_INPUT)
    except typer.TyperException as exc:  # usage errors of typer's vendored click
        return _say(_usage_line(exc), EXIT_BAD_INPUT)
    except OSError as exc:
        if exc.filename is not None:  # a path the user gave that the OS refused
            return _say(f"error: {_os_error_line(exc)}", EXIT_BAD_INPUT)
        return _internal(exc)
    except Exception as exc:
        return _internal(exc)
    return 0


def _say(line: str, code: int) -> int:
    from edgefit_common.fsutil import shown

    typer.echo(shown(" ".join(line.split()), 1000), err=True)
    return code


def _usage_line(exc: Exception) -> str:
    fmt = getattr(exc, "format_message", None)
    message = fmt() if fmt is not None else str(exc)
    ctx = getattr(exc, "ctx", None)
    path = getattr(ctx, "command_path", None) or "edgefit"
    return f"error: {message} (see '{path} --help')"


def _os_error_line(exc: OSError) -> str:
    from edgefit_common.fsutil import shown

    problem = (exc.strerror or type(exc).__name__).lower()
    return f"{shown(exc.filename)}: {problem}"


def _internal(exc: BaseException) -> int:
    """Exit 3: one line naming the problem and the log file that holds the traceback."""
    log = write_crash_log(exc)
    first = (str(exc).strip().splitlines() or [""])[0][:160]
    where = f"the traceback is in {log}" if log else "no log file could be written"
    return _say(f"internal error ({type(exc).__name__}{': ' + first if first else ''}); "
                f"{where}; please report it", EXIT_INTERNAL)


def write_crash_log(exc: BaseException) -> str | None:
    """The traceback of `exc` in a new file under the cache folder (or the temporary folder);
    its path, or None when neither can be written."""
    import os
    import tempfile
    import time
    import traceback

    from edgefit import __version__
    from edgefit_common.paths import cache_dir

    text = (f"edgefit {__version__}\nargv: {sys.argv!r}\n\n"
            + "".join(traceback.format_exception(exc)))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for folder in (cache_dir() / "logs", Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"edgefit-error-{stamp}-{os.getpid()}.log"
            path.write_text(text, encoding="utf-8")
            return str(path)
        except (OSError, ValueError):
            continue
    return None


def main(argv: list[str] | None = None) -> None:
    sys.exit(_run(app, argv))


_plan_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False,
                        context_settings=HELP_NAMES)
_plan_app.command(cls=_Command)(plan_cmd)


def plan_main(argv: list[str] | None = None) -> None:
    """The `plan` console script: `plan --target jetson-nano --max-latency 30ms`."""
    sys.exit(_run(_plan_app, argv))
