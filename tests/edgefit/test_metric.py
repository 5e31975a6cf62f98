"""A user metric in plan, apply and the Python API (issue #21 item 2): `--metric module:function`
from the current directory scores the fp32 and the compressed model where accuracy is
reported, plan.json records it, `apply` needs it named again; every bad metric is one line and
exit 2."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edgefit.cli import EXIT_BAD_INPUT, _plan_app, _run, app

METRICS = '''
import numpy as np


def top2(labels, outputs):
    best = np.argsort(outputs, axis=1)[:, -2:]
    return float(np.mean((best == labels[:, None]).any(axis=1)))


def boom(labels, outputs):
    raise ValueError("no score today")


def nan(labels, outputs):
    return float("nan")


def second_output(labels, outputs):  # a two-output model's second head
    return float(np.mean(outputs[1].argmax(axis=1) == labels))


not_a_function = 3
'''

TINY = ["--target", "jetson-nano", "--max-latency", "30ms", "--model", "tiny.pt2"]


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder with a tiny .pt2 (4 logits), labelled and label-free data and a metrics
    module, the current directory (and the cache) for the test."""
    import torch
    from torch import nn

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EDGEFIT_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4)).eval()
    torch.export.save(torch.export.export(net, (torch.zeros(1, 1, 4, 4),)),
                      str(tmp_path / "tiny.pt2"))
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (80, 4, 4), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=rng.integers(0, 4, 80))
    np.savez(tmp_path / "inputs.npz", x=x)
    (tmp_path / "mymetrics.py").write_text(METRICS)
    yield tmp_path
    sys.modules.pop("mymetrics", None)


def _one_line(capsys: pytest.CaptureFixture[str], needle: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err


def _top2(logits: np.ndarray, y: np.ndarray) -> float:
    best = np.argsort(logits, axis=1)[:, -2:]
    return float(np.mean((best == y[:, None]).any(axis=1)))


def test_a_metric_scores_plan_apply_and_apply_again(
        cwd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cost_models.accuracy_onnx import onnx_predict
    from workloads.data import load_dataset

    argv = [*TINY, "--data", "d.npz", "--metric", "mymetrics:top2",
            "--apply", "--report-dir", "out"]
    assert _run(_plan_app, argv) == 0, capsys.readouterr()
    capsys.readouterr()
    plan = json.loads((cwd / "plan.json").read_text())
    assert plan["metric"] == "mymetrics:top2" and plan["labels"] is True
    acc = json.loads((cwd / "out" / "report.json").read_text())["accuracy"]
    _, test = load_dataset("d.npz")
    assert acc["measure"] == "metric" and "top2" in acc["how"]
    # the reported scores are top-2 accuracy of the files written, not top-1
    assert acc["fp32"] == pytest.approx(_top2(onnx_predict(cwd / "out" / "model.fp32.onnx",
                                                           test.x), test.y))
    assert acc["compressed"] == pytest.approx(_top2(onnx_predict(cwd / "out" / "model.onnx",
                                                                 test.x), test.y))
    # a plan file never imports code: apply needs the metric named again
    assert _run(app, ["apply", "plan.json", "--out", "again"]) == EXIT_BAD_INPUT
    _one_line(capsys, "--metric mymetrics:top2")
    assert _run(app, ["apply", "plan.json", "--out", "again", "--metric", "mymetrics:top2"]) == 0
    capsys.readouterr()
    again = json.loads((cwd / "again" / "report.json").read_text())["accuracy"]
    assert again["compressed"] == pytest.approx(acc["compressed"])


BAD = {
    "not module:function": (["--metric", "top2"], "write it as module:function"),
    "no such module": (["--metric", "nosuchmetrics:top2"], "cannot import it"),
    "no such function": (["--metric", "mymetrics:top3"], "cannot import it"),
    "not callable": (["--metric", "mymetrics:not_a_function"], "is not a function"),
    "raises": (["--metric", "mymetrics:boom"], "metric boom failed: ValueError: no score today"),
    "non-finite": (["--metric", "mymetrics:nan"], "metric nan returned nan"),
    "reads an output the model lacks": (["--metric", "mymetrics:second_output"],
                                        "metric second_output failed"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_metric_is_one_line(case: str, cwd: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    flags, needle = BAD[case]
    assert _run(_plan_app, [*TINY, "--data", "d.npz", *flags]) == EXIT_BAD_INPUT
    _one_line(capsys, needle)
    assert not (cwd / "plan.json").exists()


def test_a_metric_needs_labels(cwd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [*TINY, "--data", "inputs.npz", "--metric", "mymetrics:top2"]
    assert _run(_plan_app, argv) == EXIT_BAD_INPUT
    _one_line(capsys, "the data holds none (inputs only)")


def test_the_api_records_and_uses_its_metric(cwd: Path) -> None:
    import torch
    from torch import nn

    import edgefit
    from edgefit_common.errors import DataError

    sys.path.insert(0, str(cwd))
    try:
        import mymetrics  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(cwd))
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4)).eval()
    rng = np.random.default_rng(1)
    x = rng.random((80, 1, 4, 4), dtype=np.float32)
    y = rng.integers(0, 4, 80)
    limits = {"latency": "30ms"}
    with pytest.raises(DataError, match="metric second_output failed") as exc:
        edgefit.plan(net, "jetson-nano", limits=limits, data=(x, y),
                     metric=mymetrics.second_output)
    assert "\n" not in str(exc.value)
    plan = edgefit.plan(net, "jetson-nano", limits=limits, data=(x, y), metric=mymetrics.top2)
    assert plan.metric == "mymetrics:top2"
    result = edgefit.apply(plan, net, data=(x, y), test_data=(x[:40], y[:40]),
                           out=cwd / "api-out")
    acc = result.report["accuracy"]
    assert acc["measure"] == "metric"
    with torch.no_grad():
        assert acc["fp32"] == pytest.approx(_top2(net(torch.from_numpy(x[:40])).numpy(),
                                                  y[:40]), abs=1e-6)
