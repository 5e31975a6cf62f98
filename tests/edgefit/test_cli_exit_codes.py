"""Exit codes mean one thing each (0 ok, 1 infeasible / a check failed, 2 bad input, 3 internal
error, 130 interrupted), stderr gets one line, and a module:factory runs only when the command
line names it (issue #16)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgefit.cli import (
    EXIT_BAD_INPUT,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    _plan_app,
    _run,
    app,
)
from planner.plan import Plan

REVIEW_PLAN = Path(__file__).parents[1] / "review" / "data" / "plan.json"
FACTORY = "workloads.zoo:LeNet5"


def one_line(capfd: pytest.CaptureFixture[str]) -> str:
    err = capfd.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EDGEFIT_CACHE", str(tmp_path / "cache"))
    return tmp_path


def test_an_internal_error_is_exit_3_with_the_traceback_in_a_log(
        cwd: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    def broken(*_: Any, **__: Any) -> None:
        raise RuntimeError("boom\nand a second line")

    monkeypatch.setattr("edgefit.report.print_devices", broken)
    assert _run(app, ["devices"]) == EXIT_INTERNAL
    line = one_line(capfd)
    assert line.startswith("internal error (RuntimeError: boom); the traceback is in ")
    log = Path(line.split("the traceback is in ")[1].split(";")[0])
    assert log.parent == cwd / "cache" / "logs"
    text = log.read_text()
    assert "Traceback" in text and "and a second line" in text and "print_devices" not in line


def test_the_log_falls_back_to_the_temporary_folder(
        cwd: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    (cwd / "cache").write_text("a file where the cache folder should be")
    monkeypatch.setattr("tempfile.tempdir", str(cwd))
    monkeypatch.setattr("edgefit.report.print_devices", lambda *a, **k: 1 / 0)
    assert _run(app, ["devices"]) == EXIT_INTERNAL
    line = one_line(capfd)
    assert f"the traceback is in {cwd}/edgefit-error-" in line


def test_an_os_error_on_a_users_path_is_bad_input(
        cwd: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    def refuse(*_: Any, **__: Any) -> None:
        raise PermissionError(13, "Permission denied", "plan.json")

    (cwd / "plan.json").write_text(REVIEW_PLAN.read_text())
    monkeypatch.setattr("planner.plan.Plan.save", refuse)
    assert _run(app, ["resolve", "plan.json"]) == EXIT_BAD_INPUT
    assert one_line(capfd) == "error: plan.json: permission denied"


def test_review_without_a_terminal_says_so(cwd: Path,
                                           capfd: pytest.CaptureFixture[str]) -> None:
    (cwd / "plan.json").write_text(REVIEW_PLAN.read_text())
    assert _run(app, ["review", "plan.json"]) == EXIT_BAD_INPUT
    assert "edgefit review needs a terminal" in one_line(capfd)


def _fake_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """apply_plan up to its artifacts without a model or data set (the fixture plan pins
    weights nobody has)."""
    from edgefit import applying

    class Loaded:
        kind, dataset, input_shape = "zoo", "mnist", (1, 28, 28)

    x, y = np.zeros((2, 1, 28, 28), np.float32), np.zeros(2, np.int64)
    monkeypatch.setattr(applying, "load_model_ref", lambda *a, **k: Loaded())
    monkeypatch.setattr("workloads.data.load_dataset", lambda name: (None, None))
    monkeypatch.setattr(applying, "calibration_split", lambda name: (x, y))
    monkeypatch.setattr(applying, "check_weights", lambda *a: None)
    monkeypatch.setattr(applying, "check_calibration", lambda *a: None)


def test_ctrl_c_during_apply_is_130_and_leaves_the_earlier_set(
        cwd: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    from edgefit import applying

    _fake_data(monkeypatch)
    (cwd / "plan.json").write_text(REVIEW_PLAN.read_text())
    (cwd / "out").mkdir()
    (cwd / "out" / "report.json").write_text('{"an": "earlier run"}')

    def interrupted(plan: Plan, loaded: Any, data: str, calib: Any, test: Any,
                    work: Path, metric: Any = None) -> dict[str, Any]:
        (work / "model.onnx").write_bytes(b"half a model")
        raise KeyboardInterrupt

    monkeypatch.setattr(applying, "_apply_into", interrupted)
    assert _run(app, ["apply", "plan.json", "--out", "out"]) == EXIT_INTERRUPTED
    assert one_line(capfd).startswith("interrupted (temporary files removed")
    assert sorted(p.name for p in cwd.iterdir()) == ["out", "plan.json"], "no temporary folder"
    assert sorted(p.name for p in (cwd / "out").iterdir()) == ["report.json"]


def test_apply_writes_one_set_with_its_plan_and_final_paths(
        cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgefit import applying

    _fake_data(monkeypatch)
    (cwd / "out").mkdir()
    (cwd / "out" / "report.json").write_text("{}")
    (cwd / "out" / "model.float.onnx").write_bytes(b"an earlier run's file")

    def build(plan: Plan, loaded: Any, data: str, calib: Any, test: Any,
              work: Path, metric: Any = None) -> dict[str, Any]:
        (work / "model.onnx").write_bytes(b"onnx")
        return {"artifacts": {"onnx": str(work / "model.onnx")},
                "checks": [{"check": "x", "ok": True, "detail": f"read {work}/model.onnx"}]}

    monkeypatch.setattr(applying, "_apply_into", build)
    report = applying.apply_plan(Plan.load(REVIEW_PLAN), Path("out"))
    assert sorted(p.name for p in (cwd / "out").iterdir()) == [
        ".edgefit-artifacts", "model.onnx", "plan.json", "report.json"]
    stored = json.loads((cwd / "out" / "report.json").read_text())
    assert stored == report
    assert report["artifacts"]["onnx"] == "out/model.onnx"
    assert report["checks"][0]["detail"] == "read out/model.onnx"
    assert report["report_path"] == "out/report.json"
    assert Plan.load(cwd / "out" / "plan.json") == Plan.load(REVIEW_PLAN)


def test_plan_apply_applies_the_plan_it_solved_not_the_file(
        cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs sharing --out once shipped one run's plan under the other's (issue #16)."""
    solved = Plan.load(REVIEW_PLAN)
    applied: list[Any] = []

    class Ctx:
        problem = None

    monkeypatch.setattr("edgefit.planning.make_plan", lambda *a, **k: (solved, Ctx()))
    monkeypatch.setattr("edgefit.applying.apply_plan",
                        lambda plan, out, source: applied.append((plan, out, source))
                        or {"checks": []})
    monkeypatch.setattr("edgefit.report.print_report", lambda report: None)

    def no_reading(*_: Any) -> None:
        raise AssertionError("plan --apply read a plan file back")

    monkeypatch.setattr(Plan, "load", no_reading)
    code = _run(_plan_app, ["--target", "esp32-s3", "--max-latency", "30ms", "--apply",
                            "--report-dir", "out"])
    assert code == 0
    [(plan, out, source)] = applied
    assert plan is solved and out == Path("out")
    assert source.ref == "lenet5-mnist" and not source.trusted_factory


def test_a_factory_from_the_command_line_is_planned_and_applied_only_when_named(
        cwd: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """--model module:factory plans; the plan names it but `apply` never imports it from the
    file: it asks for --model, then checks the weights hash as for any model."""
    import torch

    from workloads.zoo import LeNet5

    torch.manual_seed(0)
    torch.save(LeNet5().state_dict(), cwd / "w.pt")
    torch.save(LeNet5().state_dict(), cwd / "other.pt")
    flags = ["--target", "esp32-s3", "--max-latency", "10s", "--time-limit", "2"]
    assert _run(_plan_app, [*flags, "--model", FACTORY, "--weights", "w.pt",
                            "--input-shape", "1x28x28"]) == 0
    capfd.readouterr()
    plan = json.loads((cwd / "plan.json").read_text())
    assert plan["model"]["kind"] == "factory" and plan["model"]["path"] == FACTORY

    assert _run(app, ["apply", "plan.json"]) == EXIT_BAD_INPUT
    line = one_line(capfd)
    assert "is a module:factory (code), which is never run from a plan file" in line
    assert f"edgefit apply PLAN --model {FACTORY} --weights STATE_DICT" in line
    assert _run(app, ["apply", "plan.json", "--model", FACTORY,
                      "--weights", "other.pt"]) == EXIT_BAD_INPUT
    assert "the plan was costed on other weights" in one_line(capfd)
    # the right weights pass the hash check; this plan has no data set to evaluate on
    assert _run(app, ["apply", "plan.json", "--model", FACTORY,
                      "--weights", "w.pt"]) == EXIT_BAD_INPUT
    assert "the plan names no data set" in one_line(capfd)
    assert not (cwd / "out").exists()


def test_edgefit_yaml_may_opt_in_to_its_own_factory(cwd: Path,
                                                    capfd: pytest.CaptureFixture[str]) -> None:
    (cwd / "edgefit.yaml").write_text(
        f"target: esp32-s3\nlimits:\n  latency: 10s\nmodel: '{FACTORY}'\n"
        "input_shape: [1, 28, 28]\nallow_factory: true\n")
    assert _run(_plan_app, ["--time-limit", "2"]) == 0
    plan = json.loads((cwd / "plan.json").read_text())
    assert plan["model"]["kind"] == "factory" and plan["model"]["origin"].endswith("edgefit.yaml")
    os.remove(cwd / "plan.json")
    # the same file elsewhere is refused: only the current directory's project file opts in
    (cwd / "sub").mkdir()
    os.rename(cwd / "edgefit.yaml", cwd / "sub" / "budget.yaml")
    capfd.readouterr()
    assert _run(_plan_app, ["--budget", "sub/budget.yaml"]) == EXIT_BAD_INPUT
    assert "allow_factory is honoured only in ./edgefit.yaml" in one_line(capfd)
    assert not (cwd / "plan.json").exists()


@pytest.mark.parametrize("edit", ["factory", "out-is-a-file", "option", "weights-flag"])
def test_apply_refuses_before_importing_torch(edit: str, tmp_path: Path) -> None:
    """A bad plan or --out is refused as fast as `resolve` refuses it: no torch."""
    import subprocess
    import sys

    plan = json.loads(REVIEW_PLAN.read_text())
    argv = ["apply", "plan.json", "--out", "out"]
    if edit == "factory":
        plan["model"].update(kind="factory", path="os:abort")
    elif edit == "out-is-a-file":
        (tmp_path / "out").write_text("mine")
    elif edit == "option":
        plan["layers"]["conv1"]["option"] = "telepathy"
    else:
        argv += ["--weights", "w.pt"]
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    code = ("import sys\nfrom edgefit.cli import _run, app\n"
            f"code = _run(app, {argv!r})\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\nsys.exit(code)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == EXIT_BAD_INPUT, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_a_real_ctrl_c_is_130_with_one_line_and_nothing_written(tmp_path: Path) -> None:
    """SIGINT to the real `plan` script in the middle of a long search."""
    import signal
    import subprocess
    import sys
    import time

    import torch
    from torch import nn

    script = Path(sys.executable).with_name("plan")
    if not script.exists():
        pytest.skip(f"{script} is not installed")
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4)).eval()
    torch.export.save(torch.export.export(net, (torch.zeros(1, 1, 4, 4),)),
                      str(tmp_path / "tiny.pt2"))
    proc = subprocess.Popen(
        [str(script), "--target", "esp32-s3", "--max-latency", "30ms", "--model", "tiny.pt2",
         "--search", "bayes", "--trials", "100000"], cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env={**os.environ, "EDGEFIT_CACHE":
                                                str(tmp_path / "cache")},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        time.sleep(8)  # torch imported, the model captured, the search under way
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert err.strip().splitlines() == [
        "interrupted (temporary files removed; nothing half-written)"], err
    assert [p.name for p in tmp_path.iterdir() if p.name != "cache"] == ["tiny.pt2"]
