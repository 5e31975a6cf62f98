"""The techniques benchmark's own logic (pins, rows per workload, tables, flags); the benchmark
itself is run by hand (minutes), not here."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

from techniques.lowrank import LowRankConfig
from techniques.prune import UnstructuredPruneConfig
from techniques.quantize import QuantizeConfig

BENCH = Path(__file__).parents[2] / "benchmarks" / "compare_techniques.py"


@pytest.fixture(scope="module")
def tech() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_techniques", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def probe(layers: dict[str, list[tuple[str, dict[str, int]]]],
          groups: tuple[tuple[str, int, list[int]], ...] = ()) -> SimpleNamespace:
    """A stand-in for a probe plan: layers' alternatives (option, widths) and channel groups
    (name, channels, widths offered)."""
    return SimpleNamespace(
        layers={n: SimpleNamespace(alternatives=[_alt(o, w) for o, w in alts])
                for n, alts in layers.items()},
        channel_groups=[SimpleNamespace(name=g, channels=c, widths=ws) for g, c, ws in groups])


# what the test's option names stand for (the plan's alternatives carry the configs themselves)
_TAGS = {"s": "prune_unstructured", "r": "lowrank", "k": "share", "n": "prune_nm"}


def _alt(option: str, widths: dict[str, int]) -> SimpleNamespace:
    kernel, *tags = option.split("+")
    return SimpleNamespace(option=option, widths=widths, kernel=kernel, techniques=[
        SimpleNamespace(technique=_TAGS[t[0]]) for t in tags if t[0] in _TAGS])


def test_pins_fall_back_to_the_precision_then_fp32(tech: ModuleType) -> None:
    plan = probe({"pw": [("fp32", {}), ("int8", {}), ("int8+r50", {})],
                  "dw": [("fp32", {}), ("int8", {})], "emb": [("fp32", {})]})
    assert tech.pins_for(plan, "int8+r50") == {"pw": "int8+r50", "dw": "int8", "emb": "fp32"}
    assert tech.coverage(plan, "int8+r50") == " (1/3 layers)"
    assert tech.coverage(plan, "fp32") == ""


def test_channel_rows_pin_each_group_at_the_width_nearest_the_ratio(tech: ModuleType) -> None:
    """conv1 makes group g (32 channels: 8, 16, 24, 32 offered), conv2 reads it; fc is in no
    group. -50 %: 16 kept; -25 %: 24; the int8 row takes int8's options of those widths."""
    def alts(prefix: str, tag: str) -> list[tuple[str, dict[str, int]]]:
        return [(p, {"g": 32}) for p in ("fp32", "int8")] + [
            (f"{p}+{tag}{w}", {"g": w}) for p in ("fp32", "int8") for w in (8, 16, 24)] + [
            (f"fp32+s50+{tag}16", {"g": 16})]
    plan = probe({"conv1": alts("c1", "w"), "conv2": alts("c2", "in"),
                  "fc": [("fp32", {}), ("int8", {})]}, (("g", 32, [8, 16, 24, 32]),))
    assert tech.pins_for(plan, "fp32+ch50") == {"conv1": "fp32+w16", "conv2": "fp32+in16",
                                                 "fc": "fp32"}
    assert tech.pins_for(plan, "fp32+ch25") == {"conv1": "fp32+w24", "conv2": "fp32+in24",
                                                 "fc": "fp32"}
    assert tech.pins_for(plan, "int8+ch50") == {"conv1": "int8+w16", "conv2": "int8+in16",
                                                 "fc": "int8"}
    assert tech.coverage(plan, "fp32+ch50") == " (2/3 layers)"


def test_an_encoder_gets_no_finetuning_rows(tech: ModuleType) -> None:
    encoder = tech.Workload("enc", "enc", None, "cosine", finetune=False)
    cnn = tech.Workload("cnn", "cnn", None, "accuracy", finetune=True)
    every = [(*r, "") for r in tech.RECIPES] + tech.ORDERS
    assert tech.recipes(cnn) == every
    assert [r for r in tech.recipes(encoder) if r[2] or tech.CHANNELS in r[1]] == []
    assert len(tech.recipes(encoder)) == sum(
        1 for r in every if not r[2] and tech.CHANNELS not in r[1]) > 10


def test_one_table_per_metric_with_its_header(tech: ModuleType) -> None:
    a = tech.Workload("a", "a", None, "accuracy", True)
    b = tech.Workload("b", "b", None, "cosine", False)
    c = tech.Workload("c", "c", None, "accuracy", True)
    lines = tech.tables({"a": ["| a |"], "b": ["| b |"], "c": ["| c |"]}, [a, b, c])
    headers = [line for line in lines if line.startswith("| model |")]
    assert len(headers) == 2
    assert headers[0].endswith(f"| {tech.HEADERS['accuracy']} |")
    assert headers[1].endswith(f"| {tech.HEADERS['cosine']} |")
    assert lines.index("| a |") < lines.index("| c |") < lines.index(headers[1]) \
        < lines.index("| b |")


def test_quality_column_per_metric(tech: ModuleType) -> None:
    enc = tech.Workload("enc", "enc", None, "cosine", False)
    cnn = tech.Workload("cnn", "cnn", None, "accuracy", True)
    acc = {"fp32": 0.91234, "compressed": 0.9, "onnx_vs_torch": {"cosine_to_fp32": 0.98765}}
    assert tech.quality(cnn, acc) == "91.23 -> 90.00 %"
    assert tech.quality(enc, acc) == "0.9123 -> 0.9000 (0.9877)"


def test_reorder_moves_the_technique(tech: ModuleType) -> None:
    q = QuantizeConfig(weights="int8", activations="int8")
    low = LowRankConfig(rank=4)
    assert [t.technique for t in tech.reorder([low, q], "prune 50 % first")] == \
        ["prune_unstructured", "lowrank", "quantize"]
    after = tech.reorder([low, q], "then prune 50 %")
    assert [t.technique for t in after] == ["lowrank", "prune_unstructured", "quantize"]
    assert isinstance(after[1], UnstructuredPruneConfig) and after[1].sparsity == 0.5
    assert tech.reorder([q], "then prune 50 %") == [q]  # no low-rank: unchanged


def test_flags(tech: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    default = tech.parse_args([])
    assert default.models == list(tech.WORKLOADS) and default.out == tech.DEFAULT_OUT
    more = tech.parse_args(["--models", "mobilenetv2-fashion, minilm-l6", "--out", "x.md"])
    assert more.models == ["mobilenetv2-fashion", "minilm-l6"] and more.out == Path("x.md")
    with pytest.raises(SystemExit):
        tech.parse_args(["--models", "resnet50"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--models: unknown resnet50; allowed:" in err and "minilm-l6" in err


def test_planning_measurements_run_once_per_model(tech: ModuleType,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np
    import torch

    from edgefit import planning

    calls: list[str] = []

    def measure(module: object, options: object, x: object) -> int:
        calls.append("kl")
        return len(calls)

    monkeypatch.setattr(planning, "_cached_output_kl", measure)  # restored after the test
    monkeypatch.setattr(planning, "channel_groups", planning.channel_groups)
    tech.measure_once_per_model()
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    x = np.zeros((4, 3), np.float32)
    first = planning._cached_output_kl(a, {"fc": {}}, x)
    assert planning._cached_output_kl(a, {"fc": {}}, x.copy()) == first  # same bytes: memo
    assert calls == ["kl"]
    planning._cached_output_kl(b, {"fc": {}}, x)  # other weights: measured again
    planning._cached_output_kl(a, {"fc": {}}, x + 1)  # other images: measured again
    assert calls == ["kl", "kl", "kl"]


def test_only_pinnable_options_are_estimated(tech: ModuleType,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Every row pins every layer, so the planner's accuracy costs are measured only for the
    options a row can pin; channel groups are measured once per model (channel rows)."""
    import numpy as np
    import torch

    from edgefit import planning

    seen: list[object] = []
    grouped: list[int] = []
    monkeypatch.setattr(planning, "_cached_output_kl",
                        lambda module, options, x: seen.append(options) or 0)
    monkeypatch.setattr(planning, "channel_groups",
                        lambda loaded, multiple, x: grouped.append(multiple) or ([], {}))
    tech.measure_once_per_model()
    pinned = tech.pinnable_options()
    assert {"fp32", "int8", "int4", "fp32+s75", "int4+s75", "fp32+k4+s75"} <= pinned
    options = {"fc": {"fp32": [], "int8": [], "int8+w12": [], "fp16+s50": []}}
    planning._cached_output_kl(torch.nn.Linear(3, 2), options, np.zeros((2, 3), np.float32))
    assert seen == [{"fc": {"fp32": [], "int8": []}}]
    assert tech.channel_rows()
    module = torch.nn.Linear(3, 2)
    loaded = SimpleNamespace(torch_module=lambda: module)
    for _ in range(2):
        assert planning.channel_groups(loaded, 8, np.zeros(1)) == ([], {})
    assert grouped == [8]  # the second call is the memo


def test_the_markdown_row_and_the_sidecar_share_the_cells(tech: ModuleType) -> None:
    import json

    w = tech.Workload("lenet300-mnist", "lenet300-mnist", None, "accuracy", True)
    r = {"host_check": {"rows": [{"quantity": "latency (compressed)", "measured": 0.0168},
                                 {"quantity": "latency (fp32 baseline)", "measured": 0.023}]},
         "artifacts": {"flash_image_bytes": 269_849},
         "accuracy": {"fp32": 0.9735, "compressed": 0.973}}
    line = tech.row(w, "int8 (w+a)", r, 1_079_396, "")
    assert line == ("| lenet300-mnist | int8 (w+a) | 269,849 B | 4.0x | 23.0 -> 16.8 us | 0.73 "
                    "| 97.35 -> 97.30 % |")
    rec = tech.record(w, "int8 (w+a)", r, 1_079_396, "")
    assert "| " + " | ".join(rec["cells"]) + " |" == line
    assert rec["values"]["host_latency_ms"] == 0.0168 and rec["values"]["quality"] == 0.973
    refused = tech.record(w, "x", {"refused": "no | way"}, 1, "")
    assert refused["cells"][2] == "refused: no / way" and "values" not in refused
    data = json.loads(tech.sidecar(["--models", "lenet300-mnist"], [w], [rec]))
    assert data["command"].endswith("compare_techniques.py --models lenet300-mnist")
    assert data["headers"]["accuracy"][-1] == "accuracy fp32 -> this"
    assert data["rows"] == [rec]
