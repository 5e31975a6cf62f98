"""Were the timings taken on the device's CPU? (cost_models/machine_check.py)"""

from __future__ import annotations

import pytest

from cost_models.machine_check import MachineEvidence, cores_in, machine_verdict
from device_specs.catalog import catalog_files, load_spec

CATALOG = [load_spec(p.stem) for p in catalog_files()]


def test_cores_are_read_from_free_text() -> None:
    assert cores_in("4x Arm Cortex-A72 (ARMv8-A, NEON), BCM2711") == {"cortex-a72"}
    assert cores_in("Arm Cortex-M4F (Armv7E-M, DSP)") == {"cortex-m4"}
    assert cores_in("Cortex-M0+") == cores_in("cortex-m0plus") == {"cortex-m0plus"}
    assert cores_in("m7") == {"cortex-m7"} and cores_in("lx7") == {"xtensa-lx7"}
    assert cores_in("2x Xtensa LX7 with vector instructions") == {"xtensa-lx7"}
    assert cores_in("AMD EPYC 7B13 64-Core Processor") == set()


@pytest.mark.parametrize(("device", "evidence", "verdict"), [
    # the case: this machine's onnxruntime timings for a Raspberry Pi 4 profile
    ("raspberry-pi-4", MachineEvidence(cpu="AMD EPYC 7B13 64-Core Processor",
                                       machine="x86_64"), "mismatch"),
    ("raspberry-pi-4", MachineEvidence(cpu="Intel(R) Core(TM) i7-8650U"), "mismatch"),
    # edgefit_measure on a Pi 4 with a 64-bit OS reads /proc/cpuinfo's Model line
    ("raspberry-pi-4", MachineEvidence(cpu="Raspberry Pi 4 Model B Rev 1.4",
                                       machine="aarch64"), "match"),
    ("raspberry-pi-4", MachineEvidence(cpu="Raspberry Pi 5 Model B Rev 1.0",
                                       machine="aarch64"), "mismatch"),
    ("raspberry-pi-4", MachineEvidence(cpu="ARMv7 Processor rev 3 (v7l)", machine="armv7l"),
     "unknown"),
    # ... unless edgefit_measure read the core from /proc/cpuinfo's part number
    ("raspberry-pi-4", MachineEvidence(cpu="ARMv7 Processor rev 3 (v7l)", core="cortex-a72",
                                       machine="armv7l"), "match"),
    ("raspberry-pi-4", MachineEvidence(cpu="ARMv7 Processor rev 3 (v7l)", core="cortex-a53",
                                       machine="armv7l"), "mismatch"),
    ("raspberry-pi-4", MachineEvidence(cpu="Cortex-A72"), "match"),
    ("stm32f746-disco", MachineEvidence(cpu="Arm Cortex-M7 @ 216 MHz"), "match"),
    ("stm32f746-disco", MachineEvidence(cpu="STM32F746", core="m7"), "match"),
    ("stm32f746-disco", MachineEvidence(cpu="Arm Cortex-M4 @ 120 MHz"), "mismatch"),
    ("stm32f746-disco", MachineEvidence(cpu="Arm Cortex-M7", device="arduino-nano-33-ble"),
     "mismatch"),
    ("esp32-s3", MachineEvidence(cpu="ESP32-S3 dual-core Xtensa LX7 @ 240 MHz"), "match"),
    ("esp32-s3", MachineEvidence(cpu="Arm Cortex-M4"), "mismatch"),
    ("jetson-nano", MachineEvidence(cpu="NVIDIA Jetson Nano Developer Kit", machine="aarch64"),
     "match"),
    ("stm32f746-disco", MachineEvidence(cpu="my board"), "unknown"),
])
def test_verdicts(device: str, evidence: MachineEvidence, verdict: str) -> None:
    got, reason = machine_verdict(load_spec(device), evidence, CATALOG)
    assert got == verdict, reason
    assert reason and "\n" not in reason


def test_the_host_matches_its_own_cpu_text() -> None:
    for core in (None, "x86-64"):
        spec = load_spec("raspberry-pi-4").model_copy(update={
            "name": "host", "board": "this machine", "core": core,
            "cpu": "AMD EPYC 7B13 64-Core Processor"})
        ev = MachineEvidence(cpu="AMD EPYC 7B13 64-Core Processor", machine="x86_64")
        assert machine_verdict(spec, ev, CATALOG)[0] == "match"
        other = MachineEvidence(cpu="Raspberry Pi 4 Model B Rev 1.4", machine="aarch64")
        assert machine_verdict(spec, other, CATALOG)[0] == "mismatch"
