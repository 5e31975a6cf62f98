"""Cores as data: every `Core` has its features with provenance, every catalog MCU names one,
and an MCU spec without `core:` is refused."""

from __future__ import annotations

from typing import get_args

import pytest
import yaml

from device_specs.catalog import CATALOG_DIR, catalog_files, load_spec
from device_specs.cores import core_spec, load_cores
from device_specs.schema import Core, DeviceSpec
from edgefit_common.errors import SpecError


def test_every_core_of_the_enum_has_an_entry_and_cited_keys_are_listed() -> None:
    cores = load_cores()
    assert set(cores.cores) == set(get_args(Core))
    for name, spec in cores.cores.items():
        for feature in ("dsp", "simd", "helium", "fpu", "dual_issue"):
            flag = getattr(spec, feature)
            for key in ("S-CMSIS", "S-N33b", "S-H743a", "S-ESP1", "S-ESP2", "S-JN2"):
                if key in flag.provenance:
                    assert key in cores.sources, (name, feature, key)


def test_features_that_set_kernel_paths() -> None:
    assert not core_spec("cortex-m0plus").dsp.value  # CMSIS-NN's plain C path
    assert core_spec("cortex-m4").dsp.value and not core_spec("cortex-m4").helium.value
    assert core_spec("cortex-m55").helium.value and core_spec("cortex-m85").helium.value


def test_every_catalog_mcu_names_a_core_and_its_profiles_a_runtime_family() -> None:
    for path in catalog_files():
        spec = load_spec(path.stem)
        if spec.kind == "mcu":
            assert spec.core is not None, path.stem
            assert all(p.runtime_family for p in spec.profiles.values()), path.stem


def test_an_mcu_without_core_is_refused() -> None:
    doc = yaml.safe_load((CATALOG_DIR / "stm32f746-disco.yaml").read_text())
    del doc["core"]
    with pytest.raises(ValueError, match="an MCU needs core"):
        DeviceSpec.model_validate(doc)
    doc["core"] = "cortex-m9"
    with pytest.raises(ValueError, match="core"):
        DeviceSpec.model_validate(doc)


def test_a_cores_file_missing_a_core_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from device_specs.cores import CORES_FILE

    doc = yaml.safe_load(CORES_FILE.read_text())
    del doc["cores"]["cortex-m33"]
    path = tmp_path / "cores.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(SpecError, match="cortex-m33"):
        load_cores(path)
