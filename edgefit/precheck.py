"""What `plan` checks before torch is imported, so a typo is answered in a second, not after
the 10-20 s torch and the model take to load: the target (a catalog name, with the closest
one when it is not, or a spec file that parses), its profile, the exclusions (precisions of
that profile, options of one, techniques), and that the model, weights and data files exist
and parse (workloads.file_checks: an .onnx's protobuf, a .pt2's archive, a state_dict's pickle
opcodes; an .npz's headers). Everything is checked again when it loads. Imports no torch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from device_specs.budget import Budget
from device_specs.schema import DeviceSpec
from edgefit_common.errors import SpecError, did_you_mean
from edgefit_common.fsutil import shown


@dataclass(frozen=True)
class Target:
    spec: DeviceSpec
    profile: str


def check_plan_inputs(budget: Budget, exclude: Sequence[str] = ()) -> Target:
    """The target and profile `budget` names (SpecError / UnknownTargetError / ModelLoadError /
    DataError for anything found wrong without loading a model)."""
    target = check_target(budget.target, budget.profile)
    check_exclusions(exclude, target)
    if budget.model is not None:
        from workloads.refs import check_model_ref

        check_model_ref(budget.model, budget.weights)
    if budget.data is not None:
        from workloads.data import check_dataset_ref

        check_dataset_ref(budget.data)
    return target


def check_target(name: str, profile: str | None) -> Target:
    """The device (a catalog name, `host` -- probed, cached -- or a spec file) and its
    profile: the one named, else the spec's default."""
    from cost_models.host_probe import target_spec  # torch-free (onnxruntime for `host`)

    spec = target_spec(name)
    chosen = profile or spec.default_profile
    if chosen not in spec.profiles:
        raise SpecError(f"profile {shown(chosen, 60)!r}{did_you_mean(chosen, spec.profiles)} is "
                        f"not a profile of {spec.name}; known: {', '.join(spec.profiles)}")
    return Target(spec, chosen)


def check_exclusions(names: Sequence[str], target: Target) -> None:
    """Every --exclude is a technique, a precision (kernel) of the profile, or an option whose
    name starts with one (int8+s50); the options a model really has are checked once it is
    captured (planner.resolve)."""
    from techniques.registry import REGISTRY

    kernels = list(target.spec.profile(target.profile).kernels)
    for name in names:
        if name in REGISTRY or name.split("+", 1)[0] in kernels:
            continue
        raise SpecError(f"--exclude {shown(name, 60)!r}{did_you_mean(name, [*kernels, *REGISTRY])}"
                        f": not a precision of {target.spec.name}/{target.profile} "
                        f"({', '.join(kernels)}), an option of one (e.g. {kernels[0]}+s50) or a "
                        f"technique ({', '.join(REGISTRY)})")
