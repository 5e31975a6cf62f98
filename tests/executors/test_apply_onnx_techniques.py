"""An ONNX-only model gets the techniques the ONNX level can express (issue #21): a user's own
network (conv -> BatchNorm -> PReLU, a residual conv -> BatchNorm -> ReLU, a Linear; not a
built-in) exported to ONNX is offered unstructured sparsity and weight sharing on its
initializers, costed (flash from the image writer, accuracy measured by onnxruntime, latency
its kernel's), and a plan pinned to them applies: the written initializers hold the planned
zeros / at most 2**bits distinct values, and the accuracy is the shipped file's."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from device_specs.budget import Budget
from edgefit.applying import apply_plan
from edgefit.cli import _plan_app, _run
from edgefit.planning import make_plan
from planner.plan import Plan
from techniques.onnx.weights import stored_weights
from techniques.prune import pruned_count
from techniques.share import SHARE_BITS

FC = "node_linear"  # the Linear's node (15,680 weights: the one layer large enough)


@pytest.fixture(scope="module")
def user_onnx(user_net: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("user-onnx") / "usernet.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(user_net, (torch.zeros(1, 1, 28, 28),), str(path), dynamo=True,
                          external_data=False, verbose=False)
    return path


def _budget(path: Path) -> Budget:
    return Budget(target="host", limits={"latency": "1s"}, model=str(path), data="mnist")


def test_an_onnx_model_is_offered_sparse_and_shared_options(
        user_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "plan.json"
    code = _run(_plan_app, ["--target", "host", "--max-latency", "1s", "--model",
                            str(user_onnx), "--data", "mnist", "--out", str(out)])
    shown = " ".join(capsys.readouterr().out.split())
    assert code == 0
    plan = Plan.model_validate(json.loads(out.read_text()))
    assert FC in plan.layers and plan.model.kind == "onnx"
    alts = {a.option: a for a in plan.layers[FC].alternatives}
    for option in ("fp32+s50", "int8+s75", "fp32+k4", "fp16+k4+s75"):
        assert option in alts, sorted(alts)
    techniques = {t.technique for a in alts.values() for t in a.techniques}
    assert {"prune_unstructured", "share", "quantize"} <= techniques
    assert not techniques & {"lowrank", "prune_channels"}  # need the torch model
    # costed: fewer bytes than the dense kernel, a measured accuracy cost, the kernel's latency
    for option, dense in (("fp32+s75", "fp32"), ("int8+s75", "int8"), ("fp32+k4", "fp32")):
        assert alts[option].flash_bytes < alts[dense].flash_bytes
        assert alts[option].latency_ms == pytest.approx(alts[dense].latency_ms)
    assert alts["fp32+s75"].acc_loss > alts["fp32+s50"].acc_loss > 0.0
    assert alts["fp32+k4"].acc_loss > 0.0
    assert "pruned (magnitude) / shared (k-means codebook) at the ONNX level" in \
        plan.provenance["accuracy"]
    # plan's output says which techniques the ONNX route offers
    assert "unstructured magnitude sparsity, weight sharing (k-means codebook)" in shown
    assert "low rank, channel pruning and N:M pruning need the torch model" in shown


@pytest.mark.parametrize("option", ["int8+s75", "fp16+k4+s75", "fp32+k4"])
def test_a_plan_pinned_to_them_applies_and_the_file_holds_them(
        option: str, user_onnx: Path, tmp_path: Path) -> None:
    from cost_models.accuracy_onnx import onnx_accuracy
    from workloads.data import load_dataset

    plan, _ = make_plan(_budget(user_onnx), "test", pins={FC: option})
    assert plan.options()[FC] == option
    report = apply_plan(plan, tmp_path / "out")
    assert all(c["ok"] for c in report["checks"]), report["checks"]
    runnable = tmp_path / "out" / "model.onnx"
    w = stored_weights(runnable, [FC])[FC]
    row = next(r for r in report["verification"]["layers"] if r["layer"] == FC)
    lp = plan.layers[FC]
    sparsity = next((t.sparsity for t in lp.techniques
                     if t.technique == "prune_unstructured"), 0.0)
    assert int((w == 0).sum()) >= pruned_count(w.size, sparsity)
    if sparsity:
        assert row["onnx_zero_fraction"] >= sparsity
    if "k4" in option:
        assert np.unique(w[w != 0]).size <= 2 ** SHARE_BITS
        assert row["onnx_distinct_nonzero"] <= 2 ** SHARE_BITS
    if option.startswith("fp32"):  # the float initializer itself, read with onnx alone
        model = onnx.load(str(runnable))
        node = next(n for n in model.graph.node if n.name == FC)
        init = next(i for i in model.graph.initializer if i.name == node.input[1])
        raw = numpy_helper.to_array(init)
        assert np.unique(raw[raw != 0]).size <= 2 ** SHARE_BITS
    # the flash image holds what the plan predicted for the layer, exactly
    assert row["image_bytes"] == lp.image_bytes
    # accuracy is the shipped file's, run here again
    _, test = load_dataset("mnist")
    assert report["accuracy"]["compressed"] == pytest.approx(
        onnx_accuracy(runnable, test.x, test.y))
