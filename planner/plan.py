"""plan.json: the plan is data. An ordered map layer -> technique configs, versioned.

The planner writes it, the CLI prints it, the TUI edits it, executors consume it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from device_specs.budget import Limits
from edgefit_common.errors import PlanError, SpecError
from edgefit_common.fsutil import atomic_write_text, read_text
from edgefit_common.yamlio import describe
from techniques.distill import DistillConfig
from techniques.lowrank import LowRankConfig
from techniques.prune import ChannelPruneConfig, NMPruneConfig, UnstructuredPruneConfig
from techniques.quantize import QuantizeConfig
from techniques.share import WeightSharingConfig

# Every technique's frozen config, told apart by its `technique` field.
TechniqueConfig = Annotated[
    QuantizeConfig | UnstructuredPruneConfig | NMPruneConfig | ChannelPruneConfig
    | LowRankConfig | WeightSharingConfig,
    Field(discriminator="technique"),
]

PLAN_SCHEMA_VERSION = 2
"""2: the model's weights hash and the calibration data's hash are pinned (apply checks them)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Costs(_Strict):
    """Predicted costs of one layer (or the total). Units are in the names."""

    latency_ms: float
    flash_bytes: float
    energy_mj: float
    acc_loss: float = Field(description="accuracy-cost estimate; its unit is Plan.accuracy_unit")
    ram_bytes: float | None = Field(
        default=None, description="peak RAM: of the whole run (totals) or while the layer runs"
    )


class Alternative(_Strict):
    """One option the layer could take, with its predicted costs (what re-solving needs)."""

    option: str
    techniques: list[TechniqueConfig] = Field(default_factory=list)
    latency_ms: float
    flash_bytes: float
    energy_mj: float
    acc_loss: float
    act_bytes: float = Field(description="bytes per element of the activations this layer owns")
    in_act_bytes: float | None = Field(
        default=None, description="bytes per element of the model input when this (first) "
        "layer owns it (RAM steps name it `<layer>:input`); null: act_bytes")
    widths: dict[str, int] = Field(
        default_factory=dict, description="coupled channel group -> kept channels this option "
        "assumes (the group of its output channels and of its input channels); every layer of a "
        "group takes the same width")


class LayerPlan(_Strict):
    option: str | None = Field(description="the chosen option; null when the plan is infeasible")
    techniques: list[TechniqueConfig] = Field(
        default_factory=list, description="applied in this order; empty = left as fp32"
    )
    op_type: str
    op_class: str
    params: int
    macs: int
    predicted: Costs | None
    pinned: bool = False
    alternatives: list[Alternative] = Field(default_factory=list)

    @property
    def cost(self) -> Costs:
        """The predicted costs of the chosen option (only in a feasible plan)."""
        if self.predicted is None:
            raise PlanError("this layer has no chosen option (the plan is infeasible)")
        return self.predicted

    def alternative(self, option: str) -> Alternative:
        for alt in self.alternatives:
            if alt.option == option:
                return alt
        raise KeyError(option)


class RamStep(_Strict):
    """One execution step: the layer it is charged to and the tensors live while it runs."""

    owner: str
    live: list[tuple[str, int]] = Field(description="(owner layer of a live tensor, elements)")
    workspace: list[tuple[str, str, float]] = Field(
        default_factory=list, description="(layer, option, bytes) that option adds at this step "
        "beyond the live tensors: a dequantised fp32 weight copy, a conv working buffer "
        "(negative: a buffer its layout frees); options not listed add none")
    pairs: list[tuple[str, list[str], str, list[str], float]] = Field(
        default_factory=list, description="(layer a, its options, layer b, its options, bytes): "
        "bytes held at this step when both layers take one of their listed options at once (a "
        "precision-boundary copy: a float layer reading int8 codes reads an fp32 copy)")


class ChannelGroup(_Strict):
    """Layers sharing one set of channels, so they share one channel-pruning choice."""

    name: str
    channels: int = Field(description="channels before pruning")
    multiple: int = Field(description="kept counts are multiples of this (the profile's "
                          "preferred_channel_multiple), or the full count")
    widths: list[int] = Field(description="kept channel counts offered, ascending")
    layers: list[str] = Field(description="layers whose output channels these are")
    consumers: list[str] = Field(default_factory=list,
                                 description="layers whose input channels these are")


class ModelRef(_Strict):
    name: str
    kind: Literal["zoo", "pt2", "factory", "onnx"]
    path: str | None = None
    input_shape: list[int]
    origin: str = Field(description="where the model choice came from: flag, budget file, "
                        "edgefit.yaml, or the built-in default")
    weights_sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="the weights the plan was costed on: sha256 of "
        "the torch state_dict (names, dtypes, shapes, bytes; BatchNorm folded) or of the ONNX "
        "file; apply refuses other weights")


class TargetRef(_Strict):
    device: str
    profile: str
    spec_path: str | None = None


class SolverInfo(_Strict):
    backend: str
    status: str
    wall_time_s: float
    options_considered: int
    dominated_removed: int = Field(default=0, description="options presolve dropped")
    gap: float | None = Field(default=None, description="relative gap of the accuracy "
                              "objective (0 = proven optimal; null = unknown)")
    resolution: dict[str, float]


class Relaxation(_Strict):
    limit: str
    asked: float
    best_reachable: float | None


class Explanation(_Strict):
    relaxations: list[Relaxation]
    minimum: dict[str, float]
    joint_relaxation: dict[str, float] = Field(
        default_factory=dict, description="smallest joint loosening: limit -> amount to add")


class Plan(_Strict):
    schema_version: Literal[2] = 2  # PLAN_SCHEMA_VERSION
    edgefit_version: str
    model: ModelRef
    data: str | None
    calibration_sha256: str | None = Field(
        pattern=r"^[0-9a-f]{64}$", description="the calibration images and labels the "
        "accuracy costs were measured on (sha256; null: no data); apply refuses other data")
    target: TargetRef
    limits: Limits
    margin: float = 0.0
    status: str
    layers: dict[str, LayerPlan] = Field(description="ordered as the model executes")
    fixed: dict[str, float] = Field(description="runtime footprint: flash_bytes, ram_bytes")
    totals: Costs | None
    binding: list[str] = Field(default_factory=list)
    sensitivity: dict[str, float] = Field(
        default_factory=dict,
        description="binding limit -> accuracy cost if that limit were 10 % looser")
    solver: SolverInfo
    provenance: dict[str, str] = Field(
        description="for each cost: measured, calibrated (on what) or analytical/assumed"
    )
    accuracy_unit: str
    explanation: Explanation | None = None
    finetune: DistillConfig | None = Field(
        default=None, description="distillation after pruning, before quantisation (apply)")
    latency_band: float | None = Field(
        default=None, description="typical relative error of the latency model (null: unknown)")
    uncertainty: dict[str, str] = Field(
        default_factory=dict, description="per cost: how far the prediction is trusted, and why")
    ram_steps: list[RamStep] = Field(default_factory=list)
    weights_in_ram: bool = False
    channel_groups: list[ChannelGroup] = Field(
        default_factory=list, description="coupled channel groups (alternatives name them)")

    @property
    def feasible(self) -> bool:
        return self.status in ("OPTIMAL", "FEASIBLE")

    def options(self) -> dict[str, str]:
        return {name: layer.option for name, layer in self.layers.items()
                if layer.option is not None}

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    def save(self, path: Path) -> None:
        atomic_write_text(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path: Path) -> Plan:
        text = read_text(path, "plan file")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
        if not isinstance(data, dict):
            raise SpecError(f"{path}: a plan is a JSON object")
        version = data.get("schema_version")
        if isinstance(version, int) and 0 < version < PLAN_SCHEMA_VERSION:
            raise SpecError(f"{path}: schema_version {version} is an older plan format (it does "
                            "not pin the model's weights); re-plan with the same budget "
                            "(`plan --budget FILE` or the same flags) to write a version "
                            f"{PLAN_SCHEMA_VERSION} plan")
        if version not in (None, PLAN_SCHEMA_VERSION):
            raise SpecError(f"{path}: schema_version {version!r} is not "
                            f"supported (this edgefit reads {PLAN_SCHEMA_VERSION})")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise SpecError(describe(exc, path, None, cls)) from None
