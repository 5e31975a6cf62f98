"""edgefit's TFLite tool: run by `edgefit apply` with the tool virtualenv's python (.venv-tflite).

It imports nothing of edgefit (litert-torch pins typing-extensions < 4.13 through xdsl, against
edgefit's pydantic, so it lives in its own virtualenv). Two commands, each reading one JSON
request and writing one JSON result:

  convert REQUEST RESULT
      the torch.export program (.pt2) edgefit wrote -> litert-torch (float .tflite) -> every op
      and constant named after the planned layer it belongs to (``edgefit[<layer>]:`` before its
      name) -> ai-edge-quantizer with one recipe entry per layer (int8 / int4 weights with int8
      activations, int8 weights with int16 activations, or ``no_quantize``: the layer stays
      float), activation ranges the min / max over the calibration sample -> the .tflite.
  inspect REQUEST RESULT
      the .tflite read back with ai-edge-litert's schema module (per op: its layer, its weight
      type and bit width, per-channel scales, activation types), run with ai-edge-litert on the
      given inputs and with tflite-micro's interpreter (TFLM's own kernels): outputs saved
      dequantised as .npy; the smallest arena TFLM allocates the model in (bisection) and its
      recording allocator's figures.

Reads only the files the request names (written by edgefit) and writes only the .tflite and the
result files. A plan this runtime cannot run exits 3 with one line on stderr.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REFUSED = 3
WEIGHTED = {"CONV_2D": 1, "DEPTHWISE_CONV_2D": 1, "FULLY_CONNECTED": 1, "TRANSPOSE_CONV": 1}
"""TFLite ops that hold a planned layer's weights: op name -> index of the weight input."""
PREFIX = "edgefit[{}]:"
BITS = {"FLOAT32": 32, "FLOAT16": 16, "INT32": 32, "INT16": 16, "INT8": 8, "UINT8": 8,
        "INT4": 4, "INT2": 2, "INT64": 64}


class Refused(Exception):
    """The plan asks for something this runtime does not run (one line)."""


def _schema() -> Any:
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def _names(enum: Any) -> dict[int, str]:
    return {v: k for k, v in vars(enum).items() if not k.startswith("_")}


def _opcode(model: Any, op: Any, names: dict[int, str]) -> str:
    code = model.operatorCodes[op.opcodeIndex]
    return names[max(code.builtinCode, code.deprecatedBuiltinCode)]


def _text(name: Any) -> str:
    return name.decode() if isinstance(name, bytes) else (name or "")


# ---------------------------------------------------------------- convert


def layer_of(tensor_name: str, layers: list[str]) -> str | None:
    """The planned layer whose module a converted tensor's name comes from: litert-torch names a
    tensor ``RootClass/Class_attr/Class_attr...`` along the module path (parts joined by ';'); a
    layer ``a.b`` matches a path starting ``.._a/.._b`` (the longest layer wins: factor modules
    ``fc1.0`` belong to ``fc1``)."""
    best: str | None = None
    for part in tensor_name.split(";"):
        segs = part.split("/")[1:]
        for layer in layers:
            comps = layer.split(".")
            if (len(segs) >= len(comps)
                    and all(s.endswith("_" + c) for s, c in zip(segs, comps, strict=False))
                    and (best is None or len(comps) > len(best.split(".")))):
                best = layer
    return best


def by_order(weighted: list[tuple[int, int]], named: dict[int, str | None],
             numel: dict[str, int], layers: list[str]) -> dict[int, str]:
    """Weighted ops whose name matched no layer (litert-torch drops the ModuleList from the
    path of modules iterated with ``zip``: ``depthwise.0`` and ``pointwise.0`` both become
    ``Conv2d_0``), each given the first layer, in execution order, that no op holds yet and
    whose weights have the op's element count. ``weighted``: (op index, weight elements) in
    graph order."""
    taken = {layer for layer in named.values() if layer}
    out: dict[int, str] = {}
    for i, elements in weighted:
        if named.get(i):
            continue
        layer = next((ly for ly in layers if ly not in taken and numel.get(ly) == elements),
                     None)
        if layer is not None:
            taken.add(layer)
            out[i] = layer
    return out


def owners(model: Any, layers: list[str], numel: dict[str, int] | None = None
           ) -> list[str | None]:
    """The layer each op of the main graph belongs to: a weighted op its weights' layer (by
    name, else by order and size: :func:`by_order`); any other op the layer of its first owned
    input (an int8 layer's pool stays int8), else (ops before the first layer) of its first
    owned consumer."""
    names = _names(_schema().BuiltinOperator)
    sg = model.subgraphs[0]
    producer = {t: i for i, op in enumerate(sg.operators) for t in op.outputs}
    owner: list[str | None] = [None] * len(sg.operators)
    weighted: list[tuple[int, int]] = []
    named: dict[int, str | None] = {}
    for i, op in enumerate(sg.operators):
        code = _opcode(model, op, names)
        if code in WEIGHTED:
            weight = sg.tensors[op.inputs[WEIGHTED[code]]]
            named[i] = layer_of(_text(weight.name), layers)
            weighted.append((i, int(np.prod(weight.shape))))
    named.update(by_order(weighted, named, numel or {}, layers))
    for i, op in enumerate(sg.operators):
        if i in named:
            owner[i] = named[i]
        else:
            owner[i] = next((owner[producer[t]] for t in op.inputs
                             if t in producer and owner[producer[t]]), None)
    for i in reversed(range(len(sg.operators))):
        if owner[i] is None:
            outs = set(sg.operators[i].outputs)
            owner[i] = next((owner[j] for j, op in enumerate(sg.operators)
                             if owner[j] and outs & set(op.inputs)), None)
    return owner


def name_by_layer(model: Any, owner: list[str | None]) -> None:
    """Put ``edgefit[<layer>]:`` before the name of every op output and constant of a layer
    (each tensor once): the quantiser's recipe selects ops by these names, and inspect reads the
    layer back from them."""
    sg = model.subgraphs[0]
    produced = {t for op in sg.operators for t in op.outputs}
    graph_inputs = set(sg.inputs)
    done: set[int] = set()
    for op, layer in zip(sg.operators, owner, strict=True):
        if layer is None:
            continue
        consts = [t for t in op.inputs if t >= 0 and t not in produced and t not in graph_inputs]
        for t in list(op.outputs) + consts:
            if t not in done:
                done.add(t)
                sg.tensors[t].name = (PREFIX.format(layer) + _text(sg.tensors[t].name)).encode()


def check_runnable(model: Any, owner: list[str | None], layers: dict[str, Any],
                   int4_ops: list[str], runtime: str) -> list[dict[str, Any]]:
    """Every planned layer has its op; int4 weights only on ops the runtime runs them in
    (Refused otherwise). Returns the weighted ops with their layer."""
    names = _names(_schema().BuiltinOperator)
    sg = model.subgraphs[0]
    found = []
    for op, layer in zip(sg.operators, owner, strict=True):
        code = _opcode(model, op, names)
        if code not in WEIGHTED or layer is None:
            continue
        found.append({"op": code, "layer": layer})
        if layers[layer]["weights"] == 4 and code not in int4_ops:
            raise Refused(
                f"{layer}: int4 weights, but it converts to {code} and {runtime} runs int4 "
                f"weights only in {', '.join(int4_ops) or 'no op'} (the device file's "
                f"tflite.int4_weight_ops); re-plan without int4 on {layer} (edgefit resolve "
                "plan.json --exclude int4, or --pin it to another option)")
    missing = sorted(set(layers) - {f["layer"] for f in found})
    if missing:
        raise Refused(f"{missing[0]}: no operator of the converted .tflite holds its weights "
                      "(litert-torch named them after another module path)")
    return found


def recipe(layers: dict[str, Any]) -> list[dict[str, Any]]:
    """One ai-edge-quantizer entry per layer, selected by its name prefix."""
    out = []
    for layer, want in layers.items():
        rx = "^" + re.escape(PREFIX.format(layer))
        if want["weights"] is None:
            out.append({"regex": rx, "operation": "*", "algorithm_key": "no_quantize"})
            continue
        act = want["activations"]
        out.append({"regex": rx, "operation": "*", "algorithm_key": "min_max_uniform_quantize",
                    "op_config": {
                        "activation_tensor_config": {"num_bits": act, "symmetric": act == 16,
                                                     "granularity": "TENSORWISE", "dtype": "INT"},
                        "weight_tensor_config": {"num_bits": want["weights"], "symmetric": True,
                                                 "granularity": "CHANNELWISE", "dtype": "INT"},
                        "compute_precision": "INTEGER", "explicit_dequantize": False,
                        "skip_checks": False, "min_weight_elements": 0}})
    return out


def _min_max(qsv: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Activation range over the whole sample (the quantiser's default is a moving average over
    samples, which clipped the largest logits of a trained LeNet-5)."""
    if not qsv:
        return new
    return {"min": np.minimum(qsv["min"], new["min"]), "max": np.maximum(qsv["max"], new["max"])}


def quantize(flat: bytes, entries: list[dict[str, Any]], calib: np.ndarray) -> bytes:
    from ai_edge_quantizer import calibrator, quantizer

    model = _schema().ModelT.InitFromPackedBuf(flat, 0)
    sig = model.signatureDefs[0]
    key, name = _text(sig.signatureKey), _text(sig.inputs[0].name)
    q = quantizer.Quantizer(flat, entries)
    cal = calibrator.Calibrator(flat, num_threads=1, qsv_update_func=_min_max)
    cal.calibrate({key: [{name: calib[i:i + 1]} for i in range(len(calib))]},
                  q._recipe_manager)  # the recipe Quantizer.calibrate would pass
    return bytes(q.quantize(cal.get_model_qsvs(), enable_progress_report=False).quantized_model)


def pack(model: Any) -> bytes:
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


BUFFER_ALIGN = 16  # the schema's Buffer.data (force_align: 16)


def _pack_buffer(self: Any, builder: Any) -> int:
    """BufferT.Pack with the data 16-byte aligned (the generated Pack aligns to 1)."""
    s = _schema()
    data = None
    if self.data is not None:
        raw = bytes(bytearray(self.data))
        builder.StartVector(1, len(raw), BUFFER_ALIGN)
        builder.head -= len(raw)
        builder.Bytes[builder.head:builder.head + len(raw)] = raw
        data = builder.EndVector(len(raw))
    s.BufferStart(builder)
    if data is not None:
        s.BufferAddData(builder, data)
    return int(s.BufferEnd(builder))


def short_names(model: Any) -> None:
    """Every tensor named ``edgefit[<layer>]:t<index>`` (or ``t<index>`` outside the planned
    layers): the layer prefix the read-back needs, without litert-torch's module paths (up to
    15 % of a small model's file, e.g. 7.6 KB of the MLPerf Tiny DS-CNN's 51 KB, bytes an MCU
    would flash for nothing), so the file's size follows from the graph
    (cost_models.tflite_size)."""
    for i, tensor in enumerate(model.subgraphs[0].tensors):
        m = re.match(r"edgefit\[[^\]]*\]:", _text(tensor.name))
        tensor.name = ((m.group(0) if m else "") + f"t{i}").encode()


def inline_buffers(flat: bytes) -> bytes:
    """The model with every constant inside the flatbuffer, 16-byte aligned, and short names.

    ai-edge-quantizer 0.10.0 writes some constants after the flatbuffer (Buffer.offset / size,
    the >2 GB layout); tflite-micro 0.dev20261023182759 does not read those: it takes such a
    weight for a tensor to plan, gives it uninitialised arena bytes and runs on garbage
    (LeNet-300-100: TFLM agreed with LiteRT on 2 of 8 samples, and its arena grew by the
    weights' 266 KB)."""
    model = _schema().ModelT.InitFromPackedBuf(flat, 0)
    short_names(model)
    cls = type(model.buffers[0]) if model.buffers else None
    for b in model.buffers:
        if b.offset and b.offset > 1 and b.data is None:
            b.data = np.frombuffer(flat[b.offset:b.offset + b.size], dtype=np.uint8)
        b.offset, b.size = 0, 0
    if cls is None:
        return pack(model)
    saved = cls.Pack
    cls.Pack = _pack_buffer
    try:
        return pack(model)
    finally:
        cls.Pack = saved


def convert(req: dict[str, Any]) -> dict[str, Any]:
    import litert_torch
    import torch

    calib = np.load(req["calibration"])
    start = time.perf_counter()
    program = torch.export.load(req["model"])
    edge = litert_torch.convert(program.module(), (torch.from_numpy(calib[:1]),))
    converted = time.perf_counter()
    model = _schema().ModelT.InitFromPackedBuf(bytes(edge.model_content()), 0)
    layers = req["layers"]
    owner = owners(model, list(layers), req.get("weight_numel"))
    weighted = check_runnable(model, owner, layers, req["int4_weight_ops"], req["runtime"])
    name_by_layer(model, owner)
    flat = inline_buffers(quantize(pack(model), recipe(layers), calib))
    out = Path(req["out"])
    tmp = out.with_name(out.name + ".part")
    tmp.write_bytes(flat)
    os.replace(tmp, out)
    return {"convert_s": converted - start, "quantize_s": time.perf_counter() - converted,
            "bytes": len(flat), "weighted_ops": weighted, "versions": versions()}


def versions() -> dict[str, str]:
    from importlib.metadata import version

    return {p: version(p) for p in ("litert-torch", "ai-edge-quantizer", "ai-edge-litert",
                                    "tflite-micro", "torch")}


# ---------------------------------------------------------------- inspect


def _tensor(model: Any, t: int, types: dict[int, str]) -> dict[str, Any]:
    tensor = model.subgraphs[0].tensors[t]
    q = tensor.quantization
    scales = [] if q is None or q.scale is None else [float(s) for s in q.scale]
    zeros = [] if q is None or q.zeroPoint is None else [int(z) for z in q.zeroPoint]
    data = model.buffers[tensor.buffer].data if tensor.buffer < len(model.buffers) else None
    return {"name": _text(tensor.name), "type": types[tensor.type],
            "bits": BITS.get(types[tensor.type]),
            "shape": [int(d) for d in (tensor.shape if tensor.shape is not None else [])],
            "scales": len(scales), "scale": scales[:1], "zero_point": zeros[:1],
            "quantized_dimension": int(q.quantizedDimension) if scales else None,
            "bytes": 0 if data is None else len(data)}


def _layer_prefix(name: str, layers: list[str]) -> str | None:
    return next((layer for layer in layers if name.startswith(PREFIX.format(layer))), None)


def read_ops(model: Any, layers: list[str]) -> list[dict[str, Any]]:
    """Every op of the main graph as the file stores it, with the layer its names carry."""
    s = _schema()
    names, types = _names(s.BuiltinOperator), _names(s.TensorType)
    sg = model.subgraphs[0]
    ops = []
    for i, op in enumerate(sg.operators):
        code = _opcode(model, op, names)
        ins = [_tensor(model, t, types) for t in op.inputs if t >= 0]
        outs = [_tensor(model, t, types) for t in op.outputs if t >= 0]
        weight = ins[WEIGHTED[code]] if code in WEIGHTED else None
        named = weight or (outs[0] if outs else None)
        ops.append({"index": i, "op": code,
                    "layer": _layer_prefix(named["name"], layers) if named else None,
                    "inputs": [t["type"] for t in ins], "outputs": [t["type"] for t in outs],
                    "activation_in": ins[1 if code == "TRANSPOSE_CONV" else 0]["type"]
                    if ins else None,
                    "weight": weight, "bias": ins[2] if weight and len(ins) > 2 else None})
    return ops


def _io(model: Any, which: str) -> list[dict[str, Any]]:
    types = _names(_schema().TensorType)
    return [_tensor(model, t, types) for t in getattr(model.subgraphs[0], which)]


def _to_input(x: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    if spec["type"] in ("FLOAT32",):
        return x.astype(np.float32)
    info = np.iinfo(spec["type"].lower())
    q = np.round(x / spec["scale"][0]) + spec["zero_point"][0]
    return np.clip(q, info.min, info.max).astype(spec["type"].lower())


def _from_output(y: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    if spec["type"] == "FLOAT32":
        return y.astype(np.float32)
    return ((y.astype(np.float32) - spec["zero_point"][0]) * spec["scale"][0]).astype(np.float32)


def run_litert(path: str, x: np.ndarray, io: tuple[Any, Any]) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=path, num_threads=1)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]
    outs = []
    for i in range(len(x)):
        interp.set_tensor(inp, _to_input(x[i:i + 1], io[0]))
        interp.invoke()
        outs.append(_from_output(interp.get_tensor(out), io[1]))
    return np.concatenate(outs)


def _tflm(data: bytes, arena: int) -> Any:
    from tflite_micro.python.tflite_micro import runtime

    return runtime.Interpreter.from_bytes(data, arena_size=arena)


def _runs_in(data: bytes, arena: int, x: np.ndarray, spec: Any) -> bool:
    try:
        interp = _tflm(data, arena)
        interp.set_input(_to_input(x, spec), 0)
        interp.invoke()
    except (RuntimeError, ValueError):
        return False
    return True


def _allocates(data: bytes, arena: int, x: np.ndarray, spec: Any) -> bool:
    """Whether TFLM allocates and runs the model in ``arena`` bytes, tried in a forked child:
    tflite-micro 0.dev20261023182759 can abort on its failure path when the arena is too small
    ("All temp buffers must be freed before calling ResetTempAllocations()", SIGSEGV on the
    MLPerf Tiny autoencoder at 15,000 B), which counts as not fitting."""
    if not hasattr(os, "fork"):
        return _runs_in(data, arena, x, spec)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: its exit status is the answer
        ok = False
        try:
            ok = _runs_in(data, arena, x, spec)
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def smallest_arena(data: bytes, x: np.ndarray, spec: Any) -> int | None:
    """The smallest arena (16-byte steps) in which TFLM allocates the model and runs it."""
    hi = max(4096, 4 * len(data))
    while not _allocates(data, hi, x, spec):
        hi *= 2
        if hi > 1 << 30:
            return None
    lo = 0
    while hi - lo > 16:
        mid = (lo + hi) // 2 // 16 * 16
        lo, hi = (lo, mid) if _allocates(data, mid, x, spec) else (mid, hi)
    return hi


def allocations(interp: Any) -> dict[str, Any]:
    """The recording allocator's figures (it prints them on stderr: captured from the fd)."""
    with tempfile.TemporaryFile(mode="w+") as buf:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(buf.fileno(), 2)
        try:
            interp.print_allocations()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        buf.seek(0)
        text = buf.read()
    out: dict[str, Any] = {}
    for key in ("total", "head", "tail"):
        m = re.search(rf"Arena allocation {key} (\d+) bytes", text)
        if m:
            out[key] = int(m.group(1))
    # the tail by kind: "'<kind>' used N bytes with alignment overhead (requested R bytes for
    # K ..."
    out["kinds"] = {m.group(1): {"used": int(m.group(2)), "requested": int(m.group(3)),
                                 "count": int(m.group(4))}
                    for m in re.finditer(r"'([^']+)' used (\d+) bytes with alignment overhead "
                                         r"\(requested (\d+) bytes for (\d+)", text)}
    return out


ELEMENT_BYTES = {"FLOAT32": 4, "INT32": 4, "INT16": 2, "INT8": 1, "UINT8": 1, "INT64": 8,
                 "BOOL": 1, "FLOAT16": 2}


def tflm_graph(model: Any) -> dict[str, Any]:
    """What TFLM's memory planner sees: per tensor its bytes and whether it is a constant (a
    buffer with data: not planned), per op its code and tensor indices; graph inputs, outputs.
    edgefit replays TFLM's greedy planner on it (cost_models.tflm_arena)."""
    s = _schema()
    types, names = _names(s.TensorType), _names(s.BuiltinOperator)
    sg = model.subgraphs[0]
    tensors = []
    for t in sg.tensors:
        numel = int(np.prod(t.shape)) if t.shape is not None else 1
        data = model.buffers[t.buffer].data if t.buffer < len(model.buffers) else None
        q = t.quantization
        tensors.append({"bytes": numel * ELEMENT_BYTES.get(types[t.type], 1),
                        "type": types[t.type], "shape": [int(d) for d in (t.shape if t.shape
                                                                         is not None else [])],
                        "const": data is not None and len(data) > 0,
                        "scales": 0 if q is None or q.scale is None else len(q.scale)})
    return {"tensors": tensors,
            "ops": [{"op": _opcode(model, op, names), "inputs": [int(i) for i in op.inputs],
                     "outputs": [int(i) for i in op.outputs]} for op in sg.operators],
            "inputs": [int(i) for i in sg.inputs], "outputs": [int(i) for i in sg.outputs]}


def run_tflm(data: bytes, x: np.ndarray, io: tuple[Any, Any]) -> dict[str, Any]:
    try:
        arena = smallest_arena(data, x[:1], io[0])
        if arena is None:
            return {"ran": False, "reason": "TFLM did not allocate the model in 1 GiB"}
        interp = _tflm(data, arena)
        outs = []
        for i in range(len(x)):
            interp.set_input(_to_input(x[i:i + 1], io[0]), 0)
            interp.invoke()
            outs.append(_from_output(interp.get_output(0), io[1]))
        return {"ran": True, "arena_bytes": arena, "allocations": allocations(interp),
                "outputs": np.concatenate(outs)}
    except (RuntimeError, ValueError) as exc:
        return {"ran": False, "reason": f"tflite-micro: {str(exc).splitlines()[0][:200]}"}


def inspect(req: dict[str, Any]) -> dict[str, Any]:
    data = Path(req["model"]).read_bytes()
    model = _schema().ModelT.InitFromPackedBuf(data, 0)
    io = (_io(model, "inputs")[0], _io(model, "outputs")[0])
    x = np.load(req["inputs"])
    np.save(req["litert_outputs"], run_litert(req["model"], x, io))
    tflm = run_tflm(data, x[:req["tflm_samples"]], io) if req.get("tflm") else None
    if tflm and tflm.get("ran"):
        np.save(req["tflm_outputs"], tflm.pop("outputs"))
    return {"bytes": len(data), "ops": read_ops(model, req["layers"]),
            "inputs": _io(model, "inputs"), "outputs": _io(model, "outputs"),
            "buffer_bytes": sum(len(b.data) for b in model.buffers if b.data is not None),
            "tflm": tflm, "tflm_graph": tflm_graph(model), "versions": versions()}


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in ("convert", "inspect"):
        print("usage: tflite_tool.py convert|inspect REQUEST.json RESULT.json", file=sys.stderr)
        return 2
    req = json.loads(Path(argv[1]).read_text())
    try:
        result = convert(req) if argv[0] == "convert" else inspect(req)
    except Refused as exc:
        print(f"edgefit-tflite: {exc}", file=sys.stderr)
        return REFUSED
    Path(argv[2]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
