"""The timing file (cost_models/timing_file.py): JSON and CSV spell the same content, the
examples in examples/timing read, and bad files are one line naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cost_models import timing_file as tf
from edgefit_common.errors import SpecError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "timing"


def _doc(**models: object) -> dict[str, object]:
    return {"format": "edgefit-timing", "format_version": 1, "cpu": "Arm Cortex-M7 @ 216 MHz",
            "runtime": "TFLM + CMSIS-NN", "models": [
                {"model": "kws.onnx", "option": "int8", "latency_ms": [18.0, 19.0, 18.5],
                 "layers_ms": {"conv1": 2.5, "#1": 0.75}, "energy_mj": 0.4, **models}]}


def test_json_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps(_doc()))
    timing = tf.read_timing_file(path)
    assert timing.models[0].median_ms == 18.5 and timing.models[0].runs_ms == [18.0, 19.0, 18.5]
    assert timing.models[0].layers_ms == {"conv1": 2.5, "#1": 0.75}
    again = tmp_path / "again.json"
    again.write_text(timing.model_dump_json())
    assert tf.read_timing_file(again) == timing


def test_csv_spells_the_same_content(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("# a comment line\n"
                    "model,layer,latency_ms,option,energy_mj,cpu,runtime\n"
                    "kws.onnx,,18.0,int8,0.4,Arm Cortex-M7 @ 216 MHz,TFLM + CMSIS-NN\n"
                    "kws.onnx,,19.0,,,,\n"
                    "kws.onnx,,18.5,,,,\n"
                    "kws.onnx,conv1,2.5,,,,\n"
                    "kws.onnx,#1,0.75,,,,\n")
    as_json = tmp_path / "t.json"
    as_json.write_text(json.dumps(_doc()))
    assert tf.read_timing_file(path) == tf.read_timing_file(as_json)
    bom = tmp_path / "bom.csv"  # as a spreadsheet saves it
    bom.write_text("\ufeff" + path.read_text(), encoding="utf-8")
    assert tf.read_timing_file(bom) == tf.read_timing_file(as_json)


def test_the_examples_read() -> None:
    hale = tf.read_timing_file(EXAMPLES / "stm32f746-hale.json")
    plumerai = tf.read_timing_file(EXAMPLES / "stm32f746-plumerai.csv")
    for t in (hale, plumerai):
        assert [m.model for m in t.models] == ["kws.onnx", "ic.onnx", "vww.onnx"]
        assert {m.option for m in t.models} == {"int8"} and t.core == "cortex-m7"
        assert t.runtime_family == "vendor-engine"
    assert [m.median_ms for m in plumerai.models] == [17.75, 62.88, 34.08]  # S-TINY11


@pytest.mark.parametrize(("name", "text", "match"), [
    ("nocpu.json", json.dumps({k: v for k, v in _doc().items() if k != "cpu"}),
     r"nocpu.json: cpu: Field required"),
    ("neg.json", json.dumps(_doc(latency_ms=-3.0)),
     r"neg.json: models.0.latency_ms: .*positive"),
    ("neglayer.json", json.dumps(_doc(layers_ms={"conv1": -1})), r"neglayer.json: .*positive"),
    ("extra.json", json.dumps({**_doc(), "gpu": "x"}), r"extra.json: gpu: unknown field"),
    ("version.json", json.dumps({**_doc(), "format_version": 2}),
     r"version.json: format_version 2 is not supported"),
    ("other.json", json.dumps({"format": "edgefit-measure"}), r"other.json: not an edgefit-timing"),
    ("col.csv", "model,latency_ms,cpu,runtime,gpu\nm,1,c,r,x\n", r"col.csv: unknown column 'gpu'"),
    ("nocol.csv", "model,latency_ms,runtime\nm,1,r\n", r"nocol.csv: the header has no 'cpu'"),
    ("nan.csv", "model,latency_ms,cpu,runtime\nm,fast,c,r\n",
     r"nan.csv: row 2: latency_ms 'fast' is not a number"),
    ("two.csv", "model,latency_ms,cpu,runtime\nm,1,c,r\nm,1,d,r\n",
     r"two.csv: row 3: cpu 'd' differs from 'c'"),
    ("nolat.csv", "model,layer,latency_ms,cpu,runtime\nm,conv1,1,c,r\n",
     r"nolat.csv: models.0.latency_ms: .*at least one run"),
    ("twice.csv", "model,layer,latency_ms,cpu,runtime\nm,,1,c,r\nm,a,1,,\nm,a,2,,\n",
     r"twice.csv: row 4: layer 'a' of m given twice"),
])
def test_bad_files_are_one_line_naming_the_file(tmp_path: Path, name: str, text: str,
                                                match: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(SpecError, match=match) as info:
        tf.read_timing_file(path)
    assert "\n" not in str(info.value)
