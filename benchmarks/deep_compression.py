"""Deep Compression's recipe (Han et al., ICLR 2016) on LeNet-300-100 and LeNet-5, measured.

prune (magnitude, per-layer rates near the paper's, iterative, distillation fine-tuning that
keeps zeros zero) -> share (per-layer k-means codebooks, centroid fine-tuning that keeps weights
on the codebook) -> entropy-code (canonical Huffman; zstd for comparison). After every stage the
weights go into the packed flash image; the size is the file's size on disk and the accuracy is
that of a fresh model loaded with the weights *read back from that file*.

Run: .venv/bin/python benchmarks/deep_compression.py  (prints the tables, writes
docs/bench-deep-compression.md; about a few minutes on 2 cores)
Options: --rounds N --prune-epochs N --share-epochs N --centroid-lr X --models a,b --no-doc
"""

from __future__ import annotations

import argparse
import copy
import json
import struct
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgefit_common.fsutil import atomic_write_text
from executors.distill import distill
from techniques.distill import DistillConfig
from techniques.flash_image import FlashLayer, read_flash_image, write_flash_image
from techniques.prune import UnstructuredPruneConfig, keep_zeros, prune_unstructured
from techniques.share import WeightSharingConfig, check_shared, keep_shared, share_module
from workloads.data import Dataset, load_dataset, split
from workloads.train import evaluate, pretrained

PUBLISHED = {"lenet300-mnist": 40, "lenet5-mnist": 39}  # x, "with no loss of accuracy"


@dataclass(frozen=True)
class Recipe:
    keep: dict[str, float]  # fraction of weights kept per layer after pruning
    bits: dict[str, int]  # codebook index bits per layer


# Kept fractions: the per-layer rates of Han et al. 2015 (Learning both Weights and
# Connections) that Deep Compression starts from, as we recall them; bits: 6 for LeNet-300-100,
# 8 conv / 5 fc for LeNet-5 (our reading of the paper; both are inputs, not measurements).
# Our LeNet-5 is LeCun's (6/16 conv channels, fc 120-84-10), not Caffe's (20/50, fc 500-10):
# its fc2 has no counterpart there and takes LeNet-300-100's middle rate.
RECIPES = {
    "lenet300-mnist": Recipe(keep={"fc1": 0.08, "fc2": 0.09, "fc3": 0.26},
                             bits={"fc1": 6, "fc2": 6, "fc3": 6}),
    "lenet5-mnist": Recipe(keep={"conv1": 0.66, "conv2": 0.12, "fc1": 0.08, "fc2": 0.09,
                                 "fc3": 0.19},
                           bits={"conv1": 8, "conv2": 8, "fc1": 5, "fc2": 5, "fc3": 5}),
}


def _layers(model: nn.Module, names: list[str]) -> dict[str, nn.Module]:
    modules = dict(model.named_modules())
    return {n: modules[n] for n in names}


def prune_iteratively(model: nn.Module, teacher: nn.Module, recipe: Recipe, data: Dataset,
                      rounds: int, epochs: int) -> None:
    """Prune in ``rounds`` steps (geometric in the kept fraction), distilling after each."""
    torch.set_flush_denormal(True)
    layers = _layers(model, list(recipe.keep))
    for r in range(1, rounds + 1):
        for name, m in layers.items():
            sparsity = 1.0 - recipe.keep[name] ** (r / rounds)
            prune_unstructured(m, UnstructuredPruneConfig(sparsity=round(sparsity, 4)))
        _, rep = distill(model, teacher, data, DistillConfig(epochs=epochs, patience=epochs),
                         seed=r)
        if not rep.zeros_kept:
            raise AssertionError("distillation moved a pruned weight")


def tune_centroids(model: nn.Module, teacher: nn.Module, configs: dict[str, WeightSharingConfig],
                   data: Dataset, epochs: int, lr: float, seed: int = 0) -> dict[str, float]:
    """Fine-tune the shared layers' centroids (summed member gradients, the paper's rule) and
    every bias (Adam), against the teacher's soft labels and the true labels; keeps the epoch
    with the best validation accuracy."""
    torch.manual_seed(seed)
    names = list(configs)
    train, val = split(data, 0.1, seed)
    tuner = keep_shared(model, names, lr=lr)
    zeros = keep_zeros(model, names)
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    opt = torch.optim.Adam(biases, lr=1e-4)
    tuner.attach(opt)
    rng = np.random.default_rng(seed)
    best_acc, best = evaluate(model, val), copy.deepcopy(model.state_dict())
    start_acc = best_acc
    t = 4.0
    for _ in range(epochs):
        model.train()
        order = rng.permutation(len(train.y))
        for i in range(0, len(order), 128):
            idx = order[i:i + 128]
            x, y = torch.from_numpy(train.x[idx]), torch.from_numpy(train.y[idx])
            with torch.no_grad():
                soft = nn.functional.log_softmax(teacher(x) / t, dim=1)
            logits = model(x)
            kd = nn.functional.kl_div(nn.functional.log_softmax(logits / t, dim=1), soft,
                                      log_target=True, reduction="batchmean") * t * t
            loss = 0.7 * kd + 0.3 * nn.functional.cross_entropy(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        acc = evaluate(model, val)
        if acc > best_acc:
            best_acc, best = acc, copy.deepcopy(model.state_dict())
    held = tuner.holds()
    model.load_state_dict(best)  # an earlier epoch's codebook: check it from the weights
    on_codebook = all(check_shared(m, configs[n])["ok"] for n, m in _layers(model, names).items())
    if not (held and on_codebook and zeros.holds()):
        raise AssertionError("centroid tuning left the codebook or moved a zero")
    return {"val_before": start_acc, "val_after": best_acc}


def flash_layers(model: nn.Module, names: list[str], stage: str,
                 configs: dict[str, WeightSharingConfig] | None = None) -> list[FlashLayer]:
    out = []
    for name, m in _layers(model, names).items():
        w = m.weight.detach().numpy().astype(np.float32)  # type: ignore[operator]
        b = m.bias.detach().numpy().astype(np.float32)  # type: ignore[union-attr, operator]
        out.append(FlashLayer(name, "fp32", w, b, sparse=stage == "pruned",
                              share=configs[name] if configs else None))
    return out


def measure(path: Path, layers: list[FlashLayer], factory: type[nn.Module] | object,
            names: list[str], test: Dataset) -> dict:
    """Write the image, read it back into a fresh model, evaluate; sizes from the file."""
    write_flash_image(path, layers)
    model = factory()  # type: ignore[operator]
    modules = _layers(model, names)
    stored = {s.name: s for s in read_flash_image(path)}
    with torch.no_grad():
        for name, s in stored.items():
            modules[name].weight.copy_(torch.from_numpy(s.weight))  # type: ignore[operator]
            modules[name].bias.copy_(torch.from_numpy(s.bias))  # type: ignore[operator]
    data = path.read_bytes()
    (hlen,) = struct.unpack_from("<I", data, 8)
    header = json.loads(data[12:12 + hlen])
    for layer, w in zip(layers, stored.values(), strict=True):
        if not np.array_equal(layer.weight, w.weight):
            raise AssertionError(f"{layer.name}: the image does not hold the model's weights")
    return {"file_bytes": path.stat().st_size, "header_bytes": 12 + hlen,
            "accuracy": evaluate(model, test), "stored": stored, "entries": header["layers"]}


def _breakdown(entries: list[dict]) -> dict[str, int]:
    """Bytes of codebooks, positions, indices and biases across the shared layers."""
    parts = {"codebook": 0, "positions": 0, "indices": 0, "bias": 0}
    for e in entries:
        sh = e["share"]
        parts["codebook"] += sh["codebook_bytes"]
        parts["positions"] += sh["positions"]["bytes"] if "positions" in sh else 0
        parts["indices"] += sh["indices"]["bytes"]
        parts["bias"] += e["bias"][1] if e["bias"] else 0
    return parts


def run_model(name: str, args: argparse.Namespace, tmp: Path) -> tuple[list[str], list[str]]:
    trained = pretrained(name)
    torch.set_num_threads(1)  # the machine is shared; timings are not the point here
    recipe = RECIPES[name]
    names = list(recipe.keep)
    train_ds, test = load_dataset(trained.entry.dataset)
    teacher = trained.model.eval()
    model = copy.deepcopy(teacher)
    stages: list[tuple[str, dict]] = []
    stages.append(("fp32 dense", measure(tmp / f"{name}-fp32.flash",
                                         flash_layers(model, names, "dense"),
                                         trained.entry.factory, names, test)))
    t0 = time.perf_counter()
    prune_iteratively(model, teacher, recipe, train_ds, args.rounds, args.prune_epochs)
    stages.append((f"pruned ({args.rounds}x{args.prune_epochs} ep distill)",
                   measure(tmp / f"{name}-pruned.flash", flash_layers(model, names, "pruned"),
                           trained.entry.factory, names, test)))
    t_prune = time.perf_counter() - t0
    for n, m in _layers(model, names).items():
        share_module(m, WeightSharingConfig(bits=recipe.bits[n]))
    cfg_none = {n: WeightSharingConfig(bits=recipe.bits[n]) for n in names}
    stages.append(("+ shared, no centroid tuning",
                   measure(tmp / f"{name}-shared0.flash",
                           flash_layers(model, names, "shared", cfg_none),
                           trained.entry.factory, names, test)))
    t0 = time.perf_counter()
    tune = tune_centroids(model, teacher, cfg_none, train_ds, args.share_epochs,
                          args.centroid_lr)
    t_share = time.perf_counter() - t0
    stages.append((f"+ shared, centroids tuned {args.share_epochs} ep",
                   measure(tmp / f"{name}-shared.flash",
                           flash_layers(model, names, "shared", cfg_none),
                           trained.entry.factory, names, test)))
    for coding in ("huffman", "zstd"):
        cfgs = {n: WeightSharingConfig(bits=recipe.bits[n], entropy=coding) for n in names}
        stages.append((f"+ {coding}", measure(tmp / f"{name}-{coding}.flash",
                                              flash_layers(model, names, "shared", cfgs),
                                              trained.entry.factory, names, test)))
    fp16 = copy.deepcopy(model)  # the same codebooks rounded to float16 (changes the weights)
    cfg16 = {n: WeightSharingConfig(bits=recipe.bits[n], entropy="huffman",
                                    codebook_dtype="float16") for n in names}
    for n, m in _layers(fp16, names).items():
        share_module(m, cfg16[n])
    stages.append(("+ huffman, float16 codebooks",
                   measure(tmp / f"{name}-huffman16.flash",
                           flash_layers(fp16, names, "shared", cfg16),
                           trained.entry.factory, names, test)))
    base = stages[0][1]
    pub_ratio = PUBLISHED[name]
    rows = []
    for label, r in stages:
        payload_ratio = (base["file_bytes"] - base["header_bytes"]) / (
            r["file_bytes"] - r["header_bytes"])
        rows.append(f"| {name} | {label} | {r['file_bytes']:,} B | "
                    f"{base['file_bytes'] / r['file_bytes']:.1f}x | {payload_ratio:.1f}x | "
                    f"{100 * r['accuracy']:.2f} % | "
                    f"{100 * (r['accuracy'] - base['accuracy']):+.2f} pp |")
        print(rows[-1], flush=True)
    huff = dict(stages)["+ huffman"]
    detail = _layer_table(name, recipe, huff)
    parts = _breakdown(huff["entries"])
    nnz = sum(int(np.count_nonzero(s.weight)) for s in huff["stored"].values())
    numel = sum(int(s.weight.size) for s in huff["stored"].values())
    summary = [
        f"* **{name}**: {numel:,} weights, {nnz:,} kept ({100 * nnz / numel:.1f} %). Final "
        f"file {huff['file_bytes']:,} B = header {huff['header_bytes']:,} + codebooks "
        f"{parts['codebook']:,} + positions {parts['positions']:,} + indices "
        f"{parts['indices']:,} + biases {parts['bias']:,}; "
        f"{8 * (parts['positions'] + parts['indices']) / nnz:.2f} bits per kept weight "
        f"(positions + index); fp32 weights / (positions + indices) = "
        f"{4 * numel / (parts['positions'] + parts['indices']):.1f}x (no header, codebook or "
        f"bias counted). Published: {pub_ratio}x with no accuracy loss. "
        f"Centroid tuning: validation {100 * tune['val_before']:.2f} -> "
        f"{100 * tune['val_after']:.2f} %. Time: pruning {t_prune:.0f} s, centroid tuning "
        f"{t_share:.0f} s.",
    ]
    print(*detail, *summary, sep="\n", flush=True)
    return rows, detail + [""] + summary


def _layer_table(name: str, recipe: Recipe, r: dict) -> list[str]:
    rows = [f"Per layer, {name}, final (+ huffman) image:", "",
            "| layer | weights | kept | index bits | codebook used | positions | stored bytes "
            "(weights) | bits per kept weight |", "|---|---|---|---|---|---|---|---|"]
    for e in r["entries"]:
        s = r["stored"][e["name"]]
        nnz = int(np.count_nonzero(s.weight))
        pos = e["share"].get("positions")
        pos_s = "none" if pos is None else (
            f"{pos['format']}{' ' + str(pos['index_bits']) + ' bit' if 'index_bits' in pos else ''}"
            f" ({pos['coding']})")
        rows.append(f"| {e['name']} | {s.weight.size:,} | {100 * nnz / s.weight.size:.1f} % | "
                    f"{recipe.bits[e['name']]} | {e['share']['k']} | {pos_s} | "
                    f"{s.weight_bytes:,} | {8 * s.weight_bytes / max(nnz, 1):.2f} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="lenet300-mnist,lenet5-mnist")
    ap.add_argument("--rounds", type=int, default=4, help="pruning rounds")
    ap.add_argument("--prune-epochs", type=int, default=8, help="distillation epochs per round")
    ap.add_argument("--share-epochs", type=int, default=6, help="centroid tuning epochs")
    ap.add_argument("--centroid-lr", type=float, default=1e-4)
    ap.add_argument("--no-doc", action="store_true", help="print only")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    rows = ["| model | stage | flash image (file) | ratio (file) | ratio (payload) | "
            "test accuracy | vs fp32 |", "|---|---|---|---|---|---|---|"]
    notes: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            r, n = run_model(name, args, Path(tmp))
            rows += r
            notes += n + [""]
    wall = time.perf_counter() - start
    print(f"wall time {wall:.0f} s")
    if not args.no_doc:
        _write_doc(rows, notes, args, wall)
    return 0


def _write_doc(rows: list[str], notes: list[str], args: argparse.Namespace, wall: float) -> None:
    cmd = ".venv/bin/python benchmarks/deep_compression.py"
    flags = (f"--rounds {args.rounds} --prune-epochs {args.prune_epochs} --share-epochs "
             f"{args.share_epochs} --centroid-lr {args.centroid_lr:g}")
    doc = Path(__file__).parents[1] / "docs" / "bench-deep-compression.md"
    head = doc.read_text().split("<!-- measured -->")[0] if doc.exists() else "# Deep Compression"
    text = "\n".join([head.rstrip(), "", "<!-- measured -->", "",
                      f"Made by `{cmd}` ({flags}); every number below is from that run "
                      f"(wall time {wall:.0f} s on 2 shared cores).", "",
                      *rows, "", *notes])
    atomic_write_text(doc, text)


if __name__ == "__main__":
    sys.exit(main())
