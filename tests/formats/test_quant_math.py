"""formats.quant_math: the one definition of the stored number formats."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from edgefit_common.errors import PlanError
from formats import quant_math as qm


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize(("shape", "axis"), [((16, 3, 3, 3), 0), ((32, 64), 0), ((64, 32), 1)])
def test_quantize_round_trip_and_error_bound(bits, shape, axis):
    w = (_rng(bits).standard_normal(shape) * 0.1).astype(np.float32)
    q, scales = qm.quantize_per_channel(w, bits, axis=axis)
    qmax = 2 ** (bits - 1) - 1
    assert q.dtype == np.int8 and q.shape == w.shape
    assert scales.dtype == np.float32 and scales.shape == (w.shape[axis],)
    assert q.min() >= -qmax and q.max() <= qmax
    # every channel uses its extreme code: scale = max|w| / qmax
    moved = np.moveaxis(np.abs(q), axis, 0).reshape(w.shape[axis], -1)
    assert (moved.max(axis=1) == qmax).all()
    absmax = np.moveaxis(np.abs(w), axis, 0).reshape(w.shape[axis], -1).max(axis=1)
    np.testing.assert_array_equal(scales, (absmax.astype(np.float64) / qmax).astype(np.float32))

    deq = qm.dequantize_per_channel(q, scales, axis=axis)
    assert deq.dtype == np.float32
    np.testing.assert_array_equal(deq, qm.fake_quantize(w, bits, axis=axis))
    shape_c = [1] * w.ndim
    shape_c[axis] = -1
    bound = scales.reshape(shape_c) / 2
    # |w - fake_quant(w)| <= scale/2, up to float32 rounding of w/scale and q*scale
    assert (np.abs(w - deq) <= bound * (1 + 1e-5)).all()
    # quantising the dequantised weights again is the identity (a fixed point)
    q2, s2 = qm.quantize_per_channel(deq, bits, axis=axis)
    np.testing.assert_array_equal(q2, q)
    np.testing.assert_array_equal(s2, scales)


def test_round_half_to_even():
    # channel max 127 -> scale exactly 1.0 for int8
    w = np.array([[127.0, 2.5, 3.5, -2.5, -3.5, 0.5, 1.5]], dtype=np.float32)
    q, s = qm.quantize_per_channel(w, 8)
    assert s.tolist() == [1.0]
    assert q.tolist() == [[127, 2, 4, -2, -4, 0, 2]]


def test_zero_channel_gets_scale_one_and_zero_codes():
    w = np.zeros((3, 4), dtype=np.float32)
    w[1] = [0.5, -1.0, 0.25, 0.0]
    q, s = qm.quantize_per_channel(w, 4)
    assert s[0] == 1.0 and s[2] == 1.0
    assert (q[0] == 0).all() and (q[2] == 0).all()
    assert s[1] == np.float32(1.0 / 7)
    np.testing.assert_array_equal(qm.fake_quantize(w, 4)[[0, 2]], 0.0)
    # a denormal-only channel is also treated as zero (no 1/tiny blow-up)
    tiny = np.full((1, 2), 1e-44, dtype=np.float32)
    q, s = qm.quantize_per_channel(tiny, 8)
    assert s.tolist() == [1.0] and q.tolist() == [[0, 0]]


def test_fp16_round_trip():
    w = np.array([1.0, 1.0 + 2**-11, 1.0 + 3 * 2**-11, 65504.0, 1e-8], dtype=np.float32)
    out = qm.to_fp16_and_back(w)
    assert out.dtype == np.float32
    assert out.tolist() == [1.0, 1.0, 1.0 + 2**-9, 65504.0, float(np.float16(1e-8))]
    np.testing.assert_array_equal(qm.apply_option(w, "fp16"), out)
    with pytest.raises(PlanError, match="float16 range"):
        qm.check_fp16_range(np.array([70000.0], dtype=np.float32))


def test_apply_option_matches_primitives():
    w = _rng(3).standard_normal((8, 5)).astype(np.float32)
    np.testing.assert_array_equal(qm.apply_option(w, "fp32"), w)
    np.testing.assert_array_equal(qm.apply_option(w, "int8"), qm.fake_quantize(w, 8))
    np.testing.assert_array_equal(qm.apply_option(w, "int4"), qm.fake_quantize(w, 4))
    b = w[:, 0]
    np.testing.assert_array_equal(qm.apply_bias_option(b, "int4"), b)
    np.testing.assert_array_equal(qm.apply_bias_option(b, "fp16"), qm.to_fp16_and_back(b))


@pytest.mark.parametrize("count", [0, 1, 2, 7, 15, 16, 101])
def test_pack_unpack_int4(count):
    q = _rng(count).integers(-7, 8, size=count).astype(np.int8)
    data = qm.pack_int4(q)
    assert len(data) == (count + 1) // 2 == qm.int4_packed_bytes(count)
    np.testing.assert_array_equal(qm.unpack_int4(data, count), q)


def test_pack_int4_layout_and_extremes():
    assert qm.pack_int4(np.array([1, -1])) == b"\xf1"  # low nibble first
    assert qm.pack_int4(np.array([7])) == b"\x07"  # odd count padded with a zero nibble
    assert qm.pack_int4(np.array([-7, 7])) == b"\x79"
    assert qm.pack_int4(np.array([-8, 0])) == b"\x08"
    ext = np.array([-7, 7, -7, 7, 0, -1, 1], dtype=np.int8)
    np.testing.assert_array_equal(qm.unpack_int4(qm.pack_int4(ext), ext.size), ext)
    full = np.arange(-8, 8, dtype=np.int8)
    np.testing.assert_array_equal(qm.unpack_int4(qm.pack_int4(full), 16), full)
    # 2-D input is flattened in C order
    np.testing.assert_array_equal(
        qm.unpack_int4(qm.pack_int4(full.reshape(4, 4)), 16).reshape(4, 4), full.reshape(4, 4)
    )


def test_int4_errors():
    with pytest.raises(PlanError, match=r"\[-8, 7\]"):
        qm.pack_int4(np.array([8]))
    with pytest.raises(PlanError, match="needed"):
        qm.unpack_int4(b"\x00", 3)


def test_stored_bytes():
    assert qm.stored_weight_bytes("int4", 101, 3) == 51 + 12
    assert qm.stored_weight_bytes("int8", 101, 3) == 101 + 12
    assert qm.stored_weight_bytes("fp16", 101, 3) == 202
    assert qm.stored_weight_bytes("fp32", 101, 3) == 404
    assert qm.stored_bias_bytes("fp16", 3) == 6
    for option in ("fp32", "int8", "int4"):
        assert qm.stored_bias_bytes(option, 3) == 12
    assert qm.stored_weight_bytes("int3", 101, 3) == 38 + 12  # ceil(303 / 8)
    assert qm.stored_weight_bytes("uint6", 101, 3) == 76 + 12 + 3  # + 18 zero-point bits
    assert qm.stored_weight_bytes("int2", 101, 3) == 26 + 12
    assert qm.BYTES_PER_WEIGHT["int4"] == 0.5 and qm.BYTES_PER_WEIGHT["int3"] == 0.375
    with pytest.raises(PlanError, match="allowed: fp32, fp16, int8, int6, int4, int3, int2"):
        qm.stored_weight_bytes("int5", 10, 1)
    with pytest.raises(PlanError, match="unknown option"):
        qm.stored_bias_bytes("bf16", 10)


def test_bad_inputs():
    with pytest.raises(PlanError, match="NaN"):
        qm.quantize_per_channel(np.array([[1.0, np.nan]], dtype=np.float32), 8)
    with pytest.raises(PlanError, match="bits"):
        qm.quantize_per_channel(np.ones((2, 2), dtype=np.float32), 9)
    with pytest.raises(PlanError, match="axis"):
        qm.quantize_per_channel(np.ones((2, 2), dtype=np.float32), 8, axis=2)
    with pytest.raises(PlanError, match="scales"):
        qm.dequantize_per_channel(np.ones((2, 2), dtype=np.int8), np.ones(3, dtype=np.float32))


def test_matches_onnxruntime_int8_weight_quantisation():
    """ORT's symmetric per-channel QInt8 weights == ours (same formula, same zero guard)."""
    from onnx import TensorProto
    from onnxruntime.quantization.quant_utils import quantize_data

    w = (_rng(7).standard_normal((6, 40)) * 0.05).astype(np.float32)
    w[2] = 0.0
    q, scales = qm.quantize_per_channel(w, 8)
    for c in range(w.shape[0]):
        zp, scale, q_ort = quantize_data(w[c], TensorProto.INT8, symmetric=True)
        assert int(zp) == 0
        assert np.float32(scale) == scales[c]
        np.testing.assert_array_equal(np.asarray(q_ort, dtype=np.int8), q[c])


def test_no_torch_import():
    code = "import sys, formats.quant_math; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@pytest.mark.parametrize("bits", qm.INT_BITS)
@pytest.mark.parametrize("signed", [True, False])
def test_pack_bits_round_trip(bits, signed):
    rng = np.random.default_rng(bits)
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1)) if signed else (0, 2**bits)
    q = rng.integers(lo, hi, size=37)
    data = qm.pack_bits(q, bits, signed)
    assert len(data) == qm.packed_bytes(37, bits) == -(-37 * bits // 8)
    np.testing.assert_array_equal(qm.unpack_bits(data, 37, bits, signed), q)


def test_pack_bits_layout_matches_int4_and_onnx_int2():
    q = np.array([1, -2, 3, -4, 0, 7, -8])
    assert qm.pack_bits(q, 4) == qm.pack_int4(q)
    # ONNX INT2: four values per byte, element 4k in bits 0-1
    assert qm.pack_bits(np.array([1, -1, 0, -2]), 2) == bytes([0b10_00_11_01])
    with pytest.raises(PlanError, match=r"uint3 values must lie in \[0, 7\]"):
        qm.pack_bits(np.array([8]), 3, signed=False)


@pytest.mark.parametrize("bits", qm.INT_BITS)
def test_symmetric_codes_in_range(bits):
    w = np.random.default_rng(0).normal(size=(6, 20)).astype(np.float32)
    codes = qm.quantize_option(w, f"int{bits}")
    assert np.abs(codes.q).max() == qm.qmax_for_bits(bits)  # each row's max hits qmax
    assert codes.zero_points is None
    err = np.abs(codes.dequantize() - w).max(axis=1)
    assert (err <= codes.scales / 2 + 1e-6).all()


@pytest.mark.parametrize("bits", qm.INT_BITS)
def test_asymmetric_codes(bits):
    rng = np.random.default_rng(1)
    w = np.concatenate([rng.uniform(0.1, 1.0, (3, 16)), rng.uniform(-2, 0.5, (3, 16)),
                        np.zeros((1, 16))]).astype(np.float32)
    w[1, 3] = 0.0
    codes = qm.quantize_option(w, f"uint{bits}")
    assert codes.q.dtype == np.uint8 and codes.q.max() <= 2**bits - 1
    deq = codes.dequantize()
    assert deq[1, 3] == 0.0 and (deq[-1] == 0).all()  # zero is exact; a zero row decodes to 0
    err = np.abs(deq - w).max(axis=1)
    assert (err <= codes.scales / 2 + 1e-6).all()
    # a one-signed channel uses every level: asymmetric beats symmetric there
    sym = qm.fake_quantize(w, bits)
    assert np.abs(deq[:3] - w[:3]).mean() < np.abs(sym[:3] - w[:3]).mean()


def test_asymmetric_matches_onnxruntime_dequantize():
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(2).normal(0.3, 1.0, (4, 9)).astype(np.float32)
    q, scales, zps = qm.quantize_asymmetric(w, 8)
    node = helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=0)
    graph = helper.make_graph([node], "g", [], [helper.make_tensor_value_info(
        "y", TensorProto.FLOAT, [4, 9])], [numpy_helper.from_array(q, "q"),
        numpy_helper.from_array(scales, "s"), numpy_helper.from_array(zps, "z")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    y = ort.InferenceSession(model.SerializeToString()).run(None, {})[0]
    np.testing.assert_array_equal(y, qm.dequantize_asymmetric(q, scales, zps))


def test_storage_option():
    assert qm.storage_option("int4") == "int4"
    assert qm.storage_option("int3", symmetric=False) == "uint3"
    assert qm.storage_option("fp16", symmetric=False) == "fp16"
    with pytest.raises(PlanError, match="unknown option"):
        qm.storage_option("int5")
