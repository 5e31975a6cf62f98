"""plan.json: the plan is data. An ordered map layer -> technique configs, versioned.

The planner writes it, the CLI prints it, the TUI edits it, executors consume it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from device_specs.budget import Limits, Margin, Preprocess, input_shape_problem
from device_specs.fleet import Fleet
from edgefit_common import units
from edgefit_common.errors import PlanError, SpecError
from edgefit_common.fsutil import atomic_write_text, shown
from edgefit_common.jsonio import read_json
from edgefit_common.yamlio import describe
from techniques.distill import DistillConfig
from techniques.registry import TechniqueConfig
from techniques.student import StudentRecord

if TYPE_CHECKING:
    from planner.problem import LatencyPair

# Every technique's frozen config, told apart by its `technique` field.
PLAN_SCHEMA_VERSION = 3
"""2: the model's weights hash and the calibration data's hash are pinned (apply checks them).
3: every alternative names its kernel (an option is kernel + technique configs + widths; its
name is a key, never read back)."""

_OLDER = {1: "it does not pin the model's weights",
          2: "its options do not name their kernels"}

_REPLAN = ("re-plan with the same budget (`plan --budget FILE` or the same flags) to write a "
           f"version {PLAN_SCHEMA_VERSION} plan")


def _bounded(family: units.Family, *, signed: bool = False) -> AfterValidator:
    """A plan number in canonical units: finite, within the family's bounds (those of budget
    limits), and zero or more unless `signed`."""

    def check(value: float) -> float:
        if not signed and value < 0:
            raise ValueError(f"{value!r} must be zero or more")
        problem = units.range_problem(value, family, low=False)
        if problem is not None:
            raise ValueError(problem)
        return value

    return AfterValidator(check)


Millis = Annotated[float, _bounded(units.TIME)]
Bytes = Annotated[float, _bounded(units.BYTES)]
SignedBytes = Annotated[float, _bounded(units.BYTES, signed=True)]
MilliJoules = Annotated[float, _bounded(units.ENERGY)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
Count = Annotated[int, Field(ge=0)]


def _sample_shape(dims: list[int]) -> list[int]:
    """One sample's input shape within a budget's bounds (apply allocates it)."""
    problem = input_shape_problem(dims)
    if problem is not None:
        raise ValueError(problem)
    return dims


SampleShape = Annotated[list[int], AfterValidator(_sample_shape)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Costs(_Strict):
    """Predicted costs of one layer (or the total). Units are in the names."""

    latency_ms: Millis
    flash_bytes: Bytes
    energy_mj: MilliJoules
    acc_loss: Finite = Field(description="accuracy-cost estimate; its unit is Plan.accuracy_unit")
    ram_bytes: Bytes | None = Field(
        default=None, description="peak RAM: of the whole run (totals) or while the layer runs"
    )
    transfer_bytes: Bytes | None = Field(
        default=None, description="compressed bytes an update sends (null: no link planned)")


class Alternative(_Strict):
    """One option the layer could take, with its predicted costs (what re-solving needs). The
    option itself is its kernel, its technique configs and its widths; ``option`` is its name,
    a key (nothing reads it back)."""

    option: str
    kernel: str = Field(description="the device profile's kernel it runs on (its key)")
    techniques: list[TechniqueConfig] = Field(default_factory=list)
    latency_ms: Millis
    flash_bytes: Bytes
    energy_mj: MilliJoules
    acc_loss: Finite
    act_bytes: Bytes = Field(description="bytes per element of the activations this layer owns")
    in_act_bytes: Bytes | None = Field(
        default=None, description="bytes per element of the model input when this (first) "
        "layer owns it (RAM steps name it `<layer>:input`); null: act_bytes")
    widths: dict[str, Count] = Field(
        default_factory=dict, description="coupled channel group -> kept channels this option "
        "assumes (the group of its output channels and of its input channels); every layer of a "
        "group takes the same width")
    image_bytes: Bytes | None = Field(
        default=None, description="its bytes in edgefit's packed image (model.flash.bin) when "
        "flash_bytes count another file (model.tflite for a TFLite profile); null: flash_bytes")
    transfer_bytes: Bytes | None = Field(
        default=None, description="its share of the compressed artifact an update sends "
        "(Plan.delivery says how it was estimated); null: no link planned")


class LayerPlan(_Strict):
    option: str | None = Field(description="the chosen option; null when the plan is infeasible")
    techniques: list[TechniqueConfig] = Field(
        default_factory=list, description="applied in this order; empty = left as fp32"
    )
    op_type: str
    op_class: str
    params: Count
    macs: Count
    predicted: Costs | None
    pinned: bool = False
    alternatives: list[Alternative] = Field(default_factory=list)

    @property
    def kernel(self) -> str | None:
        """The chosen option's kernel (None: no choice, or no alternatives recorded)."""
        chosen = next((a for a in self.alternatives if a.option == self.option), None)
        return chosen.kernel if chosen is not None else None

    @property
    def cost(self) -> Costs:
        """The predicted costs of the chosen option (only in a feasible plan)."""
        if self.predicted is None:
            raise PlanError("this layer has no chosen option (the plan is infeasible)")
        return self.predicted

    @property
    def image_bytes(self) -> float:
        """The chosen option's bytes in model.flash.bin (its flash_bytes unless they count a
        .tflite)."""
        chosen = next((a for a in self.alternatives if a.option == self.option), None)
        if chosen is not None and chosen.image_bytes is not None:
            return chosen.image_bytes
        return self.cost.flash_bytes

    def alternative(self, option: str) -> Alternative:
        for alt in self.alternatives:
            if alt.option == option:
                return alt
        raise KeyError(option)


class RamStep(_Strict):
    """One execution step: the layer it is charged to and the tensors live while it runs."""

    owner: str
    live: list[tuple[str, Count]] = Field(description="(owner layer of a live tensor, elements)")
    workspace: list[tuple[str, str, SignedBytes]] = Field(
        default_factory=list, description="(layer, option, bytes) that option adds at this step "
        "beyond the live tensors: a dequantised fp32 weight copy, a conv working buffer "
        "(negative: a buffer its layout frees); options not listed add none")
    pairs: list[tuple[str, list[str], str, list[str], SignedBytes]] = Field(
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
    kind: Literal["zoo", "pt2", "factory", "onnx", "module"] = Field(
        description="module: a torch module handed to the Python API (apply it the same way)")
    path: str | None = None
    input_shape: SampleShape
    origin: str = Field(description="where the model choice came from: flag, budget file, "
                        "edgefit.yaml, or the built-in default")
    weights_sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="the weights the plan was costed on: sha256 of "
        "the torch state_dict (names, dtypes, shapes, bytes; BatchNorm folded) or of the ONNX "
        "file; apply refuses other weights")
    weights_path: str | None = Field(
        default=None, description="the state_dict file of a module:factory as given to plan "
        "(--weights): `apply --model FACTORY` reads it when no --weights is given (weights only, "
        "never code; weights_sha256 is checked); null: none was given")


class TargetRef(_Strict):
    device: str
    profile: str
    spec_path: str | None = None


class SolverInfo(_Strict):
    backend: str
    status: str
    wall_time_s: Finite
    options_considered: Count
    dominated_removed: int = Field(default=0, description="options presolve dropped")
    gap: Finite | None = Field(default=None, description="relative gap of the accuracy "
                              "objective (0 = proven optimal; null = unknown)")
    resolution: dict[str, Finite]
    exact_check: str = Field(default="", description="verified: the claim (optimal, "
                             "infeasible, within limits) holds for the unrounded costs; "
                             "downgraded: it held only for the solver's rounded costs, so "
                             "the status was lowered (see note); empty: not checked")
    note: str = Field(default="", description="why a claim was downgraded, what is unproven")


class Delivery(_Strict):
    """How the model reaches the device: A/B slots in flash and the link an update travels
    over (device_specs/links.yaml), as the plan was costed."""

    ab_slots: int = Field(default=1, ge=1, description="model images the flash holds at once")
    runtime_flash_bytes: Bytes = Field(
        description="flash outside the model image (the runtime): held once, whatever the slots")
    link: str | None = Field(default=None, description="the link's name; null: none planned")
    link_bytes_per_s: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = Field(
        default=None, description="artifact bytes delivered per second of wall time: "
        "throughput x duty cycle / (1 + overhead)")
    link_provenance: str = Field(default="", description="the link's numbers and sources")
    transfer: str = Field(default="", description="how transfer_bytes were obtained")
    link_overhead: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = Field(
        default=None, description="the update protocol's extra bytes per artifact byte (the "
        "link's overhead): billed bytes = transfer bytes x (1 + overhead)")
    fleet: Fleet | None = Field(default=None, description="fleet size, updates a month, the "
                                "data price and the cost limit (null: no fleet cost)")

    def cost_per_device_month(self, transfer_bytes: float) -> float | None:
        """The update data's cost per device per month (None: no price or no link)."""
        if self.fleet is None or self.link_overhead is None:
            return None
        return self.fleet.cost_per_device_month(transfer_bytes, self.link_overhead)

    def update_time_ms(self, transfer_bytes: float) -> float | None:
        if self.link_bytes_per_s is None:
            return None
        return transfer_bytes / self.link_bytes_per_s * 1e3

    def flash_with_slots(self, flash_bytes: float) -> float:
        """Total flash with every slot holding a model image as large as this plan's."""
        return self.runtime_flash_bytes + self.ab_slots * (flash_bytes - self.runtime_flash_bytes)


class Relaxation(_Strict):
    limit: str
    asked: Finite
    best_reachable: Finite | None
    status: str = Field(default="OPTIMAL", description="of the solve that found "
                        "best_reachable: OPTIMAL (proven), FEASIBLE, INFEASIBLE or UNKNOWN")


class Explanation(_Strict):
    relaxations: list[Relaxation]
    minimum: dict[str, Finite]
    joint_relaxation: dict[str, Finite] = Field(
        default_factory=dict, description="smallest joint loosening: limit -> amount to add")
    joint_relaxation_status: str = Field(default="", description="of the joint loosening's "
                                         "solve (UNKNOWN: it timed out)")


class Plan(_Strict):
    schema_version: Literal[3] = 3  # PLAN_SCHEMA_VERSION
    edgefit_version: str
    model: ModelRef
    data: str | None
    preprocess: Preprocess | None = Field(
        default=None, description="the model's input normalisation (mean/std per channel) "
        "applied to the data before every accuracy measurement; apply applies it too")
    calibration_sha256: str | None = Field(
        pattern=r"^[0-9a-f]{64}$", description="the calibration images and labels the "
        "accuracy costs were measured on (sha256; null: no data); apply refuses other data")
    target: TargetRef
    limits: Limits
    margin: Margin = 0.0
    status: str
    layers: dict[str, LayerPlan] = Field(description="ordered as the model executes")
    fixed: dict[str, Bytes] = Field(description="runtime footprint: flash_bytes, ram_bytes")
    totals: Costs | None
    binding: list[str] = Field(default_factory=list)
    binding_unknown: list[str] = Field(
        default_factory=list, description="limits whose 10 %-looser re-solve timed out "
        "without a better plan or a proof: neither binding nor not binding")
    sensitivity: dict[str, Finite] = Field(
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
    student: StudentRecord | None = Field(
        default=None, description="the layers are a smaller student's, distilled from the fp32 "
        "model (`model`, the teacher) before its per-layer options are applied (plan "
        "--student); null: the model itself is planned. Optional, so version 3 still reads: an "
        "older edgefit refuses a plan with a student (an unknown field) rather than ignore it")
    latency_band: Finite | None = Field(
        default=None, description="typical relative error of the latency model (null: unknown)")
    latency_backed: bool | None = Field(
        default=None, description="a published measurement of this board and runtime backs the "
        "latency model (false: its parameters are assumed, clock-scaled or borrowed from "
        "another runtime; null: not judged)")
    uncertainty: dict[str, str] = Field(
        default_factory=dict, description="per cost: how far the prediction is trusted, and why")
    ram_steps: list[RamStep] = Field(default_factory=list)
    weights_in_ram: bool = False
    boundaries: list[tuple[str, list[str], str, list[str], Millis, MilliJoules]] = Field(
        default_factory=list, description="precision boundaries: (producer layer, its options, "
        "reader layer, its options, latency_ms, energy_mj) added to the totals when both layers "
        "take one of their listed options at once (an int8 layer reading a float tensor runs "
        "a QuantizeLinear first; a float layer reading int8 codes a DequantizeLinear)")
    channel_groups: list[ChannelGroup] = Field(
        default_factory=list, description="coupled channel groups (alternatives name them)")
    excluded: list[str] = Field(
        default_factory=list, description="options, kernels or techniques no layer may take "
        "(plan --exclude, resolve --exclude, the review TUI); every re-solve keeps them")
    delivery: Delivery | None = Field(
        default=None, description="A/B slots and the update link (null: one slot, no link)")
    labels: bool = Field(
        default=True, description="the data holds labels (false: inputs only; apply reports "
        "fidelity to the fp32 model's outputs instead of accuracy, issue #21)")
    metric: str | None = Field(
        default=None, description="the user metric apply scores with, metric(labels, outputs) "
        "-> float, higher is better: module:function (imported only when a command line or "
        "the Python API names it again; null: top-1 accuracy)")
    # the metric's callable when the Python API made the plan (never serialised)
    _metric_fn: Any = PrivateAttr(default=None)

    @property
    def feasible(self) -> bool:
        return self.status in ("OPTIMAL", "FEASIBLE")

    def options(self) -> dict[str, str]:
        return {name: layer.option for name, layer in self.layers.items()
                if layer.option is not None}

    def latency_pairs(self) -> tuple[LatencyPair, ...]:
        """planner.Problem.latency_pairs from `boundaries`."""
        from planner.problem import LatencyPair

        return tuple(LatencyPair(a, tuple(ao), b, tuple(bo), ms, mj)
                     for a, ao, b, bo, ms, mj in self.boundaries)

    def boundary_ms_by_reader(self) -> dict[str, float]:
        """Reader layer -> the latency of the precision boundaries its chosen option and its
        producer's cross (in the totals, not in either layer's own latency)."""
        from planner.problem import crossed

        return crossed(self.latency_pairs(), self.options())

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    def save(self, path: Path) -> None:
        atomic_write_text(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path: Path) -> Plan:
        """A plan file, checked: read by the one safe JSON reader, `schema_version` present and
        current, the schema, and every chosen option one of its layer's alternatives. Each
        problem is one line naming the file (a SpecError)."""
        data = read_json(path, "plan file")
        if not isinstance(data, dict):
            raise SpecError(f"{shown(path)}: a plan is a JSON object")
        _check_version(data, path)
        try:
            plan = cls.model_validate(data)
        except ValidationError as exc:
            raise SpecError(describe(exc, shown(path), None, cls)) from None
        plan.check_options(path)
        plan.check_references(path)
        return plan

    def check_references(self, path: Path | str) -> None:
        """Every layer a RAM step, a workspace or pair term or a channel group names is one of
        the plan's layers (a hand-edited plan would otherwise fail deep in the solver)."""
        from planner.problem import owner_layer

        named: list[tuple[str, str]] = []
        for i, step in enumerate(self.ram_steps):
            named.append((f"ram_steps[{i}].owner", step.owner))
            named += [(f"ram_steps[{i}].live", owner_layer(o)) for o, _ in step.live]
            named += [(f"ram_steps[{i}].workspace", ly) for ly, _, _ in step.workspace]
            named += [(f"ram_steps[{i}].pairs", ly) for a, _, b, _, _ in step.pairs
                      for ly in (a, b)]
        named += [(f"boundaries[{i}]", ly) for i, (a, _, b, _, _, _) in
                  enumerate(self.boundaries) for ly in (a, b)]
        for i, group in enumerate(self.channel_groups):
            named += [(f"channel_groups[{i}]", ly) for ly in (*group.layers, *group.consumers)]
        for where, layer in named:
            if layer not in self.layers:
                raise SpecError(f"{shown(path)}: {where} names layer {shown(layer, 60)!r}, "
                                "which is not one of the plan's layers")

    def check_options(self, path: Path | str) -> None:
        """Every layer's chosen option is one of its alternatives (when it lists them)."""
        for name, layer in self.layers.items():
            offered = [alt.option for alt in layer.alternatives]
            if layer.option is not None and offered and layer.option not in offered:
                listed = ", ".join(offered[:8]) + (", ..." if len(offered) > 8 else "")
                raise SpecError(f"{shown(path)}: layers.{shown(name, 60)}.option "
                                f"{shown(layer.option, 60)!r} is not one of the layer's "
                                f"alternatives ({listed})")


def _check_version(data: dict[str, Any], path: Path) -> None:
    version = data.get("schema_version")
    if version is None:
        raise SpecError(f"{shown(path)}: schema_version is missing (a plan names its format); "
                        f"{_REPLAN}")
    if isinstance(version, int) and not isinstance(version, bool) \
            and 0 < version < PLAN_SCHEMA_VERSION:
        raise SpecError(f"{shown(path)}: schema_version {version} is an older plan format "
                        f"({_OLDER.get(version, 'older')}); {_REPLAN}")
    if version != PLAN_SCHEMA_VERSION or isinstance(version, bool):
        raise SpecError(f"{shown(path)}: schema_version {shown(repr(version), 40)} is not "
                        f"supported (this edgefit reads {PLAN_SCHEMA_VERSION})")
