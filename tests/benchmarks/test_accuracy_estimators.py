"""The class-count comparison's tasks (benchmarks/accuracy_estimators.py): the 2-class
Fashion-MNIST tasks relabel as documented and keep their images aligned with their labels; each
2-class model is trained once on the training split and then read from the cache; --dataset
picks one data set's workloads and bad flags stop with exit 2; the printed tables put the
workloads of one architecture side by side. The benchmark itself is run by hand (tens of
minutes), not here."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch

from workloads.data import Dataset

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def est() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "bench_accuracy_estimators", ROOT / "benchmarks" / "accuracy_estimators.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def labelled(n_per_class: int = 2, tag: str = "train") -> Dataset:
    """Every Fashion-MNIST label n times; image i is filled with its own label (to check that
    images travel with their labels)."""
    y = np.repeat(np.arange(10, dtype=np.int64), n_per_class)
    x = np.broadcast_to(y[:, None, None, None] / 10, (len(y), 1, 28, 28)).astype(np.float32)
    return Dataset(f"fashion-mnist-{tag}", np.ascontiguousarray(x), y, 10, f"synthetic {tag}")


def test_apparel_puts_footwear_and_bags_in_class_one(est: ModuleType) -> None:
    out = est.apparel(labelled(1))
    # T-shirt, trouser, pullover, dress, coat, sandal, shirt, sneaker, bag, ankle boot
    assert out.y.tolist() == [0, 0, 0, 0, 0, 1, 0, 1, 1, 1]
    assert out.classes == 2 and len(out) == 10 and out.name.endswith("-apparel")
    assert [est.FASHION_LABELS[i] for i in est.FOOTWEAR_AND_BAGS] == [
        "Sandal", "Sneaker", "Bag", "Ankle boot"]


def test_the_shirt_pair_keeps_only_its_two_classes_with_their_images(est: ModuleType) -> None:
    ds = labelled(3)
    out = est.shirt_pair(ds)
    assert len(out) == 6 and out.classes == 2
    assert out.y.tolist() == [0, 0, 0, 1, 1, 1]  # T-shirt/top -> 0, shirt -> 1
    original = np.round(out.x[:, 0, 0, 0] * 10).astype(int)  # each image still shows its label
    assert original.tolist() == [0, 0, 0, 6, 6, 6]
    assert "T-shirt/top 0" in out.source and "Shirt 1" in out.source


def test_each_two_class_task_has_its_own_checkpoint_and_two_outputs(est: ModuleType) -> None:
    from workloads.train import _recipe_hash, fresh_model

    entries = (est.TWO_CLASS, est.FASHION_APPAREL, est.FASHION_SHIRTS)
    assert len({_recipe_hash(e) for e in entries}) == 3
    base = est.ZOO["fashion-cnn"]
    for entry in (est.FASHION_APPAREL, est.FASHION_SHIRTS):
        model = fresh_model(entry)
        assert model(torch.zeros(1, *entry.input_shape)).shape == (1, 2)
        assert (entry.epochs, entry.lr, entry.batch_size, entry.shift_px) == (
            base.epochs, base.lr, base.batch_size, base.shift_px)  # fashion-cnn's recipe


def test_a_two_class_model_is_trained_once_on_the_training_split(
        est: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    trained_on: list[str] = []

    def fake_train(model: torch.nn.Module, data: Dataset, **_: Any) -> torch.nn.Module:
        trained_on.append(data.name)
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(0.5)  # recognisable weights, to see them come back from the cache
        return model

    monkeypatch.setattr(est, "cache_dir", lambda: tmp_path)
    monkeypatch.setattr(est, "train", fake_train)
    monkeypatch.setattr(est, "load_dataset",
                        lambda name: (labelled(2, "train"), labelled(1, "test")))
    first = est.two_class_workload(est.FASHION_SHIRTS, "fashion-mnist", est.shirt_pair)
    second = est.two_class_workload(est.FASHION_SHIRTS, "fashion-mnist", est.shirt_pair)
    assert trained_on == ["fashion-mnist-train-shirts"]  # once, and not on the test split
    assert len(list((tmp_path / "models").glob("fashion-cnn-shirts-*.pt"))) == 1
    assert all(bool((p == 0.5).all()) for p in second.model.parameters())
    assert first.test.name == "fashion-mnist-test-shirts" and len(first.test) == 2


@pytest.mark.parametrize("argv", [
    ["--dataset", "fashion", "--workloads", "fashion-cnn"],  # one or the other
    ["--dataset", "cifar"],
    ["--workloads", "no-such-model"],
    ["--dataset", "fashion", "--report-only"],  # nothing to read without --json
])
def test_bad_flags_stop_with_exit_2(est: ModuleType, argv: list[str],
                                    capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        est.main(argv)
    assert stop.value.code == 2
    assert "error:" in capsys.readouterr().err


OPTIONS = ("fp16", "int8", "int4", "fp32+s75", "int4+s75")  # the benchmark's COMPARE_OPTIONS


def fake_result(name: str, classes: int, scale: float) -> dict[str, Any]:
    """A saved per-workload result as run_workload writes it (fashion-cnn's layers)."""
    layers = ("conv1", "conv2", "fc1", "fc2")
    compare = {layer: {o: scale * k for k, o in enumerate(OPTIONS)} for layer in layers}
    for layer in layers:
        compare[layer].update({f"{o} dloss": 0.01 * scale for o in OPTIONS})
    real = [{"acc_pp": scale * i, "loss": 0.01 * i, "kl": 0.01 * i} for i in range(6)]
    predicted = {e: [0.01 * i * scale for i in range(6)]
                 for e in ("kl", "delta_loss", "delta_acc", "hessian")}
    return {"name": name, "classes": classes, "fp32_test_accuracy": 0.9, "test_size": 2000,
            "options": 40, "plans": [{layer: "int8" for layer in layers}] * 6, "real": real,
            "predicted": predicted, "finetuned": [], "hessian_samples": {},
            "mean_trace": {layer: scale for layer in layers},
            "estimate_seconds": {"kl": 1.0}, "compare": compare}


def test_report_only_prints_the_fashion_tasks_side_by_side(
        est: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert OPTIONS == est.COMPARE_OPTIONS
    for name, classes, scale in (("fashion-cnn", 10, 2.0), ("fashion-cnn-apparel", 2, 0.5),
                                 ("fashion-cnn-shirts", 2, 1.0)):
        (tmp_path / f"{name}.json").write_text(json.dumps(fake_result(name, classes, scale)))
    assert est.main(["--dataset", "fashion", "--report-only", "--json", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    header = ("| layer | option | fashion-cnn drop pp (dloss) | fashion-cnn-apparel drop pp "
              "(dloss) | fashion-cnn-shirts drop pp (dloss) |")
    assert header in out  # one table: the three share fashion-cnn's layers
    assert "| fashion-cnn-apparel | 2 | 90.00 % | 2000 | 40 | 0.00 / 1.25 / 2.50 |" in out
    assert "lenet5" not in out


def test_report_only_names_a_missing_result(est: ModuleType, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        est.main(["--dataset", "fashion", "--report-only", "--json", str(tmp_path)])
    assert stop.value.code == 2
    assert "fashion-cnn.json does not exist" in capsys.readouterr().err


def test_kl_only_computes_and_prints_the_kl_estimate_alone(
        est: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from cost_models.host_probe import host_spec
    from workloads.zoo import LeNet5

    def refused(*_: Any) -> None:
        raise AssertionError("--kl-only computed another estimator")

    monkeypatch.setattr(est, "other_estimators", refused)
    monkeypatch.setattr(est, "CALIBRATION_SIZE", 64)  # a tiny run: the flow, not the numbers
    rng = np.random.default_rng(0)
    x = rng.random((600, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 2, 600)
    ds = Dataset("tiny", x, y, 2, "random")
    torch.manual_seed(0)
    w = est.Workload("tiny", LeNet5(classes=2).eval(), ds,
                     Dataset("tiny-test", x[:50], y[:50], 2, "random"))
    spec = host_spec()
    result = est.run_workload(w, spec.profile(spec.default_profile).kernels, 2, 2, kl_only=True)
    assert list(result["predicted"]) == ["kl"] and len(result["real"]) == 2
    assert result["finetuned"] == [] and result["mean_trace"] == {}
    (tmp_path / "fashion-cnn-shirts.json").write_text(json.dumps(result, default=str))
    assert est.main(["--workloads", "fashion-cnn-shirts", "--report-only",
                     "--json", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| tiny | kl |" in out and "| tiny | hessian |" not in out
    assert "Tr(H)/n" not in out and "With fine-tuning" not in out  # nothing to show there
