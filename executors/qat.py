"""Quantisation-aware fine-tuning (QAT): the student's forward sees its planned quantisation.

:func:`quantization_aware` wraps a model in a :class:`QATView` whose forward computes every
quantised layer with its fake-quantised weights (the float *latent* weights stay the model's
parameters and are what the optimiser trains) and, for int8 / int16 / fp16 activations, with its
outputs fake-quantised (per-tensor integer scale calibrated before fine-tuning, as
:func:`techniques.fakequant.quantized_copy` calibrates it, and again after every epoch). Both use a
straight-through estimator: the forward value is exactly the quantised one, the backward passes the
gradient through unchanged (activations: only inside the integer range, the clipped STE of Jacob et
al. 2018).

The weight forward equals :func:`formats.quant_math.fake_quantize` (per output channel,
symmetric) bit for bit, so once fine-tuning ends the normal pipeline quantises the latent weights
to exactly the values QAT trained with. No module is changed (no parametrisation, no buffers):
state_dict and export are untouched; the view swaps the quantised weights in per call with
``torch.func.functional_call``. Asymmetric (uint) forms go through quant_math's numpy formula.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from edgefit_common.errors import PlanError
from formats import quant_math
from techniques.quantize import ACTIVATION_QMAX, ActivationFakeQuant

if TYPE_CHECKING:
    from techniques.quantize import QuantizeConfig

_MIN_SCALE = float(np.finfo(np.float32).tiny)  # quant_math's zero-channel guard
CALIBRATION_BATCH = 256  # the batch quantized_copy calibrates with (same maxima either way)


def weight_format(config: QuantizeConfig) -> tuple[int, bool]:
    """(bits, symmetric) of a config's weights: fp32 -> (32, True), fp16 -> (16, True),
    int4 -> (4, True), int4 with ``symmetric=False`` (stored as uint4) -> (4, False). The one
    place QAT reads a precision; it defers to quant_math's storage forms."""
    storage = config.storage  # PlanError for a form quant_math does not know
    if storage in ("fp32", "fp16"):
        return quant_math.BITS[storage], True
    fmt = quant_math.int_format(storage)
    if fmt is None:
        raise PlanError(f"weights {storage!r}: QAT knows fp32, fp16 and integer forms")
    return fmt


def quantises_activations(config: QuantizeConfig) -> bool:
    """The layer's outputs are rounded (fp16) or integer-coded (int8, int16) on the device."""
    return config.activations == "fp16" or config.activations in ACTIVATION_QMAX


def fake_quant_weight(w: torch.Tensor, bits: int, symmetric: bool = True) -> torch.Tensor:
    """The weight a layer computes with (no gradient): quant_math's per-output-channel formula
    in torch, bit for bit; fp16 rounds to nearest even; 32 bits returns ``w``."""
    if bits == 32:
        return w
    if bits == 16:
        return w.half().float()
    if not symmetric:
        return _asymmetric_reference(w, bits)
    flat = w.detach().reshape(w.shape[0], -1)
    qmax = quant_math.qmax_for_bits(bits)
    if flat.numel() == 0:
        return w.detach().clone()
    # scale = float32(max|w| / qmax), the division done in float64 and rounded once
    scale64 = flat.abs().amax(dim=1).double() / float(qmax)
    scale = torch.where(scale64 < _MIN_SCALE, torch.ones_like(scale64), scale64).float()
    scale = scale.unsqueeze(1)
    q = torch.clamp(torch.round(flat / scale), -qmax, qmax)
    # + 0.0 turns round()'s -0.0 into quant_math's +0.0 (integer code 0): equal bit patterns
    return (q * scale + 0.0).reshape(w.shape)


def _asymmetric_reference(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Asymmetric (uintN) weights through quant_math's own numpy formula (exact by
    construction; these are rare enough that the numpy round trip does not matter)."""
    flat = w.detach().reshape(w.shape[0], -1).cpu().numpy()
    out = quant_math.fake_quantize(flat, bits, symmetric=False)
    return torch.from_numpy(np.asarray(out, dtype=np.float32)).reshape(w.shape)


class _WeightSTE(torch.autograd.Function):
    """Forward: the fake-quantised weight; backward: the gradient unchanged."""

    @staticmethod
    def forward(ctx: Any, w: torch.Tensor, bits: int, symmetric: bool) -> torch.Tensor:
        return fake_quant_weight(w, bits, symmetric)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return grad, None, None


class _ActivationSTE(torch.autograd.Function):
    """Forward: ActivationFakeQuant's value; backward: the gradient inside the integer range
    (everywhere for fp16)."""

    @staticmethod
    def forward(ctx: Any, out: torch.Tensor, hook: ActivationFakeQuant) -> torch.Tensor:
        if hook.precision in ACTIVATION_QMAX:  # qmax * scale == the calibrated max
            ctx.save_for_backward(out.abs() <= max(hook.max_abs, 1e-12))  # not clipped
        else:
            ctx.save_for_backward(torch.ones((), dtype=torch.bool))
        return hook(None, None, out)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (inside,) = ctx.saved_tensors
        return grad * inside, None


class _ActivationHook:
    """Forward hook on a quantised module: records the calibration max, then fake-quantises
    (STE) -- only while its view runs, so the plain model stays a float model."""

    def __init__(self, view: QATView, precision: str) -> None:
        self.view = view
        self.quant = ActivationFakeQuant(precision)

    def __call__(self, module: Any, inputs: Any, output: Any) -> Any:
        if not self.view.running:
            return output
        if self.quant.calibrating:
            return self.quant(module, inputs, output)  # records max |output|, passes it on
        return _ActivationSTE.apply(output, self.quant)


class QATView(nn.Module):
    """``model`` computed with its planned quantisation; trains ``model``'s own parameters."""

    def __init__(self, model: nn.Module, quantized: Mapping[str, QuantizeConfig]) -> None:
        from techniques.lowrank import factor_modules

        super().__init__()
        self.model = model
        self.running = False
        modules = dict(model.named_modules())
        qualified = {id(m): n for n, m in modules.items()}
        self._quantized: dict[str, tuple[int, bool, bool]] = {}  # module -> bits, symmetric, bias
        self._act_hooks: list[_ActivationHook] = []
        self._handles: list[Any] = []
        for name, cfg in quantized.items():
            if name not in modules:
                raise PlanError(f"QAT: no layer {name!r} in the model")
            bits, symmetric = weight_format(cfg)
            for module in factor_modules(modules[name]):  # every factor, as quantized_copy
                if getattr(module, "weight", None) is None:
                    raise PlanError(f"QAT: layer {name!r} has no weight to quantise")
                self._quantized[qualified[id(module)]] = (bits, symmetric, bits == 16)
                if quantises_activations(cfg):
                    hook = _ActivationHook(self, cfg.activations)
                    self._handles.append(module.register_forward_hook(hook))
                    self._act_hooks.append(hook)

    @property
    def layers(self) -> list[str]:
        """Qualified names of the modules whose weights the view quantises."""
        return list(self._quantized)

    def quantized_parameters(self) -> dict[str, torch.Tensor]:
        """{parameter name: its forward value} for every quantised weight (and fp16 bias)."""
        modules = dict(self.model.named_modules())
        out: dict[str, torch.Tensor] = {}
        for name, (bits, symmetric, bias) in self._quantized.items():
            if bits == 32:
                continue
            prefix = f"{name}." if name else ""
            out[prefix + "weight"] = _WeightSTE.apply(modules[name].weight, bits, symmetric)
            b = getattr(modules[name], "bias", None)
            if bias and b is not None:
                out[prefix + "bias"] = _WeightSTE.apply(b, 16, True)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.running = True
        try:
            return torch.func.functional_call(self.model, self.quantized_parameters(), (x,),
                                              strict=False)
        finally:
            self.running = False

    def calibrate(self, x: np.ndarray) -> None:
        """Activation maxima on ``x`` with every weight quantised (what quantized_copy does)."""
        if not self._act_hooks:
            return
        if len(x) == 0:
            raise PlanError("QAT: int8 activations need calibration inputs, got none")
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            for i in range(0, len(x), CALIBRATION_BATCH):
                self(torch.from_numpy(np.ascontiguousarray(x[i : i + CALIBRATION_BATCH])))
        for hook in self._act_hooks:
            hook.quant.calibrating = False
        self.model.train(was_training)

    def recalibrate(self, x: np.ndarray) -> None:
        """Forget the activation maxima and calibrate again on ``x`` with the current weights:
        after an epoch the latent weights moved, and the export calibrates the fine-tuned
        model (quantize_static), so training keeps seeing the scales it will be shipped with."""
        for hook in self._act_hooks:
            hook.quant.max_abs, hook.quant.calibrating = 0.0, True
        self.calibrate(x)

    def activation_scales(self) -> list[float]:
        """The integer activation scales in use (max |x| / qmax), in hook order."""
        return [max(h.quant.max_abs, 1e-12) / ACTIVATION_QMAX[h.quant.precision]
                for h in self._act_hooks if h.quant.precision in ACTIVATION_QMAX]

    def remove(self) -> None:
        """Take the activation hooks off the model (the model is a float model again)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


@contextmanager
def quantization_aware(model: nn.Module, quantized: Mapping[str, QuantizeConfig],
                       calibration: np.ndarray) -> Iterator[QATView]:
    """A calibrated :class:`QATView` of ``model`` for the block; its hooks are gone after."""
    view = QATView(model, quantized)
    try:
        view.calibrate(calibration)
        yield view
    finally:
        view.remove()


def quantized_layers(techniques: Mapping[str, Any]) -> dict[str, QuantizeConfig]:
    """{layer: QuantizeConfig} of the layers a plan's techniques quantise (fp32 left out)."""
    from techniques.quantize import quantize_config

    out = {}
    for name, configs in techniques.items():
        cfg = quantize_config(configs)
        if cfg is not None and (cfg.weights != "fp32" or quantises_activations(cfg)):
            out[name] = cfg
    return out
