"""Every bad input: one clear line on stderr, exit code 2, no traceback, nothing written."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from edgefit.cli import _plan_app, _run, app

OK_LIMIT = ["--max-latency", "30ms"]


class Evil:  # pickling an instance records a class reference: code, which weights_only refuses
    def __reduce__(self) -> tuple:
        return (print, ("this must never run",))


def run_plan(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = _run(_plan_app, argv)
    return code, capsys.readouterr().err


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


CASES = {
    "unknown target": (["--target", "no-such-board", *OK_LIMIT],
                       ["unknown target 'no-such-board'", "jetson-nano", "arduino-nano-33-ble"]),
    "unit does not parse": (["--target", "jetson-nano", "--max-latency", "thirty ms"],
                            ["--max-latency", "cannot parse"]),
    "unknown unit": (["--target", "jetson-nano", "--max-latency", "30parsecs"],
                     ["--max-latency", "unknown unit"]),
    "negative limit": (["--target", "jetson-nano", "--max-latency=-5ms"],
                       ["--max-latency", "greater than zero"]),
    "zero limit": (["--target", "jetson-nano", "--max-flash", "0KB"],
                   ["--max-flash", "greater than zero"]),
    "nan limit": (["--target", "jetson-nano", "--max-ram", "nanKB"], ["--max-ram", "finite"]),
    "infinite limit": (["--target", "jetson-nano", "--max-energy", "infmJ"],
                       ["--max-energy", "finite"]),
    "wrong unit family": (["--target", "jetson-nano", "--max-latency", "30KB"],
                          ["--max-latency", "bytes units, but time is needed"]),
    "accuracy in ms": (["--target", "jetson-nano", "--max-accuracy-drop", "1ms"],
                       ["--max-accuracy-drop", "time units"]),
    "no limits": (["--target", "jetson-nano"], ["no limits"]),
    "unknown profile": (["--target", "jetson-nano", "--profile", "nope", *OK_LIMIT],
                        ["profile 'nope'", "tensorrt-gpu"]),
    "missing model file": (["--target", "jetson-nano", "--model", "missing.pt2", *OK_LIMIT],
                           ["missing.pt2", "not found"]),
    "unknown model": (["--target", "jetson-nano", "--model", "resnet9000", *OK_LIMIT],
                      ["resnet9000", "lenet5-mnist"]),
    "pickle as model": (["--target", "jetson-nano", "--model", "evil.pt", *OK_LIMIT],
                        ["evil.pt", "pickled checkpoint", ".pt2"]),
    "pickle as weights": (["--target", "jetson-nano", "--model", "workloads.zoo:LeNet5",
                           "--weights", "evil.pt", *OK_LIMIT], ["evil.pt", "refused"]),
    "missing budget": (["--budget", "nope.yaml"], ["nope.yaml", "not found"]),
    "malformed budget": (["--budget", "broken.yaml"], ["broken.yaml:2", "malformed YAML"]),
    "unknown budget field": (["--budget", "typo.yaml"],
                             ["typo.yaml:4", "limits.latncy", "unknown field", "latency"]),
    "bad unit in budget": (["--budget", "badunit.yaml"],
                           ["badunit.yaml:4", "limits.latency", "bytes units, but time is needed"]),
    "bad period": (["--target", "jetson-nano", "--period", "1KB", *OK_LIMIT],
                   ["--period", "bytes units, but time is needed"]),
    "bad search": (["--target", "jetson-nano", "--search", "genetic", *OK_LIMIT],
                   ["--search 'genetic'", "solver or bayes"]),
    "bad pareto metric": (["--target", "jetson-nano", "--pareto", "speed", *OK_LIMIT],
                          ["--pareto 'speed'", "latency, flash, ram, energy"]),
    "bad solver": (["--target", "jetson-nano", "--solver", "gurobi", *OK_LIMIT],
                   ["--solver 'gurobi'", "cpsat or cbc"]),
    "bad pin": (["--target", "jetson-nano", "--pin", "conv1", *OK_LIMIT], ["LAYER=OPTION"]),
    "loop without accuracy limit": (["--target", "jetson-nano", "--loop", "3", *OK_LIMIT],
                                    ["--loop needs an accuracy limit", "--max-accuracy-drop"]),
    "loop of no rounds": (["--target", "jetson-nano", "--loop=-1", *OK_LIMIT],
                          ["--loop -1", "at least 1"]),
    "loop of no candidates": (["--target", "jetson-nano", "--loop", "2", "--loop-candidates",
                               "0", "--max-accuracy-drop", "1pp", *OK_LIMIT],
                              ["--loop-candidates 0", "at least 1"]),
    "bad loop objective": (["--target", "jetson-nano", "--loop", "2", "--objective", "speed",
                            "--max-accuracy-drop", "1pp", *OK_LIMIT],
                           ["--objective 'speed'", "latency, flash, ram, energy"]),
    "unknown spec field": (["--target", "badspec.yaml", *OK_LIMIT],
                           ["badspec.yaml", "unknown field"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_2_with_one_line(case: str, cwd: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    (cwd / "evil.pt").write_bytes(pickle.dumps(Evil()))
    write(cwd / "broken.yaml", "target: jetson-nano\n  limits: x: y\n")
    write(cwd / "typo.yaml", "schema_version: 1\ntarget: jetson-nano\nlimits:\n  latncy: 30ms\n")
    write(cwd / "badunit.yaml", "schema_version: 1\ntarget: jetson-nano\nlimits:\n"
          "  latency: 30KB\n")
    spec = (Path(__file__).parents[2] / "device_specs/catalog/jetson-nano.yaml").read_text()
    write(cwd / "badspec.yaml", spec.replace("name: jetson-nano", "name: badspec\nspeed: 3"))
    argv, needles = CASES[case]
    code, err = run_plan(argv, capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0]
    assert not (cwd / "plan.json").exists(), "nothing is half-written on bad input"
    assert "this must never run" not in capsys.readouterr().out


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(app, ["frobnicate"]) == 2


def test_plan_help_and_import_planner_do_not_import_torch() -> None:
    code = (
        "import sys\n"
        "import planner, device_specs, cost_models, executors\n"
        "from edgefit.cli import plan_main\n"
        "try:\n"
        "    plan_main(['--help'])\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "--max-latency" in out.stdout and out.stdout.strip().endswith("ok")
