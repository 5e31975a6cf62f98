"""The checks `plan` makes before torch is imported (edgefit.precheck and what it calls)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from device_specs.budget import Budget
from edgefit.precheck import check_plan_inputs
from edgefit_common.errors import (
    DataError,
    EdgefitError,
    ModelLoadError,
    SpecError,
    UnknownTargetError,
    did_you_mean,
)
from edgefit_common.fsutil import file_problem
from workloads.data import check_dataset_ref
from workloads.refs import BUILT_IN_MODELS, check_model_ref


def test_the_torch_free_list_of_built_in_models_is_the_zoo() -> None:
    from workloads.zoo import PRETRAINED, ZOO

    assert sorted(BUILT_IN_MODELS) == sorted([*ZOO, *PRETRAINED])


def test_did_you_mean() -> None:
    assert did_you_mean("jetson-nan", ["jetson-nano", "esp32-s3"]) == (
        " (did you mean 'jetson-nano'?)")
    assert did_you_mean("telepathy", ["int8", "fp32"]) == ""


def test_file_problem(tmp_path: Path) -> None:
    (tmp_path / "m.pt2").write_bytes(b"x")
    os.mkfifo(tmp_path / "f.npz")
    assert file_problem(tmp_path / "m.pt2") is None
    assert file_problem(tmp_path / "no.pt2", "model file") == (
        f"{tmp_path}/no.pt2: model file not found")
    assert "a named pipe (FIFO)" in (file_problem(tmp_path / "f.npz", "data file") or "")
    assert file_problem(tmp_path, "folder", folder=True) is None
    assert "not a folder" in (file_problem(tmp_path / "m.pt2", "image folder", folder=True) or "")


def budget(**fields: object) -> Budget:
    return Budget.model_validate({"target": "esp32-s3", "limits": {"latency": "30ms"}, **fields})


@pytest.mark.parametrize(("fields", "error", "needle"), [
    ({"target": "esp32s3"}, UnknownTargetError, "(did you mean 'esp32-s3'?)"),
    ({"profile": "espnn"}, SpecError, "(did you mean 'esp-nn'?)"),
    ({"model": "fashion_cnn"}, ModelLoadError, "(did you mean 'fashion-cnn'?)"),
    ({"model": "ckpt.pth"}, ModelLoadError, "pickled checkpoint"),
    ({"model": "missing.pt2"}, ModelLoadError, "model file not found"),
    ({"model": "pkg.mod:make", "weights": "w.pt"}, ModelLoadError, "weights file not found"),
    ({"data": "minst"}, DataError, "(did you mean 'mnist'?)"),
    ({"data": "folder-that-is-not-there"}, DataError, "unknown dataset"),
])
def test_refused_without_loading_anything(fields: dict[str, object], error: type[EdgefitError],
                                          needle: str, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error) as info:
        check_plan_inputs(budget(**fields))
    assert needle in str(info.value)


def test_exclusions_are_techniques_precisions_or_options_of_one() -> None:
    target = check_plan_inputs(budget(), ["quantize", "int8", "int8+s50+w12", "prune_channels"])
    assert (target.spec.name, target.profile) == ("esp32-s3", "esp-nn")
    with pytest.raises(SpecError, match="--exclude 'int4'.*: not a precision of esp32-s3/esp-nn"):
        check_plan_inputs(budget(), ["int4"])  # esp-nn has no int4 kernel


def test_what_exists_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _tiny_onnx(tmp_path / "m.onnx")
    # an .npz is read from its headers only (no data): a real one passes, bytes are refused
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 1, 2, 2), np.float32), y=np.zeros(4, np.int64))
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not an .npz"):
        check_plan_inputs(budget(data="bad.npz"))
    (tmp_path / "images").mkdir()
    for fields in ({"model": "m.onnx", "data": "d.npz"}, {"model": "lenet5-mnist"},
                   {"model": "pkg.mod:make", "data": "images"}, {"data": "fashion-mnist"}):
        check_plan_inputs(budget(**fields))
    check_model_ref("minilm-l6")
    check_dataset_ref("sentences")


def _tiny_onnx(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph), str(path))


class _Evil:  # pickling an instance records a class reference: code
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("ran",))


def test_files_are_parsed_before_torch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue #21 item 3: a model or weights file that is not what it claims is refused from
    its bytes (an .onnx that does not parse, a .pt2 that is no torch.export archive, weights
    whose pickle names code), in a process that never imports torch."""
    import pickle
    import subprocess
    import sys
    import zipfile

    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.onnx").write_bytes(b"half a model")
    (tmp_path / "bad.pt2").write_bytes(b"not a zip")
    with zipfile.ZipFile(tmp_path / "other.pt2", "w") as z:
        z.writestr("m/readme.txt", "a zip, not an archive")
    (tmp_path / "evil.pt").write_bytes(pickle.dumps(_Evil()))
    cases = {"bad.onnx": "not an ONNX model", "bad.pt2": "not a zip archive",
             "other.pt2": "no archive_format entry"}
    for name, needle in cases.items():
        with pytest.raises(ModelLoadError, match=needle):
            check_model_ref(name)
    with pytest.raises(ModelLoadError, match=r"needs code to load \(builtins.print\): refused"):
        check_model_ref("pkg.mod:make", "evil.pt")
    code = ("import sys; from workloads.refs import check_model_ref\n"
            "for ref, w in (('bad.onnx', None), ('pkg.mod:make', 'evil.pt')):\n"
            "    try: check_model_ref(ref, w)\n"
            "    except Exception as e: print(type(e).__name__)\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, check=True).stdout.split()
    assert out == ["ModelLoadError", "ModelLoadError", "False"], out


def test_a_state_dict_passes(tmp_path: Path) -> None:
    import torch

    torch.save(torch.nn.Linear(3, 2).state_dict(), tmp_path / "w.pt")
    check_model_ref("pkg.mod:make", str(tmp_path / "w.pt"))
    torch.save(torch.nn.Linear(3, 2), tmp_path / "module.pt")  # a whole module: code
    with pytest.raises(ModelLoadError, match="torch.nn.modules.linear.Linear"):
        check_model_ref("pkg.mod:make", str(tmp_path / "module.pt"))
