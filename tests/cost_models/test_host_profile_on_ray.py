"""Host latency profiles on the two-node loopback cluster (the ``ray_cluster`` fixture of
tests/conftest.py): the options go to the nodes whose hardware fingerprint is this host's and
give the serial run's rows (keys, counts, fingerprint; timings differ run to run, so no value
is compared), each row says which node measured it, and a node of another CPU never writes
this host's key. Small run counts: these check where work runs, not what it measures."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from cost_models import micro_latency as ml
from cost_models import profiler
from cost_models.capture import capture
from cost_models.profile_cache import LayerSignature, ProfileCache
from edgefit_common.execution import using
from edgefit_common.ray_executor import RayExecutor
from workloads.zoo import LeNet5

INPUT_SHAPE = (1, 28, 28)
OPTIONS = ["fp32", "int8", "fp16"]  # 3 tasks over 2 nodes
QUICK = {"runs": 20, "profile_runs": 10, "warmup": 2}
FAKE = "Fake CPU 9000 (no node has it)"


@pytest.fixture(scope="module")
def executor(ray_cluster: str) -> Iterator[RayExecutor]:
    ex = RayExecutor(address=ray_cluster)
    ex.start()
    yield ex
    ex.close()


@pytest.fixture(scope="module")
def lenet() -> tuple[nn.Module, Any, np.ndarray]:
    torch.manual_seed(0)
    model = LeNet5().eval()
    calib = np.random.default_rng(0).random((16, *INPUT_SHAPE), dtype=np.float32)
    return model, capture(model, INPUT_SHAPE, "lenet5"), calib


def _profile(lenet: Any, cache: ProfileCache, options: list[str]) -> dict[Any, Any]:
    model, graph, calib = lenet
    return profiler.profile_host(model, INPUT_SHAPE, graph, options, cache, calib,
                                 progress=False, runs=QUICK["runs"],
                                 profile_runs=QUICK["profile_runs"], warmup=QUICK["warmup"])


def _labels(executor: RayExecutor) -> set[str]:
    return {n.label for n in executor.matching_nodes(profiler.host_key, (1, "all"),
                                                     profiler.host_fingerprint().key())}


def test_profiles_on_matching_nodes_have_the_serial_rows(executor: RayExecutor, lenet: Any,
                                                         tmp_path: Path) -> None:
    from cost_models.analytical import build_cost_table
    from device_specs.catalog import load_spec

    fp = profiler.host_fingerprint()
    labels = _labels(executor)
    assert len(labels) == 2  # both loopback nodes are this machine: both match
    with ProfileCache(tmp_path / "serial.sqlite") as cache:
        serial = _profile(lenet, cache, OPTIONS)
        serial_rows = cache.count(fp)
    executor.stats.clear()
    with ProfileCache(tmp_path / "ray.sqlite") as cache, using(executor, close=False):
        fanned = _profile(lenet, cache, OPTIONS)
        assert cache.count(fp) == serial_rows == len(cache) == 5 * len(OPTIONS)
        again = _profile(lenet, cache, OPTIONS)  # all cached: nothing submitted
    assert set(fanned) == set(serial) and set(again) == set(serial)
    assert [(s.title, s.items) for s in executor.stats] == [("host profile (option)", 1)] * 3
    assert {s.node for s in executor.stats} <= labels
    for key, m in fanned.items():
        # the attributed node list is read from a profile: it varied between runs here (not
        # compared), as timings do
        assert m.fingerprint == fp and m.nodes and not m.cached
        assert m.measured_by in labels and serial[key].measured_by == ""
        assert again[key].cached and again[key].measured_by == m.measured_by
    by_option = {o: {m.measured_by for (_, o2), m in fanned.items() if o2 == o}
                 for o in OPTIONS}
    assert all(len(who) == 1 for who in by_option.values())  # one node measured each model
    _, graph, _ = lenet
    table = build_cost_table(graph, load_spec("raspberry-pi-4"))
    said = profiler.with_measured_latency(table, fanned).provenance[profiler.MEASURED_BY]
    for option, (who,) in by_option.items():
        assert f"{option} (5 layers)" in said and who in said
    assert profiler.MEASURED_BY not in profiler.with_measured_latency(table, serial).provenance


def test_no_matching_node_measures_on_the_driver(executor: RayExecutor, lenet: Any,
                                                 tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """This host made to look like another CPU (the driver only: the nodes report their real
    fingerprint): no node matches, nothing is submitted, the driver measures and says so."""
    real = profiler.host_fingerprint()
    fake = dataclasses.replace(real, cpu_model=FAKE)
    monkeypatch.setattr(profiler, "host_fingerprint", lambda *_a, **_k: fake)
    executor.stats.clear()
    with ProfileCache(tmp_path / "p.sqlite") as cache, using(executor, close=False):
        measured = _profile(lenet, cache, ["fp32"])
        assert cache.count(fake) == len(cache) == 5 and cache.count(real) == 0
    assert executor.stats == []
    assert {m.measured_by for m in measured.values()} == {
        f"the driver (no node of {executor.describe()} has this host's fingerprint: {FAKE}, "
        f"{real.cores} cores, onnxruntime {real.ort_version})"}


def test_a_node_of_another_cpu_never_writes_the_target_key(executor: RayExecutor, lenet: Any,
                                                           tmp_path: Path) -> None:
    """Tasks forced onto nodes whose CPU is not the target's (the filter bypassed): their rows
    go under the nodes' own fingerprint, none under the target's, and none is returned as the
    target's measurement."""
    model, graph, calib = lenet
    real = profiler.host_fingerprint()
    target = dataclasses.replace(real, cpu_model=FAKE)
    nodes = executor.matching_nodes(profiler.host_key, (1, "all"), real.key())
    sigs = profiler.layer_signatures(model, INPUT_SHAPE, graph)
    settings = {**QUICK, "threads": 1, "opt_level": "all"}
    with ProfileCache(tmp_path / "p.sqlite") as cache:
        got = profiler._profile_on_nodes(executor, nodes, model, INPUT_SHAPE, graph, ["fp32"],
                                         calib, settings, target, sigs, cache)
        assert got == {}
        assert cache.count(target) == 0 and cache.count(real) == len(cache) == 5
        hit = cache.get(real, sigs["conv1"], "fp32")
        assert hit is not None and hit.extra["measured_by"] in {n.label for n in nodes}


def test_one_layer_models_on_matching_nodes(executor: RayExecutor, tmp_path: Path) -> None:
    fp = profiler.host_fingerprint()
    method = profiler.method()
    variants, sigs = {}, {}
    for name, width in (("fc", 32), ("head", 16)):
        dense = nn.Linear(width, 8)
        variants[name] = [ml.Variant("fp32", (dense,), (1, width)),
                          ml.Variant("fp32", (nn.Linear(width, 2, bias=False), nn.Linear(2, 8)),
                                     (1, width))]
        sigs[name] = LayerSignature("Linear", (1, width), (1, 8), (8, width), True,
                                    method=method)
    labels = _labels(executor)
    with ProfileCache(tmp_path / "serial.sqlite") as cache:
        who_serial: dict[str, list[str]] = {}
        serial = ml.measure_variants(variants, sigs, fp, cache, who=who_serial)
    with ProfileCache(tmp_path / "ray.sqlite") as cache, using(executor, close=False):
        who: dict[str, list[str]] = {}
        fanned = ml.measure_variants(variants, sigs, fp, cache, who=who)
        assert cache.count(fp) == len(cache) == 4
    assert set(fanned) == set(serial) and len(serial) == 4 and who_serial == {}
    assert set(who) <= labels and sorted(sum(who.values(), [])) == ["fc", "head"]
