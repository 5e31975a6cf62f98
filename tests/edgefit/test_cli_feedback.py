"""A command line that talks back (issue #21 item 3): the header first, progress on stderr
(-q: none, -v: every step), --version, -h, --json summaries, and typos refused before torch is
imported, with the closest name."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgefit.cli import EXIT_BAD_INPUT, EXIT_CHECK_FAILED, _plan_app, _run, app
from edgefit_common import __version__

REVIEW_PLAN = Path(__file__).parents[1] / "review" / "data" / "plan.json"
TINY = ["--target", "esp32-s3", "--max-latency", "30ms", "--model", "tiny.pt2"]


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EDGEFIT_CACHE", str(tmp_path / "cache"))
    return tmp_path


@pytest.fixture
def tiny(cwd: Path) -> Path:
    """A two-layer torch.export archive: a plan of it takes a second once torch is loaded."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4)).eval()
    torch.export.save(torch.export.export(net, (torch.zeros(1, 1, 4, 4),)),
                      str(cwd / "tiny.pt2"))
    return cwd


@pytest.mark.parametrize("argv", [["--version"], ["plan", "--version"]])
def test_version_of_edgefit(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(app, argv) == 0
    assert capsys.readouterr().out == f"edgefit {__version__}\n"


def test_version_of_plan(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(_plan_app, ["--version", "--target", "nowhere"]) == 0  # eager: nothing else
    assert capsys.readouterr().out == f"edgefit {__version__}\n"


def _help(argv: list[str], capsys: pytest.CaptureFixture[str], entry: Any = app) -> str:
    assert _run(entry, argv) == 0
    return capsys.readouterr().out


def test_h_is_help_and_flags_show_no_bool(capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    plan_help = _help(["-h"], capsys, _plan_app)
    assert plan_help == _help(["--help"], capsys, _plan_app)
    assert "Usage" in _help(["-h"], capsys) and "Usage" in _help(["apply", "-h"], capsys)
    for flag in ("--apply", "--qat", "--help", "--json", "--quiet", "--version"):
        assert f"│ {flag} " in plan_help, flag
    assert "<bool>" not in plan_help
    model = next(line for line in plan_help.splitlines() if "--model " in line)
    assert ".onnx" in model
    assert "the plan FILE" in plan_help
    assert "the artifact FOLDER" in _help(["apply", "--help"], capsys)


TYPOS = {
    "target": (["--target", "jetson-nan", "--max-latency", "30ms"],
               "unknown target 'jetson-nan' (did you mean 'jetson-nano'?)"),
    "profile": (["--target", "jetson-nano", "--profile", "tensorrt-gp", "--max-latency", "30ms"],
                "profile 'tensorrt-gp' (did you mean 'tensorrt-gpu'?)"),
    "exclusion": (["--target", "esp32-s3", "--max-latency", "30ms", "--exclude", "in8"],
                  "--exclude 'in8' (did you mean 'int8'?)"),
    "exclusion technique": (["--target", "esp32-s3", "--max-latency", "30ms", "--exclude",
                             "quantise"], "(did you mean 'quantize'?)"),
    "model": (["--target", "esp32-s3", "--max-latency", "30ms", "--model", "lenet5-mnst"],
              "lenet5-mnst (did you mean 'lenet5-mnist'?)"),
    "model file": (["--target", "esp32-s3", "--max-latency", "30ms", "--model", "mine.onnx"],
                   "mine.onnx: model file not found"),
    "data": (["--target", "esp32-s3", "--max-latency", "30ms", "--data", "fashion-minst"],
             "unknown dataset 'fashion-minst' (did you mean 'fashion-mnist'?)"),
    "data file": (["--target", "esp32-s3", "--max-latency", "30ms", "--data", "mine.npz"],
                  "mine.npz: data file not found"),
    "bayes with a typo": (["--target", "jetson-nan", "--max-latency", "30ms", "--search",
                           "bayes"], "did you mean 'jetson-nano'"),
}


def _refused_before_torch(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """`plan ARGV` in a fresh interpreter: exit 2 without torch ever imported."""
    code = ("import sys\nfrom edgefit.cli import _plan_app, _run\n"
            f"code = _run(_plan_app, {argv!r})\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\nsys.exit(code)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == EXIT_BAD_INPUT, out.stderr
    return out


@pytest.mark.parametrize("case", list(TYPOS))
def test_a_typo_is_refused_before_torch_is_imported(case: str, tmp_path: Path) -> None:
    argv, needle = TYPOS[case]
    out = _refused_before_torch(argv, tmp_path)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], out.stderr
    assert out.stdout == "" and not (tmp_path / "plan.json").exists()


def test_the_header_comes_first_and_verbose_shows_every_step(
        tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(_plan_app, [*TINY, "-v"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[:2] == ["model:  tiny.pt2  [--model flag]",
                                    "target: esp32-s3 / esp-nn  [--target flag]"]
    assert out.count("model:") == 1, "the header is not repeated by the plan's tables"
    for step in ("load model tiny.pt2", "capture tiny", "solve (cpsat)"):
        assert f"{step}: started" in err and f"{step}: done in" in err, err


def test_quiet_shows_no_progress(tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(_plan_app, [*TINY, "-q"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert "model:  tiny  [--model flag]" in out and "wrote plan.json" in out


def test_quiet_and_verbose_together_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(_plan_app, [*TINY, "-q", "-v"]) == EXIT_BAD_INPUT
    assert "choose one" in capsys.readouterr().err


def test_plan_json_is_the_summary_alone_on_stdout(tiny: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(_plan_app, [*TINY, "--json"]) == 0
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert {"status", "feasible", "totals", "options", "binding", "limits", "written", "model",
            "target", "solver"} <= set(summary)
    assert summary["status"] == "OPTIMAL" and summary["feasible"] is True
    assert set(summary["options"]) == set(json.loads(Path("plan.json").read_text())["layers"])
    assert summary["limits"] == {"latency_ms": 30.0}
    assert summary["totals"]["latency_ms"] <= 30.0
    assert summary["written"] == ["plan.json"]
    assert summary["target"] == {"device": "esp32-s3", "profile": "esp-nn",
                                 "origin": "--target flag"}
    assert err.startswith("model:  tiny.pt2"), "the header goes to stderr with --json"


def test_an_infeasible_plan_json_says_so_with_exit_1(tiny: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(_plan_app, [*TINY, "--max-flash", "10B", "--json", "-q"]) == 1
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert summary["status"] == "INFEASIBLE" and summary["totals"] is None
    assert summary["explanation"]["relaxations"] and err == ""


def _report(ok: bool) -> dict[str, Any]:
    return {"checks": [{"check": "artifacts stored as planned", "ok": True, "detail": "all"},
                       {"check": "accuracy drop <= 1 pp", "ok": ok, "detail": "0.40 pp"}],
            "accuracy": {"fp32": 0.99, "compressed": 0.986, "drop_pp": 0.4, "limit_pp": 1.0},
            "artifacts": {"onnx": "out/model.onnx", "flash_image": "out/model.flash.bin"},
            "target_predicted": {"device": "esp32-s3", "latency_ms": 12.0, "provenance": {}},
            "verification": {"summary": "every layer stored as planned"},
            "report_path": "out/report.json"}


@pytest.mark.parametrize("ok", [True, False])
def test_apply_json(ok: bool, cwd: Path, monkeypatch: pytest.MonkeyPatch,
                    capsys: pytest.CaptureFixture[str]) -> None:
    (cwd / "plan.json").write_text(REVIEW_PLAN.read_text())
    monkeypatch.setattr("edgefit.applying.apply_plan", lambda plan, out, source: _report(ok))
    code = _run(app, ["apply", "plan.json", "--json"])
    assert code == (0 if ok else EXIT_CHECK_FAILED)
    summary = json.loads(capsys.readouterr().out)
    assert summary["ok"] is ok
    assert [c["ok"] for c in summary["checks"]] == [True, ok]
    assert summary["accuracy"]["drop_pp"] == 0.4
    assert summary["artifacts"]["onnx"] == "out/model.onnx"
    assert summary["report"] == "out/report.json"
    assert "provenance" not in summary["predicted"]


def test_resolve_writes_beside_its_input_unless_told(cwd: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    original = REVIEW_PLAN.read_text()
    (cwd / "plan.json").write_text(original)
    assert _run(app, ["resolve", "plan.json", "--max-latency", "1s"]) == 0
    assert (cwd / "plan.json").read_text() == original
    assert "wrote plan.resolved.json" in capsys.readouterr().out
    assert _run(app, ["resolve", "plan.json", "--out", "other.json", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["command"] == "resolve" and summary["written"] == ["other.json"]
    assert _run(app, ["resolve", "plan.json", "--in-place", "--max-latency", "1s"]) == 0
    assert (cwd / "plan.json").read_text() != original
    assert _run(app, ["resolve", "plan.json", "--in-place", "--out", "x.json"]) == EXIT_BAD_INPUT


NPZ = {
    "no inputs": ({"a": np.zeros((40, 1, 28, 28), np.float32), "b": np.zeros(40, np.int64)},
                  "no array named 'x' (the inputs; 'y': the labels, optional); archive holds"),
    "count": ({"x": np.zeros((40, 1, 28, 28), np.float32), "y": np.zeros(39, np.int64)},
              "40 images but 39 labels"),
    "float labels": ({"x": np.zeros((40, 1, 28, 28), np.float32),
                      "y": np.zeros(40, np.float32)}, "must be a 1-D integer array"),
}


@pytest.mark.parametrize("case", list(NPZ))
def test_a_data_file_s_contents_are_checked_before_torch(case: str, tmp_path: Path) -> None:
    """Issue #21 item 3: files parse before torch is imported (an .npz from its headers)."""
    arrays, needle = NPZ[case]
    np.savez(tmp_path / "d.npz", **arrays)
    argv = ["--target", "esp32-s3", "--max-latency", "30ms", "--data", "d.npz"]
    out = _refused_before_torch(argv, tmp_path)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], out.stderr
