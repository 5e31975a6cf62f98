"""The device catalog: one YAML per board in device_specs/catalog/, plus `host` from a probe."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from device_specs.schema import DeviceSpec
from edgefit_common.errors import UnknownTargetError
from edgefit_common.yamlio import load_model

CATALOG_DIR = Path(__file__).parent / "catalog"


def catalog_files() -> list[Path]:
    return sorted(CATALOG_DIR.glob("*.yaml"))


def catalog_names() -> list[str]:
    return sorted([p.stem for p in catalog_files()] + ["host"])


@cache
def _load_file(path: Path) -> DeviceSpec:
    spec = load_model(path, DeviceSpec)
    if path.parent == CATALOG_DIR and spec.name != path.stem:
        raise UnknownTargetError(
            f"{path}: name {spec.name!r} must equal the file name {path.stem!r}")
    return spec


def load_spec(target: str) -> DeviceSpec:
    """A catalog name (`jetson-nano`) or a path to a spec YAML file. ``host`` is not a file
    but this machine, probed: the measuring layer resolves it
    (``cost_models.host_probe.target_spec``), this one refuses it."""
    if target == "host":
        raise UnknownTargetError("target 'host' is probed, not a catalog file: resolve it "
                                 "with cost_models.host_probe.target_spec")
    path = CATALOG_DIR / f"{target}.yaml"
    if path.exists():
        return _load_file(path)
    candidate = Path(target)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        return _load_file(candidate.resolve())
    raise UnknownTargetError(
        f"unknown target {target!r}; known targets: {', '.join(catalog_names())} "
        "(or a path to a device spec .yaml)"
    )
