"""The combination-and-order study's own logic (benchmarks/order_study.py): every ordered pair
and triple of the registry's techniques is enumerated and the executor decides which are
defined; the matched-size search lands within its tolerance; the report's section quotes only
numbers its cited file holds. The study itself is run by hand (tens of minutes), not here."""

from __future__ import annotations

import importlib.util
import itertools
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).parents[2]


def _load(name: str, rel: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / rel)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def study() -> ModuleType:
    return _load("bench_order_study", "benchmarks/order_study.py")


@pytest.fixture(scope="module")
def rep() -> ModuleType:
    return _load("bench_report_orders", "benchmarks/report.py")


def test_every_registry_technique_is_in_the_study(study: ModuleType,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from techniques import registry

    assert {k.technique for k in study.knobs()} == set(registry.REGISTRY)
    monkeypatch.setitem(registry.REGISTRY, "toy_round", registry.REGISTRY["share"])
    with pytest.raises(ValueError, match="toy_round"):
        study.knobs()


def test_every_ordered_pair_and_triple_is_enumerated(study: ModuleType) -> None:
    knobs = study.knobs()
    found = study.orders(knobs, (2, 3), probe=lambda combo: "")
    # counted here independently: ordered tuples whose knobs are distinct techniques
    for n in (2, 3):
        want = {tuple(k.label for k in c) for c in itertools.permutations(knobs, n)
                if len({k.technique for k in c}) == n}
        got = [tuple(k.label for k in o.knobs) for o in found if len(o.knobs) == n]
        assert sorted(got) == sorted(want) and len(got) == len(set(got))
    assert ("int8", "int4") not in {tuple(k.label for k in o.knobs) for o in found}
    # with a probe that refuses nothing, exactly the stage rule decides
    for o in found:
        stages = [k.stage for k in o.knobs]
        in_order = stages == sorted(stages, key=["model", "layer", "kernel"].index)
        assert (o.refused == "") == in_order, o.label


def test_a_new_technique_joins_the_study(study: ModuleType,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from techniques import registry

    table = study._knobs()
    toy = study.Knob("toy", "toy_round", "layer", lambda s: None, continuous=True)
    monkeypatch.setitem(registry.REGISTRY, "toy_round", registry.REGISTRY["share"])
    monkeypatch.setattr(study, "_knobs", lambda: {**table, "toy_round": (toy,)})
    labels = {o.label for o in study.orders(study.knobs(), (2,), probe=lambda c: "")}
    assert {"toy -> prune", "prune -> toy", "toy -> int8", "channels -> toy"} <= labels


def test_the_executor_decides_which_orders_are_defined(study: ModuleType) -> None:
    k = {knob.label: knob for knob in study.knobs()}
    assert "before lowrank would be undone" in study.toy_probe((k["prune"], k["low-rank"]))
    assert "shared layer takes option fp32 or fp16" in study.toy_probe((k["share"], k["int8"]))
    # the toy is large enough that sharing takes the factors too: refused as on a real model
    assert "shared layer" in study.toy_probe((k["low-rank"], k["share"], k["int8"]))
    for defined in (("low-rank", "prune"), ("prune", "share"), ("share", "prune"),
                    ("prune", "int4")):
        assert study.toy_probe(tuple(k[x] for x in defined)) == "", defined
    assert "model-level" in study.stage_rule((k["prune"], k["channels"]))
    assert "kernel" in study.stage_rule((k["int8"], k["prune"]))


def _toy() -> Any:
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 16))


def test_the_matched_size_search_lands_within_tolerance(study: ModuleType) -> None:
    k = {knob.label: knob for knob in study.knobs()}
    net = _toy()
    combo = (k["prune"], k["int8"])

    def size_at(s: float, levels: dict[str, Any]) -> int:
        return int(study.flash_bytes(study.compose(net, (64,), combo, s, levels)))

    fp32 = int(study.flash_bytes(study.compose(net, (64,), (), 0.0, {})))
    int8 = size_at(0.0, {})  # int8 alone: where the search starts
    target = fp32 // 8
    m = study.match_size(size_at, combo, target)
    assert study.within(m.size_bytes, target) and m.size_bytes == size_at(m.s, {})
    assert 0.0 < m.s < 1.0 and m.size_bytes < int8
    # the same search far off: it says so instead of pretending
    assert not study.within(study.match_size(size_at, combo, 10).size_bytes, 10)


def test_a_discrete_only_combination_searches_its_levels(study: ModuleType) -> None:
    k = {knob.label: knob for knob in study.knobs()}
    sizes = {8: 800, 7: 700, 6: 600, 5: 500, 4: 400, 3: 300, 2: 200}
    m = study.match_size(lambda s, lv: sizes[lv["share"]], (k["share"],), 480)
    assert (m.levels, m.size_bytes, m.steps) == ({"share": 5}, 500, 7)
    assert not study.within(m.size_bytes, 480) and study.within(500, 490)


def _results() -> list[dict[str, Any]]:
    row = {"length": 2, "strength": 0.5, "flash_bytes": 1000, "flash_bytes_finetuned": 1000,
           "matched": True, "search_steps": 3, "finetune_epochs_run": 2}
    return [
        {**row, "order": "prune -> share", "settings": {"prune": "47% zeroed (5/5 layers)"},
         "accuracy": 0.9123, "accuracy_finetuned": 0.9456},
        {**row, "order": "share -> prune", "settings": {"prune": "51% zeroed (5/5 layers)"},
         "accuracy": 0.8765, "accuracy_finetuned": 0.9321, "matched": False},
        {**row, "length": 1, "order": "int8", "settings": {"int8": "int8 (5/5 layers)"},
         "accuracy": 0.9811, "accuracy_finetuned": None}]


def test_the_report_section_quotes_only_its_file(study: ModuleType, rep: ModuleType) -> None:
    from types import SimpleNamespace

    k = {knob.label: knob for knob in study.knobs()}
    st = SimpleNamespace(fp32_accuracy=0.983, fp32_bytes=10_000, test=SimpleNamespace(y=[0] * 7),
                         train=SimpleNamespace(y=[0] * 9))
    all_orders = [study.Order((k["prune"], k["share"])), study.Order((k["share"], k["prune"])),
                  study.Order((k["int8"], k["prune"]), "int8 before prune: kernel")]
    text = study.document(".venv/bin/python benchmarks/order_study.py", st, 1000, all_orders,
                          _results(), 12.0, "")
    src = rep.parse_markdown(rep.ORDER_STUDY, text)
    section = "\n".join(rep.order_study(src).lines)
    body = "\n".join(ln for ln in section.splitlines() if not ln.startswith("!["))
    body = rep.re.sub(r"\blines? \d+", "", body)
    assert rep.number_tokens(body) <= rep.number_tokens(text)
    assert f"`{rep.ORDER_STUDY}`" in section and "made by `.venv/bin/python" in section
    # both orders of one pair side by side, the unmatched one flagged
    assert "| prune + share | prune -> share | share -> prune | 91.23 % / 87.65 % |" in section
    assert "| share -> prune |" in section and "| no |" in section
    assert "| int8 -> prune | int8 before prune: kernel |" in section
    missing = "\n".join(rep.order_study(None).lines)
    assert f"missing input: `{rep.ORDER_STUDY}`" in missing and "%" not in missing


def test_a_partial_run_is_said_to_be_partial(study: ModuleType, rep: ModuleType) -> None:
    from types import SimpleNamespace

    k = {knob.label: knob for knob in study.knobs()}
    st = SimpleNamespace(fp32_accuracy=0.983, fp32_bytes=10_000, test=SimpleNamespace(y=[0] * 7),
                         train=SimpleNamespace(y=[0] * 9))
    all_orders = [study.Order((k["prune"], k["share"])), study.Order((k["share"], k["prune"])),
                  study.Order((k["int8"],))]

    def section(results: list[dict[str, Any]]) -> str:
        text = study.document("python x", st, 1000, all_orders, results, 1.0, "")
        return "\n".join(rep.order_study(rep.parse_markdown(rep.ORDER_STUDY, text)).lines)

    assert "stopped before every defined order" not in section(_results())
    assert "stopped before every defined order" in section(_results()[:2])


def test_two_runs_from_each_end_combine_into_one_row_per_order(study: ModuleType) -> None:
    k = {knob.label: knob for knob in study.knobs()}
    all_orders = [study.Order((k["prune"], k["share"])), study.Order((k["int8"], k["prune"]),
                                                                     "refused"),
                  study.Order((k["share"], k["prune"])), study.Order((k["int8"],))]
    first = {"rows": [{"order": "prune -> share", "run": 1}, {"order": "share -> prune", "run": 1}]}
    second = {"rows": [{"order": "int8", "run": 2}, {"order": "share -> prune", "run": 2}]}
    rows = study.combined_rows([first, second], all_orders)
    assert [(r["order"], r["run"]) for r in rows] == [
        ("prune -> share", 1), ("share -> prune", 1), ("int8", 2)]


def test_a_finished_run_with_orders_refused_on_the_model_is_not_partial(
        study: ModuleType, rep: ModuleType) -> None:
    """An order the toy network allows but the model refuses counts as tried: a run that
    tried every defined order is complete, one that did not is still said to be partial."""
    from types import SimpleNamespace

    k = {knob.label: knob for knob in study.knobs()}
    st = SimpleNamespace(fp32_accuracy=0.983, fp32_bytes=10_000, test=SimpleNamespace(y=[0] * 7),
                         train=SimpleNamespace(y=[0] * 9))
    all_orders = [study.Order((k["prune"], k["share"])), study.Order((k["share"], k["prune"])),
                  study.Order((k["int8"],)),
                  study.Order((k["int8"], k["prune"]), "int8 before prune: kernel")]
    refused = {"order": "share -> prune", "refused": "layer 'x': 24 distinct nonzero weights"}

    def section(results: list[dict[str, Any]]) -> str:
        text = study.document("python x", st, 1000, all_orders, results, 1.0, "")
        return "\n".join(rep.order_study(rep.parse_markdown(rep.ORDER_STUDY, text)).lines)

    done = section([_results()[0], refused, _results()[2]])
    assert "refused by the executor on the model itself" in done
    assert "stopped before every defined order" not in done
    assert "stopped before every defined order" in section([_results()[0], refused])
