"""The activation memory onnxruntime really allocates for a model on this host.

How it is measured (and why this way): onnxruntime's Python API exposes no allocator statistics,
and a process RSS delta is dominated by the runtime itself. The onnxruntime wheel, however, ships
the runtime as a shared library too (``onnxruntime/capi/libonnxruntime.so.<version>``, the same
build as the Python extension), and its C API has ``AllocatorGetStats`` (API version 23, ORT
1.23+): the counters of the session's CPU arena (BFC arena) -- ``InUse``, ``MaxInUse``,
``NumAllocs``, ``NumReserves``, ... Here that library is driven through ``ctypes``: a session is
created with the options ``edgefit_measure`` uses (optimisation level, 1 intra-op thread,
sequential, CPU arena on, memory pattern off and ``edgefit_measure.session_config()`` as everywhere
in edgefit: ``edgefit_measure.MEM_PATTERN``), ``InUse`` is read after the session is created
(initializers and pre-packed weights that live in the arena), the model is run a few times (every
run allocates tensor by tensor as the allocation planner says; with the pattern on, later runs
would take one block laid out from the first run, up to 2.6x larger here), and ``MaxInUse`` is read
again. ``peak_bytes = MaxInUse - InUse before the first run``: every byte onnxruntime held at once
for the run beyond the resident weights -- intermediate tensors as its allocation planner lays them
out (after its fusions, layout changes and buffer reuse), kernel scratch buffers (im2col and the
like: the runtime workspace) and the graph outputs it returns. The graph input is the caller's
buffer and not in the arena; ``input_bytes`` reports it separately, and ``activation_bytes`` adds
it, which is what edgefit's liveness model counts (it holds the input too). Arena chunks are
rounded up to 256 bytes, so counts are exact only to that grain. When session creation itself
peaked higher (pre-packing a weight while the original still exists) and no run exceeded that, the
run's peak is hidden: ``peak_hidden`` is set and ``peak_bytes`` is an upper bound. (Disabling
pre-packing would avoid that but changes what the kernels allocate per run, so it is not done.)

The function-table indices below are positions in ``struct OrtApi`` of onnxruntime_c_api.h; the
C API only ever appends to that struct, so they hold for every version >= 23. A sanity check
(the build-info string and the stats keys) refuses to trust a library that does not answer as
expected.

``node_memory_stats`` reads onnxruntime's per-node allocation record (session option
``session.collect_node_memory_stats_to_file``): per executed node, bytes of outputs it allocated
and of temporary (scratch) allocations -- the breakdown that explains a difference.
"""

from __future__ import annotations

import csv
import ctypes as C
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from edgefit_common.errors import EdgefitError
from edgefit_measure import MEM_PATTERN, session_config

API_VERSION = 23  # first C API version with AllocatorGetStats
ARENA_GRAIN_BYTES = 256  # BFC arena chunk granularity
OPT_LEVELS = {"disable": 0, "basic": 1, "extended": 2, "all": 99}
METHOD = ("onnxruntime C API AllocatorGetStats of the session CPU arena (memory pattern off): "
          "MaxInUse after the runs - InUse after session creation")

# positions in struct OrtApi (onnxruntime_c_api.h)
_GET_ERROR_MESSAGE = 2
_CREATE_ENV = 3
_CREATE_SESSION = 7
_RUN = 9
_CREATE_SESSION_OPTIONS = 10
_SET_EXECUTION_MODE = 13
_DISABLE_MEM_PATTERN = 17
_SET_LOG_SEVERITY = 22
_SET_OPT_LEVEL = 23
_SET_INTRA_OP_THREADS = 24
_SET_INTER_OP_THREADS = 25
_CREATE_TENSOR_WITH_DATA = 49
_CREATE_CPU_MEMORY_INFO = 69
_RELEASE_STATUS = 93
_RELEASE_MEMORY_INFO = 94
_RELEASE_SESSION = 95
_RELEASE_VALUE = 96
_RELEASE_SESSION_OPTIONS = 100
_ADD_SESSION_CONFIG_ENTRY = 130
_CREATE_ALLOCATOR = 131
_RELEASE_ALLOCATOR = 132
_GET_BUILD_INFO = 254
_GET_KEY_VALUE_PAIRS = 298
_RELEASE_KEY_VALUE_PAIRS = 300
_GET_TENSOR_SIZE_IN_BYTES = 318
_ALLOCATOR_GET_STATS = 319

_P = C.c_void_p
_ARENA_ALLOCATOR = 1  # OrtArenaAllocator
_MEM_TYPE_DEFAULT = 0  # OrtMemTypeDefault


class OrtMemoryError(EdgefitError):
    """onnxruntime's allocator statistics cannot be read here, or the model does not run."""


@dataclass(frozen=True)
class OrtMemory:
    """What onnxruntime's CPU arena held for one model (see the module docstring)."""

    peak_bytes: int  # MaxInUse over all runs - InUse after session creation
    first_run_peak_bytes: int  # the same after run 1
    resident_bytes: int  # arena bytes in use after session creation (weights, pre-packing)
    input_bytes: int  # graph inputs: the caller's buffers, outside the arena
    output_bytes: int  # graph outputs of one run (allocated in the arena, inside peak_bytes)
    runs: int
    opt_level: str
    threads: int
    ort_version: str
    stats: dict[str, int] = field(default_factory=dict)  # the arena's counters after the runs
    # True: the runs never exceeded the session-creation transient, so peak_bytes is only an
    # upper bound (the transient above the resident bytes), not the run's own peak
    peak_hidden: bool = False
    method: str = METHOD

    @property
    def activation_bytes(self) -> int:
        """Input + everything the run allocated at its peak: what a liveness model predicts."""
        return self.peak_bytes + self.input_bytes


class _Api:
    """The few C API functions used here, bound once to libonnxruntime's function table."""

    def __init__(self, lib: C.CDLL) -> None:
        class ApiBase(C.Structure):
            _fields_ = [("GetApi", C.CFUNCTYPE(_P, C.c_uint32)),
                        ("GetVersionString", C.CFUNCTYPE(C.c_char_p))]

        lib.OrtGetApiBase.restype = C.POINTER(ApiBase)
        base = lib.OrtGetApiBase().contents
        self.version = (base.GetVersionString() or b"").decode()
        table = base.GetApi(API_VERSION)
        if not table:
            raise OrtMemoryError(f"onnxruntime {self.version} has no C API version "
                                 f"{API_VERSION} (AllocatorGetStats needs onnxruntime >= 1.23)")
        self._table = C.cast(table, C.POINTER(_P))
        build = self.fn(_GET_BUILD_INFO, C.c_char_p)()
        if not build or not build.startswith(b"ORT Build Info"):
            raise OrtMemoryError(f"libonnxruntime {self.version}: the C API function table is "
                                 "not laid out as expected; allocator statistics not read")

    def fn(self, index: int, restype: Any, *argtypes: Any) -> Any:
        return C.CFUNCTYPE(restype, *argtypes)(self._table[index])

    def check(self, status: int | None) -> None:
        if status:
            msg = self.fn(_GET_ERROR_MESSAGE, C.c_char_p, _P)(status) or b"unknown error"
            self.fn(_RELEASE_STATUS, None, _P)(status)
            raise OrtMemoryError(f"onnxruntime: {msg.decode().strip().splitlines()[0]}")

    def call(self, index: int, *args: Any) -> None:
        """A function returning OrtStatus* whose arguments are all pointers / ints."""
        types = [type(a) if isinstance(a, C._SimpleCData) else _P for a in args]
        self.check(self.fn(index, _P, *types)(*args))


def library_path() -> Path:
    """libonnxruntime shipped inside the installed onnxruntime wheel (same version)."""
    import onnxruntime as ort

    capi = Path(ort.__file__).parent / "capi"
    found = sorted(capi.glob(f"libonnxruntime.so.{ort.__version__}")) or sorted(
        capi.glob("libonnxruntime.so*")) or sorted(capi.glob("libonnxruntime*.dylib"))
    if not found:
        raise OrtMemoryError(f"no libonnxruntime shared library in {capi}: this onnxruntime "
                             "wheel does not ship the C API library, so arena statistics "
                             "cannot be read")
    return found[0]


@cache
def _api() -> tuple[_Api, int]:
    """The bound API and one process-wide OrtEnv (kept: releasing it mid-process is unsafe)."""
    try:
        lib = C.CDLL(str(library_path()))
    except OSError as exc:
        raise OrtMemoryError(f"cannot load libonnxruntime: {exc}") from None
    api = _Api(lib)
    env = _P()
    api.call(_CREATE_ENV, C.c_int(3), C.c_char_p(b"edgefit-ort-memory"), C.byref(env))
    return api, int(env.value or 0)


@contextmanager
def _released(api: _Api, index: int, handle: _P) -> Iterator[_P]:
    try:
        yield handle
    finally:
        if handle.value:
            api.fn(index, None, _P)(handle)


def _session_options(api: _Api, opt_level: str, threads: int, mem_pattern: bool) -> _P:
    if opt_level not in OPT_LEVELS:
        raise OrtMemoryError(f"opt_level must be one of {', '.join(OPT_LEVELS)}, "
                             f"got {opt_level!r}")
    if threads < 1:
        raise OrtMemoryError(f"threads must be >= 1, got {threads}")
    so = _P()
    api.call(_CREATE_SESSION_OPTIONS, C.byref(so))
    api.call(_SET_OPT_LEVEL, so, C.c_int(OPT_LEVELS[opt_level]))
    api.call(_SET_INTRA_OP_THREADS, so, C.c_int(threads))
    api.call(_SET_INTER_OP_THREADS, so, C.c_int(1))
    api.call(_SET_EXECUTION_MODE, so, C.c_int(0))  # sequential, as edgefit_measure
    if not mem_pattern:
        api.call(_DISABLE_MEM_PATTERN, so)
    for key, value in session_config().items():
        api.call(_ADD_SESSION_CONFIG_ENTRY, so, C.c_char_p(key.encode()),
                 C.c_char_p(value.encode()))
    api.call(_SET_LOG_SEVERITY, so, C.c_int(3))  # errors only (NCHWc notes are expected)
    return so


def _stats(api: _Api, allocator: _P) -> dict[str, int]:
    kv = _P()
    api.call(_ALLOCATOR_GET_STATS, allocator, C.byref(kv))
    keys, values, n = C.POINTER(C.c_char_p)(), C.POINTER(C.c_char_p)(), C.c_size_t()
    api.fn(_GET_KEY_VALUE_PAIRS, None, _P, _P, _P, _P)(kv, C.byref(keys), C.byref(values),
                                                       C.byref(n))
    out = {(keys[i] or b"").decode(): int(values[i] or 0) for i in range(n.value)}
    api.fn(_RELEASE_KEY_VALUE_PAIRS, None, _P)(kv)
    if "MaxInUse" not in out or "InUse" not in out:
        raise OrtMemoryError("onnxruntime's CPU allocator reports no arena statistics "
                             f"(got {sorted(out) or 'none'}); is the CPU arena disabled?")
    return out


def _inputs(path: Path) -> list[tuple[str, np.ndarray]]:
    """One sample per graph input (symbolic dimensions = 1); values do not change memory."""
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    graph = onnx.load(str(path), load_external_data=False).graph
    inits = {t.name for t in graph.initializer}
    rng = np.random.default_rng(0)
    out = []
    for vi in graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else 1 for d in tt.shape.dim]
        dtype = tensor_dtype_to_np_dtype(tt.elem_type)
        out.append((vi.name, rng.standard_normal(shape).astype(dtype)))
    return out


def _graph_outputs(path: Path) -> list[str]:
    import onnx

    return [o.name for o in onnx.load(str(path), load_external_data=False).graph.output]


def _ort_value(api: _Api, mem_info: _P, x: np.ndarray) -> _P:
    shape = (C.c_int64 * x.ndim)(*x.shape)
    value = _P()
    api.call(_CREATE_TENSOR_WITH_DATA, mem_info, _P(x.ctypes.data), C.c_size_t(x.nbytes),
             shape, C.c_size_t(x.ndim), C.c_int(_onnx_elem_type(x.dtype)), C.byref(value))
    return value


def _onnx_elem_type(dtype: np.dtype[Any]) -> int:
    from onnx.helper import np_dtype_to_tensor_dtype

    return int(np_dtype_to_tensor_dtype(dtype))


def _run_once(api: _Api, session: _P, feeds: list[tuple[str, _P]], outputs: list[str]) -> int:
    """One Run; returns the bytes of the outputs onnxruntime allocated (then released)."""
    n_in, n_out = len(feeds), len(outputs)
    in_names = (C.c_char_p * n_in)(*[n.encode() for n, _ in feeds])
    in_values = (_P * n_in)(*[v for _, v in feeds])
    out_names = (C.c_char_p * n_out)(*[n.encode() for n in outputs])
    out_values = (_P * n_out)()
    api.call(_RUN, session, _P(), in_names, in_values, C.c_size_t(n_in), out_names,
             C.c_size_t(n_out), out_values)
    total = 0
    for v in out_values:
        size = C.c_size_t()
        api.call(_GET_TENSOR_SIZE_IN_BYTES, _P(v), C.byref(size))
        total += size.value
        api.fn(_RELEASE_VALUE, None, _P)(v)
    return total


def measure_arena(path: Path | str, opt_level: str = "all", threads: int = 1,
                  runs: int = 3, mem_pattern: bool = MEM_PATTERN) -> OrtMemory:
    """Peak arena bytes onnxruntime held for running ``path`` (see the module docstring).
    ``mem_pattern=True``: onnxruntime's default, for comparison."""
    path = Path(path)
    if not path.is_file():
        raise OrtMemoryError(f"{path}: no such ONNX file")
    if runs < 2:
        raise OrtMemoryError(f"runs must be >= 2 (run 1 also pre-packs lazily), got {runs}")
    api, env = _api()
    arrays = _inputs(path)
    outputs = _graph_outputs(path)
    mem_info = _P()
    api.call(_CREATE_CPU_MEMORY_INFO, C.c_int(_ARENA_ALLOCATOR), C.c_int(_MEM_TYPE_DEFAULT),
             C.byref(mem_info))
    with _released(api, _RELEASE_MEMORY_INFO, mem_info), \
            _released(api, _RELEASE_SESSION_OPTIONS,
                      _session_options(api, opt_level, threads, mem_pattern)) as so:
        session = _P()
        api.call(_CREATE_SESSION, _P(env), C.c_char_p(str(path).encode()), so, C.byref(session))
        with _released(api, _RELEASE_SESSION, session):
            allocator = _P()
            api.call(_CREATE_ALLOCATOR, session, mem_info, C.byref(allocator))
            with _released(api, _RELEASE_ALLOCATOR, allocator):
                return _measure_runs(api, session, allocator, mem_info, arrays, outputs,
                                     runs, opt_level, threads)


def _measure_runs(api: _Api, session: _P, allocator: _P, mem_info: _P,
                  arrays: list[tuple[str, np.ndarray]], outputs: list[str], runs: int,
                  opt_level: str, threads: int) -> OrtMemory:
    values = [(name, _ort_value(api, mem_info, x)) for name, x in arrays]
    try:
        before = _stats(api, allocator)
        output_bytes = _run_once(api, session, values, outputs)
        first = _stats(api, allocator)
        for _ in range(runs - 1):
            _run_once(api, session, values, outputs)
        after = _stats(api, allocator)
    finally:
        for _, v in values:
            api.fn(_RELEASE_VALUE, None, _P)(v)
    # session creation can peak above what stays resident (weights pre-packed while the
    # originals still exist); a run peak below that transient does not move MaxInUse
    hidden = after["MaxInUse"] == before["MaxInUse"] > before["InUse"]
    return OrtMemory(
        peak_bytes=after["MaxInUse"] - before["InUse"],
        first_run_peak_bytes=first["MaxInUse"] - before["InUse"],
        resident_bytes=before["InUse"],
        input_bytes=int(sum(x.nbytes for _, x in arrays)),
        output_bytes=output_bytes,
        runs=runs, opt_level=opt_level, threads=threads, ort_version=api.version, stats=after,
        peak_hidden=hidden,
    )


@dataclass(frozen=True)
class NodeAllocation:
    node: str  # node name in onnxruntime's optimised graph
    input_bytes: int
    initializer_bytes: int
    output_bytes: int  # outputs allocated while the node ran ("dynamic" sizes)
    temp_bytes: int  # scratch allocations of the kernel (workspace)


def node_memory_stats(path: Path | str, opt_level: str = "all",
                      threads: int = 1) -> list[NodeAllocation]:
    """onnxruntime's own per-node allocation record for one run (Python API, same options)."""
    import onnxruntime as ort

    levels = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    if opt_level not in levels:
        raise OrtMemoryError(f"opt_level must be one of {', '.join(levels)}, got {opt_level!r}")
    if not Path(path).is_file():
        raise OrtMemoryError(f"{path}: no such ONNX file")
    with tempfile.TemporaryDirectory(prefix="edgefit-nodemem-") as tmp:
        out = Path(tmp) / "node_stats.csv"
        so = ort.SessionOptions()
        so.graph_optimization_level = levels[opt_level]
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.enable_mem_pattern = MEM_PATTERN
        for key, value in session_config().items():
            so.add_session_config_entry(key, value)
        so.log_severity_level = 3
        so.add_session_config_entry("session.collect_node_memory_stats_to_file", str(out))
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        sess.run(None, dict(_inputs(Path(path))))
        del sess  # the record is written when the session ends
        if not out.is_file():
            raise OrtMemoryError("onnxruntime wrote no node memory record "
                                 "(session.collect_node_memory_stats_to_file)")
        return _read_node_stats(out)


def _read_node_stats(path: Path) -> list[NodeAllocation]:
    lines = [ln for ln in path.read_text().splitlines() if ln and not ln.startswith("#")]
    rows = []
    for name, inputs, inits, dynamic, temp in csv.reader(lines):
        rows.append(NodeAllocation(node=name.rsplit("_", 1)[0], input_bytes=int(inputs),
                                   initializer_bytes=int(inits), output_bytes=int(dynamic),
                                   temp_bytes=int(temp)))
    return rows


__all__ = ["METHOD", "NodeAllocation", "OrtMemory", "OrtMemoryError", "library_path",
           "measure_arena", "node_memory_stats"]
