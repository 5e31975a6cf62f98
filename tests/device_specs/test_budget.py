"""Budget files as a hostile user writes them: `target:` is a catalog name or a .yaml/.yml spec
read from the budget's own folder; numbers are bounded; every refusal is one line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from device_specs.budget import Budget, load_budget
from device_specs.catalog import CATALOG_DIR, load_spec, target_relative_to
from edgefit_common.errors import EdgefitError, SpecError, UnknownTargetError

SPEC = (CATALOG_DIR / "esp32-s3.yaml").read_text()


def budget(folder: Path, target: str, limits: str = "  latency: 30ms\n", extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "budget.yaml"
    path.write_text(f"schema_version: 1\ntarget: {target}\nlimits:\n{limits}{extra}")
    return path


def one_line(exc: pytest.ExceptionInfo[EdgefitError]) -> str:
    message = str(exc.value)
    assert "\n" not in message and len(message) < 400
    return message


def test_a_spec_path_is_read_from_the_budget_folder(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    (project / "boards").mkdir(parents=True)
    (project / "boards" / "my-board.yaml").write_text(SPEC.replace("name: esp32-s3",
                                                                   "name: my-board"))
    path = budget(project, "boards/my-board.yaml")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # not the budget's folder
    loaded = load_budget(path)
    assert loaded.target == str(project / "boards" / "my-board.yaml")
    assert load_spec(loaded.target).name == "my-board"


def test_a_catalog_name_stays_a_name(tmp_path: Path) -> None:
    assert load_budget(budget(tmp_path, "esp32-s3")).target == "esp32-s3"
    assert target_relative_to("host", tmp_path) == "host"


@pytest.mark.parametrize("target", ["../../../../etc/passwd", "/etc/passwd", "/dev/zero",
                                    "../budget", "../catalog/esp32-s3", "esp32-s3/../esp32-s3"])
def test_a_path_that_is_not_a_spec_yaml_is_an_unknown_target(target: str,
                                                             tmp_path: Path) -> None:
    loaded = load_budget(budget(tmp_path, f'"{target}"'))
    with pytest.raises(UnknownTargetError) as info:
        load_spec(loaded.target)
    assert "unknown target" in one_line(info) and ".yaml / .yml" in one_line(info)


@pytest.mark.parametrize(("make", "needle"), [
    (lambda p: p.symlink_to("/dev/zero"), "device spec is a character device"),
    (lambda p: os.mkfifo(p), "device spec is a named pipe"),
    (lambda p: p.mkdir(), "device spec is a directory"),
    (lambda p: None, "device spec not found"),
    (lambda p: p.symlink_to(p), "symbolic link loop"),
], ids=["dev-zero", "fifo", "directory", "missing", "symlink-loop"])
def test_a_spec_path_that_is_not_a_regular_file(make, needle: str, tmp_path: Path) -> None:
    make(tmp_path / "board.yaml")
    loaded = load_budget(budget(tmp_path, "board.yaml"))
    with pytest.raises(SpecError) as info:
        load_spec(loaded.target)
    assert needle in one_line(info)


def test_duplicate_target_is_refused(tmp_path: Path) -> None:
    path = budget(tmp_path, "esp32-s3", extra="target: jetson-nano\n")
    with pytest.raises(SpecError) as info:
        load_budget(path)
    assert one_line(info) == (f"{path}:5: malformed YAML: duplicate key 'target' (first at "
                              "line 2)")


@pytest.mark.parametrize(("limits", "needle"), [
    ("  latency: ３０ms\n", "limits.latency: '３０ms' has digits other than 0-9"),
    ("  latency: 1e300ms\n", "limits.latency: '1e300ms' is above one day (86400s)"),
    ("  flash: 2000TB\n", "limits.flash: unknown unit 'TB'"),
    ("  flash: 2000000GB\n", "limits.flash: '2000000GB' is above one petabyte"),
    ("  energy: 1e12J\n", "limits.energy: '1e12J' is above one megajoule"),
    ("  latency: [30ms, 40ms]\n", "limits.latency: expected a time such as '10us', got a list"),
])
def test_limits_are_parsed_by_the_one_parser(limits: str, needle: str, tmp_path: Path) -> None:
    path = budget(tmp_path, "esp32-s3", limits)
    with pytest.raises(SpecError) as info:
        load_budget(path)
    assert one_line(info).startswith(f"{path}:4: ")
    assert needle in one_line(info)


@pytest.mark.parametrize("margin", ["-5.0", "1.0", ".nan", ".inf"])
def test_margin_is_bounded(margin: str, tmp_path: Path) -> None:
    path = budget(tmp_path, "esp32-s3", extra=f"margin: {margin}\n")
    with pytest.raises(SpecError) as info:
        load_budget(path)
    assert "margin" in one_line(info)


def test_period_is_bounded() -> None:
    with pytest.raises(ValueError, match="period"):
        Budget(target="esp32-s3", period="2000min")  # type: ignore[arg-type]
