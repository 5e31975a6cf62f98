"""Technique: knowledge distillation — fine-tune the compressed student against the
uncompressed teacher after a destructive stage (pruning), keeping what earlier stages fixed.

Loss = alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * CE(labels);
label-free data (inputs only) trains on the teacher's outputs alone (alpha = 1: distillation
from the fp32 model, no label term) and reports top-1 agreement with the teacher as its
validation "accuracy",
early stopping on the validation split's distillation loss (KL to the teacher: continuous, so
it sees progress that accuracy on a small split would not). Zeros that pruning made stay zero
(re-applied after every optimiser step), so fine-tuning never silently undoes the pruning;
weight-shared layers stay on their codebook (techniques.share.keep_shared: the centroids move by
their members' summed gradients, the weights are written back from them after every step).

With ``quantization_aware`` the student is trained *through* its planned quantisation
(executors.qat): every quantised layer's forward uses its fake-quantised weights and, for integer
activations, outputs fake-quantised with scales calibrated before fine-tuning and after every
epoch; gradients pass straight through to the float weights, which the normal pipeline then
quantises to exactly the values trained with. Validation KL and accuracy are then the quantised
student's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edgefit_common.progress import track
from techniques.distill import DistillConfig

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from techniques.quantize import QuantizeConfig
    from techniques.share import KeepShared
    from workloads.data import Dataset


@dataclass(frozen=True)
class DistillReport:
    epochs_run: int
    best_epoch: int
    val_accuracy_before: float
    val_accuracy_after: float
    val_kl_before: float  # KL(teacher || student) on the validation split
    val_kl_after: float
    train_loss_first: float
    train_loss_last: float
    zeros_kept: bool
    codebook_kept: bool | None = None  # shared layers still on their codebook (None: none)
    # QAT ran: the training forward, validation KL and accuracy are the quantised student's
    quantization_aware: bool = False


def distill(student: nn.Module, teacher: nn.Module, data: Dataset, config: DistillConfig,
            seed: int = 0, shared: Sequence[str] = (),
            quantized: Mapping[str, QuantizeConfig] | None = None,
            calibration: np.ndarray | None = None) -> tuple[nn.Module, DistillReport]:
    """Fine-tune `student` in place against `teacher` on `data` (the training split).
    ``shared``: module names of weight-shared layers, kept on their codebooks.
    ``quantized``: {layer: its QuantizeConfig}, trained through when
    ``config.quantization_aware`` (QAT runs only if some layer is quantised);
    ``calibration``: inputs for the integer activation scales (default: the first 512 training
    images)."""
    from contextlib import nullcontext

    import torch

    from executors.qat import quantization_aware
    from workloads.data import split

    torch.manual_seed(seed)
    torch.set_flush_denormal(True)  # pruned weights make denormals; they slow training a lot
    train, val = split(data, config.validation_fraction, seed)
    if not getattr(data, "labelled", True):  # inputs only: the teacher's outputs are the target
        config = config.model_copy(update={"alpha": 1.0})
    teacher = teacher.eval()
    qat = bool(config.quantization_aware and quantized)
    calib = train.x[:512] if calibration is None else calibration
    with (quantization_aware(student, quantized or {}, calib) if qat
          else nullcontext()) as view:
        return _fit(student, teacher, train, val, config, seed, shared,
                    student if view is None else view, calib)


def _fit(student: nn.Module, teacher: nn.Module, train: Dataset, val: Dataset,
         config: DistillConfig, seed: int, shared: Sequence[str],
         net: nn.Module, calib: np.ndarray | None = None) -> tuple[nn.Module, DistillReport]:
    """The training loop; ``net`` computes the student's outputs (a QAT view or itself; its
    activation scales are recalibrated on ``calib`` after every epoch)."""
    import copy

    import numpy as np
    import torch
    from torch import nn

    from executors.qat import QATView
    from techniques.prune import keep_zeros
    from techniques.share import keep_shared
    from workloads.train import evaluate as top1

    def evaluate(model: nn.Module, ds: Dataset) -> float:
        """Top-1 accuracy; without labels, top-1 agreement with the teacher."""
        if ds.labelled:
            return top1(model, ds)
        return agreement(model, teacher, ds.x)

    mask = keep_zeros(student)
    opt = torch.optim.AdamW(student.parameters(), lr=config.lr, weight_decay=0.0)
    mask.attach(opt)
    # registered after the zeros: it rewrites the whole weight from the centroids (zeros stay 0)
    codebooks = keep_shared(student, shared, lr=config.centroid_lr) if shared else None
    if codebooks is not None:
        codebooks.attach(opt)
    rng = np.random.default_rng(seed)
    t = config.temperature

    def val_kl() -> float:
        net.eval()
        return output_kl(net, teacher, val.x)

    before = evaluate(net, val)
    best, best_epoch, best_state = val_kl(), 0, copy.deepcopy(student.state_dict())
    kl_before = best
    losses: list[float] = []
    epochs_run = 0
    for epoch in track(range(1, config.epochs + 1), "fine-tuning epochs"):
        net.train()
        order = rng.permutation(len(train.y))
        total = 0.0
        for i in track(range(0, len(order), config.batch_size), f"epoch {epoch} batches"):
            idx = order[i : i + config.batch_size]
            x = torch.from_numpy(train.x[idx])
            y = torch.from_numpy(train.y[idx])
            with torch.no_grad():
                soft = nn.functional.log_softmax(teacher(x) / t, dim=1)
            logits = net(x)
            kd = nn.functional.kl_div(nn.functional.log_softmax(logits / t, dim=1), soft,
                                      log_target=True, reduction="batchmean") * t * t
            loss = config.alpha * kd + (1 - config.alpha) * nn.functional.cross_entropy(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        losses.append(total / len(order))
        epochs_run = epoch
        if calib is not None and isinstance(net, QATView):
            net.recalibrate(calib)
        kl = val_kl()
        if kl < best:
            best, best_epoch, best_state = kl, epoch, copy.deepcopy(student.state_dict())
        elif epoch - best_epoch >= config.patience:
            break
    student.load_state_dict(best_state)
    if calib is not None and isinstance(net, QATView):
        net.recalibrate(calib)  # the kept weights' scales, as the export will calibrate them
    student.eval()
    return student, DistillReport(epochs_run, best_epoch, before, evaluate(net, val),
                                  kl_before, best, losses[0], losses[-1], mask.holds(),
                                  None if codebooks is None else
                                  _on_codebooks(student, codebooks.layers, codebooks),
                                  net is not student)


def agreement(model: nn.Module, teacher: nn.Module, x: np.ndarray) -> float:
    """Share of inputs on which `model`'s top class is `teacher`'s."""
    import torch

    model.eval()
    with torch.no_grad():
        same = sum(int((model(torch.from_numpy(x[i:i + 256])).argmax(1)
                        == teacher(torch.from_numpy(x[i:i + 256])).argmax(1)).sum())
                   for i in range(0, len(x), 256))
    return same / max(1, len(x))


def output_kl(model: nn.Module, teacher: nn.Module, x: np.ndarray) -> float:
    """Mean KL(teacher || model) of the output distributions on inputs ``x`` (nats)."""
    import torch
    from torch import nn

    with torch.no_grad():
        t = torch.from_numpy(x)
        return float(nn.functional.kl_div(nn.functional.log_softmax(model(t), dim=1),
                                          nn.functional.log_softmax(teacher(t), dim=1),
                                          log_target=True, reduction="batchmean"))


def _on_codebooks(model: nn.Module, layers: Sequence[str], codebooks: KeepShared) -> bool:
    """Every shared layer holds at most as many distinct nonzero values as its codebook (read
    from the weights; the best epoch's weights are restored, which may predate the last
    centroid step, so this is checked on the weights, not against the centroids)."""
    import torch

    modules = dict(model.named_modules())
    for name in layers:
        w = modules[name].weight.detach()  # type: ignore[union-attr]
        if torch.unique(w[w != 0]).numel() > codebooks.codebook(name).size:
            return False
    return True
