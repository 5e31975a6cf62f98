"""A plan is the same whether its measurements came from a cold cache, a warm one or rows
merged from another cache (`edgefit cache export` / `merge`), and a warm re-plan measures
nothing: no accuracy pair, no pruning width, no stored bytes (issue #19 item 0)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from device_specs.budget import Budget
from edgefit import planning
from edgefit.cli import main

LIMITS = {"latency": "60ms", "ram": "64KB"}


@pytest.fixture(scope="module")
def lenet():
    """LeNet-5 and its calibration sample, loaded under the session's cache (trained there
    once); the plans below then read only the measurement rows from their own caches."""
    from workloads.models import load_model_ref

    loaded = load_model_ref("lenet5-mnist")
    return loaded, planning.calibration_split("mnist")


class Work:
    """What a plan measured: output-KL pairs, pruning widths, stored-bytes layers."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch | Any) -> None:
        from cost_models import accuracy

        self.pairs = self.widths = self.stored = 0
        kl, prune_kl, stored = (accuracy.measured_output_kl, accuracy.channel_pruning_kl,
                                planning._stored_bytes)

        def count_kl(model: Any, options: Any, x: Any, **kwargs: Any) -> Any:
            self.pairs += sum(len(row) for row in options.values())
            return kl(model, options, x, **kwargs)

        def count_prune(model: Any, groups: Any, example: Any, x: Any, **kwargs: Any) -> Any:
            self.widths += sum(len(g.widths) - 1 for g in groups)
            return prune_kl(model, groups, example, x, **kwargs)

        def count_stored(*args: Any) -> Any:
            self.stored += 1
            return stored(*args)

        monkeypatch.setattr(accuracy, "measured_output_kl", count_kl)
        monkeypatch.setattr(accuracy, "channel_pruning_kl", count_prune)
        # the stored-bytes key hashes _stored_bytes' source: keep the real function's
        count_stored.__wrapped__ = stored  # type: ignore[attr-defined]
        monkeypatch.setattr(planning, "_stored_bytes", count_stored)

    def total(self) -> tuple[int, int, int]:
        return self.pairs, self.widths, self.stored


def _plan(lenet: Any, target: str) -> dict[str, Any]:
    loaded, calib = lenet
    plan, _ = planning.make_plan(Budget(target=target, limits=LIMITS, model="lenet5-mnist"),
                                 "test", loaded=loaded, calibration=calib)
    assert plan.feasible
    return plan.model_dump(mode="json", exclude={"solver"})  # solver: its wall time


@pytest.fixture(scope="module")
def cold(lenet, image_target: str, tmp_path_factory: pytest.TempPathFactory):
    """One plan from an empty cache: the plan, what it measured, the cache it filled."""
    folder = tmp_path_factory.mktemp("cold-cache")
    with pytest.MonkeyPatch.context() as mp:
        work = Work(mp)
        mp.setenv("EDGEFIT_CACHE", str(folder))
        plan = _plan(lenet, image_target)
    return plan, work.total(), folder


def _copy(folder: Path, to: Path) -> Path:
    """A cache copied whole (the database and its write-ahead log)."""
    shutil.copytree(folder, to)
    return to


def test_cold_warm_and_merged_caches_give_the_same_plan(
        lenet, cold, image_target: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    plan, (pairs, widths, stored), folder = cold
    assert pairs > 0 and widths > 0 and stored > 0, "the cold plan measured everything"
    work = Work(monkeypatch)
    monkeypatch.setenv("EDGEFIT_CACHE", str(_copy(folder, tmp_path / "a")))
    warm = _plan(lenet, image_target)
    assert work.total() == (0, 0, 0), "the warm plan measured nothing"
    assert warm == plan

    export = tmp_path / "rows.json"
    with pytest.raises(SystemExit) as done:
        main(["cache", "export", str(export)])
    assert done.value.code == 0
    monkeypatch.setenv("EDGEFIT_CACHE", str(tmp_path / "b"))
    for _ in range(2):  # merging twice is merging once
        with pytest.raises(SystemExit) as done:
            main(["cache", "merge", str(export)])
        assert done.value.code == 0
    merged = _plan(lenet, image_target)
    assert work.total() == (0, 0, 0), "the merged rows served every measurement"
    assert merged == plan
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["cache", "info"])
    info = capsys.readouterr().out
    rows = len(json.loads(export.read_text())["rows"])
    assert f"{rows} rows" in info and "output-kl" in info and "stored-bytes" in info


def test_another_profile_measures_no_pair_again(
        lenet, cold, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Nano's catalog profile (a .tflite: no sparse or shared options) offers a subset of
    its packed-image twin's (layer, configs) pairs, under the same option names or others:
    after the image plan, it measures no accuracy pair and no pruning width."""
    work = Work(monkeypatch)
    monkeypatch.setenv("EDGEFIT_CACHE", str(_copy(cold[2], tmp_path / "cache")))
    _plan(lenet, "arduino-nano-33-ble")
    assert work.pairs == 0 and work.widths == 0


@pytest.mark.parametrize("text", ["{not json", '{"format": "edgefit-cache-rows", '
                                  '"format_version": 1, "rows": [["output-kl", "x", 1]]}'])
def test_a_bad_file_is_one_line_and_exit_2(text: str, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("EDGEFIT_CACHE", str(tmp_path / "cache"))
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    with pytest.raises(SystemExit) as done:
        main(["cache", "merge", str(bad)])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "bad.json" in err


def test_cache_commands_do_not_import_torch(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    code = ("import sys\nfrom edgefit.cli import main\n"
            "try:\n    main(['cache', 'info'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\nprint('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "EDGEFIT_CACHE": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert "0 rows" in out.stdout and out.stdout.strip().endswith("ok")
