"""edgefit_common.execution: the settings that choose an executor, the in-process default (one
chunk, records as they are made, exceptions as raised) and that none of it imports Ray."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from edgefit_common import execution
from edgefit_common.errors import ClusterError
from edgefit_common.execution import IN_PROCESS, current, from_settings, using
from edgefit_common.ray_executor import RayExecutor


def test_settings_choose_the_executor() -> None:
    assert from_settings(environ={}) is IN_PROCESS
    assert from_settings(environ={"EDGEFIT_CLUSTER": "in-process"}) is IN_PROCESS
    local = from_settings(workers=2, environ={"EDGEFIT_CLUSTER": "auto"})  # the flag wins
    assert isinstance(local, RayExecutor) and local.workers == 2 and local.address is None
    env = from_settings(environ={"EDGEFIT_CLUSTER": "local:3"})
    assert isinstance(env, RayExecutor) and env.workers == 3
    for address in ("auto", "ray://head.example:10001", "10.0.0.5:6379"):
        chosen = from_settings(cluster=address, environ={})
        assert isinstance(chosen, RayExecutor) and chosen.address == address
        assert "not started" in chosen.describe()


@pytest.mark.parametrize(("cluster", "workers", "message"), [
    ("auto", 2, "give one"),
    (None, 0, "at least 1"),
    ("head.example", None, "expected auto"),
    ("ray://:10001", None, "expected auto"),
    ("local:two", None, "local:N takes a number"),
])
def test_bad_settings_are_one_clear_error(cluster: str | None, workers: int | None,
                                          message: str) -> None:
    with pytest.raises(ClusterError, match=message):
        from_settings(cluster, workers, environ={})


def test_a_bad_environment_setting_names_the_variable() -> None:
    with pytest.raises(ClusterError, match="EDGEFIT_CLUSTER 'nowhere'"):
        from_settings(environ={"EDGEFIT_CLUSTER": "nowhere"})


def test_in_process_is_one_chunk_with_records_as_they_are_made() -> None:
    assert IN_PROCESS.chunks(list(range(25))) == [list(range(25))]
    assert IN_PROCESS.chunks([]) == []
    seen: list[Any] = []

    def task(scale: int, chunk: list[int], emit: Callable[[Any], None]) -> None:
        for item in chunk:
            emit(item * scale)
            seen.append(("made", item))  # the record reached the caller before this

    got: list[int] = []
    IN_PROCESS.map_tasks(task, [[1, 2, 3]], lambda r: (got.append(r), seen.append(("got", r))),
                         shared=(10,))
    assert got == [10, 20, 30]
    assert seen[:2] == [("got", 10), ("made", 1)]


def test_in_process_exceptions_propagate_as_raised() -> None:
    def task(chunk: list[int], emit: Callable[[Any], None]) -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        IN_PROCESS.map_tasks(task, [[1]], print)


def test_using_installs_and_closes() -> None:
    closed = []

    class Probe(execution.Executor):
        def close(self) -> None:
            closed.append(True)

    probe = Probe()
    with using(probe):
        assert current() is probe
    assert current() is IN_PROCESS and closed == [True]
    with using(probe, close=False):
        pass
    assert closed == [True]


def test_choosing_an_executor_imports_no_ray() -> None:
    code = ("import sys\n"
            "from edgefit_common.execution import from_settings\n"
            "from_settings('auto'); from_settings(workers=2)\n"
            "import planner, edgefit.cli\n"
            "assert 'ray' not in sys.modules, 'ray imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_plan_help_and_an_in_process_sensitivity_pass_import_no_ray(tmp_path) -> None:
    code = ("import sys, contextlib, io\n"
            "import numpy as np, torch\n"
            "from edgefit.cli import plan_main\n"
            "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
            "    plan_main(['--help'])\n"
            "from cost_models.cached_rows import cached_output_kl\n"
            "from cost_models.row_cache import RowCache\n"
            "from techniques.quantize import QuantizeConfig\n"
            "net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()\n"
            "x = np.ones((8, 1, 2, 2), np.float32)\n"
            "q = [QuantizeConfig(weights='int8', activations='int8')]\n"
            f"with RowCache({str(tmp_path / 'rows.sqlite')!r}) as rows:\n"
            "    est = cached_output_kl(net, {'1': {'int8': q}}, x, rows)\n"
            "assert ('1', 'int8') in est.loss\n"
            "assert 'ray' not in sys.modules, 'ray imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_loopback_addresses_are_recognised(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgefit_common.ray_executor import _loopback

    assert _loopback("127.0.0.1:6379") and _loopback("ray://localhost:10001")
    assert not _loopback("10.0.0.5:6379") and not _loopback("ray://head.example:10001")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    assert not _loopback("auto")  # no cluster recorded
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text("127.0.0.1:6379\n")
    assert _loopback("auto")
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    assert not _loopback("auto")


def test_a_cluster_that_is_not_there_is_one_error_at_once(tmp_path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Before ray is imported (ray.init alone retries an absent head for minutes)."""
    import socket

    with socket.socket() as s:  # a port nobody listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ClusterError, match=f"cannot reach the Ray cluster at 127.0.0.1:{port}"):
        RayExecutor(address=f"127.0.0.1:{port}").start()
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    with pytest.raises(ClusterError, match="no Ray cluster is recorded"):
        RayExecutor(address="auto").start()
