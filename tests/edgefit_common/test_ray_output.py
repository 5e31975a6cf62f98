"""`plan --json` on Ray when a worker dies: stdout stays the JSON summary alone.

Ray's driver prints what the cluster reports to it ("A worker died or was killed while
executing a task ...") on stdout unless edgefit_common.ray_executor sends it to stderr
(``ray_messages_to_stderr``). Here a real plan (LeNet-5, the Arduino Nano 33 BLE, an empty
row cache so its sensitivity pass is submitted) runs through the command line against the
two-node loopback cluster of tests/conftest.py, and the first task of that pass kills its
worker process once; Ray runs the task again and the plan is made."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

DIED = "worker died or was killed while executing"


def dies_once(folder: str, task: Callable[..., None], *args: Any) -> None:
    """``task(*args)``, except that the first call of the whole run kills its own process
    (a marker file in ``folder`` makes it once: the retried task runs)."""
    marker = Path(folder) / "died"
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        task(*args)
        return
    os.close(fd)
    os._exit(1)


def test_plan_json_stays_json_when_a_worker_dies(
        ray_cluster: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capfd: pytest.CaptureFixture[str]) -> None:
    from cost_models import cached_rows, row_cache
    from edgefit.cli import _plan_app, _run

    # no chdir: Ray's workers find this module (dies_once) through the driver's directory
    monkeypatch.delenv("EDGEFIT_CLUSTER", raising=False)
    monkeypatch.setattr(row_cache, "default_path", lambda: tmp_path / "rows.sqlite")
    monkeypatch.setattr(cached_rows, "output_kl_task", functools.partial(
        dies_once, str(tmp_path), cached_rows.output_kl_task))
    code = _run(_plan_app, ["--model", "lenet5-mnist", "--target", "arduino-nano-33-ble",
                            "--max-latency", "60ms", "--cluster", ray_cluster, "--json",
                            "--out", str(tmp_path / "plan.json")])
    out, err = capfd.readouterr()
    assert code == 0, err
    assert (tmp_path / "died").exists()  # a worker did die
    assert DIED in err  # Ray's report of it reached the driver, on stderr
    summary = json.loads(out)  # stdout is the summary and nothing else
    assert summary["status"] in ("OPTIMAL", "FEASIBLE")
    assert (tmp_path / "plan.json").exists()
