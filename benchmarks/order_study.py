"""The combination-and-order study (issue #20 item 4): every ordered pair and triple of the
registry's techniques, in every order the executor defines, each at a matched flash size, its
accuracy on the held-out split with no fine-tuning and after a stated fine-tuning budget.

Which techniques: every entry of techniques.registry.REGISTRY, through KNOBS (its study
settings: a continuous strength, or discrete levels; quantisation is two settings, int8 weights
and activations and int4 weights). A registry entry with no KNOBS entry stops the run (and a
test fails), so a new technique joins the study by one line here.

Which orders are defined, decided by the executor's own code, not by a list:
- a model-level technique (channel pruning) runs before every per-layer step
  (executors.apply.build_torch), and the kernel's quantisation after them
  (techniques.fakequant.quantized_copy; pruned_copy skips it): other places are not
  expressible;
- the per-layer steps are run on a toy two-layer network through the executor's
  pruned_copy (its order check) and the flash image writer (its storage checks): an order
  either refuses with its message (e.g. pruning before low-rank, sharing before int8) or is
  defined.

Matched size: one strength s in [0, 1] drives every continuous knob of a combination (prune
sparsity 0.99 s, low-rank kept fraction 0.99 - 0.98 s, channels removed 0.9 s); s is bisected
until the packed flash image (techniques.flash_image, the file a device stores) is within
TOLERANCE of the target (the fp32 image / TARGET_RATIO). A combination with only discrete
knobs is searched over its levels' grid; when no setting lands within tolerance the row says
so and shows its nearest size.

Run: nice -n 10 .venv/bin/python benchmarks/order_study.py   (docs/bench-order-study.md + .json;
     about 45 min on two shared cores)
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from edgefit_common.errors import PlanError

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "docs" / "bench-order-study.md"
MODEL = "lenet5-mnist"
DATA = "mnist"
TARGET_RATIO = 10.0  # the matched size: the fp32 flash image over this
TOLERANCE = 0.03  # a row is at the matched size when its image is within 3 % of the target
BISECT_STEPS = 14
FINETUNE_EPOCHS = 2  # distillation from the fp32 model on the training split (its 10 % held)
LENGTHS = (1, 2, 3)  # singles are the reference the pairs and triples are read against


# ------------------------------------------------------------------------ the study's knobs


@dataclass(frozen=True)
class Knob:
    """One technique of the study at its settings.

    technique: the registry name. stage: "model" (before every per-layer step), "layer"
    (per-layer, in the combination's order) or "kernel" (the layer's quantisation, last).
    make: the config at strength s in [0, 1] (continuous knobs) or at a level (discrete).
    levels: the discrete levels, strongest compression last; default: the level used when a
    continuous knob sets the size."""

    label: str
    technique: str
    stage: str
    make: Callable[[Any], Any]
    continuous: bool = False
    levels: tuple[Any, ...] = ()
    default: Any = None

    def config(self, s: float, level: Any) -> Any:
        return self.make(s if self.continuous else level)


def _knobs() -> dict[str, tuple[Knob, ...]]:
    from techniques.lowrank import LowRankConfig
    from techniques.prune import ChannelPruneConfig, NMPruneConfig, UnstructuredPruneConfig
    from techniques.quantize import QuantizeConfig
    from techniques.share import SHARE_BITS, WeightSharingConfig

    return {
        "quantize": (
            Knob("int8", "quantize", "kernel",
                 lambda _: QuantizeConfig(weights="int8", activations="int8")),
            Knob("int4", "quantize", "kernel",
                 lambda _: QuantizeConfig(weights="int4", activations="fp32"))),
        "prune_unstructured": (
            Knob("prune", "prune_unstructured", "layer",
                 lambda s: UnstructuredPruneConfig(sparsity=round(0.99 * s, 4)),
                 continuous=True),),
        "lowrank": (
            Knob("low-rank", "lowrank", "layer",
                 lambda s: LowRankConfig(fraction=round(0.99 - 0.98 * s, 4)), continuous=True),),
        "share": (
            Knob("share", "share", "layer",
                 lambda bits: WeightSharingConfig(bits=bits, entropy="huffman"),
                 levels=(8, 7, 6, 5, 4, 3, 2), default=SHARE_BITS),),
        "prune_nm": (
            Knob("N:M", "prune_nm", "layer", lambda nm: NMPruneConfig(n=nm[0], m=nm[1]),
                 levels=((3, 4), (2, 4), (1, 4)), default=(2, 4)),),
        "prune_channels": (
            Knob("channels", "prune_channels", "model",
                 lambda s: ChannelPruneConfig(ratio=round(0.9 * s, 4)), continuous=True),),
    }


def knobs() -> list[Knob]:
    """The study's knobs, one registry entry after another (REGISTRY's order); a registry
    entry without knobs is a ValueError naming it (add it to _knobs)."""
    from techniques.registry import REGISTRY

    table = _knobs()
    missing = [name for name in REGISTRY if name not in table]
    if missing:
        raise ValueError(f"techniques with no study knobs: {', '.join(missing)} "
                         "(benchmarks/order_study.py _knobs)")
    return [k for name in REGISTRY for k in table[name]]


# --------------------------------------------------------------------------- enumeration


@dataclass(frozen=True)
class Order:
    knobs: tuple[Knob, ...]
    refused: str = ""  # why the executor cannot run this order ('' : defined)

    @property
    def label(self) -> str:
        return " -> ".join(k.label for k in self.knobs)

    @property
    def techniques(self) -> frozenset[str]:
        return frozenset(k.label for k in self.knobs)


def orders(all_knobs: Sequence[Knob], lengths: Sequence[int] = LENGTHS,
           probe: Callable[[tuple[Knob, ...]], str] | None = None) -> list[Order]:
    """Every ordered tuple of knobs of distinct registry techniques, each with the reason the
    executor cannot run it ('' when it can): the stage rule, then ``probe`` (default:
    :func:`toy_probe`, the executor's own checks on a toy network)."""
    probe = probe or toy_probe
    out = []
    for n in lengths:
        for combo in itertools.permutations(all_knobs, n):
            if len({k.technique for k in combo}) < n:
                continue  # two settings of one technique (int8 and int4) are not a pair
            out.append(Order(combo, stage_rule(combo) or probe(combo)))
    return out


def stage_rule(combo: Sequence[Knob]) -> str:
    """Why a model-level step that is not first, or a kernel step that is not last, cannot be
    expressed ('' when the stages are in the executor's order)."""
    rank = {"model": 0, "layer": 1, "kernel": 2}
    for a, b in itertools.pairwise(combo):
        if rank[a.stage] > rank[b.stage]:
            if a.stage == "kernel":
                return (f"{a.label} before {b.label}: the layer's quantisation is its kernel's, "
                        "applied after every per-layer step (quantized_copy)")
            return (f"{a.label} before {b.label}: channel pruning is model-level, run before "
                    "every per-layer step (build_torch)")
    return ""


def toy_probe(combo: Sequence[Knob]) -> str:
    """The executor's refusal of this order on a toy network (Linear 256 -> 128 -> 64, large
    enough that every technique takes every layer, factors included), or ''. The per-layer
    steps go through pruned_copy and the flash image writer, as in apply."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 64))
    try:
        flash_bytes(compose(net, (256,), combo, 0.5, {}))
    except PlanError as exc:
        return str(exc)
    return ""


# ------------------------------------------------------------------------ applying a combo


@dataclass
class Composed:
    """A combination applied: the float model (every step but quantisation), each layer's
    per-layer configs in order (quantisation last) and its op type."""

    model: Any
    techniques: dict[str, list[Any]]
    op_types: dict[str, str]
    narrow: Any = None  # after channel pruning, before the per-layer steps
    settings: dict[str, str] = field(default_factory=dict)


def compose(module: Any, input_shape: tuple[int, ...], combo: Sequence[Knob], s: float,
            levels: dict[str, Any]) -> Composed:
    """``module`` (untouched) with the combination applied at strength ``s`` and discrete
    ``levels`` ({knob label: level}; default: each knob's default)."""
    from cost_models.capture import capture
    from techniques.fakequant import pruned_copy

    settings: dict[str, str] = {}
    narrow = module
    for k in combo:
        if k.stage == "model":
            narrow = _channels(module, input_shape, k.config(s, None))
            settings[k.label] = f"{k.config(s, None).ratio:.0%} removed"
    layers = {ly.name: ly.op_type for ly in capture(narrow, input_shape).layers}
    # each layer as the next step finds it: a factorised layer is its factors
    current = dict(narrow.named_modules())
    per_layer: dict[str, list[Any]] = {name: [] for name in layers}
    for k in combo:
        if k.stage == "model":
            continue
        cfg = k.config(s, levels.get(k.label, k.default))
        took = [name for name in layers if applies(k.technique, cfg, current[name])]
        for name in took:
            per_layer[name].append(cfg)
            if k.technique == "lowrank":
                current[name] = _factorised(current[name], cfg, name)
        settings[k.label] = f"{_setting(k, cfg)} ({len(took)}/{len(layers)} layers)"
    return Composed(pruned_copy(narrow, per_layer), per_layer, layers, narrow, settings)


def _factorised(module: Any, cfg: Any, name: str) -> Any:
    from techniques.registry import REGISTRY

    apply = REGISTRY["lowrank"].apply_layer
    assert apply is not None
    return apply(copy.deepcopy(module), cfg, name)


def _setting(k: Knob, cfg: Any) -> str:
    if k.technique == "prune_unstructured":
        return f"{cfg.sparsity:.0%} zeroed"
    if k.technique == "lowrank":
        return f"{cfg.fraction:.0%} of weights kept"
    if k.technique == "share":
        return f"{cfg.bits}-bit codebook"
    if k.technique == "prune_nm":
        return f"{cfg.n}:{cfg.m}"
    return k.label


def applies(technique: str, cfg: Any, module: Any) -> bool:
    """Whether the technique takes this layer (the rest keep it dense): N:M where the weight
    has an N:M form, low-rank where the factors save weights, sharing on layers of at least
    MIN_WEIGHTS_FOR_SHARING weights (the planner's rule), the others everywhere."""
    import numpy as np

    from techniques.lowrank import factor_modules, resolve_ranks
    from techniques.prune import nm_applicable
    from techniques.share import MIN_WEIGHTS_FOR_SHARING

    weights: list[Any] = [p.weight for p in factor_modules(module)]
    w = weights[0].detach().numpy() if len(weights) == 1 else None
    if technique == "prune_nm":  # every factor of a factorised layer is pruned
        return all(nm_applicable(tuple(x.shape), cfg) for x in weights)
    if technique == "share":
        return sum(int(x.numel()) for x in weights) >= MIN_WEIGHTS_FOR_SHARING
    if w is None:
        return True
    if technique == "lowrank":
        if w.ndim not in (2, 4):
            return False
        try:
            resolve_ranks(np.asarray(w), cfg)
        except PlanError:
            return False
        return True
    return True


def _channels(module: Any, input_shape: tuple[int, ...], cfg: Any) -> Any:
    """A copy with every coupled channel group pruned by ``cfg`` (techniques.prune)."""
    from techniques.prune import coupling, prune_channels

    groups = coupling(module, input_shape)
    configs = {name: cfg for g in groups for name in g.layers}
    return prune_channels(copy.deepcopy(module), configs, input_shape)


def flash_bytes(c: Composed) -> int:
    """The packed flash image's file size, written as apply writes it (executors.apply)."""
    from executors.apply import _flash_layers
    from techniques.flash_image import write_flash_image

    plan = SimpleNamespace(layers={n: SimpleNamespace(techniques=c.techniques[n], op_type=op)
                                   for n, op in c.op_types.items()})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.flash"
        write_flash_image(path, _flash_layers(c.model, plan))  # type: ignore[arg-type]
        return path.stat().st_size


# ------------------------------------------------------------------------- matched size


@dataclass(frozen=True)
class Match:
    s: float
    levels: dict[str, Any]
    size_bytes: int
    steps: int  # size evaluations the search made


def match_size(size_at: Callable[[float, dict[str, Any]], int], combo: Sequence[Knob],
               target_bytes: int, tolerance: float = TOLERANCE,
               steps: int = BISECT_STEPS) -> Match:
    """The setting whose size is nearest ``target_bytes``: bisection on s when the combination
    has a continuous knob (size falls as s grows), else the grid of its discrete levels. Stops
    early once within half the tolerance."""
    if not any(k.continuous for k in combo):
        grid = [dict(zip([k.label for k in combo if k.levels], lv, strict=True))
                for lv in itertools.product(*(k.levels for k in combo if k.levels))]
        sized = [(size_at(0.0, lv), i, lv) for i, lv in enumerate(grid)]
        best = min(sized, key=lambda t: (abs(t[0] - target_bytes), t[1]))
        return Match(0.0, best[2], best[0], len(sized))
    lo, hi = 0.0, 1.0
    tried: list[tuple[int, float]] = []
    for _ in range(steps):
        mid = (lo + hi) / 2
        size = size_at(mid, {})
        tried.append((size, mid))
        if abs(size - target_bytes) <= tolerance / 2 * target_bytes:
            break
        lo, hi = (mid, hi) if size > target_bytes else (lo, mid)
    size, s = min(tried, key=lambda t: (abs(t[0] - target_bytes), t[1]))
    return Match(s, {}, size, len(tried))


def within(size_bytes: int, target_bytes: int, tolerance: float = TOLERANCE) -> bool:
    return abs(size_bytes - target_bytes) <= tolerance * target_bytes


# ------------------------------------------------------------------------------- the run


@dataclass
class Setup:
    module: Any
    input_shape: tuple[int, ...]
    train: Any
    test: Any
    calib_x: Any
    fp32_bytes: int
    fp32_accuracy: float


def setup() -> Setup:
    from edgefit.planning import calibration_split
    from workloads.data import load_dataset
    from workloads.models import load_model_ref
    from workloads.train import evaluate

    loaded = load_model_ref(MODEL)
    module = loaded.torch_module().eval()
    train, test = load_dataset(DATA)
    calib = calibration_split(DATA)
    assert calib is not None
    fp32 = compose(module, loaded.input_shape, (), 0.0, {})
    return Setup(module, loaded.input_shape, train, test, calib[0], flash_bytes(fp32),
                 evaluate(module, test))


def accuracy(c: Composed, st: Setup) -> float:
    """Top-1 on the held-out split, the torch model with its quantisation simulated."""
    from techniques.fakequant import quantized_copy
    from workloads.train import evaluate

    return evaluate(quantized_copy(c.model, c.techniques, st.calib_x), st.test)


def finetuned(c: Composed, st: Setup) -> tuple[Composed, int]:
    """The combination distilled from the fp32 model for FINETUNE_EPOCHS on the training split
    (as apply fine-tunes: zeros and codebooks kept, quantisation applied after), with the
    epochs it ran."""
    from executors.distill import distill
    from techniques.distill import DistillConfig
    from techniques.fakequant import pruned_copy
    from techniques.lowrank import lowrank_config
    from techniques.share import share_config
    from workloads.train import deterministic

    shared = {n: cfg for n, ts in c.techniques.items()
              if (cfg := share_config(ts)) is not None and not lowrank_config(ts)}
    with deterministic(0):
        student, rep = distill(copy.deepcopy(c.model), st.module, st.train,
                               DistillConfig(epochs=FINETUNE_EPOCHS, patience=FINETUNE_EPOCHS),
                               shared=list(shared), calibration=st.calib_x)
    student = pruned_copy(student, {n: [cfg] for n, cfg in shared.items()})
    return Composed(student, c.techniques, c.op_types, c.narrow, c.settings), rep.epochs_run


def measure(order: Order, st: Setup, target_bytes: int) -> dict[str, Any]:
    combo = order.knobs

    def size_at(s: float, levels: dict[str, Any]) -> int:
        return flash_bytes(compose(st.module, st.input_shape, combo, s, levels))

    try:
        m = match_size(size_at, combo, target_bytes)
        c = compose(st.module, st.input_shape, combo, m.s, m.levels)
        before = accuracy(c, st)
        if all(k.stage == "kernel" for k in combo):  # nothing before quantisation to tune
            after, tuned_bytes, epochs = None, m.size_bytes, 0
        else:
            tuned, epochs = finetuned(c, st)
            after, tuned_bytes = accuracy(tuned, st), flash_bytes(tuned)
    except PlanError as exc:  # refused on the real model (a storage check the toy missed)
        return {"order": order.label, "refused": str(exc)}
    return {"order": order.label, "length": len(combo), "settings": c.settings,
            "strength": round(m.s, 4), "flash_bytes": m.size_bytes,
            "flash_bytes_finetuned": tuned_bytes, "matched": within(m.size_bytes, target_bytes),
            "search_steps": m.steps, "accuracy": before, "accuracy_finetuned": after,
            "finetune_epochs_run": epochs}


# --------------------------------------------------------------------------- the document


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f} %"


def row_cells(r: dict[str, Any], st: Setup) -> list[str]:
    ratio = st.fp32_bytes / r["flash_bytes"]
    return [r["order"], "; ".join(f"{k}: {v}" for k, v in r["settings"].items()),
            f"{r['flash_bytes']:,} B", f"{ratio:.1f}x", "yes" if r["matched"] else "no",
            pct(r["accuracy"]), pct(r["accuracy_finetuned"])]


RESULT_HEADER = ["order", "settings", "flash image", "size ratio", "matched",
                 "accuracy, no fine-tuning", f"accuracy, distill {FINETUNE_EPOCHS} ep"]
PAIR_HEADER = ["techniques", "one order", "other order", "accuracy, no fine-tuning (one / other)",
               f"accuracy, distill {FINETUNE_EPOCHS} ep (one / other)"]


def order_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    """Every set of techniques measured in more than one order, its orders side by side."""
    by_set: dict[frozenset[str], list[dict[str, Any]]] = {}
    for r in results:
        if "refused" not in r and r["length"] > 1:
            by_set.setdefault(frozenset(r["order"].split(" -> ")), []).append(r)
    out = []
    for group in by_set.values():
        for a, b in itertools.combinations(group, 2):
            out.append([" + ".join(sorted(a["order"].split(" -> "))), a["order"], b["order"],
                        f"{pct(a['accuracy'])} / {pct(b['accuracy'])}",
                        f"{pct(a['accuracy_finetuned'])} / {pct(b['accuracy_finetuned'])}"])
    return out


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows])


def document(command: str, st: Setup, target_bytes: int, all_orders: list[Order],
             results: list[dict[str, Any]], wall_s: float | None, note: str) -> str:
    ran = [r for r in results if "refused" not in r]
    same = sum(r["flash_bytes_finetuned"] == r["flash_bytes"] for r in ran)
    refused_here = [r for r in results if "refused" in r]
    undefined = [o for o in all_orders if o.refused]
    counts = {n: (sum(1 for o in all_orders if len(o.knobs) == n),
                  sum(1 for o in all_orders if len(o.knobs) == n and not o.refused))
              for n in LENGTHS}
    lines = [
        "# The combination-and-order study, measured", "",
        f"Made by `{command}`; every number is from that run (run under nice on a shared "
        f"machine; the wall time at the end is that run's). Model: {MODEL} "
        f"(fp32 accuracy {pct(st.fp32_accuracy)} on the held-out split, flash image "
        f"{st.fp32_bytes:,} B). Matched size: every row's packed flash image is searched to "
        f"{target_bytes:,} B (the fp32 image / {TARGET_RATIO:g}), within {TOLERANCE:.0%} "
        "('matched' says whether it got there). Accuracy: top-1 on the held-out split "
        f"({len(st.test.y):,} images, never trained or fine-tuned on), the torch model with "
        "its quantisation simulated. Fine-tuning budget: "
        f"{FINETUNE_EPOCHS} epochs of distillation from the fp32 model on the training split "
        f"({len(st.train.y):,} images, 10 % of them held for its early stopping), zeros and "
        "codebooks kept, quantisation applied after (a row of quantisation alone has nothing "
        f"to fine-tune: '-'); the flash image after fine-tuning has the same size in {same} "
        f"of {len(ran)} rows (both sizes are in the JSON sidecar)."
        + (f" {note}" if note else ""),
        "",
        "Techniques: every entry of the technique registry, quantisation as two settings "
        "(int8 weights and activations; int4 weights). One strength drives every continuous "
        "knob of a row (prune: the fraction of each layer's weights zeroed; low-rank: the "
        "fraction of each layer's weights its factors keep; channels: the fraction of every "
        "coupled group's channels removed), bisected to the target; discrete knobs keep "
        "their default (share: 4-bit codebook, Huffman-coded; N:M: 2:4) unless the row has "
        "no continuous knob, when their levels are searched. Layers a technique cannot take "
        "keep it out (N:M without an N:M form, low-rank where factors save nothing, sharing "
        "below 1,024 weights).", "",
        "## Orders enumerated", "",
        *md_table(["techniques in a row", "ordered combinations", "defined (run)"],
                  [[str(n), str(a), str(b)] for n, (a, b) in counts.items()]), "",
        "## Results at matched size", "",
        *md_table(RESULT_HEADER, [row_cells(r, st) for r in ran]), "",
        "## The same techniques in different orders", "",
        *md_table(PAIR_HEADER, order_rows(results)), "",
        "## Orders the executor does not define", "",
        "Each with the executor's reason (the stage rule, or the message pruned_copy or the "
        "flash image writer refused it with on a toy network).", "",
        *md_table(["order", "why not"], [[o.label, o.refused] for o in undefined]), "",
    ]
    measured = {r["order"] for r in results}
    unmeasured = [o.label for o in all_orders if not o.refused and o.label not in measured]
    if unmeasured:
        lines += ["## Defined but not measured", "",
                  f"The run stopped before these {len(unmeasured)} defined orders were "
                  "measured (its time was up; nothing about them is known here): "
                  + ", ".join(unmeasured) + ".", ""]
    if refused_here:
        lines += ["Refused on the model itself:", "",
                  *md_table(["order", "why not"], [[r["order"], r["refused"]]
                                                   for r in refused_here]), ""]
    if wall_s is not None:
        lines += [f"Wall time {wall_s:.0f} s.", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown file to write")
    parser.add_argument("--lengths", default=",".join(map(str, LENGTHS)),
                        help="combination lengths to run (default 1,2,3)")
    parser.add_argument("--reverse", action="store_true", help="measure the defined orders "
                        "last first (a second process then meets the first half way)")
    parser.add_argument("--combine", type=Path, nargs="+", default=[], metavar="JSON",
                        help="measure nothing: the rows of these runs' sidecars (the first "
                        "file's row of an order wins), written as one document")
    parser.add_argument("--skip", type=Path, nargs="+", default=[], metavar="JSON",
                        help="leave out the orders these runs' sidecars already measured")
    parser.add_argument("--note", default="", help="a sentence about this run for the doc")
    args = parser.parse_args(argv)
    lengths = tuple(int(x) for x in args.lengths.split(","))
    start = time.perf_counter()
    command = shlex.join([".venv/bin/python", "benchmarks/order_study.py", *argv])
    all_orders = orders(knobs(), lengths)
    st = setup()
    target = round(st.fp32_bytes / TARGET_RATIO)
    if args.combine:
        return combine(args, command, st, target, all_orders)
    results: list[dict[str, Any]] = []
    done = {r["order"] for p in args.skip
            for r in json.loads(p.read_text(encoding="utf-8"))["rows"]}
    todo = [o for o in all_orders if not o.refused and o.label not in done]
    for i, order in enumerate(todo[::-1] if args.reverse else todo):
        results.append(measure(order, st, target))
        print(f"[{i + 1}] {json.dumps(results[-1])}", flush=True)
        # written after every row, so a long run's finished rows are never lost
        text = document(command, st, target, all_orders, results,
                        time.perf_counter() - start, args.note)
        write(args.out, text, sidecar(command, st, target, all_orders, results))
    print(text)
    return 0


def combined_rows(parts: Sequence[dict[str, Any]], all_orders: Sequence[Order]
                  ) -> list[dict[str, Any]]:
    """One row per defined order measured by some part (the first part's), in the
    enumeration's order."""
    found: dict[str, dict[str, Any]] = {}
    for part in parts:
        for row in part["rows"]:
            found.setdefault(row["order"], row)
    return [found[o.label] for o in all_orders if not o.refused and o.label in found]


def combine(args: argparse.Namespace, command: str, st: Setup, target: int,
            all_orders: list[Order]) -> int:
    parts = [json.loads(p.read_text(encoding="utf-8")) for p in args.combine]
    for p, part in zip(args.combine, parts, strict=True):
        if (part["fp32_bytes"], part["target_bytes"]) != (st.fp32_bytes, target):
            print(f"{p}: another model or target ({part['fp32_bytes']} B, "
                  f"{part['target_bytes']} B)", file=sys.stderr)
            return 2
    results = combined_rows(parts, all_orders)
    made = ", ".join(f"`{part['command']}`" for part in parts)
    note = (f"The rows were measured by {made} (processes run side by side, each from one "
            "end of the orders still to measure), their sidecars committed beside this "
            "file; this file joins them." + (f" {args.note}" if args.note else ""))
    text = document(command, st, target, all_orders, results, None, note)
    write(args.out, text, {**sidecar(command, st, target, all_orders, results),
                           "parts": [str(p) for p in args.combine]})
    print(text)
    return 0


def sidecar(command: str, st: Setup, target: int, all_orders: list[Order],
            results: list[dict[str, Any]]) -> dict[str, Any]:
    return {"command": command, "model": MODEL, "fp32_bytes": st.fp32_bytes,
            "fp32_accuracy": st.fp32_accuracy, "target_bytes": target, "tolerance": TOLERANCE,
            "finetune_epochs": FINETUNE_EPOCHS,
            "undefined": [{"order": o.label, "why": o.refused} for o in all_orders if o.refused],
            "rows": results}


def write(out: Path, text: str, data: dict[str, Any]) -> None:
    from edgefit_common.fsutil import atomic_write_text

    atomic_write_text(out, text)
    atomic_write_text(out.with_suffix(".json"), json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
