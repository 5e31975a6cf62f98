"""A two-candidate step of the closed loop on the two-node loopback cluster (the
``ray_cluster`` fixture of tests/conftest.py): the trained LeNet-5's two plans are applied on
the driver (fine-tuning included), their host timings run on the nodes with this host's CPU,
and the loop chooses what it chooses when each plan is applied in-process one by one."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from cost_models.profiler import host_fingerprint, host_key
from edgefit.loop import LoopSettings, apply_batch_evaluator, apply_evaluator, closed_loop
from edgefit_common.execution import using
from edgefit_common.ray_executor import RayExecutor

SETTINGS = LoopSettings(rounds=2, candidates=2, objective="flash")


@pytest.fixture(scope="module")
def executor(ray_cluster: str) -> Iterator[RayExecutor]:
    ex = RayExecutor(address=ray_cluster)
    ex.start()
    yield ex
    ex.close()


def test_a_two_candidate_step_on_ray_chooses_the_serial_plan(
        executor: RayExecutor, lenet5_plan_factory, image_target: str, tmp_path: Path) -> None:
    plan, _ = lenet5_plan_factory(target=image_target, latency="60ms", accuracy_drop="0.5pp")
    serial = closed_loop(plan, apply_evaluator(tmp_path / "serial"), SETTINGS)
    executor.stats.clear()
    with using(executor, close=False):
        fanned = closed_loop(plan, apply_evaluator(tmp_path / "ray"), SETTINGS,
                             apply_batch_evaluator(tmp_path / "ray"))
    assert len(serial.rounds) == len(fanned.rounds) == 2  # one step of two plans
    assert [r.batch for r in fanned.rounds] == [1, 1]
    assert fanned.status == serial.status and fanned.best_round == serial.best_round
    assert fanned.best_plan is not None and serial.best_plan is not None
    assert fanned.best_plan.options() == serial.best_plan.options()
    for a, b in zip(serial.rounds, fanned.rounds, strict=True):
        assert a.options == b.options and a.verdict == b.verdict
        assert a.measured is not None and b.measured is not None
        assert a.measured.drop_pp == b.measured.drop_pp  # trained on the driver, same seeds
        assert a.measured.costs == b.measured.costs  # flash: the stored image's bytes
    nodes = {n.label for n in executor.matching_nodes(host_key, (1, "all"),
                                                      host_fingerprint().key())}
    assert [(s.title, s.items) for s in executor.stats] == [("host check (candidate)", 1)] * 2
    for r in fanned.rounds:
        report = json.loads((tmp_path / "ray" / f"round-{r.number}" / "report.json").read_text())
        host = report["host_check"]
        assert host["measured_by"] in nodes and "pending" not in host
        assert all(row["measured"] is not None for row in host["rows"][:2])
        assert [c["check"] for c in report["checks"]][:1] == [
            "artifacts stored as planned (read back from the files)"]
        serial_report = json.loads((tmp_path / "serial" / f"round-{r.number}" /
                                    "report.json").read_text())
        assert "measured_by" not in serial_report["host_check"]
        assert [c["check"] for c in report["checks"]] == [
            c["check"] for c in serial_report["checks"]]
