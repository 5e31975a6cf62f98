"""`plan --scenario NAME` and `edgefit scenarios` through the real command line: flags override
the scenario's values and the header says which came from where; bad names are one line and
exit 2; `plan --help` still imports no torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from device_specs.scenario import load_scenario, scenario_names
from edgefit.budgeting import resolve_budget
from edgefit.cli import EXIT_BAD_INPUT, _plan_app, _run, app

FACTORY = ["--model", "workloads.zoo:LeNet5", "--input-shape", "1x28x28"]  # no training needed
NO_LIMITS = {"latency": None, "flash": None, "ram": None, "energy": None, "accuracy_drop": None}


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EDGEFIT_CACHE", str(tmp_path / "cache"))
    return tmp_path


def _one_line(capfd: pytest.CaptureFixture[str]) -> str:
    err = capfd.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_scenarios_json_lists_every_scenario_with_its_provenance() -> None:
    result = CliRunner().invoke(app, ["scenarios", "--json"])
    assert result.exit_code == 0, result.output
    records = {r["name"]: r for r in json.loads(result.output)["scenarios"]}
    assert sorted(records) == scenario_names()
    battery = records["battery-sensor"]["battery"]
    assert battery["energy_per_inference_limit_mj"] == pytest.approx(53.5714286)
    for record in records.values():
        for limit in record["limits"].values():
            assert limit["provenance"], record["name"]


def test_scenarios_table_names_every_scenario_and_its_example() -> None:
    result = CliRunner().invoke(app, ["scenarios"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in scenario_names():
        assert name in result.output
        assert f"plan --scenario {name} --model {load_scenario(name).example_model}" in (
            result.output)


@pytest.mark.parametrize("argv, words", [
    (["--scenario", "kws-cortex-m5", *FACTORY], "did you mean 'kws-cortex-m4'"),
    (["--scenario", "kws-cortex-m4"], "pass --model (its example run: --model "
     "workloads.mlperf_tiny:DSCNN --input-shape 1x49x10"),
    (["--scenario", "kws-cortex-m4", "--budget", "b.yaml", *FACTORY], "choose one"),
    # a name is a catalog file's stem, never a path (nor a file's name with its suffix)
    (["--scenario", "../scenarios/kws-cortex-m4", *FACTORY], "unknown scenario"),
    (["--scenario", "kws-cortex-m4.yaml", *FACTORY], "unknown scenario"),
    (["--scenario", "", *FACTORY], "unknown scenario"),
    (["--scenario", "x" * 5000, *FACTORY], "unknown scenario"),
])
def test_bad_scenario_use_is_one_line_and_exit_2(cwd: Path, capfd: pytest.CaptureFixture[str],
                                                 argv: list[str], words: str) -> None:
    assert _run(_plan_app, argv) == EXIT_BAD_INPUT
    line = _one_line(capfd)
    assert words in line
    if "did you mean" in words:
        assert all(name in line for name in scenario_names())


def test_flags_override_the_scenario_and_the_header_says_which(
        cwd: Path, capfd: pytest.CaptureFixture[str]) -> None:
    # battery-sensor: target arduino-nano-33-ble, latency 1 s, energy from the battery,
    # accuracy drop 1 pp, period 1 s; the flags replace latency and the target
    argv = ["--scenario", "battery-sensor", *FACTORY, "--max-latency", "80ms",
            "--target", "stm32l4r5-nucleo", "--out", str(cwd / "plan.json"), "--json"]
    assert _run(_plan_app, argv) in (0, 1)
    captured = capfd.readouterr()
    summary = json.loads(captured.out)
    assert summary["target"]["device"] == "stm32l4r5-nucleo"
    assert summary["target"]["origin"] == "--target flag"
    assert summary["limits"]["latency_ms"] == 80.0
    assert summary["limits"]["energy_mj"] == pytest.approx(53.5714286)
    assert summary["limits"]["accuracy_drop_pp"] == 1.0
    assert summary["scenario"]["origins"] == {
        "latency": "--max-latency flag", "energy": "scenario battery-sensor",
        "accuracy_drop": "scenario battery-sensor", "period": "scenario battery-sensor"}
    header = captured.err  # with --json the header goes to stderr
    assert "target: stm32l4r5-nucleo" in header and "[--target flag]" in header
    assert "latency: 80ms  [--max-latency flag]" in header
    assert "energy: 53.5714mJ  [scenario battery-sensor; derived:" in header
    assert "battery energy = capacity x voltage = 32,400 J" in header
    plan = json.loads((cwd / "plan.json").read_text())
    assert plan["limits"]["latency"] == "80ms"  # plan.json writes limits with units


def test_a_period_flag_derives_the_battery_energy_again(cwd: Path) -> None:
    resolved = resolve_budget(cwd, budget_file=None, target=None, profile=None,
                              model="lenet5-mnist", weights=None, data=None, margin=None,
                              period="2s", limits=NO_LIMITS, scenario="battery-sensor")
    # twice the period: each inference may spend twice the energy (32,400 J over a week)
    assert resolved.budget.limits.energy == pytest.approx(2 * 53.5714286)
    assert resolved.origins["period"] == "--period flag"
    assert resolved.origins["energy"] == "scenario battery-sensor"


def test_a_max_energy_flag_wins_over_the_battery(cwd: Path) -> None:
    resolved = resolve_budget(cwd, budget_file=None, target=None, profile=None,
                              model="lenet5-mnist", weights=None, data=None, margin=None,
                              period="2s", limits={**NO_LIMITS, "energy": "40mJ"},
                              scenario="battery-sensor")
    assert resolved.budget.limits.energy == 40.0
    assert resolved.origins["energy"] == "--max-energy flag"


def test_a_scenario_replaces_the_project_file(cwd: Path) -> None:
    (cwd / "edgefit.yaml").write_text("schema_version: 1\ntarget: jetson-nano\n"
                                      "limits: {latency: 1ms}\n")
    resolved = resolve_budget(cwd, budget_file=None, target=None, profile=None,
                              model="lenet5-mnist", weights=None, data=None, margin=None,
                              limits=NO_LIMITS, scenario="kws-cortex-m4")
    assert resolved.budget.target == "stm32l4r5-nucleo"
    assert resolved.budget.limits.latency == 100.0


def test_plan_help_names_scenario_and_imports_no_torch() -> None:
    code = ("import sys\nfrom edgefit.cli import plan_main\n"
            "try:\n    plan_main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\nprint('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"COLUMNS": "200", "PATH": ""})
    assert out.returncode == 0, out.stderr
    assert "--scenario" in out.stdout and out.stdout.strip().endswith("ok")


def test_the_scenarios_show_their_link_and_a_link_flag_overrides_it(cwd: Path) -> None:
    from edgefit.scenarios_view import header_lines

    table = CliRunner().invoke(app, ["scenarios"], env={"COLUMNS": "200"})
    assert "updates over ble-1m (source)" in table.output
    assert "updates over wifi-n" in table.output
    listed = CliRunner().invoke(app, ["scenarios", "--json"])
    records = {r["name"]: r for r in json.loads(listed.output)["scenarios"]}
    link = records["battery-sensor"]["link"]
    assert link["name"] == "ble-1m" and link["provenance"].startswith("source: S-NRF52840")
    common = dict(budget_file=None, target=None, profile=None, model="lenet5-mnist",
                  weights=None, data=None, margin=None, limits=NO_LIMITS,
                  scenario="battery-sensor")
    resolved = resolve_budget(cwd, **common)  # type: ignore[arg-type]
    assert resolved.budget.link == "ble-1m"
    line = next(ln for ln in header_lines(resolved) if ln.startswith("  link:"))
    assert line.startswith("  link: ble-1m  [scenario battery-sensor; source: S-NRF52840")
    flagged = resolve_budget(cwd, **common, link="lte-m",  # type: ignore[arg-type]
                             fleet={"data_price": "0.05USD/MB"})
    assert flagged.budget.link == "lte-m" and flagged.budget.fleet is not None
    assert "  link: lte-m  [--link flag]" in header_lines(flagged)
