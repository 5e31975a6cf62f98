"""The TFLite artifact of a plan for a TFLite / TFLite Micro profile (its device file's
``tflite:``): ``model.tflite`` implementing the plan per layer, ``model_data.cc`` (the same bytes
as a C array) for TFLM, and its checks read back from the file.

litert-torch cannot share edgefit's virtualenv (it pins typing-extensions < 4.13 through xdsl),
so the conversion runs in the tool virtualenv (``.venv-tflite``, built by ``make``) as a
subprocess: ``scripts/tflite_tool.py convert`` reads the float torch program (.pt2) written here
(every technique applied but quantisation) and writes the .tflite, each layer quantised by its
own ai-edge-quantizer recipe entry; ``inspect`` reads the .tflite back with ai-edge-litert's
schema module and runs it with ai-edge-litert and tflite-micro. What the file holds is checked
here against the plan: each layer's operators with the planned weight type and bit width, one
scale per output channel, the planned activation types, and which layers stayed float.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from device_specs.schema import BITS, Profile
from edgefit_common.fsutil import atomic_write_text
from planner.plan import Plan
from techniques.quantize import quantize_config

if TYPE_CHECKING:
    from executors.apply import Built
    from workloads.data import Dataset

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "scripts" / "tflite_tool.py"
TOOL_VENV = ROOT / ".venv-tflite"
TOOL_PYTHON_ENV = "EDGEFIT_TFLITE_PYTHON"
SWITCH_ENV = "EDGEFIT_TFLITE"  # "off": no .tflite (the test suite's applies, but its own tests)
REFUSED_EXIT = 3  # scripts/tflite_tool.py: the plan asks for what the runtime cannot run
TIMEOUT_S = 1800
CALIBRATION_SAMPLES = 128  # as the ONNX quantiser
TFLM_SAMPLES = 200
TFLITE_FORMS = {("int8", "int8"), ("int4", "int8"), ("int8", "int16")}
TYPE = {32: "FLOAT32", 16: "INT16", 8: "INT8", 4: "INT4"}


class Refused(Exception):
    """This plan has no .tflite on this runtime (the one-line reason)."""


class ToolFailed(Exception):
    """The tool virtualenv's conversion or run failed (its last line)."""


# apply's check of the plan's .tflite flash: the framing is fitted (within 0.5 % on the bench,
# docs/cost-model-accuracy.md), and float layers among integer ones add boundary ops
TFLITE_TOLERANCE_FRACTION = 0.02
TFLITE_TOLERANCE_BYTES = 1024

def tool_python() -> Path | None:
    """The tool virtualenv's python ($EDGEFIT_TFLITE_PYTHON, else .venv-tflite), if present."""
    env = os.environ.get(TOOL_PYTHON_ENV)
    path = Path(env) if env else TOOL_VENV / "bin" / "python"
    return path if path.exists() else None


def target_profile(plan: Plan) -> Profile:
    return _target_spec(plan).profile(plan.target.profile)


def _target_spec(plan: Plan) -> Any:
    from cost_models.host_probe import target_spec

    # a plan made for a device file names it: its profile, not a catalog board's
    return target_spec(plan.target.spec_path or plan.target.device)


def board_build(plan: Plan) -> Any:
    """The TFLM build the plan's board runs (cost_models.runtime_memory.tflm_build)."""
    from cost_models.runtime_memory import tflm_build

    spec = _target_spec(plan)
    return tflm_build(spec.profile(plan.target.profile), spec.core)


def layer_request(plan: Plan) -> dict[str, dict[str, int | None]]:
    """Each layer's weight and activation bits in the .tflite (None: stays float), or Refused
    for a form this export does not write."""
    out: dict[str, dict[str, int | None]] = {}
    for name, lp in plan.layers.items():
        cfg = quantize_config(lp.techniques)
        if cfg is None or (cfg.weights, cfg.activations) == ("fp32", "fp32"):
            out[name] = {"weights": None, "activations": None}
        elif (cfg.weights, cfg.activations) in TFLITE_FORMS and cfg.symmetric:
            out[name] = {"weights": BITS[cfg.weights], "activations": BITS[cfg.activations]}
        else:
            raise Refused(f"{name}: {'' if cfg.symmetric else 'asymmetric '}{cfg.weights} "
                          f"weights with {cfg.activations} activations has no .tflite form here "
                          "(int8 or int4 weights with int8 activations, int8 with int16, or fp32)")
    return out


def planned_form(want: dict[str, int | None]) -> str:
    if want["weights"] is None:
        return "fp32"
    return f"int{want['weights']} weights, int{want['activations']} activations"


def _run_tool(command: str, request: dict[str, Any], tmp: Path) -> dict[str, Any]:
    python = tool_python()
    assert python is not None
    req, res = tmp / f"{command}.json", tmp / f"{command}.result.json"
    req.write_text(json.dumps(request))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("PYTHONPATH", None)  # the tool venv's own packages only
    try:
        proc = subprocess.run([str(python), str(TOOL), command, str(req), str(res)],
                              capture_output=True, text=True, timeout=TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired:
        raise ToolFailed(f"tflite {command} took over {TIMEOUT_S} s") from None
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    if proc.returncode == REFUSED_EXIT:
        raise Refused(lines[-1].removeprefix("edgefit-tflite: "))
    if proc.returncode != 0 or not res.exists():
        raise ToolFailed(f"tflite {command} failed (exit {proc.returncode}): "
                         + (lines[-1][:300] if lines else "no message"))
    return dict(json.loads(res.read_text()))


def weight_numel(model: Any, layers: dict[str, Any]) -> dict[str, int]:
    """Each planned layer's weight element count in ``model`` (the tool maps a converted op to
    its layer by order and size where litert-torch's tensor name does not say)."""
    out = {}
    for name in layers:
        try:
            weight = getattr(model.get_submodule(name), "weight", None)
        except AttributeError:  # a factorised layer: its factors are named by the path
            continue
        if weight is not None:
            out[name] = int(weight.numel())
    return out


def convert(layers: dict[str, dict[str, int | None]], float_model: Any, calib_x: np.ndarray,
            out: Path, profile: Profile, tmp: Path) -> dict[str, Any]:
    """``float_model`` (torch, every technique applied but quantisation) as a torch.export
    program, converted and quantised per layer (``layers``: layer_request) by the tool into
    ``out``; Refused when the runtime cannot run a layer's form."""
    import torch

    sample = torch.from_numpy(np.ascontiguousarray(calib_x[:1]))
    program_path = tmp / "float.pt2"
    torch.export.save(torch.export.export(float_model.eval(), (sample,)), str(program_path))
    np.save(tmp / "calibration.npy", np.ascontiguousarray(calib_x[:CALIBRATION_SAMPLES]))
    fmt = profile.tflite
    assert fmt is not None
    start = time.perf_counter()
    result = _run_tool("convert", {
        "model": str(program_path), "calibration": str(tmp / "calibration.npy"),
        "out": str(out), "layers": layers, "weight_numel": weight_numel(float_model, layers),
        "runtime": profile.runtime,
        "int4_weight_ops": fmt.int4_weight_ops.value if fmt.int4_weight_ops else []}, tmp)
    result["tool_s"] = time.perf_counter() - start
    return result


def inspect(path: Path, layers: list[str], x: np.ndarray, micro: bool, tmp: Path
            ) -> dict[str, Any]:
    """The file as the tool reads it back, its outputs on ``x`` (ai-edge-litert; tflite-micro
    on the first samples when ``micro``) and TFLM's arena."""
    np.save(tmp / "inputs.npy", np.ascontiguousarray(x))
    facts = _run_tool("inspect", {
        "model": str(path), "layers": layers, "inputs": str(tmp / "inputs.npy"),
        "litert_outputs": str(tmp / "litert.npy"), "tflm": micro,
        "tflm_samples": TFLM_SAMPLES, "tflm_outputs": str(tmp / "tflm.npy")}, tmp)
    facts["litert_outputs"] = np.load(tmp / "litert.npy")
    if micro and (tmp / "tflm.npy").exists():
        facts["tflm_outputs"] = np.load(tmp / "tflm.npy")
    return facts


def check_layer(name: str, want: dict[str, int | None], ops: list[dict[str, Any]]
                ) -> list[str]:
    """Problems with one layer's weighted operators against its planned form."""
    if not ops:
        return [f"{name}: no operator of model.tflite holds its weights"]
    problems = []
    for op in ops:
        w = op["weight"]
        where = f"{name} ({op['op']})"
        if want["weights"] is None:
            found = {w["type"], op["activation_in"], *op["outputs"]}
            if found != {"FLOAT32"}:
                problems.append(f"{where}: planned float, the file holds "
                                f"{w['type']} weights, {op['activation_in']} activations")
            continue
        act = TYPE[want["activations"] or 8]
        if w["type"] != TYPE[want["weights"]]:
            problems.append(f"{where}: planned int{want['weights']} weights, the file holds "
                            f"{w['type']}")
        if op["activation_in"] != act or op["outputs"] != [act]:
            problems.append(f"{where}: planned {act} activations, the file holds "
                            f"{op['activation_in']} in, {'/'.join(op['outputs'])} out")
        dim = w["quantized_dimension"]
        if dim is None or w["scales"] != w["shape"][dim]:
            problems.append(f"{where}: {w['scales']} weight scales, not one per output channel")
    return problems


def check_file(layers: dict[str, dict[str, int | None]], facts: dict[str, Any]
               ) -> tuple[dict[str, Any], list[str]]:
    """Per layer: its operators as stored, and the problems against the plan."""
    rows: dict[str, Any] = {}
    problems: list[str] = []
    for name, want in layers.items():
        ops = [op for op in facts["ops"] if op["layer"] == name and op["weight"]]
        found = check_layer(name, want, ops)
        problems += found
        rows[name] = {"planned": planned_form(want), "stored_as_planned": not found, "ops": [
            {"op": op["op"], "weights": op["weight"]["type"], "bits": op["weight"]["bits"],
             "weight_scales": op["weight"]["scales"], "weight_bytes": op["weight"]["bytes"],
             "activations_in": op["activation_in"], "outputs": op["outputs"]} for op in ops]}
    stray = [op["op"] for op in facts["ops"] if op["weight"] and op["layer"] is None]
    if stray:
        problems.append(f"{len(stray)} weighted operator(s) belong to no planned layer "
                        f"({', '.join(stray)})")
    return rows, problems


def agreement(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """Top-1 agreement and the largest absolute difference of two output sets."""
    n = min(len(a), len(b))
    a, b = a[:n].reshape(n, -1), b[:n].reshape(n, -1)
    return {"samples": int(n), "top1_agreement": float((a.argmax(1) == b.argmax(1)).mean()),
            "max_abs_error": float(np.abs(a - b).max())}


def write_c_array(tflite: Path, out: Path, symbol: str = "g_model") -> None:
    """``tflite``'s bytes as a C++ array for TFLM (16-byte aligned, as the flatbuffer needs)."""
    data = tflite.read_bytes()
    rows = [", ".join(f"0x{b:02x}" for b in data[i:i + 12]) for i in range(0, len(data), 12)]
    atomic_write_text(out, (
        f"// {tflite.name} as a C array for TensorFlow Lite Micro, written by edgefit apply:\n"
        f"// {len(data)} bytes (tflite::GetModel({symbol}) reads it in place).\n"
        f"extern const unsigned char {symbol}[];\nextern const unsigned int {symbol}_len;\n\n"
        f"alignas(16) const unsigned char {symbol}[] = {{\n"
        + ",\n".join("    " + r for r in rows)
        + f"\n}};\nconst unsigned int {symbol}_len = {len(data)};\n"))


def read_c_array(path: Path) -> bytes:
    """The bytes of a C array written by write_c_array (its check)."""
    import re

    body = path.read_text().split("{", 1)[1].split("}", 1)[0]
    return bytes(int(h, 16) for h in re.findall(r"0x([0-9a-f]{2})", body))


def _outputs(built: Built, test: Dataset, facts: dict[str, Any]) -> dict[str, Any]:
    """The .tflite's outputs on the held-out data against the torch model the plan's accuracy
    is measured on (quantisation simulated) and against the runnable ONNX."""
    import torch

    from executors.apply import onnx_outputs

    lite = facts["litert_outputs"]
    with torch.no_grad():
        ref = np.concatenate([built.compressed(torch.from_numpy(test.x[i:i + 500])).numpy()
                              for i in range(0, len(test.x), 500)])
    return {"runtime": f"ai-edge-litert {facts['versions']['ai-edge-litert']} (XNNPACK)",
           "samples": int(len(lite)),
           "accuracy": float((lite.reshape(len(lite), -1).argmax(1) == test.y).mean()),
           "vs_torch": agreement(lite, ref),
           "vs_onnx": agreement(lite, onnx_outputs(built.runnable, test.x))}


def element_bytes(layers: dict[str, dict[str, int | None]]) -> dict[str, float]:
    """Bytes per activation element of each layer in the .tflite (float layers: 4)."""
    return {n: (w["activations"] or 32) / 8 for n, w in layers.items()}


def predicted_arena(graph: Any, layers: dict[str, dict[str, int | None]],
                    board: Any = None) -> dict[str, Any]:
    """TFLM's arena for the plan, from the layer graph alone (cost_models.tflm_arena: the
    greedy planner replayed on the converted graph + the persistent tail): in the build
    measured here (to compare with tflite-micro) and in the board's (``board``, a TflmBuild:
    its pointer width and kernels' scratch, derived from the sources, not measured)."""
    from cost_models.tflm_arena import predict_arena

    pred = predict_arena(graph, element_bytes(layers))
    out: dict[str, Any] = {"head_bytes": pred.head_bytes, "tail_bytes": pred.tail_bytes,
                           "total_bytes": pred.total_bytes,
                           "liveness_bytes": pred.liveness_bytes}
    if board is not None:
        on_board = predict_arena(graph, element_bytes(layers), build=board)
        out["board"] = {"build": board.describe(), "head_bytes": on_board.head_bytes,
                        "tail_bytes": on_board.tail_bytes,
                        "total_bytes": on_board.total_bytes}
    return out


def _tflm(plan: Plan, facts: dict[str, Any], predicted: dict[str, Any] | None
          ) -> dict[str, Any] | None:
    """TFLM's arena (the smallest it allocates and runs the model in) next to the plan's RAM
    and the arena model's figure."""
    tflm = facts.get("tflm")
    if tflm is None:
        return None
    ram = plan.totals.ram_bytes if plan.totals else None
    # the plan's fixed RAM holds the profile's runtime_ram and (TFLM profiles) the arena's tail
    runtime_ram = plan.fixed.get("ram_bytes", 0.0) - plan.fixed.get("tflm_tail_bytes", 0.0)
    out = {**tflm, "runtime": f"tflite-micro {facts['versions']['tflite-micro']} (reference "
           "kernels, on this machine)",
           "planned_ram_bytes": ram, "planned_runtime_ram_bytes": runtime_ram,
           "planned_activation_bytes": None if ram is None else ram - runtime_ram,
           "predicted_arena": predicted}
    if "tflm_outputs" in facts:
        out["vs_litert"] = agreement(facts["tflm_outputs"], facts["litert_outputs"])
    return out


def tflite_artifact(plan: Plan, built: Built, calib_x: np.ndarray, test: Dataset,
                    out_dir: Path) -> dict[str, Any] | None:
    """model.tflite (+ model_data.cc for TFLM) for a profile that loads .tflite files, checked
    from the file; the report's ``tflite`` section (None: the profile does not load .tflite).
    ``ok`` is None when it was not attempted (no tool virtualenv, an ONNX-only model)."""
    profile = target_profile(plan)
    fmt = profile.tflite
    if fmt is None:
        return None
    head: dict[str, Any] = {"runtime": profile.runtime, "micro": fmt.micro, "written": False}
    if os.environ.get(SWITCH_ENV) == "off":
        return {**head, "ok": None, "summary": f"not written: {SWITCH_ENV}=off"}
    if tool_python() is None:
        return {**head, "ok": None, "summary": "not written: the TFLite tool virtualenv "
                f"{TOOL_VENV.name} is absent (make tflite-venv builds it)"}
    if built.float_model is None:
        return {**head, "ok": None, "summary": "not written: an ONNX-only model (litert-torch "
                "converts torch models)"}
    with tempfile.TemporaryDirectory(prefix="edgefit-tflite-") as name:
        try:
            return {**head, **_build(plan, built, calib_x, test, out_dir, profile, Path(name))}
        except (Refused, ToolFailed) as exc:
            return {**head, "ok": False, "summary": f"not written: {exc}"}


def _build(plan: Plan, built: Built, calib_x: np.ndarray, test: Dataset, out_dir: Path,
           profile: Profile, tmp: Path) -> dict[str, Any]:
    path = out_dir / "model.tflite"
    layers = layer_request(plan)
    conv = convert(layers, built.float_model, calib_x, path, profile, tmp)
    assert profile.tflite is not None
    micro = profile.tflite.micro
    facts = inspect(path, list(layers), test.x, micro, tmp)
    rows, problems = check_file(layers, facts)
    c_array = None
    if micro:
        c_array = out_dir / "model_data.cc"
        write_c_array(path, c_array)
        if read_c_array(c_array) != path.read_bytes():
            problems.append("model_data.cc does not hold model.tflite's bytes")
    # the plan's model flash: the .tflite when it planned one (flash_format tflite), else its
    # packed image
    counts_tflite = "tflite_frame_bytes" in plan.fixed
    planned = (sum(lp.cost.flash_bytes for lp in plan.layers.values())
               + plan.fixed.get("tflite_frame_bytes" if counts_tflite else
                                "image_overhead_bytes", 0.0))
    size = path.stat().st_size
    from executors.tflite_exact import exact_bytes

    exact = exact_bytes(plan)  # the plan's own file, built before apply: to the byte
    if exact is not None and size != exact:
        problems.append(f"model.tflite is {size:,} B, the plan's file built before apply was "
                        f"{exact:,} B")
    elif exact is None and counts_tflite and abs(size - planned) > max(
            TFLITE_TOLERANCE_FRACTION * planned, TFLITE_TOLERANCE_BYTES):
        problems.append(f"model.tflite is {size:,} B, the plan predicted {planned:,.0f} B")
    predicted_size, arena = _predictions(built.graph, layers, micro, board_build(plan))
    floats = [n for n, w in layers.items() if w["weights"] is None]
    return {
        "written": True, "path": str(path), "bytes": size,
        "c_array": None if c_array is None else str(c_array),
        "c_array_bytes": None if c_array is None else c_array.stat().st_size,
        "convert_s": conv["convert_s"], "quantize_s": conv["quantize_s"],
        "tool_s": conv["tool_s"], "versions": conv["versions"],
        "layers": rows, "float_layers": floats, "problems": problems, "ok": not problems,
        "summary": ("every layer stored as planned in model.tflite ("
                    + (f"float: {', '.join(floats)}" if floats else "none float") + ")"
                    if not problems else "; ".join(problems)),
        "flash": {"tflite_bytes": size, "planned_model_flash_bytes": planned,
                  "exact_before_apply_bytes": exact,
                  "planned_counts": "model.tflite" if counts_tflite else "model.flash.bin",
                  "ratio": size / planned if planned else None,
                  "predicted_tflite_bytes": predicted_size,
                  "note": ("the plan's model flash is this .tflite: each layer's constants and "
                           "quantisation parameters (exact) + the all-integer graph's framing "
                           "(fitted; a float layer's QUANTIZE/DEQUANTIZE ops are not in it); "
                           if counts_tflite else "the plan's model flash is edgefit's packed "
                           "image (model.flash.bin); ")
                  + "predicted_tflite_bytes is cost_models.tflite_size for the planned mix"},
        "outputs": _outputs(built, test, facts),
        "tflm": _tflm(plan, facts, arena),
    }


def _predictions(graph: Any, layers: dict[str, dict[str, int | None]], micro: bool,
                 board: Any = None) -> tuple[int, dict[str, Any] | None]:
    """The .tflite's bytes and (TFLM) the arena, predicted from the layer graph."""
    from cost_models.tflite_size import predict_tflite_bytes

    bits = {n: w["weights"] for n, w in layers.items()}
    acts = {n: w["activations"] or 32 for n, w in layers.items()}
    size = predict_tflite_bytes(graph, bits, acts).total_bytes
    return size, predicted_arena(graph, layers, board) if micro else None


def tflite_check(section: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The apply check for the .tflite: none when it was not attempted."""
    if section is None or section["ok"] is None:
        return []
    return [{"check": "model.tflite stored as planned (read back from the file)",
             "ok": section["ok"], "detail": section["summary"]}]


def summary_lines(section: dict[str, Any] | None) -> list[str]:
    """The report's lines for the .tflite (none when the profile does not load .tflite)."""
    if section is None:
        return []
    if not section["written"]:
        return [f"model.tflite ({section['runtime']}): {section['summary']}"]
    flash, out = section["flash"], section["outputs"]
    lines = [
        f"model.tflite for {section['runtime']}: {section['path']} ({section['bytes']:,} B"
        + (f"; as a C array {section['c_array']}" if section["c_array"] else "")
        + f"), converted in {section['convert_s']:.1f} s and quantised per layer in "
        f"{section['quantize_s']:.1f} s (litert-torch {section['versions']['litert-torch']}, "
        f"ai-edge-quantizer {section['versions']['ai-edge-quantizer']}; the tool run "
        f"{section['tool_s']:.0f} s)",
        f"  verified from the file: {section['summary']}",
        f"  size {flash['tflite_bytes']:,} B; predicted {flash['predicted_tflite_bytes']:,} B "
        f"({100 * (flash['predicted_tflite_bytes'] / flash['tflite_bytes'] - 1):+.1f} %, "
        "cost_models.tflite_size); the plan's model flash "
        + ("(this .tflite) " if flash.get("planned_counts") == "model.tflite" else
           "(its packed image) ")
        + f"{flash['planned_model_flash_bytes']:,.0f} B: x{flash['ratio']:.2f}"
        + (f" (built before apply: {flash['exact_before_apply_bytes']:,} B, "
           + ("equal)" if flash["exact_before_apply_bytes"] == flash["tflite_bytes"]
              else "differs)") if flash.get("exact_before_apply_bytes") is not None else ""),
        f"  {out['runtime']} on {out['samples']} held-out samples: accuracy "
        + (f"{100 * out['accuracy']:.2f} %" if out["accuracy"] is not None else
           "- (no labels)")
        + "; vs the torch model (fake-quant) top-1 agreement "
        f"{100 * out['vs_torch']['top1_agreement']:.2f} %, max |error| "
        f"{out['vs_torch']['max_abs_error']:.3g}; vs model.onnx "
        f"{100 * out['vs_onnx']['top1_agreement']:.2f} %, {out['vs_onnx']['max_abs_error']:.3g}"]
    tflm = section.get("tflm")
    if tflm and tflm.get("ran"):
        alloc = tflm["allocations"]
        pred = tflm.get("predicted_arena")
        lines.append(
            f"  TFLM arena {tflm['arena_bytes']:,} B measured (the smallest it runs in; "
            f"tensors {alloc.get('head', 0):,} B + persistent {alloc.get('tail', 0):,} B; "
            f"{tflm['runtime']}) vs the plan's peak RAM {tflm['planned_ram_bytes']:,.0f} B "
            f"(arena {tflm['planned_activation_bytes']:,.0f} B + runtime outside it "
            f"{tflm['planned_runtime_ram_bytes']:,.0f} B)"
            + (f"; arena model {pred['total_bytes']:,} B ({pred['head_bytes']:,} + "
               f"{pred['tail_bytes']:,}; "
               f"{100 * (pred['total_bytes'] / tflm['arena_bytes'] - 1):+.1f} %)" if pred else "")
            + (f"; on the board ({pred['board']['build']}: structs and kernel scratch "
               f"from the sources, not measured) {pred['board']['total_bytes']:,} B"
               if pred and pred.get("board") else "")
            + f"; TFLM vs LiteRT top-1 agreement "
            f"{100 * tflm['vs_litert']['top1_agreement']:.2f} % on "
            f"{tflm['vs_litert']['samples']} samples")
    elif tflm:
        lines.append(f"  TFLM did not run it: {tflm.get('reason')}")
    return lines
