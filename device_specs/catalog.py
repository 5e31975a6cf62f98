"""The device catalog: one YAML per board in device_specs/catalog/, plus `host` from a probe."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

from device_specs.schema import DeviceSpec
from edgefit_common.errors import UnknownTargetError, did_you_mean
from edgefit_common.fsutil import shown
from edgefit_common.yamlio import load_model

CATALOG_DIR = Path(__file__).parent / "catalog"


def catalog_files() -> list[Path]:
    return sorted(CATALOG_DIR.glob("*.yaml"))


SPEC_SUFFIXES = (".yaml", ".yml")


def catalog_names() -> list[str]:
    return sorted([p.stem for p in catalog_files()] + ["host"])


def is_catalog_name(target: str) -> bool:
    """A board of the catalog (or ``host``): exactly a file stem, so no path can pass as one."""
    return target == "host" or target in {p.stem for p in catalog_files()}


def target_relative_to(target: str, folder: Path) -> str:
    """A budget file's ``target:`` as load_spec reads it: a catalog name unchanged, a relative
    spec path (.yaml / .yml) made absolute from the budget file's own folder, not from the
    working directory."""
    if is_catalog_name(target) or Path(target).suffix.lower() not in SPEC_SUFFIXES:
        return target
    return os.path.abspath(os.path.join(folder, target))


@cache
def _load_file(path: Path) -> DeviceSpec:
    spec = load_model(path, DeviceSpec, "device spec")
    if path.parent == CATALOG_DIR and spec.name != path.stem:
        raise UnknownTargetError(
            f"{path}: name {spec.name!r} must equal the file name {path.stem!r}")
    return spec


def load_spec(target: str) -> DeviceSpec:
    """A catalog name (`jetson-nano`) or a path to a spec file (.yaml / .yml, a regular file;
    relative paths from the working directory: a budget file's are made absolute by
    `target_relative_to`). ``host`` is not a file but this machine, probed: the measuring
    layer resolves it (``cost_models.host_probe.target_spec``), this one refuses it."""
    if target == "host":
        raise UnknownTargetError("target 'host' is probed, not a catalog file: resolve it "
                                 "with cost_models.host_probe.target_spec")
    if is_catalog_name(target):
        return _load_file(CATALOG_DIR / f"{target}.yaml")
    if Path(target).suffix.lower() in SPEC_SUFFIXES:
        return _load_file(Path(os.path.abspath(target)))
    raise UnknownTargetError(
        f"unknown target '{shown(target)}'{did_you_mean(target, catalog_names())}; known "
        f"targets: {', '.join(catalog_names())} (or a path to a device spec .yaml / .yml file)"
    )
