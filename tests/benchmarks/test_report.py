"""benchmarks/report.py (`make report`): docs/report.md and its figures are rebuilt from the
committed benchmark outputs, byte for byte; every number a section states is in a file the
section cites; every section names the command that made its numbers; the parsers read what
the benchmarks write; a missing input is reported as missing."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).parents[2]
SCRIPT = ROOT / "benchmarks" / "report.py"
CITED = re.compile(r"`((?:docs|examples)/[^`\s]+\.(?:md|txt|sh))`")
LINES = re.compile(r"\blines? \d+(?:(?:, | and )\d+)*")


@pytest.fixture(scope="module")
def rep() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_report", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def built(rep: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    assert rep.main(["--out-dir", str(out)]) == 0
    return out


def sections(text: str) -> list[str]:
    return text.split("\n## ")[1:]


def test_regenerating_gives_the_committed_report_and_figures(built: Path) -> None:
    assert (built / "report.md").read_text() == (ROOT / "docs" / "report.md").read_text()
    for png in sorted(built.glob("*.png")):
        assert png.read_bytes() == (ROOT / "docs" / png.name).read_bytes(), png.name
    # every image the report shows exists beside it
    for name in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (built / "report.md").read_text()):
        assert (built / name).is_file() or (ROOT / "docs" / name).is_file(), name


def test_every_number_of_a_section_is_in_a_file_it_cites(rep: ModuleType, built: Path) -> None:
    text = (built / "report.md").read_text()
    assert len(sections(text)) >= 10
    for section in sections(text):
        title = section.splitlines()[0]
        cited = set(CITED.findall(section))
        assert cited, f"section {title!r} cites no file"
        sources = "\n".join((ROOT / c).read_text() for c in cited)
        body = "\n".join(line for line in section.splitlines() if not line.startswith("!["))
        body = LINES.sub("", body)  # where a table is, not a number from it (checked below)
        unsourced = rep.number_tokens(body) - rep.number_tokens(sources)
        assert not unsourced, f"section {title!r}: {sorted(unsourced)} in none of {cited}"


def test_every_cited_line_holds_a_table(built: Path) -> None:
    text = (built / "report.md").read_text()
    cites = re.findall(r"`([^`]+\.md)`,? \(?tables? at (lines? [^)]*?)(?:\)|, made)", text)
    assert len(cites) >= 15
    for rel, where in cites:
        lines = (ROOT / rel).read_text().splitlines()
        for n in re.findall(r"\d+", where):
            assert lines[int(n) - 1].startswith("| "), (rel, n)


def test_every_section_names_the_command_that_made_it(built: Path) -> None:
    command = re.compile(r"`(?:\.venv/bin/python |python |make |plan |examples/\S+\.sh)[^`]*`")
    for section in sections((built / "report.md").read_text()):
        title = section.splitlines()[0]
        assert "made by" in section.lower() and command.search(section), title
    assert "missing input:" not in (built / "report.md").read_text()


def test_number_tokens_skip_names(rep: ModuleType) -> None:
    text = "int8 4.0x · 0.73 · 97.30 % of LeNet-5 (issue #20), 269,849 B, x86-64, 1, 2"
    assert rep.number_tokens(text) == {"4.0", "0.73", "97.30", "269,849", "1", "2"}


def test_the_made_by_sentence_gives_the_command(rep: ModuleType) -> None:
    assert rep.commands_in("Made by `a --note 'x. y'`; every number") == ["a --note 'x. y'"]
    assert rep.commands_in("Made by `make bench` (`python b.py`); every") == [
        "make bench", "python b.py"]
    assert rep.commands_in("Made by `c` (part of `make bench`), in 4.5 min. Target `t`") == [
        "c", "make bench"]
    assert rep.commands_in("Made by `d.py` (--rounds 4 --lr 0.1); more") == [
        "d.py --rounds 4 --lr 0.1"]
    assert rep.commands_in("Every number below was printed by") == []
    assert rep.commands_in("nothing here") is None


def test_tables_take_the_command_above_them(rep: ModuleType) -> None:
    text = ("# T\n\nMade by `one`; rows.\n\n| a | b |\n|---|---|\n| 1 | x y |\n\n"
            "Numbers printed by\n\n```\ntwo --flag\n```\n\n| c |\n|---|\n| 2 |\n")
    src = rep.parse_markdown("docs/t.md", text)
    first, second = src.tables
    assert (first.line, first.command, first.header, first.rows) == (
        5, ("one",), ("a", "b"), (("1", "x y"),))
    assert (second.command, second.rows) == (("two --flag",), (("2",),))
    assert src.commands == (("one",), ("two --flag",))


def test_the_parser_round_trips_every_committed_table(rep: ModuleType) -> None:
    for rel in rep.INPUTS:
        src = rep.read_source(ROOT, rel)
        lines = src.text.splitlines()
        for t in src.tables:
            at = t.line - 1
            assert _cells(lines[at]) == list(t.header), (rel, t.line)
            body = [ln for ln in lines[at + 2:at + 2 + len(t.rows) + 1] if ln.startswith("|")]
            assert [_cells(ln) for ln in body] == [list(r) for r in t.rows], (rel, t.line)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_order_pairs_come_from_the_benchmark(rep: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / rep.COMPARE).write_text(
        'ORDERS: list[tuple[str, str, int, str]] = [\n'
        '    ("a -> b", "o1", 0, ""), ("b -> a", "o1", 0, "b first"),\n'
        '    ("c alone", "o2", 0, "global"),\n'
        '    ("d -> e", "o3", 2, "x"), ("e -> d", "o3", 2, "y"),\n]\n')
    assert rep.order_pairs(tmp_path) == [("a -> b", "b -> a"), ("d -> e", "e -> d")]
    pairs = rep.order_pairs(ROOT)
    assert pairs and all(a != b for a, b in pairs)


PLAN_OUTPUT = """$ plan --scenario demo-scn --model m --out x.json
model:  m  [--model flag]
target: board / rt  [scenario demo-scn]
  target note: a note
plan (cp-sat OPTIMAL, gap 0 %, 0.00 s, 9 options)
┏━━━━━━━┳━━━━━━━━┓
┃ layer ┃ option ┃
┡━━━━━━━╇━━━━━━━━┩
│ conv1 │ int8   │
│ fc    │ fp32   │
│ fc2   │ int8   │
└───────┴────────┘
totals against limits (runtime included)
┏━━━━━━━━━┳━━━━━━━━━━━┳━━━━━━━━━━━━━┳━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━┓
┃ limit   ┃ predicted ┃ limit value ┃ headroom ┃                     ┃
┡━━━━━━━━━╇━━━━━━━━━━━╇━━━━━━━━━━━━━╇━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━┩
│ latency │    4.2ms │       10ms │   58.0 % │ ok; no published    │
│         │           │             │          │ measurement         │
│ flash   │    1.5KB │           - │        - │ no limit            │
└─────────┴───────────┴─────────────┴──────────┴─────────────────────┘
how these costs were obtained:
  accuracy: no data: accuracy cost not estimated (all zero)
battery lifetime at the plan's 1 mJ per inference: 2 days
"""


def test_a_plan_output_is_read_as_printed(rep: ModuleType) -> None:
    run = rep.parse_plan_output("examples/scenarios/output/demo-scn.txt", PLAN_OUTPUT)
    assert (run.scenario, run.target, run.status) == ("demo-scn", "board / rt", "cp-sat OPTIMAL")
    assert run.options == ("int8", "fp32")
    assert run.totals == {"latency": ("4.2ms", "10ms", "58.0 %"), "flash": ("1.5KB", "-", "-")}
    assert run.accuracy_cost == "no data"
    assert run.notes == ("target note: a note",
                         "battery lifetime at the plan's 1 mJ per inference: 2 days")
    assert rep._limit_cell(run, "latency") == "4.2ms of 10ms (58.0 % headroom)"
    assert rep._limit_cell(run, "flash") == "1.5KB (no limit)"
    assert rep._limit_cell(run, "ram") == "-"


def test_a_missing_input_is_reported_not_filled_in(rep: ModuleType, tmp_path: Path) -> None:
    for rel in [*(i for i in rep.INPUTS if i != rep.QAT), rep.COMPARE]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, tmp_path / rel)  # bench-qat.md and the scenarios left out
    report = rep.build(tmp_path)
    assert report.absent == [rep.QAT, rep.SCENARIOS]
    qat = next(s for s in sections(report.text) if s.startswith("Fine-tuning through"))
    assert f"missing input: `{rep.QAT}`" in qat and "| PTQ |" not in qat
    scenarios = next(s for s in sections(report.text) if s.startswith("The application"))
    assert f"missing input: `{rep.SCENARIOS}`" in scenarios
    assert "missing input: `docs/bench-qat.md`" in report.text.split("## What could not")[1]


def test_winners_keep_the_quality_rule_and_ignore_dense_speed_noise(rep: ModuleType) -> None:
    def row(label: str, size: str, lat: str, before: str, after: str) -> object:
        return rep.Row("m", label, size, lat, before, after, "", "docs/t.md")

    assert rep.within(row("int8", "4.0x", "0.7", "97.35", "96.40 %"))
    assert not rep.within(row("int8", "4.0x", "0.7", "97.35", "96.30 %"))
    assert rep.within(row("int6", "5.2x", "0.8", "1.0000", "0.9907 (0.9907)"))
    assert not rep.within(row("int8", "4.0x", "0.4", "1.0000", "0.9950 (0.9890)"))
    rows = [row("prune 75 %", "3.5x", "0.50", "97.35", "97.00 %"),  # noise: runs dense
            row("int8", "4.0x", "0.70", "97.35", "97.30 %"),
            row("int4", "7.8x", "0.90", "97.35", "97.35 %"),
            row("int2", "15.2x", "0.60", "97.35", "26.15 %")]  # loses too much
    table = "\n".join(rep.winners(rows, []).lines)
    assert "| int4: 7.8x · 0.90 · 97.35 % | int8: 4.0x · 0.70 · 97.30 % |" in table


def test_a_techniques_sidecar_is_read_instead_of_the_markdown(rep: ModuleType,
                                                              tmp_path: Path) -> None:
    for rel in [*rep.TECHNIQUE_FILES, rep.COMPARE]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, tmp_path / rel)
    table = rep.read_source(ROOT, rep.TECHNIQUE_FILES[0]).table("model", "technique")
    rows = [{"model": r[0], "metric": "accuracy", "cells": list(r)} for r in table.rows]
    rows[0]["cells"][3] = "9.9x"  # the fp16 row's size ratio: only the sidecar says this
    sidecar = tmp_path / "docs" / "bench-techniques.json"
    sidecar.write_text(json.dumps({"command": "python bench --x", "rows": rows,
                                   "headers": {"accuracy": list(table.header)}}))
    text = rep.build(tmp_path).text
    assert "| fp16 | 9.9x · 1.00 · 97.35 % |" in text
    assert "*Source:* `docs/bench-techniques.json` (the benchmark's JSON sidecar" in text
    assert "made by `python bench --x`" in text


CLASS_RUNS = """First run printed by

```
python est.py --plans 2
```

| workload | classes | fp32 test accuracy | test images | real drop pp |
|---|---|---|---|---|
| lenet5-mnist | 10 | 98.30 % | 2000 | 0.00 / 1.00 / 2.00 |
| lenet5-mnist-parity | 2 | 98.85 % | 2000 | 0.00 / 0.30 / 0.50 |
| fashion-cnn | 10 | 91.90 % | 2000 | 0.00 / 3.00 / 9.00 |

| workload | estimator | Spearman vs real acc drop [95 % CI] |
|---|---|---|
| fashion-cnn | kl | 0.96 [0.86, 0.99] |
| fashion-cnn | hessian | 0.50 [0.10, 0.90] |

| layer | option | fashion-cnn drop pp (dloss) |
|---|---|---|
| fc1 | int8 | 0.00 (0.000) |
| fc2 | fp32+s75 | 7.50 (0.158) |

Second run printed by

```
python est.py --dataset fashion
```

| workload | classes | fp32 test accuracy | test images | real drop pp |
|---|---|---|---|---|
| fashion-cnn-shirts | 2 | 90.00 % | 2000 | 0.00 / 1.00 / 4.00 |

| workload | estimator | Spearman vs real acc drop [95 % CI] |
|---|---|---|
| fashion-cnn-shirts | kl | 0.80 [0.60, 0.90] |

| layer | option | fashion-cnn-shirts drop pp (dloss) |
|---|---|---|
| fc1 | int8 | 0.00 (0.000) |
| fc1 | int4 | 0.40 (0.010) |
"""


def test_the_class_count_tables_join_each_task_from_its_own_run(rep: ModuleType) -> None:
    src = rep.parse_markdown("docs/est.md", CLASS_RUNS)
    assert rep.measured_tasks(src, rep.FASHION_TASKS) == ["fashion-cnn", "fashion-cnn-shirts"]
    keys, cells, tables = rep._task_drops(src, ["fashion-cnn", "fashion-cnn-shirts"])
    assert keys == [("fc1", "int8"), ("fc2", "fp32+s75"), ("fc1", "int4")]
    assert cells == {"fashion-cnn": ["0.00 (0.000)", "7.50 (0.158)", "-"],  # no such option
                     "fashion-cnn-shirts": ["0.00 (0.000)", "-", "0.40 (0.010)"]}
    assert [t.command for t in tables] == [("python est.py --plans 2",),
                                           ("python est.py --dataset fashion",)]
    text = "\n".join(rep.class_count(src).lines)
    fashion = text.split("**Fashion-MNIST**")[1]
    assert "missing input" not in fashion  # the apparel task is known not to be run yet
    without_shirts = rep.parse_markdown("docs/est.md", CLASS_RUNS.split("Second run")[0])
    assert "missing input: `docs/est.md` has no class-count tables for fashion-cnn-shirts" \
        in "\n".join(rep.class_count(without_shirts).lines)  # named, not filled in
    assert "| fashion-cnn | kl | 0.96 [0.86, 0.99] |" in fashion and "hessian" not in fashion
    assert "| fashion-cnn-shirts | 2 | 90.00 % | 2000 | 0.00 / 1.00 / 4.00 |" in fashion
    assert "| fc1 | int8 |" not in fashion  # no task loses anything there
    assert "| fc2 | fp32+s75 | 7.50 (0.158) | - |" in fashion
    assert "`python est.py --plans 2` and `python est.py --dataset fashion`" in text
