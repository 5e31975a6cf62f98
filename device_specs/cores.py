"""Processor cores as data (device_specs/cores.yaml): the features of each `Core` a device spec
names, every flag with its provenance."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Literal, get_args

from device_specs.quantities import Count, Strict
from device_specs.schema import Core, Flag
from edgefit_common.errors import SpecError
from edgefit_common.yamlio import load_model

CORES_FILE = Path(__file__).with_name("cores.yaml")


class CoreSpec(Strict):
    isa: str
    dsp: Flag
    simd: Flag
    helium: Flag
    fpu: Flag
    dual_issue: Flag
    pointer_bytes: Count  # sizeof(void *) in firmware built for it: TFLM's structs scale with it


class CoresFile(Strict):
    format: Literal["edgefit-cores"]
    format_version: Literal[1]
    cores: dict[Core, CoreSpec]
    sources: dict[str, str]


@cache
def load_cores(path: Path = CORES_FILE) -> CoresFile:
    data = load_model(path, CoresFile, "cores file")
    missing = sorted(set(get_args(Core)) - set(data.cores))
    if missing:
        raise SpecError(f"{path}: no entry for core(s) {', '.join(missing)}")
    return data


def core_spec(core: Core) -> CoreSpec:
    return load_cores().cores[core]
