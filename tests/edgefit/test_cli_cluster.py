"""plan --workers / --cluster / EDGEFIT_CLUSTER: bad settings are one line and exit 2, before
torch or Ray is loaded (docs/scale-out.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefit.cli import _plan_app, _run

BASE = ["--model", "lenet5-mnist", "--target", "arduino-nano-33-ble", "--max-latency", "60ms"]
CASES = {
    "both": (["--workers", "2", "--cluster", "auto"], {}, "--cluster and --workers: give one"),
    "no workers": (["--workers", "0"], {}, "--workers 0: the number of local workers"),
    "a host without a port": (["--cluster", "head.example"], {}, "--cluster 'head.example'"),
    "a bad environment": ([], {"EDGEFIT_CLUSTER": "local:many"}, "EDGEFIT_CLUSTER 'local:many'"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_cluster_settings_exit_2_with_one_line(case: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import sys

    monkeypatch.chdir(tmp_path)
    argv, env, needle = CASES[case]
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    had_ray = "ray" in sys.modules
    code = _run(_plan_app, [*BASE, *argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
    assert not (tmp_path / "plan.json").exists()
    assert had_ray or "ray" not in sys.modules


@pytest.mark.parametrize(("argv", "env", "expected"), [
    ([], {}, "in-process"),
    (["--workers", "2"], {}, "ray (local, 2 workers; not started)"),
    (["--cluster", "ray://head.example:10001"], {"EDGEFIT_CLUSTER": "local:4"},
     "ray (ray://head.example:10001; not started)"),
    ([], {"EDGEFIT_CLUSTER": "10.0.0.5:6379"}, "ray (10.0.0.5:6379; not started)"),
])
def test_the_plan_is_made_under_the_executor_the_settings_chose(
        argv: list[str], env: dict[str, str], expected: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """What make_plan sees as the current executor (make_plan itself replaced: nothing is
    measured or started), and that the command put the default back afterwards."""
    from edgefit import cli
    from edgefit_common import execution
    from edgefit_common.errors import PlanError

    seen: list[str] = []

    def make_plan(*args: object, **kwargs: object) -> None:
        seen.append(execution.current().describe())
        raise PlanError("stopped by the test")

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EDGEFIT_CLUSTER", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(cli, "_make_plan", make_plan)
    code = _run(_plan_app, [*BASE, "-q", *argv])
    assert code == 2 and "stopped by the test" in capsys.readouterr().err
    assert seen == [expected]
    assert execution.current() is execution.IN_PROCESS
