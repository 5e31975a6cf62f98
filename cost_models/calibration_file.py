"""The calibration file `edgefit calibrate` writes, ``<dir>/<device>.calibration.yaml``
(default dir: the edgefit cache): its schema (:class:`CalibrationResult`), writing it atomically
and reading it back, and applying it -- :func:`load_calibration`, :func:`apply_calibration`
(Profile), :func:`calibrated_spec` (DeviceSpec): what the planner uses.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field

from cost_models.fit import Params, apply_params
from device_specs.quantities import Strict
from device_specs.schema import DeviceSpec, Profile
from edgefit_common.errors import SpecError
from edgefit_common.fsutil import atomic_write_text
from edgefit_common.yamlio import check_format, validate

CALIBRATION_FORMAT = "edgefit-calibration"
CALIBRATION_FORMAT_VERSION = 1


class CalibratedKernel(Strict):
    macs_per_s: float = Field(gt=0)
    op_efficiency: dict[str, float] = Field(default_factory=dict)


class CalibratedParameters(Strict):
    fitted: list[str] = Field(description="free parameters; every other number is the spec's")
    kernels: dict[str, CalibratedKernel]
    layer_overhead_ms: float = Field(ge=0)
    memory_bandwidth_bytes_per_s: float = Field(gt=0)
    run_overhead_ms: float = Field(ge=0)


class MeasurePoint(Strict):
    file: str
    sha256: str
    model: str  # the model path the board measured
    graph: str  # the layer graph's model name
    model_bytes: int | None = None
    layers: int
    fitted_layers: int
    options: list[str]
    latency_median_ms: float
    cpu_model: str | None = None
    onnxruntime: str | None = None
    threads: int | None = None
    timestamp: str | None = None
    kind: Literal["edgefit-measure", "edgefit-timing"] = "edgefit-measure"
    machine: str | None = None  # platform.machine() of a measure file
    core: str | None = None
    board: str | None = None
    runtime: str | None = None  # a timing file's runtime (free text) and family
    runtime_family: str | None = None
    end_to_end_runs: int | None = None
    energy_mj: float | None = None  # recorded, not fitted
    machine_check: str | None = Field(default=None, description="match / unknown / mismatch "
                                      "(allowed) and why")


class LayerResidual(Strict):
    file: str
    layer: str
    op_class: str
    option: str
    macs: int
    measured_ms: float
    predicted_ms: float
    error: float
    fitted: bool


class EndToEndResidual(Strict):
    file: str
    measured_ms: float
    predicted_ms: float
    error: float
    catalog_predicted_ms: float | None = Field(default=None, description="the device spec's "
                                               "prediction before this calibration")
    fitted: bool = Field(default=True, description="false: a check on a point the fit did "
                         "not use")


class HeldOutFile(Strict):
    file: str
    layers: int
    layer_mape: float | None
    end_to_end_error: float | None
    note: str | None = None


class Residuals(Strict):
    layers: list[LayerResidual]
    end_to_end: list[EndToEndResidual]
    summary: dict[str, float | int | str | None]
    leave_one_file_out: list[HeldOutFile] = Field(default_factory=list)


class CalibrationResult(Strict):
    format: Literal["edgefit-calibration"] = "edgefit-calibration"
    format_version: Literal[1] = 1
    device: str
    profile: str
    created: str
    method: str
    message: str
    parameters: CalibratedParameters
    points: list[MeasurePoint]
    residuals: Residuals
    machine_warnings: list[str] = Field(
        default_factory=list, description="timings from another or an unidentified machine "
        "(calibrate --allow-other-machine, or a CPU it could not identify)")

    def params(self, profile: Profile) -> Params:
        base = Params.of_profile(profile)
        eff = {k: dict(v) for k, v in base.efficiency.items()}
        rates = dict(base.rates)
        for option, k in self.parameters.kernels.items():
            rates[option] = k.macs_per_s
            eff[option] = dict(k.op_efficiency)
        return Params(rates, eff, self.parameters.layer_overhead_ms,
                      self.parameters.memory_bandwidth_bytes_per_s,
                      self.parameters.run_overhead_ms)

    def provenance(self) -> str:
        text = self._fitted_on()
        if self.machine_warnings:
            text += ("; WARNING: timings from another or an unidentified machine ("
                     f"{self.machine_warnings[0]})")
        return text

    def _fitted_on(self) -> str:
        named = {f"{Path(p.file).name} sha256:{p.sha256[:12]}": None for p in self.points}
        files = ", ".join(named)  # a timing file with several models is listed once
        s = self.residuals.summary
        if "rate_scale" in self.parameters.fitted:
            loo = s.get("end_to_end_loo_mape")
            return (f"calibrated: one rate scale fitted on {len(self.points)} end-to-end "
                    f"timing{'s' if len(self.points) != 1 else ''} ({files}) on "
                    f"{self.created[:10]}; leave-one-out end-to-end MAPE "
                    + (f"{100 * float(loo):.1f} %" if isinstance(loo, float) else
                       "unknown (fewer than 2 points)"))
        mape = s.get("layer_mape")
        n = sum(p.fitted_layers for p in self.points)
        return (f"calibrated: fitted on {n} layers of {len(self.points)} measure file"
                f"{'s' if len(self.points) != 1 else ''} ({files}) on {self.created[:10]}; "
                f"layer MAPE {100 * float(mape):.1f} %" if isinstance(mape, float) else
                f"calibrated: fitted on {n} layers ({files})")


def calibration_path(device: str, directory: Path | None = None) -> Path:
    from edgefit_common.paths import cache_dir

    return (directory or cache_dir()) / f"{device}.calibration.yaml"


def save_calibration(result: CalibrationResult, path: Path) -> None:
    """Write atomically (temp file in the same directory + os.replace)."""
    text = ("# written by edgefit calibrate (cost_models/calibrate.py); do not edit by hand\n"
            + yaml.safe_dump(_plain(result.model_dump(mode="json")), sort_keys=False,
                             allow_unicode=True, width=100))
    atomic_write_text(path, text)


def _plain(obj: Any) -> Any:
    """JSON-mode dump with NaN turned into None (YAML readers differ on .nan)."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    return obj


def read_calibration(path: Path) -> CalibrationResult:
    from edgefit_common.yamlio import read_yaml

    data, root = read_yaml(path)
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping at the top level")
    check_format(data, path, CALIBRATION_FORMAT, CALIBRATION_FORMAT_VERSION,
                 "an edgefit calibration file")
    return validate(data, CalibrationResult, path=path, root=root)


def load_calibration(device: str, directory: Path | None = None) -> CalibrationResult | None:
    """The stored calibration of `device` (catalog name), or None when there is none."""
    path = calibration_path(device, directory)
    if not path.exists():
        return None
    return read_calibration(path)


def apply_calibration(profile: Profile, calibration: CalibrationResult) -> Profile:
    """`profile` with the calibrated kernel rates / efficiencies / overhead / bandwidth /
    run overhead; provenance `measured: calibrated: fitted on N layers of ... (files)`."""
    for option in calibration.parameters.kernels:
        if option not in profile.kernels:
            raise SpecError(f"calibration of {calibration.device}/{calibration.profile} has "
                            f"kernel {option!r}; this profile has {', '.join(profile.kernels)}")
    fitted = list(calibration.parameters.fitted)
    # kernels listed in the file are fitted even if `fitted` names them only via rate:
    for option in calibration.parameters.kernels:
        if f"rate:{option}" not in fitted:
            fitted.append(f"rate:{option}")
    return apply_params(profile, calibration.params(profile), fitted,
                        calibration.provenance(), "measured")


def calibrated_spec(spec: DeviceSpec, calibration: CalibrationResult) -> DeviceSpec:
    """`spec` with the calibrated profile swapped in (other profiles untouched)."""
    if calibration.device != spec.name:
        raise SpecError(f"calibration is for {calibration.device!r}, not {spec.name!r}")
    if calibration.profile not in spec.profiles:
        raise SpecError(f"calibration profile {calibration.profile!r} is not a profile of "
                        f"{spec.name}")
    profiles = dict(spec.profiles)
    profiles[calibration.profile] = apply_calibration(profiles[calibration.profile],
                                                      calibration)
    return spec.model_copy(update={"profiles": profiles})
