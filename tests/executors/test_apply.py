"""apply end to end on the trained LeNet-5: the files match the plan, byte for byte."""

from __future__ import annotations

import json

import pytest

from techniques.flash_image import image_overhead_bytes, payload_bytes, read_flash_image
from techniques.onnx.inspect import inspect_onnx
from techniques.quantize import onnx_option, weight_precision


@pytest.fixture(scope="module")
def applied(lenet5_plan_factory, tmp_path_factory: pytest.TempPathFactory):
    from edgefit.applying import apply_plan

    plan, _ = lenet5_plan_factory(latency="45ms", accuracy_drop="1pp")
    out = tmp_path_factory.mktemp("apply")
    return plan, apply_plan(plan, out), out


def test_plan_mixes_precisions(applied) -> None:
    plan, _, _ = applied
    assert len(set(plan.options().values())) >= 2, "45 ms on the Nano 33 needs int8/int4 layers"


def test_flash_image_matches_plan_byte_for_byte(applied) -> None:
    plan, report, out = applied
    stored = {s.name: s for s in read_flash_image(out / "model.flash.bin")}
    assert list(stored) == list(plan.layers)
    for name, lp in plan.layers.items():
        s = stored[name]
        weights = weight_precision(lp.techniques)
        assert s.option == weights
        # each layer's cost is its blobs plus its header entry, to the byte
        assert s.weight_bytes + s.bias_bytes + s.header_bytes == lp.image_bytes, name
        if weights in ("int8", "int4"):
            assert s.distinct_values <= 2 ** s.bits - 1
    planned = sum(lp.image_bytes for lp in plan.layers.values())
    overhead = plan.fixed["image_overhead_bytes"]
    assert overhead == image_overhead_bytes() > 0
    # the whole file, header included, is predicted exactly
    assert (out / "model.flash.bin").stat().st_size == planned + overhead
    assert payload_bytes(out / "model.flash.bin") == planned - sum(
        s.header_bytes for s in stored.values())
    assert report["artifacts"]["flash_match"]


def test_runnable_onnx_stores_each_layer_as_planned(applied) -> None:
    plan, report, out = applied
    storage = inspect_onnx(out / "model.onnx")
    from techniques.quantize import onnx_option

    for name, lp in plan.layers.items():
        assert storage[name].option == onnx_option(lp.techniques), name
    fidelity = report["accuracy"]["onnx_vs_torch"]
    assert fidelity["top1_agreement"] >= 0.99
    assert (out / "model.onnx").stat().st_size < (out / "model.fp32.onnx").stat().st_size


def test_report_is_honest_and_complete(applied) -> None:
    plan, report, out = applied
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["options"] == plan.options()
    assert "not measured on the device" in on_disk["target_predicted"]["source"]
    acc = on_disk["accuracy"]
    assert acc["fp32"] >= 0.97, "the trained LeNet-5 meets its floor"
    assert acc["test_size"] == 2000
    assert acc["limit_met"] == (acc["drop_pp"] <= 1.0)
    rows = {r["quantity"]: r for r in on_disk["host_check"]["rows"]}
    assert rows["latency (compressed)"]["measured"] > 0
    assert rows["bytes on disk (runnable ONNX)"]["measured"] == (out / "model.onnx").stat().st_size
    assert all(c["ok"] for c in on_disk["checks"]), on_disk["checks"]


def test_tight_flash_stores_pruned_layers_sparsely(tmp_path, image_target) -> None:
    from device_specs.budget import Budget
    from edgefit.applying import apply_plan
    from edgefit.planning import make_plan

    # factorisation, channel pruning and weight sharing also meet this budget: leave
    # unstructured pruning alone
    # (the Nano as a packed-image target: its model.tflite would store the zeros dense)
    budget = Budget(target=image_target, limits={"latency": "60ms", "flash": "125KB"},
                    model="lenet5-mnist")
    plan, _ = make_plan(budget, "test", exclude=("lowrank", "prune_channels", "share"))
    sparse = {n: lp for n, lp in plan.layers.items() if "+s" in (lp.option or "")}
    assert sparse, "125 KB (100 KB of it the runtime) needs pruned layers"
    report = apply_plan(plan, tmp_path)
    assert all(c["ok"] for c in report["checks"]), report["checks"]
    stored = {s.name: s for s in read_flash_image(tmp_path / "model.flash.bin")}
    for name, lp in sparse.items():
        level = int(lp.option.split("+s")[1]) / 100
        assert stored[name].storage in ("bitmask", "csr")
        assert stored[name].zero_fraction >= level - 1e-9
        assert stored[name].weight_bytes + stored[name].bias_bytes + stored[name].header_bytes == \
            lp.cost.flash_bytes
    # the runnable ONNX carries the same zeros (dense kernels: no speed-up claimed)
    onnx_storage = inspect_onnx(tmp_path / "model.onnx")
    assert all(onnx_storage[n].option == onnx_option(lp.techniques) for n, lp in sparse.items())


@pytest.mark.parametrize("field", ["weights", "calibration"])
def test_apply_refuses_a_plan_costed_on_other_weights_or_data(applied, field, tmp_path,
                                                              capsys) -> None:
    """plan.json pins what it was costed on: the real CLI answers one line, exit 2, and
    writes nothing."""
    from edgefit.cli import _run, app

    plan, _, _ = applied
    if field == "weights":
        other = plan.model_copy(update={"model": plan.model.model_copy(
            update={"weights_sha256": "f" * 64})})
    else:
        other = plan.model_copy(update={"calibration_sha256": "f" * 64})
    path, out = tmp_path / "plan.json", tmp_path / "out"
    other.save(path)
    code = _run(app, ["apply", str(path), "--out", str(out)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1, lines
    assert ("other weights" if field == "weights" else "other calibration data") in lines[0]
    assert "re-plan" in lines[0]
    assert not out.exists()
