"""How well do per-layer accuracy estimates predict whole plans? (issue #5 parts 1 and 4)

For each workload: every (layer, option) of the planner's option set on the `host` profile
(fp32, fp16, int8 weights+activations, int4 weights; each alone or with 50 / 75 % pruning on
layers of >= 1024 weights) gets four estimates on the 512-image calibration split the planner
uses: output KL (cost_models.accuracy), measured delta loss and delta accuracy
(cost_models.sensitivity) and the Hessian estimate (cost_models.hessian, on the first 256 of
those images). Then N random plans
(one uniformly drawn option per layer, seeded) are applied without fine-tuning and evaluated on
the test split; a few are also distilled briefly after pruning. The summed per-layer estimate
is compared with the real drop: Spearman rank correlation (95 % bootstrap interval) and mean
absolute error where the units match.

Workloads: lenet5-mnist, fashion-cnn, and lenet5-mnist-parity (the same LeNet-5 with 2 outputs,
trained with lenet5-mnist's recipe on the same MNIST digits relabelled even -> 0, odd -> 1;
cached like the zoo models). The class-count comparison on a second real data set (issue #20,
--dataset fashion): fashion-cnn against two 2-class tasks with the same network (2 outputs) and
fashion-cnn's recipe: fashion-cnn-apparel (every Fashion-MNIST image, clothing -> 0, footwear and
bags -> 1) and fashion-cnn-shirts (the hard pair: only the T-shirt/top and shirt images).
Plans and single-layer drops are evaluated on a fixed seeded subset of at most 2000 test images
(all of MNIST's test split; 2000 of Fashion-MNIST's 10 000; all 2000 of the shirts pair's).
Run: .venv/bin/python benchmarks/accuracy_estimators.py --json out/accuracy-estimators
(one JSON per workload there; --report-only prints the tables from them again;
--dataset mnist|fashion picks one data set's workloads instead of --workloads)
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cost_models.accuracy import measured_output_kl
from cost_models.capture import capture
from cost_models.host_probe import host_spec
from cost_models.sensitivity import hessian_sensitivity_cached, measured_sensitivity
from edgefit.planning import CALIBRATION_SIZE, configs_of, layer_options
from edgefit_common.fsutil import atomic_write_text
from edgefit_common.paths import cache_dir
from executors.distill import distill
from techniques.distill import DistillConfig
from techniques.fakequant import pruned_copy, quantized_copy
from techniques.prune import UnstructuredPruneConfig
from workloads.data import Dataset, load_dataset
from workloads.train import _atomic_save, _recipe_hash, evaluate, fresh_model, pretrained, train
from workloads.zoo import ZOO, FashionCNN, LeNet5, ZooEntry

_BASE = ZOO["lenet5-mnist"]
TWO_CLASS = ZooEntry("lenet5-mnist-parity", functools.partial(LeNet5, classes=2), "mnist-parity",
                     _BASE.input_shape, 0.95, epochs=_BASE.epochs, lr=_BASE.lr,
                     shift_px=_BASE.shift_px, batch_size=_BASE.batch_size)
_FASHION = ZOO["fashion-cnn"]
# Fashion-MNIST's label ids (the data set's documented order)
FASHION_LABELS = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                  "Sneaker", "Bag", "Ankle boot")
FOOTWEAR_AND_BAGS = (5, 7, 8, 9)  # label 1 of fashion-cnn-apparel; the six garments are 0
SHIRT_PAIR = (0, 6)  # T-shirt/top -> 0, shirt -> 1: the pair the 10-class model confuses most
DISTILL_IMAGES = 4000
DISTILL_EPOCHS = 1
TEST_IMAGES = 2000
HESSIAN_IMAGES = 256  # of the calibration split: double backward is the costly part
HESSIAN_SAMPLES = 32  # per layer at most (tolerance 5 % relative standard error)
COMPARE_OPTIONS = ("fp16", "int8", "int4", "fp32+s75", "int4+s75")


@dataclass
class Workload:
    name: str
    model: nn.Module
    train: Dataset
    test: Dataset


# --------------------------------------------------------------------------- workloads


def parity(ds: Dataset) -> Dataset:
    """MNIST digits relabelled even -> 0, odd -> 1 (the same images and split as lenet5-mnist;
    close to balanced, as MNIST's digit counts are)."""
    return Dataset(f"{ds.name}-parity", ds.x, (ds.y % 2).astype(np.int64), 2,
                   f"{ds.source} [labels: digit parity]")


def apparel(ds: Dataset) -> Dataset:
    """Every Fashion-MNIST image, relabelled clothing -> 0, footwear and bags -> 1 (the split
    a shop's sorter would make; 6 of the 10 classes against 4, so 60 / 40)."""
    y = np.isin(ds.y, FOOTWEAR_AND_BAGS).astype(np.int64)
    return Dataset(f"{ds.name}-apparel", ds.x, y, 2,
                   f"{ds.source} [labels: clothing 0, footwear and bags 1]")


def shirt_pair(ds: Dataset) -> Dataset:
    """Only the T-shirt/top (-> 0) and shirt (-> 1) images: the hardest pair of Fashion-MNIST,
    so the 2-class task is not much easier than the 10-class one (balanced, 50 / 50)."""
    zero, one = SHIRT_PAIR
    keep = np.isin(ds.y, SHIRT_PAIR)
    return Dataset(f"{ds.name}-shirts", ds.x[keep], (ds.y[keep] == one).astype(np.int64), 2,
                   f"{ds.source} [only {FASHION_LABELS[zero]} 0 and {FASHION_LABELS[one]} 1]")


def fashion_two_class(name: str, dataset: str) -> ZooEntry:
    """fashion-cnn's network with 2 outputs and fashion-cnn's recipe; ``dataset`` names the
    relabelled data, so each task's checkpoint has its own recipe hash."""
    return ZooEntry(name, functools.partial(FashionCNN, classes=2), dataset,
                    _FASHION.input_shape, 0.0, epochs=_FASHION.epochs, lr=_FASHION.lr,
                    shift_px=_FASHION.shift_px, batch_size=_FASHION.batch_size)


FASHION_APPAREL = fashion_two_class("fashion-cnn-apparel", "fashion-mnist-apparel")
FASHION_SHIRTS = fashion_two_class("fashion-cnn-shirts", "fashion-mnist-shirts")


def two_class_workload(entry: ZooEntry = TWO_CLASS, base_dataset: str = "mnist",
                       relabel: Callable[[Dataset], Dataset] = parity) -> Workload:
    """``entry`` trained on ``base_dataset`` relabelled (training split only), cached under
    the models cache like the zoo models (recipe hash in the name), never downloaded."""
    train_ds, test_ds = (relabel(d) for d in load_dataset(base_dataset))
    ckpt = cache_dir() / "models" / f"{entry.name}-{_recipe_hash(entry)}.pt"
    model = fresh_model(entry)
    if ckpt.exists():
        model.load_state_dict(torch.load(ckpt, weights_only=True))
    else:
        train(model, train_ds, epochs=entry.epochs, lr=entry.lr,
              batch_size=entry.batch_size, shift_px=entry.shift_px,
              label=f"training {entry.name}")
        _atomic_save(model.state_dict(), ckpt)
    return Workload(entry.name, model.eval(), train_ds, test_ds)


def zoo_workload(name: str) -> Workload:
    trained = pretrained(name)
    train_ds, test_ds = load_dataset(trained.entry.dataset)
    return Workload(name, trained.model.eval(), train_ds, test_ds)


def test_subset(ds: Dataset) -> Dataset:
    """A fixed seeded subset: evaluating dozens of plans on 10 000 images is the slow part."""
    if len(ds) <= TEST_IMAGES:
        return ds
    idx = np.sort(np.random.default_rng(0).choice(len(ds), TEST_IMAGES, replace=False))
    return Dataset(ds.name, ds.x[idx], ds.y[idx], ds.classes, f"{ds.source} [{TEST_IMAGES} "
                   "seeded]")


WORKLOADS: dict[str, Callable[[], Workload]] = {
    "lenet5-mnist": functools.partial(zoo_workload, "lenet5-mnist"),
    TWO_CLASS.name: two_class_workload,
    "fashion-cnn": functools.partial(zoo_workload, "fashion-cnn"),
    FASHION_APPAREL.name: functools.partial(two_class_workload, FASHION_APPAREL,
                                            "fashion-mnist", apparel),
    FASHION_SHIRTS.name: functools.partial(two_class_workload, FASHION_SHIRTS, "fashion-mnist",
                                           shirt_pair),
}
DEFAULT_WORKLOADS = ("lenet5-mnist", TWO_CLASS.name, "fashion-cnn")  # the committed first run
DATASETS = {  # --dataset: one data set's 10-class workload and its 2-class tasks
    "mnist": ("lenet5-mnist", TWO_CLASS.name),
    "fashion": ("fashion-cnn", FASHION_APPAREL.name, FASHION_SHIRTS.name),
}


# --------------------------------------------------------------------------- statistics


def rankdata(a: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties sharing their average rank (scipy.stats.rankdata 'average')."""
    a = np.asarray(a, dtype=float)
    sorter = np.argsort(a, kind="mergesort")
    inv = np.empty(len(a), dtype=np.intp)
    inv[sorter] = np.arange(len(a))
    s = a[sorter]
    first = np.r_[True, s[1:] != s[:-1]]
    dense = first.cumsum()[inv]
    bounds = np.r_[np.flatnonzero(first), len(a)]
    return 0.5 * (bounds[dense] + bounds[dense - 1] + 1)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = rankdata(a), rankdata(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def bootstrap_ci(a: np.ndarray, b: np.ndarray, seed: int = 0,
                 resamples: int = 1000) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    values = [spearman(a[i], b[i]) for i in rng.integers(0, len(a), (resamples, len(a)))]
    lo, hi = np.nanpercentile(values, [2.5, 97.5])
    return float(lo), float(hi)


# --------------------------------------------------------------------------- evaluation


def outputs(model: nn.Module, ds: Dataset) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(torch.from_numpy(ds.x[i:i + 2000]))
                          for i in range(0, len(ds), 2000)])


def drop(reference: torch.Tensor, logits: torch.Tensor, y: np.ndarray) -> dict[str, float]:
    """Real change against the fp32 model on the test split: accuracy (pp), loss, KL."""
    target = torch.from_numpy(y)
    acc = float((logits.argmax(1) == target).double().mean())
    ref_acc = float((reference.argmax(1) == target).double().mean())
    ce = nn.functional.cross_entropy
    kl = nn.functional.kl_div(nn.functional.log_softmax(logits, 1),
                              nn.functional.log_softmax(reference, 1), log_target=True,
                              reduction="batchmean")
    return {"acc_pp": 100 * (ref_acc - acc),
            "loss": float(ce(logits, target) - ce(reference, target)), "kl": float(kl)}


def random_plans(options: dict[str, dict[str, list[Any]]], n: int,
                 seed: int) -> list[dict[str, str]]:
    rng = np.random.default_rng(seed)
    return [{layer: str(rng.choice(list(opts))) for layer, opts in options.items()}
            for _ in range(n)]


def techniques_of(plan: dict[str, str], options: dict[str, dict[str, list[Any]]]
                  ) -> dict[str, list[Any]]:
    return {layer: options[layer][option] for layer, option in plan.items()}


def has_pruning(techniques: dict[str, list[Any]]) -> bool:
    return any(isinstance(c, UnstructuredPruneConfig) for cs in techniques.values() for c in cs)


def finetuned_drop(w: Workload, techniques: dict[str, list[Any]], calib_x: np.ndarray,
                   reference: torch.Tensor) -> float:
    """Prune -> distill on a fixed subset of the training split -> quantise (the order apply
    uses)."""
    idx = np.random.default_rng(0).permutation(len(w.train))[:DISTILL_IMAGES]
    subset = Dataset(w.train.name, w.train.x[idx], w.train.y[idx], w.train.classes,
                     w.train.source)
    student, _ = distill(pruned_copy(w.model, techniques), w.model, subset,
                         DistillConfig(epochs=DISTILL_EPOCHS))
    compressed = quantized_copy(student, techniques, calib_x)
    return drop(reference, outputs(compressed, w.test), w.test.y)["acc_pp"]


# --------------------------------------------------------------------------- one workload


ESTIMATORS = ("kl", "delta_loss", "delta_acc", "hessian")
MATCHING_REAL = {"kl": "kl", "delta_loss": "loss", "delta_acc": "acc_pp", "hessian": "loss"}


def run_workload(w: Workload, kernels: Any, n_plans: int, n_finetuned: int,
                 kl_only: bool = False) -> dict[str, Any]:
    """``kl_only``: the planner's KL estimate alone (no measured or Hessian estimates, no
    fine-tuned plans), all the class-count comparison quotes, in a fraction of the CPU time."""
    w.test = test_subset(w.test)
    idx = np.random.default_rng(0).choice(len(w.train), CALIBRATION_SIZE, replace=False)
    cx, cy = w.train.x[idx], w.train.y[idx]
    graph = capture(w.model, tuple(w.train.x.shape[1:]), w.name)
    options = configs_of(layer_options(graph, kernels, None, weights=True))
    t0 = time.perf_counter()
    per_layer: dict[str, Any] = {"kl": measured_output_kl(w.model, options, cx).loss}
    seconds = {"kl": time.perf_counter() - t0}
    hessian: dict[str, Any] = {"mean_trace": {}, "hessian_samples": {}}
    if not kl_only:
        per_layer, seconds, hessian = other_estimators(w, options, cx, cy, per_layer, seconds)
    reference = outputs(w.model, w.test)
    plans = random_plans(options, n_plans, seed=0)
    real: list[dict[str, float]] = []
    predicted: dict[str, list[float]] = {e: [] for e in per_layer}
    for plan in plans:
        q = quantized_copy(w.model, techniques_of(plan, options), cx)
        real.append(drop(reference, outputs(q, w.test), w.test.y))
        for e in per_layer:
            predicted[e].append(sum(per_layer[e][layer, opt] for layer, opt in plan.items()))
    finetuned = []
    for plan in [p for p in plans if has_pruning(techniques_of(p, options))
                 ][:0 if kl_only else n_finetuned]:
        i = plans.index(plan)
        finetuned.append({"plan": plan, "predicted_acc_pp": predicted["delta_acc"][i],
                          "real_acc_pp": real[i]["acc_pp"],
                          "finetuned_acc_pp": finetuned_drop(w, techniques_of(plan, options),
                                                             cx, reference)})
    return {"name": w.name, "classes": w.test.classes,
            "fp32_test_accuracy": evaluate(w.model, w.test), "test_size": len(w.test),
            "options": sum(len(o) for o in options.values()), "plans": plans, "real": real,
            "predicted": predicted, "finetuned": finetuned, **hessian,
            "estimate_seconds": seconds,
            "per_layer": {e: {f"{k[0]}|{k[1]}": v for k, v in d.items()}
                          for e, d in per_layer.items()},
            "compare": compare_layers(w, options)}


def other_estimators(w: Workload, options: dict[str, dict[str, list[Any]]], cx: np.ndarray,
                     cy: np.ndarray, per_layer: dict[str, Any], seconds: dict[str, float]
                     ) -> tuple[dict[str, Any], dict[str, float], dict[str, Any]]:
    """Measured delta loss / accuracy and the Hessian estimate, with their times."""
    t1 = time.perf_counter()
    sens = measured_sensitivity(w.model, options, cx, cy)
    t2 = time.perf_counter()
    hess = hessian_sensitivity_cached(w.model, options, cx[:HESSIAN_IMAGES],
                                      cy[:HESSIAN_IMAGES], max_samples=HESSIAN_SAMPLES)
    t3 = time.perf_counter()
    return ({**per_layer, "delta_loss": sens.delta_loss, "delta_acc": sens.delta_accuracy_pp,
             "hessian": hess.omega.loss},
            {**seconds, "measured (cache miss or hit)": t2 - t1,
             "hessian (cache miss or hit)": t3 - t2},
            {"mean_trace": hess.mean_trace, "hessian_samples": hess.samples})


def compare_layers(w: Workload, options: dict[str, dict[str, list[Any]]]
                   ) -> dict[str, dict[str, float]]:
    """Single-layer accuracy drop (pp) on the whole test split, for the 10- vs 2-class table."""
    from cost_models.sensitivity import measure_sensitivity

    subset = {layer: {o: c for o, c in opts.items() if o in COMPARE_OPTIONS}
              for layer, opts in options.items()}
    sens = measure_sensitivity(w.model, subset, w.test.x, w.test.y)
    out: dict[str, dict[str, float]] = {}
    for (layer, option), v in sens.delta_accuracy_pp.items():
        out.setdefault(layer, {})[option] = v
        out[layer][option + " dloss"] = sens.delta_loss[layer, option]
    return out


# --------------------------------------------------------------------------- tables


def summary_rows(r: dict[str, Any]) -> list[str]:
    real = {k: np.array([d[k] for d in r["real"]]) for k in ("acc_pp", "loss", "kl")}
    rows = []
    for e in (e for e in ESTIMATORS if e in r["predicted"]):  # --kl-only runs have only kl
        pred = np.array(r["predicted"][e])
        rho = spearman(pred, real["acc_pp"])
        lo, hi = bootstrap_ci(pred, real["acc_pp"])
        rho_loss = spearman(pred, real["loss"])
        match = MATCHING_REAL[e]
        mae = float(np.mean(np.abs(pred - real[match])))
        rows.append(f"| {r['name']} | {e} | {rho:.2f} [{lo:.2f}, {hi:.2f}] | {rho_loss:.2f} | "
                    f"{mae:.3g} (vs real {match}) | {np.mean(pred):.3g} | "
                    f"{np.mean(real[match]):.3g} |")
    return rows


def layer_rows(results: Sequence[dict[str, Any]]) -> list[str]:
    rows = ["| layer | option | " + " | ".join(
        f"{r['name']} drop pp (dloss)" for r in results) + " |",
        "|---|---|" + "---|" * len(results)]
    layers = list(results[0]["compare"])
    for layer in layers:
        for option in COMPARE_OPTIONS:
            cells = []
            for r in results:
                c = r["compare"].get(layer, {})
                cells.append(f"{c[option]:.2f} ({c[option + ' dloss']:.3f})" if option in c
                             else "-")
            if any(cell != "-" for cell in cells):
                rows.append(f"| {layer} | {option} | " + " | ".join(cells) + " |")
    if not any(r["mean_trace"] for r in results):
        return rows  # --kl-only runs: no Hessian trace
    rows += ["", "| layer | " + " | ".join(f"{r['name']} Tr(H)/n" for r in results) + " |",
             "|---|" + "---|" * len(results)]
    for layer in layers:
        rows.append(f"| {layer} | " + " | ".join(
            f"{r['mean_trace'][layer]:.3g}" if layer in r["mean_trace"] else "-"
            for r in results) + " |")
    return rows


def layer_tables(results: Sequence[dict[str, Any]]) -> list[str]:
    """One side-by-side table per architecture (workloads with the same layers)."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault(tuple(r["compare"]), []).append(r)
    return [row for group in groups.values() for row in (*layer_rows(group), "")]


def finetuned_rows(results: Sequence[dict[str, Any]]) -> list[str]:
    lines = ["", f"## With fine-tuning (prune -> distill {DISTILL_EPOCHS} epoch(s) on "
             f"{DISTILL_IMAGES} training images -> quantise)", "",
             "| workload | plan | predicted (sum delta_acc) pp | real drop, no FT pp | "
             "real drop, distilled pp |", "|---|---|---|---|---|"]
    for r in results:
        for f in r["finetuned"]:
            plan = ", ".join(f"{k}={v}" for k, v in f["plan"].items())
            lines.append(f"| {r['name']} | {plan} | {f['predicted_acc_pp']:.2f} | "
                         f"{f['real_acc_pp']:.2f} | {f['finetuned_acc_pp']:.2f} |")
    return lines


def report(results: Sequence[dict[str, Any]], n_plans: int, seconds: float) -> str:
    lines = ["## Workloads", "", "| workload | classes | fp32 test accuracy | test images | "
             "(layer, option) pairs | real drop over the plans: min / median / max pp |",
             "|---|---|---|---|---|---|"]
    for r in results:
        d = np.array([x["acc_pp"] for x in r["real"]])
        lines.append(f"| {r['name']} | {r['classes']} | {100 * r['fp32_test_accuracy']:.2f} % "
                     f"| {r['test_size']} | {r['options']} | {d.min():.2f} / "
                     f"{np.median(d):.2f} / {d.max():.2f} |")
    lines += ["", f"## Summed per-layer estimate vs real drop ({n_plans} random plans each, "
              "no fine-tuning)", "",
              "| workload | estimator | Spearman vs real acc drop [95 % CI] | Spearman vs "
              "real loss change | MAE | mean predicted | mean real |",
              "|---|---|---|---|---|---|---|"]
    for r in results:
        lines += summary_rows(r)
    if any(r["finetuned"] for r in results):  # none in --kl-only runs
        lines += finetuned_rows(results)
    lines += ["", "## Single-layer sensitivity on the test split (drop pp, loss change in "
              "parentheses) and Hessian mean trace (calibration split)", "",
              *layer_tables(results), "## Time per estimator (s, this run)", ""]
    for r in results:
        times = ", ".join(f"{k} {v:.1f}" for k, v in r["estimate_seconds"].items())
        lines.append(f"- {r['name']}: {times}; Hutchinson samples per layer "
                     f"{r['hessian_samples']}")
    lines += ["", f"Wall time {seconds:.0f} s."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plans", type=int, default=24)
    parser.add_argument("--finetuned", type=int, default=3)
    picked = parser.add_mutually_exclusive_group()
    picked.add_argument("--workloads", default=",".join(DEFAULT_WORKLOADS),
                        help=f"comma-separated, of: {', '.join(WORKLOADS)}")
    picked.add_argument("--dataset", choices=sorted(DATASETS),
                        help="that data set's workloads: " + "; ".join(
                            f"{k}: {', '.join(v)}" for k, v in DATASETS.items()))
    parser.add_argument("--kl-only", action="store_true",
                        help="only the planner's KL estimate: no measured or Hessian "
                        "estimates, no fine-tuned plans (the class-count comparison's columns)")
    parser.add_argument("--json", type=Path, help="folder: one raw-results JSON per workload")
    parser.add_argument("--report-only", action="store_true",
                        help="print the tables from the JSON folder, compute nothing")
    args = parser.parse_args(argv)
    names = DATASETS[args.dataset] if args.dataset else tuple(args.workloads.split(","))
    for name in names:
        if name not in WORKLOADS:
            parser.error(f"--workloads: unknown {name!r}; allowed: {', '.join(WORKLOADS)}")
    if args.report_only and args.json is None:
        parser.error("--report-only reads the --json folder; give --json")
    start = time.perf_counter()
    kernels = None  # probed on the first workload computed (--report-only computes none)
    results = []
    for name in names:
        saved = args.json / f"{name}.json" if args.json else None
        if args.report_only and saved is not None:
            if not saved.exists():
                parser.error(f"--report-only: {saved} does not exist; run without it first")
            results.append(json.loads(saved.read_text()))
            continue
        if kernels is None:
            spec = host_spec()
            kernels = spec.profile(spec.default_profile).kernels
        results.append(run_workload(WORKLOADS[name](), kernels, args.plans, args.finetuned,
                                    args.kl_only))
        if saved is not None:
            atomic_write_text(saved, json.dumps(results[-1], indent=1, default=str))
        print(f"done {name} ({time.perf_counter() - start:.0f} s)", flush=True)
    print(report(results, len(results[0]["plans"]), time.perf_counter() - start))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
