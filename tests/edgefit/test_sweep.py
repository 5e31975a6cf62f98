"""`edgefit sweep`: the sweep file's strictness (one line, exit 2, before torch), a small sweep
(LeNet-5 x 2 targets x 2 budgets, one infeasible) giving the plans `plan` gives cell by cell with
one full plan per target, its table, figure and applied columns, and an interrupted sweep that
leaves nothing half-written."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from edgefit.cli import _run, app

ROOT = Path(__file__).resolve().parents[2]
TARGETS = ("arduino-nano-33-ble", "jetson-nano")
SWEEP = """\
models:
  - lenet5-mnist
targets:
  - arduino-nano-33-ble
  - target: jetson-nano
budgets:
  - name: tiny                # first: the full plan, infeasible
    max_flash: 4KB
  - name: fast                # re-solved from it: compressed on the Arduino
    max_latency: 20ms
    max_accuracy_drop: 2pp
"""
APPLIED = """\
models: [lenet5-mnist]
targets: [jetson-nano]
budgets:
  - {name: fast, max_latency: 20ms, max_accuracy_drop: 2pp}
  - {name: tiny, max_flash: 4KB}
  - {name: own, max_latency: 1s, apply: false}
apply: true
"""
LIMITS = {"tiny": {"flash": "4KB"}, "fast": {"latency": "20ms", "accuracy_drop": "2pp"}}


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- bad input: one line naming the file and the entry, exit 2, nothing written ------------------

GOOD_BUDGET = "budgets:\n  - name: b\n    max_latency: 30ms\n"
GOOD = "models: [lenet5-mnist]\ntargets: [jetson-nano]\n"
BAD = {
    "malformed yaml": ("models: [lenet5-mnist\ntargets: [jetson-nano]\n" + GOOD_BUDGET,
                       ["malformed YAML"]),
    "unknown key": (GOOD + "budgets:\n  - name: b\n    max_latncy: 30ms\n",
                    [":5: budgets[0] (b).max_latncy: unknown field", "max_latency"]),
    "bad unit": (GOOD + "budgets:\n  - name: b\n    max_latency: 30parsecs\n",
                 ["budgets[0] (b).max_latency", "parsecs"]),
    "number without unit": (GOOD + "budgets:\n  - name: b\n    max_flash: 1000000\n",
                            ["budgets[0] (b).max_flash", "with its unit", "'1MB'"]),
    "unknown target": ("models: [lenet5-mnist]\ntargets:\n  - jetson-nano\n  - jetson-nan\n"
                       + GOOD_BUDGET, [":4: targets[1] (jetson-nan)", "jetson-nano"]),
    "unknown profile": ("models: [lenet5-mnist]\ntargets:\n  - {target: jetson-nano, profile: "
                        "cuda}\n" + GOOD_BUDGET, ["targets[0]", "profile 'cuda'"]),
    "empty targets": ("models: [lenet5-mnist]\ntargets: []\n" + GOOD_BUDGET,
                      ["targets: List should have at least 1 item"]),
    "no budgets": (GOOD, ["budgets: Field required"]),
    "unknown model": ("models: [lenet6-mnist]\ntargets: [jetson-nano]\n" + GOOD_BUDGET,
                      ["models[0] (lenet6-mnist)", "lenet5-mnist"]),
    "missing data file": ("models:\n  - {model: lenet5-mnist, data: nope.npz}\n"
                          "targets: [jetson-nano]\n" + GOOD_BUDGET, ["models[0]", "nope.npz"]),
    "budget without limits": (GOOD + "budgets:\n  - name: b\n    apply: true\n",
                              ["budgets[0] (b)", "has no limit"]),
    "duplicate budget": (GOOD + GOOD_BUDGET + "  - name: b\n    max_flash: 1MB\n",
                         ["budgets: 'b' appears twice"]),
    "folder-unsafe name": (GOOD + "budgets:\n  - name: ../up\n    max_flash: 1MB\n",
                           ["budgets[0] (../up).name"]),
    "factory not allowed": ("models: ['mynets:make']\ntargets: [jetson-nano]\n" + GOOD_BUDGET,
                            ["models[0]", "--allow-factory mynets:make"]),
    "margin of 150%": (GOOD + "budgets:\n  - name: b\n    max_flash: 1MB\n    margin: 150%\n",
                       ["budgets[0] (b).margin", "below 100%"]),
    "update time without link": (GOOD + "budgets:\n  - name: b\n    max_update_time: 3s\n",
                                 ["budgets[0] (b).max_update_time: unknown field"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_sweep_file_is_one_line_and_exit_2(case: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    text, expected = BAD[case]
    path = write(tmp_path / "sweep.yaml", text)
    code = _run(app, ["sweep", str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert "sweep.yaml" in err, err
    for fragment in expected:
        assert fragment in err, (fragment, err)
    assert not (tmp_path / "out").exists()


def test_bad_input_is_refused_before_torch_or_ray(tmp_path: Path) -> None:
    """The checks run before any model is loaded: a fresh process refusing three bad files
    (an unknown target, a bad unit, an out folder of someone else's files) has imported
    neither torch nor ray."""
    write(tmp_path / "a.yaml", "models: [lenet5-mnist]\ntargets: [no-such-board]\n"
          + GOOD_BUDGET)
    write(tmp_path / "b.yaml", GOOD + "budgets:\n  - name: b\n    max_ram: lots\n")
    write(tmp_path / "c.yaml", GOOD + GOOD_BUDGET)
    (tmp_path / "mine").mkdir()
    write(tmp_path / "mine" / "thesis.tex", "mine")
    code = """
import json, sys
from edgefit.cli import _run, app
codes = [_run(app, ["sweep", "a.yaml"]), _run(app, ["sweep", "b.yaml"]),
         _run(app, ["sweep", "c.yaml", "--out", "mine"])]
print(json.dumps({"codes": codes, "torch": "torch" in sys.modules, "ray": "ray" in sys.modules}))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"codes": [2, 2, 2], "torch": False, "ray": False}, out.stderr
    lines = out.stderr.strip().splitlines()
    assert "a.yaml:2: targets[0] (no-such-board)" in lines[0]
    assert "b.yaml:5: budgets[0] (b).max_ram" in lines[1]
    assert "mine: holds files edgefit did not write" in lines[2]
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "mine"


# --- the sweep file's JSON Schema ----------------------------------------------------------------

def _validator() -> Any:
    schema = json.loads((ROOT / "docs" / "schemas" / "sweep.schema.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def test_the_example_sweep_validates_and_loads() -> None:
    from edgefit.sweep_file import load_sweep

    path = ROOT / "examples" / "sweep.yaml"
    _validator().validate(yaml.safe_load(path.read_text()))
    sweep = load_sweep(path)
    assert len(sweep.cells) == (len(sweep.spec.models) * len(sweep.spec.targets)
                                * len(sweep.spec.budgets))
    assert sweep.applies(sweep.cells[1]) and not sweep.applies(sweep.cells[0])


def test_the_schema_refuses_what_the_loader_refuses() -> None:
    validator = _validator()
    ok = yaml.safe_load(SWEEP)
    validator.validate(ok)
    for broken in ({**ok, "telepathy": 1}, {**ok, "targets": []},
                   {**ok, "budgets": [{"name": "b", "max_latency": 30}]},
                   {**ok, "budgets": [{"name": "b", "max_latncy": "30ms"}]}):
        assert not validator.is_valid(broken), broken


# --- a small sweep -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The sweep run once through the CLI entry, counting the full plans it makes."""
    import edgefit.planning as planning

    folder = tmp_path_factory.mktemp("sweep")
    path = write(folder / "sweep.yaml", SWEEP)
    real, calls = planning.make_plan, []

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[0].target)
        return real(*args, **kwargs)

    mp = pytest.MonkeyPatch()
    mp.setattr(planning, "make_plan", counted)
    try:
        code = _run(app, ["sweep", str(path), "--out", str(folder / "out"), "-q"])
    finally:
        mp.undo()
    out = folder / "out"
    return {"code": code, "out": out, "calls": calls,
            "doc": json.loads((out / "sweep.json").read_text()),
            "csv": list(csv.DictReader((out / "sweep.csv").open()))}


def test_one_full_plan_per_target_and_a_re_solve_per_further_budget(swept: dict[str, Any]
                                                                     ) -> None:
    assert swept["code"] == 0
    assert swept["calls"] == list(TARGETS)  # make_plan (sensitivity, profiles, costs) twice
    doc = swept["doc"]
    assert (doc["full_plans"], doc["re_solves"], doc["applied"]) == (2, 2, 0)
    assert doc["executor"] == "in-process"
    assert [(r["target"], r["budget"], r["how"]) for r in doc["rows"]] == [
        (TARGETS[0], "tiny", "plan"), (TARGETS[0], "fast", "re-solve"),
        (TARGETS[1], "tiny", "plan"), (TARGETS[1], "fast", "re-solve")]


def test_each_cell_is_the_plan_plan_makes_for_it(swept: dict[str, Any]) -> None:
    """Every cell's plan.json chooses what `make_plan` (the `plan` command's planner) chooses
    for that cell alone, with the same status, totals and explanation."""
    from device_specs.budget import Budget
    from edgefit.planning import make_plan
    from planner.plan import Plan

    for row in swept["doc"]["rows"]:
        got = Plan.load(swept["out"] / row["plan_json"])
        want, _ = make_plan(Budget(target=row["target"], limits=LIMITS[row["budget"]],
                                   model="lenet5-mnist"), "test")
        assert got.options() == want.options(), row["plan_json"]
        assert (got.status, got.totals, got.explanation, got.limits) == (
            want.status, want.totals, want.explanation, want.limits)
    arduino_fast = Plan.load(swept["out"] / "lenet5-mnist" / TARGETS[0] / "fast" / "plan.json")
    assert set(arduino_fast.options().values()) - {"fp32"}  # a re-solve that compresses


def test_rows_say_what_each_plan_is(swept: dict[str, Any]) -> None:
    from planner.plan import Plan

    rows = {(r["target"], r["budget"]): r for r in swept["doc"]["rows"]}
    for target in TARGETS:
        tiny, fast = rows[target, "tiny"], rows[target, "fast"]
        assert tiny["status"] == "infeasible" and tiny["predicted_flash_bytes"] is None
        assert tiny["explanation"].startswith("flash: needs ") and "instead of 4KB" in \
            tiny["explanation"]
        assert tiny["limit_flash_bytes"] == 4000.0 and "applied" not in tiny
        plan = Plan.load(swept["out"] / fast["plan_json"])
        assert fast["status"] == "feasible" and plan.totals is not None
        assert fast["predicted_latency_ms"] == plan.totals.latency_ms <= 20.0
        assert fast["predicted_ram_bytes"] == plan.totals.ram_bytes
        kernels = {plan.layers[n].alternative(o).kernel for n, o in plan.options().items()}
        assert sum(fast[f"layers_{k}"] for k in kernels) == len(plan.layers)
        assert fast["binding"] == ";".join(plan.binding)


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`apply: true` for the sweep, `apply: false` for one budget: the one feasible plan the
    sweep applies, and the other two rows."""
    folder = tmp_path_factory.mktemp("applied")
    path = write(folder / "sweep.yaml", APPLIED)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = _run(app, ["sweep", str(path), "--out", str(folder / "out"), "-q", "--json"])
    doc = json.loads((folder / "out" / "sweep.json").read_text())
    return {"code": code, "out": folder / "out", "doc": doc, "printed": printed.getvalue(),
            "rows": {r["budget"]: r for r in doc["rows"]}}


def test_applied_cells_carry_apply_s_measurements(applied: dict[str, Any]) -> None:
    assert applied["code"] == 0 and applied["doc"]["applied"] == 1
    row, out = applied["rows"]["fast"], applied["out"]
    folder = out / Path(row["plan_json"]).parent
    report = json.loads((out / row["report_json"]).read_text())
    assert row["applied"] is True and row["checks_ok"] == all(c["ok"] for c in
                                                               report["checks"])
    assert row["measured_accuracy"] == report["accuracy"]["compressed"]
    assert row["measured_accuracy_drop_pp"] == report["accuracy"]["drop_pp"]
    assert row["accuracy_limit_met"] == (report["accuracy"]["drop_pp"] <= 2.0)
    assert row["measured_flash_image_bytes"] == (folder / "model.flash.bin").stat().st_size
    assert (folder / "model.onnx").is_file() and (folder / "plan.json").is_file()
    for budget in ("tiny", "own"):  # infeasible, and a budget that says apply: false
        other = applied["rows"][budget]
        assert other["applied"] is None and other["report_json"] is None
        assert not (out / Path(other["plan_json"]).parent / "model.onnx").exists()
    assert applied["rows"]["own"]["status"] == "feasible"


def test_json_prints_the_counts_the_files_and_the_rows(applied: dict[str, Any]) -> None:
    summary, doc = json.loads(applied["printed"]), applied["doc"]
    assert summary["command"] == "sweep" and summary["rows"] == doc["rows"]
    assert (summary["full_plans"], summary["re_solves"], summary["applied"]) == (1, 2, 1)
    assert [Path(p).name for p in summary["written"]] == ["sweep.csv", "sweep.json",
                                                          "sweep.png"]


def test_csv_and_json_hold_the_same_table(swept: dict[str, Any]) -> None:
    doc, rows = swept["doc"], swept["csv"]
    assert doc["format"] == "edgefit-sweep" and list(rows[0]) == doc["columns"]
    assert len(rows) == len(doc["rows"]) == 4
    for text_row, row in zip(rows, doc["rows"], strict=True):
        assert text_row == {k: "" if v is None else str(v) for k, v in row.items()}


def test_the_output_folder_is_whole(swept: dict[str, Any]) -> None:
    out = swept["out"]
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / ".edgefit-artifacts").is_file()
    for row in swept["doc"]["rows"]:
        assert (out / row["plan_json"]).is_file()
        assert (out / Path(row["plan_json"]).parent / ".edgefit-artifacts").is_file()
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_an_interrupted_sweep_leaves_the_last_one_as_it_was(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C while the second target is planned: exit 130, the earlier output untouched, no
    cell and no temporary folder left."""
    import edgefit.planning as planning

    out = tmp_path / "out"
    out.mkdir()
    write(out / ".edgefit-artifacts", "")
    write(out / "sweep.csv", "the last sweep\n")
    real, calls = planning.make_plan, []

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(planning, "make_plan", interrupted)
    path = write(tmp_path / "sweep.yaml", SWEEP.replace("    apply: true\n", ""))
    assert _run(app, ["sweep", str(path), "--out", str(out), "-q"]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [".edgefit-artifacts", "sweep.csv"]
    assert (out / "sweep.csv").read_text() == "the last sweep\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "sweep.yaml"]
