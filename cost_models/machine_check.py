"""Were these timings taken on the device being calibrated? Compares what a measure file or a
timing file says about its machine (CPU text, core, `platform.machine()`, board, catalog name)
with the device spec's `cpu` (and its `core` field where the schema has one), `board` and name.

Three answers (:func:`machine_verdict`):

* ``match``: the same core type (``cortex-a72`` in both), or the file names the device or its
  board, or the CPU text is the spec's word for word (the ``host`` device);
* ``mismatch``: a provable difference -- another architecture (``x86_64`` timings for an Arm
  board: this machine's onnxruntime timings calibrating a Raspberry Pi 4, issue #17), other
  core types, another catalog name, or another catalog device's board named in the text;
* ``unknown``: nothing to compare (e.g. ``ARMv7 Processor rev 3 (v7l)`` from an older
  measure file on a 32-bit Raspberry Pi OS, without ``host.cpu_core``): calibrate warns
  loudly and records the warning.

Core types are read from free text by pattern (Cortex-A/M/R/X, Neoverse, Xtensa LX): no table
of boards in code.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from device_specs.schema import DeviceSpec

Verdict = Literal["match", "mismatch", "unknown"]

_CORE_PATTERNS = (
    (re.compile(r"cortex[\s_-]*([amrx])[\s_-]*(\d+)\s*(plus|\+)?", re.I),
     lambda m: f"cortex-{m.group(1).lower()}{m.group(2)}{'plus' if m.group(3) else ''}"),
    (re.compile(r"neoverse[\s_-]*([nve])[\s_-]*(\d+)", re.I),
     lambda m: f"neoverse-{m.group(1).lower()}{m.group(2)}"),
    (re.compile(r"xtensa[\s_-]*(lx\d+)", re.I), lambda m: f"xtensa-{m.group(1).lower()}"),
)
_ARCH_OF_MACHINE = (
    (re.compile(r"^(x86_64|amd64|x64|i[3-6]86|x86)$", re.I), "x86"),
    (re.compile(r"^(aarch64|arm64|armv?\d.*|arm)$", re.I), "arm"),
    (re.compile(r"^riscv(32|64)?$", re.I), "riscv"),
)
_ARCH_OF_TEXT = (
    (re.compile(r"\b(cortex|neoverse|arm|armv\d\S*|aarch64|arm64)\b", re.I), "arm"),
    (re.compile(r"\b(intel|amd|xeon|epyc|ryzen|x86(_64)?|amd64|pentium|celeron|core\(tm\))\b",
                re.I), "x86"),
    (re.compile(r"\b(xtensa|esp32)", re.I), "xtensa"),
    (re.compile(r"\b(risc-?v|riscv\d*)\b", re.I), "riscv"),
)


@dataclass(frozen=True)
class MachineEvidence:
    """What a timing or measure file says about where it ran (None: not said)."""

    cpu: str | None = None
    core: str | None = None
    machine: str | None = None  # platform.machine()
    board: str | None = None
    device: str | None = None  # a catalog name

    def describe(self) -> str:
        parts = [f"{k} {v!r}" for k, v in (("cpu", self.cpu), ("core", self.core),
                                           ("machine", self.machine), ("board", self.board),
                                           ("device", self.device)) if v]
        return ", ".join(parts) or "nothing about its machine"


def _short_core(text: str | None) -> str | None:
    """A bare core name as a core field may spell it: 'm7' -> 'cortex-m7', 'lx7' ->
    'xtensa-lx7'; other text unchanged."""
    if text is None:
        return None
    t = text.strip().lower()
    if re.fullmatch(r"[amrx]\d+(plus|\+)?", t):
        return f"cortex-{t}"
    if re.fullmatch(r"lx\d+", t):
        return f"xtensa-{t}"
    return text


def cores_in(*texts: str | None) -> set[str]:
    """Core types named in free text: {'cortex-a72'}, {'cortex-m0plus'}, {'xtensa-lx7'}."""
    found: set[str] = set()
    for text in map(_short_core, texts):
        for pattern, name in _CORE_PATTERNS:
            found |= {name(m) for m in pattern.finditer(text or "")}
    return found


def arch_of(machine: str | None, *texts: str | None) -> str | None:
    """x86 / arm / xtensa / riscv from platform.machine(), else from the CPU text."""
    if machine:
        for pattern, arch in _ARCH_OF_MACHINE:
            if pattern.match(machine.strip()):
                return arch
    for text in texts:
        for pattern, arch in _ARCH_OF_TEXT:
            if text and pattern.search(text):
                return arch
    return None


def _words(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def _names_board(spec: DeviceSpec, *texts: str | None) -> bool:
    """The text names the device: its catalog name or its board (before any parenthesis) as a
    phrase, e.g. 'Raspberry Pi 4 Model B Rev 1.4' names raspberry-pi-4."""
    phrases = {_words(spec.name), _words(spec.board.split("(")[0])} - {""}
    for text in texts:
        words = f" {_words(text or '')} "
        if any(f" {p} " in words for p in phrases):
            return True
    return False


def spec_cores(spec: DeviceSpec) -> set[str]:
    """The spec's core types: its `core` field when the schema has one, and its cpu text."""
    core = getattr(spec, "core", None)
    texts = [spec.cpu, *([str(getattr(core, "value", core))] if core is not None else [])]
    return cores_in(*texts)


def machine_verdict(spec: DeviceSpec, ev: MachineEvidence,
                    others: Sequence[DeviceSpec] = ()) -> tuple[Verdict, str]:
    """(verdict, reason): do the timings come from `spec`'s CPU? `others` (e.g. the rest of
    the catalog): a file that names one of them, and not `spec`, is another machine."""
    if ev.device and ev.device != spec.name:
        return "mismatch", f"the file says it was timed on device {ev.device!r}"
    theirs, ours = cores_in(ev.core, ev.cpu), spec_cores(spec)
    arch_theirs = arch_of(ev.machine, ev.core, ev.cpu)
    arch_ours = arch_of(None, *sorted(ours), spec.cpu)
    if arch_theirs and arch_ours and arch_theirs != arch_ours:
        return "mismatch", f"{arch_theirs} timings, {spec.name} is {arch_ours}"
    if theirs and ours:
        if theirs & ours:
            return "match", f"core {', '.join(sorted(theirs & ours))}"
        return "mismatch", (f"core {', '.join(sorted(theirs))}, {spec.name} has "
                            f"{', '.join(sorted(ours))}")
    if ev.device == spec.name or _names_board(spec, ev.board, ev.cpu):
        return "match", "the file names the device"
    if ev.cpu and ev.cpu.strip() == spec.cpu.strip():
        return "match", "the same CPU"
    named = [o.name for o in others if o.name != spec.name and _names_board(o, ev.board, ev.cpu)]
    if named:
        return "mismatch", f"the file names {named[0]}, not {spec.name}"
    return "unknown", (f"cannot tell whether {ev.describe()} is {spec.name}'s CPU "
                       f"({spec.cpu}); name its core (e.g. {next(iter(sorted(ours)), 'x')}) "
                       "in the file")
