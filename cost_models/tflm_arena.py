"""TensorFlow Lite Micro's arena, predicted: what ``MicroAllocator`` lays out for a .tflite.

TFLM's arena has two ends. The *head* holds every non-constant tensor and kernel scratch
buffer, at the offsets its ``GreedyMemoryPlanner`` picks; the *tail* holds what lives as long
as the interpreter: one ``TfLiteEvalTensor`` per tensor of the graph, a
``NodeAndRegistration`` per operator, each kernel's op data (``AllocatePersistentBuffer``:
per-channel output multipliers and shifts, ...), the model's input/output ``TfLiteTensor``
structs and the allocator's own objects. The arena a board needs is head + tail.

This module is pure python (no torch, no edgefit imports beyond the standard library) so the
planner side and the tool virtualenv can both use it:

* ``greedy_plan``: tflite-micro's ``GreedyMemoryPlanner::CalculateOffsetsIfNeeded``
  (tensorflow/lite/micro/memory_planner/greedy_memory_planner.cc) replayed: buffers in the
  order ``MicroAllocator`` adds them, reverse-sorted by size with a stable bubble sort over
  the ids *reversed* (online buffers are stored from the tail), each put at the lowest offset
  of the offset-ordered list where it fits between the buffers alive at the same time;
* ``lifetimes``: ``AllocationInfoBuilder::MarkAllocationLifetimes``
  (micro_allocation_info.cc): graph inputs and outputs are created at scope 0, op ``i``'s
  outputs at ``i + 1``, an input's last use is the last op reading it, graph outputs live to
  the end, a kernel's scratch buffer only during its op; sizes rounded up to 16 bytes
  (``MicroArenaBufferAlignment``);
* ``tail_bytes``: the persistent part, from constants measured with tflite-micro's recording
  allocator (``TAIL``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from math import ceil
from typing import Any

from cost_models.tflm_structs import (
    HOST_BUILD,
    OpGeometry,
    TflmBuild,
    cmsis_nn_scratch_bytes,
    fully_connected_persistent_bytes,
    int_array_bytes,
    op_data_struct,
    sizeof,
)

ALIGN_BYTES = 16  # MicroArenaBufferAlignment(): every planned buffer and tail block


def aligned(nbytes: int, align: int = ALIGN_BYTES) -> int:
    return -(-nbytes // align) * align


@dataclass(frozen=True)
class Buffer:
    """One planned buffer: its bytes and the allocation scopes it is alive in (inclusive)."""

    size: int
    first: int
    last: int

    def overlaps(self, other: Buffer) -> bool:
        return not (other.first > self.last or self.first > other.last)


def sorted_ids(buffers: Sequence[Buffer]) -> list[int]:
    """The order the greedy planner places buffers in: ids stored from the tail (reversed),
    then ReverseSortInPlace (a stable bubble sort, largest first)."""
    ids = list(reversed(range(len(buffers))))
    return sorted(ids, key=lambda i: -buffers[i].size)  # sorted() is stable, as the bubble sort


def greedy_plan(buffers: Sequence[Buffer]) -> list[int]:
    """Each buffer's offset as TFLM's GreedyMemoryPlanner places it (all planned online)."""
    if not buffers:
        return []
    order = sorted_ids(buffers)
    offsets = [0] * len(buffers)
    placed: list[int] = [order[0]]  # ids, in ascending offset (insertion after equal offsets)
    for bid in order[1:]:
        want = buffers[bid]
        candidate = 0
        for other in placed:
            if not buffers[other].overlaps(want):
                continue
            if offsets[other] - candidate >= want.size:
                break  # the gap before this buffer is big enough
            candidate = max(candidate, offsets[other] + buffers[other].size)
        offsets[bid] = candidate
        _insert(placed, bid, offsets)
    return offsets


def _insert(placed: list[int], bid: int, offsets: list[int]) -> None:
    """Into the offset-ordered list as the planner does: before the first entry with a larger
    offset (a new first entry only when strictly below the current first)."""
    for k, other in enumerate(placed):
        if offsets[other] > offsets[bid]:
            placed.insert(k, bid)
            return
    placed.append(bid)


def arena_head_bytes(buffers: Sequence[Buffer]) -> int:
    """GetMaximumMemorySize(): the end of the highest placed buffer."""
    offsets = greedy_plan(buffers)
    return max((o + b.size for o, b in zip(offsets, buffers, strict=True)), default=0)


def liveness_peak_bytes(buffers: Sequence[Buffer]) -> int:
    """The most bytes alive in one scope: the lower bound any planner's head meets."""
    scopes = {b.first for b in buffers} | {b.last for b in buffers}
    return max((sum(b.size for b in buffers if b.first <= t <= b.last) for t in scopes),
               default=0)


@dataclass(frozen=True)
class Op:
    """One operator of the graph: the tensors it reads and writes (indices; -1: omitted),
    and the scratch bytes its kernel asks for in Prepare (RequestScratchBufferInArena)."""

    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    scratch: tuple[int, ...] = ()


def lifetimes(tensor_bytes: Sequence[int], planned: Iterable[int], ops: Sequence[Op],
              graph_inputs: Iterable[int], graph_outputs: Iterable[int]) -> list[Buffer]:
    """The buffers MicroAllocator adds to the planner, in its order: the planned tensors
    (non-constant, non-empty) by index, then each op's scratch buffers."""
    first: dict[int, int] = {}
    last: dict[int, int] = {}

    def created(t: int, scope: int) -> None:
        first[t], last[t] = scope, scope

    outs = list(graph_outputs)
    for t in list(graph_inputs) + outs:
        created(t, 0)
    scratch: list[Buffer] = []
    for i, op in enumerate(ops):
        for t in op.outputs:
            created(t, i + 1)
        for t in (*op.inputs, *op.outputs):
            if t >= 0:
                last[t] = i + 1
        scratch += [Buffer(aligned(n), i + 1, i + 1) for n in op.scratch if n > 0]
    for t in outs:
        last[t] = len(ops)
    wanted = set(planned)
    tensors = [Buffer(aligned(tensor_bytes[t]), first[t], last[t])
               for t in range(len(tensor_bytes))
               if t in wanted and tensor_bytes[t] > 0 and t in first]
    return tensors + scratch


def file_buffers(tflm_graph: dict[str, Any]) -> list[Buffer]:
    """The planner's buffers for a .tflite's own graph (scripts/tflite_tool.py tflm_graph):
    every non-constant tensor; no kernel scratch (the file does not say)."""
    tensors = tflm_graph["tensors"]
    ops = [Op(tuple(o["inputs"]), tuple(o["outputs"])) for o in tflm_graph["ops"]]
    planned = [i for i, t in enumerate(tensors) if not t["const"]]
    return lifetimes([t["bytes"] for t in tensors], planned, ops, tflm_graph["inputs"],
                     tflm_graph["outputs"])


# ---------------------------------------------------------------- the persistent tail
#
# Measured with tflite-micro 0.dev20261023182759's recording allocator (x86-64 build, 64-bit
# pointers: a 32-bit MCU's structs are smaller, see docs/cost-model-accuracy.md) on the
# all-int8 LeNet-5, LeNet-300-100, Fashion CNN and the three MLPerf Tiny models
# (benchmarks/tflm_arena.py prints each kind): bytes per item, as allocated (16-byte aligned).
EVAL_TENSOR_BYTES = 24  # 'TfLiteEvalTensor data': one per tensor of the graph, constants too
NODE_BYTES = 64  # 'NodeAndRegistration struct': one per operator
IO_TENSOR_BYTES = 64  # 'Persistent TfLiteTensor data': per model input and output
IO_QUANT_BYTES = 32  # '... quantization data': per integer model input / output
# 'Persistent buffer data': each kernel's op data (Init / Prepare), requested bytes. Conv and
# depthwise also take two int32 arrays per output channel (the per-channel output multiplier
# and shift), float or not; fully connected only when integer (LeNet-5 with conv1 int8 and
# the rest float: 15 allocations, 696 B; DEQUANTIZE's op data from that file). Solved
# from the six models' totals and allocation counts
# (pooling: one OpDataPooling whether max or average, consistent only with 80 B for OpDataConv).
OP_DATA_BYTES = {"CONV_2D": 80, "DEPTHWISE_CONV_2D": 80, "FULLY_CONNECTED": 72,
                 "MAX_POOL_2D": 32, "AVERAGE_POOL_2D": 32, "MEAN": 32, "PAD": 56, "ADD": 60,
                 "QUANTIZE": 48, "DEQUANTIZE": 32, "RESHAPE": 0, "TRANSPOSE": 0}
OTHER_OP_DATA_BYTES = 64  # an operator this table does not list (assumed)
PER_CHANNEL_ARRAYS = 2  # multiplier + shift, int32 each
# what the recording allocator does not itemise (the allocator's own objects, subgraph and
# scratch-handle arrays): least squares over the six models, a + b x tensors (residuals
# within 45 B)
UNITEMISED_BYTES = 551.0
UNITEMISED_PER_TENSOR_BYTES = 7.55
UNITEMISED_PER_OP_BYTES = 1.3
WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
# Prepare runs before the plan is committed, with temporary TfLiteTensors at the head: a
# TfLiteTensor (64 B) per tensor the kernel opens, the quantisation of each (24 B
# TfLiteAffineQuantization + the scale and zero-point arrays: 4 + 4 B per channel each). The
# head must hold the largest op's, even when the plan is smaller (the autoencoder's 640-channel
# FULLY_CONNECTED: 4 x 64 + 2 x 40 + 24 + 2 x (4 + 4 x 640) = 5,488 B, measured as the
# difference between its smallest arena and the recorded tail).
TEMP_TENSOR_BYTES = 64
TEMP_QUANT_BYTES = 24


@dataclass(frozen=True)
class TfliteTensor:
    """A tensor of the converted graph: elements and the layer whose option sets its element
    type (None: the float model input, 4 bytes per element)."""

    numel: int
    owner: str | None


@dataclass(frozen=True)
class TfliteOp:
    code: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    step: int  # the layer-graph step it comes from
    layer: str | None = None  # the planned layer whose weights it holds
    channels: int = 0  # output channels (per-channel quantisation arrays)
    integer: bool = True  # its layer runs integer kernels (else float)
    geometry: OpGeometry | None = None  # shapes, where a kernel's scratch depends on them


@dataclass
class ConvertedGraph:
    """The .tflite graph litert-torch + ai-edge-quantizer write for a layer graph, all layers
    integer: tensors, operators, constants (deduplicated as the converter does)."""

    tensors: list[TfliteTensor] = field(default_factory=list)
    ops: list[TfliteOp] = field(default_factory=list)
    # the converter's constants (deduplicated by value) -> the layer whose operator reads them
    constants: dict[tuple[object, ...], str | None] = field(default_factory=dict)
    inputs: list[int] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)

    @property
    def tensor_count(self) -> int:
        return len(self.tensors) + len(self.constants)


_FUSED = frozenset({"ReLU", "ReLU6", "Hardtanh", "Identity", "Dropout", "relu", "relu6",
                    "dropout", "identity", "contiguous"})
_OPS = {"add": "ADD", "iadd": "ADD", "MaxPool2d": "MAX_POOL_2D", "AvgPool2d": "AVERAGE_POOL_2D",
        "AdaptiveAvgPool2d": "MEAN", "mul": "MUL", "cat": "CONCATENATION",
        "mean": "MEAN", "Softmax": "SOFTMAX", "softmax": "SOFTMAX", "sub": "SUB"}


class _Converter:
    """litert-torch 0.10.0's layout as observed on the six models: the NCHW model input is
    quantised, then made NHWC before the first conv (RESHAPE when it has one channel, else
    TRANSPOSE); a conv whose torch padding is not TFLite's SAME (stride 1, (k - 1) / 2) nor
    VALID gets an explicit PAD; ReLU / ReLU6 / BatchNorm are fused; a flatten of an NHWC tensor
    with more than one pixel is TRANSPOSE + RESHAPE (a 1 x 1 one feeds FULLY_CONNECTED as it
    is); the output stays int8."""

    def __init__(self, graph: Any, integer: Iterable[str] | None = None) -> None:
        self.g = graph
        self.integer = set(graph.layer_names if integer is None else integer)
        self.out = ConvertedGraph()
        self.where: dict[str, int] = {}
        self.nhwc: dict[int, bool] = {}
        self.shape: dict[int, tuple[int, ...]] = {}

    def tensor(self, numel: int, owner: str | None, nhwc: bool, shape: tuple[int, ...]) -> int:
        self.out.tensors.append(TfliteTensor(int(numel), owner))
        t = len(self.out.tensors) - 1
        self.nhwc[t], self.shape[t] = nhwc, shape
        return t

    def op(self, code: str, src: tuple[int, ...], dst: int, step: int,
           const: tuple[object, ...] | None = None, layer: str | None = None,
           channels: int = 0, geometry: OpGeometry | None = None) -> None:
        self.out.ops.append(TfliteOp(code, src, (dst,), step, layer, channels,
                                     layer is None or layer in self.integer, geometry))
        if const is not None:
            self.out.constants.setdefault(const, layer or self.out.tensors[dst].owner)

    def run(self) -> ConvertedGraph:
        produced = {st.output for st in self.g.steps}
        for name, t in self.g.tensors.items():
            if name not in produced:
                shape = tuple(t.shape) or tuple(self.g.input_shape)
                x = self.tensor(t.numel, None, False, shape)
                self.out.inputs.append(x)
                if t.owner in self.integer:
                    q = self.tensor(t.numel, t.owner, False, shape)
                    self.op("QUANTIZE", (x,), q, 0)
                    x = q
                self.where[name] = x
        for i, st in enumerate(self.g.steps):
            self.step(i, st)
        self.out.outputs = [self.where[o] for o in self.g.outputs if o in self.where]
        return self.out

    def step(self, i: int, st: Any) -> None:
        ins = [self.where[n] for n in st.inputs if n in self.where]
        t = self.g.tensors[st.output]
        shape = tuple(t.shape)
        if st.kind == "layer" and st.owner is not None:
            if not ins:  # reads only what the graph does not track (a parameter): a fresh input
                layer = self.g.layer(st.owner)
                ins = [self.tensor(layer.input_numel, st.owner, False, ())]
            self.layer(i, st, ins[0], shape)
        elif st.kind == "alias" and (st.op in _FUSED or not ins):
            if ins:
                self.where[st.output] = ins[0]
        elif st.kind == "alias":
            self.where[st.output] = self.flatten(i, ins[0], t.numel, t.owner, shape)
        else:
            nhwc = bool(ins) and self.nhwc[ins[0]]
            out = self.tensor(t.numel, t.owner, nhwc, shape)
            code = _OPS.get(st.op, st.op.upper())
            # MEAN reads its axes from a constant (the same for every such pool)
            self.op(code, tuple(ins), out, i, ("axes", 1, 2) if code == "MEAN" else None,
                    geometry=self.geometry(ins[0], shape) if ins else None)
            self.where[st.output] = out

    def flatten(self, i: int, src: int, numel: int, owner: str | None,
                shape: tuple[int, ...]) -> int:
        before = self.shape[src]
        pixels = before[1] * before[2] if len(before) == 3 else 1
        if (self.nhwc[src] and pixels == 1) or len(before) <= 1:
            return src  # FULLY_CONNECTED reads it as it is
        if self.nhwc[src]:
            t = self.tensor(numel, owner, False, before)
            self.op("TRANSPOSE", (src,), t, i, ("perm", 0, 3, 1, 2))
            src = t
        out = self.tensor(numel, owner, False, shape)
        self.op("RESHAPE", (src,), out, i, ("shape", 1, *shape))
        return out

    def boundary(self, i: int, src: int, layer: str) -> int:
        """ai-edge-quantizer's DEQUANTIZE before a float layer reading integer codes, QUANTIZE
        before an integer layer reading floats (the copy belongs to the reading layer)."""
        owner = self.out.tensors[src].owner
        if (owner is not None and owner in self.integer) == (layer in self.integer):
            return src
        t = self.tensor(self.out.tensors[src].numel, layer, self.nhwc[src], self.shape[src])
        self.op("QUANTIZE" if layer in self.integer else "DEQUANTIZE", (src,), t, i)
        return t

    def layer(self, i: int, st: Any, src: int, shape: tuple[int, ...]) -> None:
        layer = self.g.layer(st.owner)
        t = self.g.tensors[st.output]
        src = self.boundary(i, src, layer.name)
        if len(layer.weight_shape) == 4 and len(self.shape[src]) == 3:
            src = self.to_nhwc(i, src)
            src = self.pad(i, src, layer, shape)
            cin = layer.weight_shape[1]
            code = "DEPTHWISE_CONV_2D" if cin == 1 or layer.op_class == "depthwise" \
                else "CONV_2D"
            out = self.tensor(t.numel, t.owner, True, shape)
            geometry = self.geometry(src, shape, tuple(layer.weight_shape[2:]))
        else:
            code = "FULLY_CONNECTED" if layer.op_class == "linear" else st.op.upper()
            out = self.tensor(t.numel, t.owner, False, shape)
            geometry = None
        self.op(code, (src,), out, i, ("weights", layer.name), layer.name, layer.out_channels,
                geometry)
        self.out.constants.setdefault(("bias", layer.name), layer.name)
        self.where[st.output] = out

    def geometry(self, src: int, out_shape: tuple[int, ...],
                 kernel: tuple[int, ...] | None = None) -> OpGeometry | None:
        """A 2-D operator's shapes (CMSIS-NN's dims): input and output (C, H, W), the kernel
        (a pool's from the sizes), stride and padding as _padding derives them."""
        before = self.shape[src]
        if len(before) != 3 or len(out_shape) != 3:
            return None
        (c, h, w), (oc, oh, ow) = before, out_shape
        kh, kw = kernel or (max(1, round(h / max(1, oh))), max(1, round(w / max(1, ow))))
        (ph, _), (pw, _) = _padding(h, oh, kh), _padding(w, ow, kw)
        return OpGeometry(c, h, w, oc, oh, ow, kh, kw, max(1, round(h / max(1, oh))),
                          max(1, round(w / max(1, ow))), ph, pw)

    def to_nhwc(self, i: int, src: int) -> int:
        if self.nhwc[src]:
            return src
        c = self.shape[src][0]
        t = self.tensor(self.out.tensors[src].numel, self.out.tensors[src].owner, True,
                        self.shape[src])
        self.op("RESHAPE" if c == 1 else "TRANSPOSE", (src,), t, i,
                ("shape", "nhwc", *self.shape[src]) if c == 1 else ("perm", 0, 2, 3, 1))
        return t

    def pad(self, i: int, src: int, layer: Any, out_shape: tuple[int, ...]) -> int:
        c, h, w = self.shape[src]
        pads = [_padding(n, m, k) for n, m, k in
                zip((h, w), out_shape[1:], layer.weight_shape[2:], strict=True)]
        if all(p == 0 or same for p, same in pads):
            return src
        (ph, _), (pw, _) = pads
        t = self.tensor(c * (h + 2 * ph) * (w + 2 * pw), self.out.tensors[src].owner, True,
                        (c, h + 2 * ph, w + 2 * pw))
        self.op("PAD", (src,), t, i, ("paddings", ph, pw))
        return t


def _padding(size: int, out: int, k: int) -> tuple[int, bool]:
    """(torch padding, whether TFLite's SAME already is it) of one spatial dimension, from the
    sizes: the stride is size / out rounded, the padding the least that gives ``out``."""
    stride = max(1, round(size / max(1, out)))
    p = max(0, ceil(((out - 1) * stride + k - size) / 2))
    return p, stride == 1 and 2 * p == k - 1


def converted_graph(graph: Any, integer: Iterable[str] | None = None) -> ConvertedGraph:
    """The TFLite graph of a layer graph (cost_models.graph.LayerGraph); ``integer``: the
    layers quantised (default all), the others float."""
    return _Converter(graph, integer).run()


def tensor_bytes(conv: ConvertedGraph, element_bytes: Mapping[str, float]) -> list[int]:
    """Each converted tensor's bytes: elements x its owner's bytes per element (the float
    input: 4)."""
    return [round(t.numel * (4.0 if t.owner is None else element_bytes.get(t.owner, 1.0)))
            for t in conv.tensors]


def op_scratch_bytes(op: TfliteOp, build: TflmBuild = HOST_BUILD) -> int:
    """The scratch buffer the build's kernel asks for in Prepare (tflm_structs): CMSIS-NN's
    integer kernels; the reference kernels ask for none here (every head measured equals the
    greedy plan of the file's tensors); ESP-NN's are not modelled."""
    if build.kernels != "cmsis-nn" or not op.integer or op.geometry is None:
        return 0
    return cmsis_nn_scratch_bytes(op.code, op.geometry, build.simd)


def converted_buffers(conv: ConvertedGraph, element_bytes: Mapping[str, float],
                      build: TflmBuild = HOST_BUILD) -> list[Buffer]:
    ops = [Op(o.inputs, o.outputs, (op_scratch_bytes(o, build),)) for o in conv.ops]
    return lifetimes(tensor_bytes(conv, element_bytes), range(len(conv.tensors)), ops,
                     conv.inputs, conv.outputs)


def has_arrays(code: str, integer: bool) -> bool:
    """Whether an operator's kernel allocates per-channel multiplier / shift arrays."""
    return code in ("CONV_2D", "DEPTHWISE_CONV_2D") or (code == "FULLY_CONNECTED" and integer)


def per_channel_bytes(channels: int) -> int:
    """A conv / depthwise / fully connected kernel's per-channel multiplier and shift arrays."""
    return PER_CHANNEL_ARRAYS * aligned(4 * channels)


def op_data_bytes(code: str, build: TflmBuild = HOST_BUILD) -> int:
    """A kernel's op data: its struct's layout in the build where tflm_structs knows it
    (equal to the measured constant at HOST_BUILD), else the measured constant."""
    struct = op_data_struct(code, build)
    if struct is None:
        return OP_DATA_BYTES.get(code, OTHER_OP_DATA_BYTES)
    return sizeof(struct, build)


def tail_bytes(conv: ConvertedGraph, channels: Mapping[str, int] | None = None,
               build: TflmBuild = HOST_BUILD) -> int:
    """The persistent tail for the converted graph (``channels``: kept output channels per
    layer, default every layer's own) in ``build``: the structs at its pointer width
    (tflm_structs), the rest (the allocator's unitemised objects, op data whose layout is
    not modelled) as measured on the 64-bit build -- an upper bound on a 32-bit board."""
    kept = channels or {}
    op_data = sum(aligned(op_data_bytes(o.code, build)) for o in conv.ops)
    arrays = sum(per_channel_bytes(kept.get(o.layer, o.channels)) for o in conv.ops
                 if o.layer is not None and has_arrays(o.code, o.integer))
    sums = sum(aligned(fully_connected_persistent_bytes(kept.get(o.layer, o.channels),
                                                        build.simd))
               for o in conv.ops if build.kernels == "cmsis-nn" and o.integer
               and o.code == "FULLY_CONNECTED" and o.layer is not None)
    outs = {t for o in conv.ops for t in o.outputs if o.integer and o.code != "DEQUANTIZE"}
    n_t, n_ops = conv.tensor_count, len(conv.ops)
    other = (UNITEMISED_BYTES + UNITEMISED_PER_TENSOR_BYTES * n_t
             + UNITEMISED_PER_OP_BYTES * n_ops)
    io_quant = sizeof("TfLiteAffineQuantization", build) + int_array_bytes(1)
    return aligned(round(sizeof("TfLiteEvalTensor", build) * n_t
                         + sizeof("NodeAndRegistration", build) * n_ops
                         + sizeof("TfLiteTensor", build) * (len(conv.inputs) + len(conv.outputs))
                         + io_quant * sum(t in outs for t in conv.outputs)
                         + op_data + arrays + sums + other))


def per_tensor_quant_temp(build: TflmBuild = HOST_BUILD) -> int:
    return sizeof("TfLiteAffineQuantization", build) + 2 * int_array_bytes(1)


def prepare_temp_bytes(op: TfliteOp, channels: int | None = None,
                       build: TflmBuild = HOST_BUILD) -> int:
    """The head an operator's Prepare holds in temporary tensors (see TEMP_TENSOR_BYTES): a
    weighted op opens its input, weights (per-channel quantisation), bias and output; any
    other op its inputs and outputs (per-tensor quantisation)."""
    tensor, quant = sizeof("TfLiteTensor", build), sizeof("TfLiteAffineQuantization", build)
    if not op.integer:  # float tensors carry no quantisation
        return tensor * (4 if op.code in WEIGHTED_OPS else len(op.inputs) + len(op.outputs))
    if op.code in WEIGHTED_OPS:
        c = op.channels if channels is None else channels
        return (4 * tensor + 2 * per_tensor_quant_temp(build) + quant
                + 2 * int_array_bytes(c))
    return (tensor + per_tensor_quant_temp(build)) * (len(op.inputs) + len(op.outputs))


@dataclass(frozen=True)
class ArenaPrediction:
    plan_bytes: int  # the greedy plan of the converted graph's tensors
    prepare_bytes: int  # the largest operator's temporary tensors during Prepare
    tail_bytes: int
    liveness_bytes: int  # the most bytes alive at one operator (the plan's lower bound)

    @property
    def head_bytes(self) -> int:
        return max(self.plan_bytes, self.prepare_bytes)

    @property
    def total_bytes(self) -> int:
        return self.head_bytes + self.tail_bytes


def predict_arena(graph: Any, element_bytes: Mapping[str, float],
                  channels: Mapping[str, int] | None = None,
                  build: TflmBuild = HOST_BUILD) -> ArenaPrediction:
    """TFLM's arena for a layer graph whose layers store activations at ``element_bytes``
    bytes per element (1: int8), from the layer graph alone, in ``build`` (default: the
    tflite-micro build measured on this machine)."""
    conv = converted_graph(graph, [n for n in graph.layer_names
                                   if element_bytes.get(n, 1.0) < 4.0])
    buffers = converted_buffers(conv, element_bytes, build)
    kept = channels or {}
    prepare = max((prepare_temp_bytes(o, kept.get(o.layer or ""), build) for o in conv.ops),
                  default=0)
    return ArenaPrediction(arena_head_bytes(buffers), prepare, tail_bytes(conv, channels, build),
                           liveness_peak_bytes(buffers))
