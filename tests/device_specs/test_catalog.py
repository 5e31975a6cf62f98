"""Every catalog file loads strictly, every number carries exactly one provenance, and every
cited source key is listed in the file's `sources:` mapping."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from device_specs.catalog import catalog_files, catalog_names, load_spec
from device_specs.quantities import PROVENANCE_KEYS, Sourced
from device_specs.schema import DeviceSpec
from edgefit_common.errors import SpecError

CATALOG = catalog_files()
REQUIRED = {
    "jetson-nano",
    "jetson-orin-nano",
    "raspberry-pi-4",
    "raspberry-pi-5",
    "coral-dev-board",
    "arduino-nano-33-ble",
    "stm32f746-disco",
    "esp32-s3",
}
# A source key as written in devices.md: S-DEB, S-RP4c, S-TINY-SYS, ...
# (not preceded by a word character or "-", so "YOLOX-S-Leaky" is not a key).
KEY_RE = re.compile(r"(?<![\w-])S-[A-Z][A-Za-z0-9]*(?:-[A-Z][A-Za-z0-9]*)*")


def walk_sourced(obj: Any, where: str = "") -> Iterator[tuple[str, Sourced]]:
    """Every `Sourced` number inside `obj` (models, dicts, lists), with its dotted location."""
    if isinstance(obj, Sourced):
        yield where, obj
    elif isinstance(obj, BaseModel):
        for name in type(obj).model_fields:
            yield from walk_sourced(getattr(obj, name), f"{where}.{name}" if where else name)
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from walk_sourced(value, f"{where}.{key}")
    elif isinstance(obj, list | tuple):
        for i, value in enumerate(obj):
            yield from walk_sourced(value, f"{where}[{i}]")


def cited_texts(spec: DeviceSpec) -> Iterator[str]:
    """All free text that may cite a source key: provenance strings, notes, descriptions."""
    for _, number in walk_sourced(spec):
        for key in PROVENANCE_KEYS:
            if getattr(number, key):
                yield getattr(number, key)
    if spec.notes:
        yield spec.notes
    for profile in spec.profiles.values():
        yield profile.description
        for kernel in profile.kernels.values():
            if kernel.note:
                yield kernel.note


@pytest.fixture(params=CATALOG, ids=[p.stem for p in CATALOG])
def spec(request: pytest.FixtureRequest) -> DeviceSpec:
    return load_spec(request.param.stem)


def test_catalog_is_not_empty() -> None:
    assert CATALOG, "no device_specs/catalog/*.yaml files found"


def test_catalog_contains_required_boards() -> None:
    missing = REQUIRED - set(catalog_names())
    assert not missing, f"catalog is missing {sorted(missing)}"


def test_every_number_has_exactly_one_provenance(spec: DeviceSpec) -> None:
    numbers = list(walk_sourced(spec))
    assert numbers, f"{spec.name}: no numbers found"
    for where, number in numbers:
        given = [k for k in PROVENANCE_KEYS if getattr(number, k) not in (None, "")]
        assert len(given) == 1, f"{spec.name}: {where} has provenance {given}"


def test_every_source_value_starts_with_a_listed_key(spec: DeviceSpec) -> None:
    for where, number in walk_sourced(spec):
        if number.source is None:
            continue
        key = re.split(r"[\s(,;:]", number.source.strip(), maxsplit=1)[0]
        assert key.startswith("S-"), f"{spec.name}: {where}: source {number.source!r} is not a key"
        assert key in spec.sources, (
            f"{spec.name}: {where}: source key {key!r} is not in sources: {sorted(spec.sources)}"
        )


def test_every_cited_key_is_listed_and_every_listed_key_is_cited(spec: DeviceSpec) -> None:
    cited = {key for text in cited_texts(spec) for key in KEY_RE.findall(text)}
    unlisted = cited - set(spec.sources)
    assert not unlisted, f"{spec.name}: cites {sorted(unlisted)} but sources lacks them"
    uncited = set(spec.sources) - cited
    assert not uncited, f"{spec.name}: sources lists {sorted(uncited)} but nothing cites them"
    for key, where in spec.sources.items():
        assert where.strip(), f"{spec.name}: sources.{key} is empty"


def test_kernel_keys_are_precision_options(spec: DeviceSpec) -> None:
    for pname, profile in spec.profiles.items():
        for option, kernel in profile.kernels.items():
            assert option in {"fp32", "fp16", "int8", "int4"}, f"{spec.name}.{pname}: {option}"
            assert kernel.weights == option, f"{spec.name}.{pname}.{option}: {kernel.weights}"


# --- capability facts, as data ---------------------------------------------------------------


def test_jetson_nano_default_profile_has_no_int8() -> None:
    spec = load_spec("jetson-nano")
    kernels = spec.profile().kernels
    assert "int8" not in kernels
    assert not any("int8" in (k.weights, k.activations) for k in kernels.values())


def test_coral_edgetpu_is_int8_only() -> None:
    spec = load_spec("coral-dev-board")
    kernels = spec.profiles["edgetpu"].kernels
    assert set(kernels) == {"int8"}
    assert (kernels["int8"].weights, kernels["int8"].activations) == ("int8", "int8")
    assert spec.profiles["edgetpu"].processor == "npu"


def test_mcus_execute_weights_from_flash() -> None:
    mcus = [s for s in (load_spec(p.stem) for p in CATALOG) if s.kind == "mcu"]
    assert {"arduino-nano-33-ble", "stm32f746-disco", "esp32-s3"} <= {s.name for s in mcus}
    for spec in mcus:
        for pname, profile in spec.profiles.items():
            assert profile.weights_in_ram is False, f"{spec.name}.{pname}: weights_in_ram"


# --- strictness --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("after", "indent", "field"),
    [
        ("name: jetson-nano", "", "board_colour"),
        ("  tensorrt-gpu:", "    ", "profiles.tensorrt-gpu.turbo"),
        ("      fp16:", "        ", "profiles.tensorrt-gpu.kernels.fp16.sparsity"),
    ],
    ids=["top-level", "profile", "kernel"],
)
def test_unknown_field_is_rejected_with_file_line_and_field(
    tmp_path: Path, after: str, indent: str, field: str
) -> None:
    original = (Path(catalog_files()[0]).parent / "jetson-nano.yaml").read_text(encoding="utf-8")
    lines = original.splitlines(keepends=True)
    index = next(i for i, line in enumerate(lines) if line.rstrip("\n") == after)
    extra_key = field.rsplit(".", 1)[-1]
    lines.insert(index + 1, f"{indent}{extra_key}: 1\n")
    bad_line = index + 2  # 1-based line of the inserted key
    path = tmp_path / "modified-spec.yaml"
    path.write_text("".join(lines), encoding="utf-8")

    with pytest.raises(SpecError) as info:
        load_spec(str(path))
    message = str(info.value)
    assert "modified-spec.yaml" in message
    assert f":{bad_line}:" in message, message
    assert field in message, message
    assert "unknown field" in message, message
