"""Fine-tuning after destructive stages: knowledge distillation against the uncompressed model,
optionally through the planned quantisation (QAT). The config is data (plan.json's
``finetune``); the training loop is :mod:`executors.distill`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class DistillConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    technique: Literal["distill"] = "distill"
    epochs: int = Field(default=3, ge=1, le=100)
    temperature: float = Field(default=4.0, gt=0)
    alpha: float = Field(default=0.7, ge=0, le=1)
    lr: float = Field(default=5e-4, gt=0)
    batch_size: int = Field(default=128, ge=1)
    patience: int = Field(default=2, ge=1, description="epochs without validation gain")
    validation_fraction: float = Field(default=0.1, gt=0, lt=0.5)
    centroid_lr: float = Field(default=1e-4, gt=0, description="step of a shared layer's "
                               "centroids per summed member gradient (Deep Compression's rule)")
    quantization_aware: bool = Field(
        default=False, description="quantisation-aware fine-tuning: the student's forward uses "
        "each quantised layer's fake-quantised weights (and int8 / int16 activations, scales "
        "calibrated before fine-tuning and after every epoch), gradients pass straight "
        "through to the float weights; apply then fine-tunes quantisation-only plans too")


__all__ = ["DistillConfig"]
