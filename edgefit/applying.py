"""`edgefit apply plan.json`: compress, export, verify from the files, evaluate, measure.

The report has three parts that are never mixed: (1) the target's *predicted* costs, from the
plan; (2) accuracy on the held-out split, measured; (3) on this machine, the host cost model's
prediction next to an onnxruntime measurement: a check of the cost model, not target numbers.
The steps themselves are :mod:`executors.apply`'s.

The artifacts are one set: built in a fresh folder beside ``out_dir`` and swapped into place
(edgefit_common.atomic_dir), with the plan that made them. The model comes from the plan (a
built-in name, a .pt2 or .onnx file) or, for a module:factory, from the command line only
(workloads.refs): a plan file never makes edgefit import code.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cost_models.analytical import build_cost_table
from cost_models.graph import LayerGraph
from cost_models.host_probe import host_spec
from cost_models.options import plain_option
from edgefit.planning import build_problem, calibration_split, lowrank_factors
from edgefit_common.atomic_dir import APPLY_NAMES, check_replaceable, fresh_dir
from edgefit_common.errors import DataError, PlanError
from edgefit_common.fsutil import atomic_write_text
from edgefit_common.progress import task
from executors import measure
from executors.apply import build_onnx, build_torch, verify_artifacts
from executors.tflite import tflite_artifact, tflite_check
from planner.plan import Plan
from planner.resolve import fp32_latency_ms
from techniques.flash_image import payload_bytes, write_flash_image
from techniques.lowrank import lowrank_config
from techniques.option import Offer, Option
from techniques.quantize import onnx_option
from workloads.data import data_hash
from workloads.models import LoadedModel, load_model_ref, weights_sha256
from workloads.refs import ModelSource

ARTIFACT_NAMES = APPLY_NAMES
"""What `apply` writes: a folder holding only these (or edgefit's marker) may be replaced."""


def plan_source(plan: Plan, model: str | None = None, weights: str | None = None
                ) -> ModelSource:
    """The model to apply `plan` to (workloads.refs.source_for_apply): torch-free, so a plan
    naming a factory is refused before anything is imported."""
    from workloads.refs import source_for_apply

    m = plan.model
    return source_for_apply(m.kind, m.name, m.path, m.input_shape, model, weights,
                            m.weights_path)


Metric = Callable[[np.ndarray, np.ndarray], float]


def apply_plan(plan: Plan, out_dir: Path, source: ModelSource | None = None,
               loaded: LoadedModel | None = None,
               data: tuple[tuple[np.ndarray, np.ndarray], Any] | None = None,
               metric: Metric | None = None) -> dict[str, Any]:
    """Apply `plan` to its model (or `source`, what the command line named; or `loaded`, a
    model the caller holds) into `out_dir`, which is replaced as a whole by the new set of
    artifacts. `data`: (the calibration sample, the held-out Dataset) when the caller has
    them in memory; else the plan's data set. `metric(labels, outputs) -> score in [0, 1]`
    replaces top-1 accuracy (both models run as ONNX files)."""
    done = _apply(plan, out_dir, source, loaded, data, metric, defer_timing=False)
    assert isinstance(done, dict)
    return done


@dataclass(frozen=True)
class TimingJob:
    """The host check's onnxruntime timing of one applied model, still to run: the files
    (in their final folder), one input sample, the input shape, whether per-layer times are
    wanted (the host target)."""

    runnable: Path
    fp32_onnx: Path
    x1: np.ndarray
    input_shape: tuple[int, ...]
    per_layer: bool


@dataclass(frozen=True)
class PendingApply:
    """An applied plan whose host check waits for its timing (:func:`apply_pending`):
    ``finish(timing, measured_by)`` completes the report (host rows, checks, warnings),
    rewrites report.json and returns it."""

    job: TimingJob
    finish: Callable[[Mapping[str, Any], str], dict[str, Any]]


def apply_pending(plan: Plan, out_dir: Path, source: ModelSource | None = None
                  ) -> PendingApply:
    """:func:`apply_plan` without the host check's timing: everything else (pruning,
    fine-tuning, export, accuracy, verification) runs here, on the driver; the timing is
    measured later, for several applied plans at once, where :func:`host_timings` finds a
    node with this host's CPU (edgefit.loop's candidates)."""
    pending = _apply(plan, out_dir, source, None, None, None, defer_timing=True)
    assert isinstance(pending, PendingApply)
    return pending


def _apply(plan: Plan, out_dir: Path, source: ModelSource | None,
           loaded: LoadedModel | None,
           data: tuple[tuple[np.ndarray, np.ndarray], Any] | None,
           metric: Metric | None, defer_timing: bool) -> dict[str, Any] | PendingApply:
    if not plan.feasible:
        raise PlanError(f"the plan's status is {plan.status}: there is nothing to apply")
    check_replaceable(out_dir, ARTIFACT_NAMES)
    if loaded is None:
        source = source or plan_source(plan)
        with source.allowed(), task(f"load model {source.ref}"):
            loaded = load_model_ref(source.ref, source.weights, source.input_shape)
    check_weights(plan, loaded)
    from edgefit.metric import plan_metric

    metric = plan_metric(plan.metric, metric, plan._metric_fn)
    data_name = plan.data or loaded.dataset
    if data is not None:
        calib, test = data
        data_name = data_name or test.name
    else:
        if data_name is None:
            raise PlanError("the plan names no data set: accuracy cannot be evaluated "
                            "(plan with --data)")
        from workloads.data import load_dataset  # looked up per call (tests substitute it)

        with task(f"load data {data_name}"):
            _, test = load_dataset(data_name)
            found = calibration_split(data_name)
        assert found is not None
        calib = found
    if plan.preprocess is not None:  # the normalisation the plan measured its costs with
        from workloads.data import normalize, normalized

        calib = (normalize(calib[0], plan.preprocess.mean, plan.preprocess.std), calib[1])
        test = normalized(test, plan.preprocess)
    check_calibration(plan, data_hash(*calib))
    if metric is not None and not (plan.labels and getattr(test, "labelled", True)):
        from edgefit.metric import NO_LABELS

        raise DataError(NO_LABELS)
    with fresh_dir(out_dir) as work:
        # the deferral by keyword, only when asked: _apply_into's 7-argument call is a seam
        # tests replace
        made = _apply_into(plan, loaded, data_name, calib[0], test, work, metric,
                           **({"defer_timing": True} if defer_timing else {}))
        report = made if isinstance(made, dict) else made[0]
        report = _moved(report, work, out_dir)
        report["report_path"] = str(out_dir / "report.json")
        atomic_write_text(work / "report.json", json.dumps(report, indent=2) + "\n")
        plan.save(work / "plan.json")
    if isinstance(made, dict):
        return report
    _, check, extra = made  # the host check, once its timing is measured
    job = TimingJob(out_dir / "model.onnx", out_dir / "model.fp32.onnx", test.x[:1],
                    tuple(loaded.input_shape), plan.target.device == "host")

    def finish(timing: Mapping[str, Any], measured_by: str) -> dict[str, Any]:
        host = check(job.runnable, job.fp32_onnx, timing)
        if measured_by:
            host["measured_by"] = measured_by
        report["host_check"] = host
        report["checks"] = _checks(report, plan) + extra
        report["warnings"] = speed_warnings(report)
        atomic_write_text(out_dir / "report.json", json.dumps(report, indent=2) + "\n")
        return report

    return PendingApply(job, finish)


def _moved(value: Any, work: Path, out_dir: Path) -> Any:
    """`value` with every path inside `work` (a unique temporary name) renamed into `out_dir`,
    where the set lands."""
    if isinstance(value, str):
        return value.replace(str(work), str(out_dir))
    if isinstance(value, dict):
        return {k: _moved(v, work, out_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [_moved(v, work, out_dir) for v in value]
    return value


HostCheck = Callable[[Path, Path, Mapping[str, Any]], dict[str, Any]]


def _apply_into(plan: Plan, loaded: LoadedModel, data_name: str, calib_x: np.ndarray,
                test: Any, out_dir: Path, metric: Metric | None = None,
                defer_timing: bool = False
                ) -> dict[str, Any] | tuple[dict[str, Any], HostCheck, list[dict[str, Any]]]:
    """Build, verify and measure into `out_dir` (the fresh folder): the report, unsaved.
    ``defer_timing``: no host check yet; (the report without it, the host check to run on
    (runnable, fp32 file, timing), the checks that do not depend on it)."""
    onnx_opts = {name: onnx_option(lp.techniques) for name, lp in plan.layers.items()}
    build = build_onnx if loaded.kind == "onnx" else build_torch
    with task("apply: compress, export and evaluate the model"):
        built = build(plan, loaded, onnx_opts, calib_x, test, out_dir)
    labelled = plan.labels and getattr(test, "labelled", True)
    if metric is not None:
        built = _with_metric(built, metric, test)
    elif not labelled:  # inputs only: judged by how closely it follows the fp32 model
        built = _with_fidelity(built, test)
    task_metric = encoder_task(loaded, built, test)
    image = out_dir / "model.flash.bin"
    with task("apply: write the flash image"):
        write_flash_image(image, built.flash_layers)
    runnable, fp32_onnx = built.runnable, built.fp32_onnx

    with task("apply: verify the files"):
        verification = verify_artifacts(plan, runnable, image, onnx_opts)
    with task("apply: model.tflite (convert, quantise per layer, read back, run)"):
        tflite = tflite_artifact(plan, built, calib_x, test, out_dir)
    def check(runnable: Path, fp32_onnx: Path, timing: Mapping[str, Any] | None = None
              ) -> dict[str, Any]:
        return host_check(plan, built.graph, loaded.input_shape, runnable, fp32_onnx, test.x,
                          built.narrow, built.base_graph, timing)

    host: dict[str, Any] = {"rows": [], "pending": "timed after the other candidates' "
                                                   "applies (edgefit.loop)"}
    if not defer_timing:
        with task("apply: host check (onnxruntime timing)"):
            host = check(runnable, fp32_onnx)
    with task("apply: every output against the fp32 model"):
        outputs = output_check(fp32_onnx, runnable, test.x)
    limit_pp = plan.limits.accuracy_drop
    drop_pp = 100.0 * (built.fp32_accuracy - built.accuracy)
    report = {
        "report_version": 1,
        "plan": str(plan.model.name) + f" on {plan.target.device}/{plan.target.profile}",
        "options": plan.options(),
        "target_predicted": {
            "device": plan.target.device, "profile": plan.target.profile,
            "source": "predicted by the plan's cost model (not measured on the device)",
            **(plan.totals.model_dump() if plan.totals else {}),
            "provenance": plan.provenance,
        },
        "accuracy": {
            "data": data_name, "test_size": int(len(test.y)), "fp32": built.fp32_accuracy,
            "compressed": built.accuracy, "drop_pp": drop_pp, "how": built.how,
            "simulated": built.simulated_accuracy,
            "limit_pp": limit_pp,
            "limit_met": None if limit_pp is None else drop_pp <= limit_pp,
            "measure": ("metric" if metric is not None else
                        "top-1 accuracy" if labelled else "fidelity to fp32"),
            "labels": labelled,
            "onnx_vs_torch": built.fidelity,
            "task": task_metric,  # an encoder's task metric beside its cosine (issue #20)
            "finetune": built.finetune,
            "outputs": outputs,
        },
        "host_check": host,
        "artifacts": {
            "onnx": str(runnable), "onnx_bytes": runnable.stat().st_size,
            "fp32_onnx": str(fp32_onnx), "fp32_onnx_bytes": fp32_onnx.stat().st_size,
            "flash_image": str(image), "flash_image_bytes": image.stat().st_size,
            "flash_payload_bytes": payload_bytes(image),
            "planned_flash_bytes": verification["planned_model_flash_bytes"],
            "flash_match": verification["flash_match"],
        },
        "verification": verification,
    }
    if tflite is not None:  # the target's runtime loads .tflite files
        if not labelled and isinstance(tflite.get("outputs"), dict):
            tflite["outputs"]["accuracy"] = None  # no labels: its agreement rows stand
        report["tflite"] = tflite
    from edgefit.delivery import delivery_check, measured_delivery

    delivery = measured_delivery(plan, image, tflite)
    if delivery is not None:  # the update over the plan's link, on the file written
        report["delivery"] = delivery
    extra = tflite_check(tflite) + delivery_check(delivery)
    report["checks"] = _checks(report, plan) + extra
    report["warnings"] = speed_warnings(report)
    if defer_timing:
        return report, check, extra
    return report


def encoder_task(loaded: LoadedModel, built: Any, test: Any) -> dict[str, Any] | None:
    """A sentence encoder's task metric on held-out sentences with task labels (the linear
    probe of workloads.text_tasks: fitted on the fp32 encoder's embeddings, scored with the
    shipped model.onnx's and the fake-quant torch model's); None for any other model or data.
    The cosine alone says how far embeddings moved, not what a classifier built on them loses.
    """
    if not getattr(test, "task_labels", ()) or built.compressed is None or loaded.module is None:
        return None
    if getattr(loaded.module, "output_kind", "logits") != "embedding":
        return None
    from executors.apply import onnx_outputs
    from workloads.minilm import embed
    from workloads.text_tasks import probe_report

    with task("apply: the encoder's task metric (a linear probe on held-out labels)"):
        return probe_report(test, embed(loaded.module, test.x),
                            onnx_outputs(built.runnable, test.x),
                            embed(built.compressed, test.x))


def check_pinned(plan: Plan, loaded: LoadedModel, calibration_sha256: str) -> None:
    """The plan was costed on these weights and this calibration data (PlanError otherwise: a
    plan's costs say nothing about other weights, even with the same layer names)."""
    check_weights(plan, loaded)
    check_calibration(plan, calibration_sha256)


def check_weights(plan: Plan, loaded: LoadedModel) -> None:
    """The plan was costed on these weights (checked first: before any data is read)."""
    got = weights_sha256(loaded)
    if got != plan.model.weights_sha256:
        raise PlanError(f"the plan was costed on other weights of {plan.model.name} (sha256 "
                        f"{plan.model.weights_sha256[:12]}..., this model's {got[:12]}...); "
                        "re-plan for these weights")


def check_calibration(plan: Plan, calibration_sha256: str) -> None:
    """The plan's accuracy costs were measured on this calibration data."""
    if plan.calibration_sha256 not in (None, calibration_sha256):
        raise PlanError(f"the plan's accuracy costs were measured on other calibration data "
                        f"than {plan.data!r} gives here (sha256 {plan.calibration_sha256[:12]}"
                        f"..., here {calibration_sha256[:12]}...); re-plan with this data")


def _checks(report: dict[str, Any], plan: Plan) -> list[dict[str, Any]]:
    """Pass/fail lines the CLI turns into its exit code."""
    acc = report["accuracy"]
    checks = [{"check": "artifacts stored as planned (read back from the files)",
               "ok": report["verification"]["ok"], "detail": report["verification"]["summary"]}]
    from workloads.zoo import ZOO

    if plan.model.kind == "zoo" and plan.model.name in ZOO and acc.get(
            "measure", "top-1 accuracy") == "top-1 accuracy":  # pretrained entries: no floor
        floor = ZOO[plan.model.name].accuracy_floor
        checks.append({"check": f"trained {plan.model.name} meets its floor {100 * floor:g} %",
                       "ok": acc["fp32"] >= floor, "detail": f"{100 * acc['fp32']:.2f} %"})
    if acc["limit_pp"] is not None:
        what = ("accuracy drop" if acc.get("labels", True) else
                "top-1 disagreement with the fp32 model (no labels; it bounds the accuracy "
                "drop)")
        checks.append({"check": f"{what} <= {acc['limit_pp']:g} pp",
                       "ok": bool(acc["limit_met"]), "detail": f"{acc['drop_pp']:.2f} pp"})
    if acc.get("outputs"):
        checks.append(_outputs_check(acc["outputs"]))
    host = _host_latency(report)
    if plan.target.device == "host" and plan.limits.latency is not None and host is not None:
        # on the host target the measured latency *is* the limit's quantity, not a proxy
        checks.append({"check": f"host latency <= {plan.limits.latency:g} ms (measured here: "
                                "the plan's target is this machine)",
                       "ok": host[0] <= plan.limits.latency,
                       "detail": f"{host[0]:.4g} ms measured"})
    return checks


def _host_latency(report: dict[str, Any]) -> tuple[float, float] | None:
    """(compressed, fp32 baseline) latency measured by the host check, ms."""
    rows = {r["quantity"]: r["measured"] for r in report["host_check"]["rows"]}
    lat, base = rows.get("latency (compressed)"), rows.get("latency (fp32 baseline)")
    return None if lat is None or base is None else (float(lat), float(base))


SLOWER_NOISE = 1.05
"""Measured/fp32 latency ratios up to this are run-to-run noise on a quiet machine (the lowest
round medians of two runs of one model differ by a few %), not a slower model."""


def speed_warnings(report: dict[str, Any]) -> list[str]:
    """Lines a user must see even without a latency limit: the compressed model measured
    slower than the uncompressed one on this machine (issue #22: 'compressed means faster')."""
    host = _host_latency(report)
    if host is None or host[0] <= host[1] * SLOWER_NOISE:
        return []
    return [f"the compressed model ran {host[0] / host[1]:.2f}x SLOWER than the fp32 model on "
            f"this machine ({host[0]:.4g} ms vs {host[1]:.4g} ms measured in the same run): "
            "its formats have slow kernels in onnxruntime here; on the target the plan's "
            "prediction stands, but for this CPU exclude the slow formats (--exclude) or set "
            "--max-latency"]


def _with_metric(built: Any, metric: Metric, test: Any) -> Any:
    """The accuracy figures by the caller's metric on the fp32 and the runnable ONNX (every
    output: one array, or a list of them; edgefit.metric)."""
    import dataclasses

    from cost_models.accuracy_onnx import onnx_predict_all
    from edgefit.metric import metric_name, score

    scores = [score(metric, test.y, onnx_predict_all(path, test.x))
              for path in (built.fp32_onnx, built.runnable)]
    return dataclasses.replace(built, fp32_accuracy=scores[0], accuracy=scores[1],
                               simulated_accuracy=None,
                               how=f"metric {metric_name(metric)}(labels, outputs), higher is "
                                   "better, on the fp32 ONNX and the runnable ONNX, run by "
                                   "onnxruntime on the held-out split")


def fidelity_score(rows: Sequence[Mapping[str, Any]]) -> float:
    """One figure for label-free data: each output's agreement with the fp32 model (top-1
    agreement for a class output; 1 - relative squared error, i.e. R^2 of the compressed
    output against the fp32 one, floored at 0, for others), the worst output's."""
    return min(float(r["top1_agreement"]) if r["kind"] == "class" else
               max(0.0, 1.0 - float(r["rel_sq_error"])) for r in rows)


def _with_fidelity(built: Any, test: Any) -> Any:
    """Label-free data: the runnable ONNX judged by its fidelity to the fp32 ONNX (the fp32
    model scores 1 against itself), every output compared."""
    import dataclasses

    from cost_models.accuracy_onnx import onnx_predict_all, output_names
    from cost_models.output_fidelity import fidelity

    rows = fidelity(onnx_predict_all(built.fp32_onnx, test.x),
                    onnx_predict_all(built.runnable, test.x), output_names(built.fp32_onnx))
    parts = ", ".join(f"{r['output']}: " + (
        f"top-1 agreement {100 * r['top1_agreement']:.2f} %" if r["kind"] == "class" else
        f"1 - relative squared error {100 * max(0.0, 1 - r['rel_sq_error']):.2f} %")
        for r in rows)
    finetune = ("; fine-tuned by distillation from the fp32 model only (no labels)"
                if built.finetune else "")
    return dataclasses.replace(
        built, fp32_accuracy=1.0, accuracy=fidelity_score(rows), simulated_accuracy=None,
        how="no labels: fidelity of the runnable ONNX to the fp32 ONNX on the held-out "
            f"inputs, the worst output's ({parts}); drop pp = 100 x (1 - fidelity)" + finetune)


def output_check(fp32_onnx: Path, runnable: Path, x: np.ndarray) -> list[dict[str, Any]] | None:
    """Each output of the runnable model against the fp32 model's on the test inputs, for a
    model with several outputs (the accuracy above reads the first; issue #21 item 0)."""
    from cost_models.accuracy_onnx import onnx_predict_all, output_names
    from cost_models.output_fidelity import fidelity

    names = output_names(fp32_onnx)
    if len(names) < 2:
        return None
    return fidelity(onnx_predict_all(fp32_onnx, x), onnx_predict_all(runnable, x), names)


def _outputs_check(rows: list[dict[str, Any]]) -> dict[str, Any]:
    from cost_models.output_fidelity import AGREEMENT_WARN, REL_SQ_ERROR_WARN

    detail = "; ".join(
        f"{r['output']}: " + (f"top-1 agreement {100 * r['top1_agreement']:.2f} %"
                              if r["kind"] == "class" else
                              f"relative squared error {r['rel_sq_error']:.3g}")
        for r in rows)
    return {"check": f"every output follows the fp32 model's (class outputs: top-1 agreement "
                     f">= {100 * AGREEMENT_WARN:g} %; others: relative squared error <= "
                     f"{REL_SQ_ERROR_WARN:g})",
            "ok": all(r["ok"] for r in rows), "detail": detail}


def _host_options(plan: Plan, graph: LayerGraph, narrow: Any
                  ) -> tuple[dict[str, list[Option]], dict[tuple[str, str], list[Any]]]:
    """Each layer's choice as the host runs it: the host kernel of its ONNX form, factorised
    where the plan factorises it (the plan's own ranks; the factors' geometry from ``narrow``,
    the torch model after the plan's channel pruning). Read from the configs, not the names."""
    kernels = host_spec().profile().kernels
    options: dict[str, list[Option]] = {}
    to_factor: dict[str, dict[str, list[Any]]] = {}
    for name, lp in plan.layers.items():
        key = onnx_option(lp.techniques)
        if key not in kernels:
            raise PlanError(f"host has no kernel for {key}")
        ranks = lowrank_config(lp.techniques) if narrow is not None else None
        option = plain_option(key, kernels[key],
                              Offer("lowrank", (ranks,)) if ranks is not None else None)
        options[name] = [option]
        if ranks is not None:
            to_factor[name] = {option.name: option.to_list()}
    factored = lowrank_factors(narrow, graph, to_factor) if to_factor else {}
    return options, factored


def host_predictions(plan: Plan, predicted: dict[str, float], predicted_fp32: dict[str, float]
                     ) -> tuple[dict[str, float], dict[str, float], str]:
    """The latencies the host check judges: on the host target the plan's own (this host's
    measured profiles: the compressed plan's total and the fp32 plan's, issue #22), elsewhere
    the analytical host model's; and which they are."""
    own_fp32 = fp32_latency_ms(plan)
    if plan.target.device != "host" or plan.totals is None or own_fp32 is None:
        return predicted, predicted_fp32, "the analytical host model (the host probe's rates)"
    return ({**predicted, "latency_ms": plan.totals.latency_ms},
            {**predicted_fp32, "latency_ms": own_fp32},
            "the plan's own (this host's measured per-layer profiles)")


def host_timing(runnable: Path, fp32_onnx: Path, x: np.ndarray, input_shape: tuple[int, ...],
                per_layer: bool) -> dict[str, Any]:
    """The host check's onnxruntime measurements of one applied model: its latency, the fp32
    baseline's in the same run, its peak memory and (``per_layer``) each layer's time. What a
    node with this host's CPU runs for the loop's candidates (:func:`host_timings`)."""
    return {"latency": measure.latency_ms(runnable, x),
            "latency_fp32": measure.latency_ms(fp32_onnx, x),
            "memory": measure.peak_memory(runnable, input_shape),
            "layer_ms": measure.layer_latency_ms(runnable) if per_layer else None}


def host_timings(jobs: Sequence[TimingJob]) -> list[tuple[dict[str, Any], str]]:
    """Each job's :func:`host_timing` and who measured it. In-process: here, one after the
    other ("" for who). On a cluster: on the nodes whose hardware fingerprint is this host's
    (the profile cache's key, cost_models.profiler.host_key), one job at a time per node, the
    files shipped as bytes; what no such node measured (none matches, or one answered with
    another key) is measured here on the driver, and said so."""
    from cost_models.profiler import host_fingerprint, host_key
    from edgefit_common.execution import DRIVER, IN_PROCESS, current

    executor = current()
    if executor is IN_PROCESS:
        return [(_timing_of(job), "") for job in jobs]
    key = host_fingerprint().key()
    nodes = executor.matching_nodes(host_key, (1, "all"), key)
    done: dict[int, tuple[dict[str, Any], str]] = {}

    def record(node: Any, rec: tuple[int, dict[str, Any], str]) -> None:
        index, timing, there = rec
        if there == key:  # another CPU's numbers are never this host's
            done[index] = (timing, node.label)

    items = [(i, job.runnable.read_bytes(), job.fp32_onnx.read_bytes(), job.x1,
              job.input_shape, job.per_layer) for i, job in enumerate(jobs)] if nodes else []
    executor.map_on_nodes(host_timing_task, [[item] for item in items], record, nodes,
                          label=lambda item: f"(candidate {item[0] + 1})",
                          title="host check (candidate)")
    why = ("no node of " + executor.describe() + " has this host's CPU" if not nodes
           else "its node reported another CPU")
    return [done.get(i) or (_timing_of(job), f"{DRIVER} ({why})") for i, job in enumerate(jobs)]


def _timing_of(job: TimingJob) -> dict[str, Any]:
    return host_timing(job.runnable, job.fp32_onnx, job.x1, job.input_shape, job.per_layer)


def host_timing_task(chunk: Sequence[tuple[int, bytes, bytes, np.ndarray, tuple[int, ...], bool]],
                     emit: Callable[[Any], None]) -> None:
    """One task on a node: each applied model's files written to a scratch folder and timed
    (:func:`host_timing`), emitted as ``(index, timing, this node's fingerprint key)``."""
    import tempfile

    from cost_models.profiler import host_key

    for index, runnable, fp32, x1, input_shape, per_layer in chunk:
        with tempfile.TemporaryDirectory(prefix="edgefit-host-check-") as tmp:
            paths = Path(tmp) / "model.onnx", Path(tmp) / "model.fp32.onnx"
            paths[0].write_bytes(runnable)
            paths[1].write_bytes(fp32)
            emit((index, host_timing(*paths, x1, input_shape, per_layer), host_key(1, "all")))


def host_check(plan: Plan, graph: LayerGraph, input_shape: tuple[int, ...], runnable: Path,
               fp32_onnx: Path, x: np.ndarray, narrow: Any = None,
               base_graph: LayerGraph | None = None,
               timing: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Host cost model for the same per-layer choices next to onnxruntime measurements.
    ``narrow``: the torch model after the plan's channel pruning (factorised layers are costed
    as their factors on it). ``fp32_onnx`` is the uncompressed model; ``base_graph`` its
    geometry when the plan's channel pruning changed ``graph``. ``timing``: the measurements
    (:func:`host_timing`) when they were made elsewhere; else they are made here."""
    spec = host_spec()
    options, factored = _host_options(plan, graph, narrow)
    table = build_cost_table(graph, spec, factored=factored, layer_options=options)
    problem = build_problem(graph, table, {})
    picks = {name: 0 for name in plan.layers}  # each layer has exactly its own choice
    base_graph = base_graph or graph  # the fp32 baseline: every layer at the host's fp32
    base = build_problem(base_graph, build_cost_table(base_graph, spec), {})
    fp32_picks = {name: [c.option for c in base.choices[name]].index("fp32")
                  for name in plan.layers}
    predicted, predicted_fp32 = problem.totals(picks), base.totals(fp32_picks)
    predicted, predicted_fp32, source = host_predictions(plan, predicted, predicted_fp32)
    if timing is None:
        timing = host_timing(runnable, fp32_onnx, x, input_shape, plan.target.device == "host")
    lat, lat_fp32, mem = timing["latency"], timing["latency_fp32"], timing["memory"]
    how_lat = (f"onnxruntime CPU, 1 thread, ORT_ENABLE_ALL, batch 1, {lat['runs']} runs after "
               f"{lat['warmup']} warm-up: the lowest median of {lat['rounds']} equal rounds "
               f"(median of all {lat['median_ms']:.4g} ms, p90 {lat['p90_ms']:.4g} ms)")
    rows = [
        {"quantity": "latency (compressed)", "unit": "ms", "predicted": predicted["latency_ms"],
         "measured": lat["steady_ms"], "how": f"{how_lat}; predicted: {source}"},
        {"quantity": "latency (fp32 baseline)", "unit": "ms",
         "predicted": predicted_fp32["latency_ms"], "measured": lat_fp32["steady_ms"],
         "how": "the uncompressed model's export (before pruning, factorising, sharing and "
                f"quantising), same settings, same run; predicted: {source}"},
        {"quantity": "bytes on disk (runnable ONNX)", "unit": "B",
         "predicted": predicted["flash_bytes"], "measured": float(runnable.stat().st_size),
         "how": "file size; predicted = weights as the host stores them (graph overhead not "
                "modelled)"},
        {"quantity": "peak memory", "unit": "B", "predicted": predicted["ram_bytes"],
         "measured": float(mem["load_and_run_bytes"]) if mem else None,
         "how": "predicted: weights + activations live at the peak step; measured: peak RSS "
                "growth of a fresh process over session creation + one run "
                f"({mem['run_bytes'] if mem else '-'} B of it during the run), which includes "
                "onnxruntime's own code and arena: an upper bound, not like for like"},
    ]
    out = {"device": "host", "profile": spec.default_profile, "cpu": spec.cpu,
           "provenance": table.provenance, "rows": rows}
    if plan.target.device == "host":  # the plan's own per-layer predictions are this host's
        out["layers"] = _layer_rows(plan, timing["layer_ms"])
    return out


def _layer_rows(plan: Plan, measured_ms: dict[str, float]) -> list[dict[str, Any]]:
    """Per layer: its option, the plan's predicted latency and the measured one (ms). A
    layer's prediction includes the precision boundaries it reads through (the measurement
    charges the Q/DQ node feeding a layer's input to that layer: edgefit_measure)."""
    crossing = plan.boundary_ms_by_reader()
    return [{"layer": name, "option": lp.option,
             "predicted_ms": lp.predicted.latency_ms + crossing.get(name, 0.0)
             if lp.predicted is not None else None,
             "measured_ms": measured_ms[name]}
            for name, lp in plan.layers.items() if name in measured_ms]

