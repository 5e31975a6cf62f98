"""Bad delivery input to the real CLI: one line on stderr, exit 2, nothing written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgefit.cli import _plan_app, _run

BASE = ["--target", "arduino-nano-33-ble", "--max-flash", "1MB"]

CASES = {
    "unknown link": (["--link", "ble-3m", "--max-update-time", "30s"],
                     ["unknown link 'ble-3m'", "ble-1m", "lora-eu868-sf7"]),
    "negative time": (["--link", "ble-1m", "--max-update-time", "-3s"],
                      ["--max-update-time", "greater than zero"]),
    "time without a unit": (["--link", "ble-1m", "--max-update-time", "30"],
                            ["--max-update-time", "unit"]),
    "time without a link": (["--max-update-time", "30s"], ["--max-update-time needs --link"]),
    "zero slots": (["--ab-slots", "0"], ["--ab-slots 0", "1 to 8"]),
    "a budget file's unknown link": (["--budget", "bad-link.yaml"], ["link", "unknown link"]),
    "a budget file's time without a link": (["--budget", "no-link.yaml"],
                                            ["needs a link"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_delivery_input_exits_2_with_one_line(case: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad-link.yaml").write_text(
        "schema_version: 1\ntarget: arduino-nano-33-ble\nlink: carrier-pigeon\n"
        "limits:\n  flash: 1MB\n")
    (tmp_path / "no-link.yaml").write_text(
        "schema_version: 1\ntarget: arduino-nano-33-ble\nlimits:\n  update_time: 30s\n")
    argv, needles = CASES[case]
    code = _run(_plan_app, argv if argv[0] == "--budget" else [*BASE, *argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not (tmp_path / "plan.json").exists()


def test_the_installed_plan_command_refuses_a_time_without_a_link(tmp_path: Path) -> None:
    """The same through the console script (what a user runs), in a fresh process."""
    plan = Path(sys.executable).with_name("plan")
    out = subprocess.run([str(plan), *BASE, "--max-update-time", "30s"], capture_output=True,
                         text=True, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == [
        "error: --max-update-time needs --link NAME, the link the update travels over "
        "(see device_specs/links.yaml)"]
    assert "Traceback" not in out.stderr
