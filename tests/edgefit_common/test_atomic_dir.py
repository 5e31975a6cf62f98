"""A folder of artifacts written as one set: swapped into place whole, or not at all."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgefit_common import atomic_dir
from edgefit_common.atomic_dir import MARKER, check_replaceable, fresh_dir
from edgefit_common.errors import SpecError

KNOWN = ("model.onnx", "report.json")


def leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two renames"])
def test_a_new_set_replaces_the_old_one_as_a_whole(tmp_path: Path, exchange: bool,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    if not exchange:
        monkeypatch.setattr(atomic_dir, "_exchange", lambda a, b: False)
    out = tmp_path / "out"
    with fresh_dir(out) as work:
        (work / "model.onnx").write_text("run 1")
        (work / "report.json").write_text("run 1")
    with fresh_dir(out) as work:
        assert not out.samefile(work)
        (work / "model.onnx").write_text("run 2")  # run 2 writes no report.json
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "model.onnx"]
    assert (out / "model.onnx").read_text() == "run 2"
    assert leftovers(tmp_path) == []
    assert oct(out.stat().st_mode & 0o777) == "0o755"


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_a_failed_or_interrupted_run_leaves_the_earlier_set_untouched(
        tmp_path: Path, error: BaseException) -> None:
    out = tmp_path / "out"
    with fresh_dir(out) as work:
        (work / "report.json").write_text("run 1")
    with pytest.raises(type(error)), fresh_dir(out) as work:
        (work / "report.json").write_text("half of run 2")
        raise error
    assert (out / "report.json").read_text() == "run 1"
    assert leftovers(tmp_path) == [], "the temporary folder is removed"


def test_the_second_rename_failing_puts_the_earlier_set_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(atomic_dir, "_exchange", lambda a, b: False)
    out = tmp_path / "out"
    with fresh_dir(out) as work:
        (work / "report.json").write_text("run 1")
    real_rename = os.rename
    failed: list[Path] = []

    def rename(src: str | Path, dst: str | Path) -> None:
        if Path(dst) == out and not failed:  # the new set's rename; putting back works
            failed.append(Path(src))
            raise OSError(28, "No space left on device", str(dst))
        real_rename(src, dst)

    monkeypatch.setattr(atomic_dir.os, "rename", rename)
    with pytest.raises(OSError, match="No space"), fresh_dir(out) as work:
        (work / "report.json").write_text("run 2")
    monkeypatch.setattr(atomic_dir.os, "rename", real_rename)
    assert (out / "report.json").read_text() == "run 1"
    assert leftovers(tmp_path) == []


def test_which_folders_may_be_replaced(tmp_path: Path) -> None:
    check_replaceable(tmp_path / "new", KNOWN)  # missing: fine
    (tmp_path / "empty").mkdir()
    check_replaceable(tmp_path / "empty", KNOWN)
    old = tmp_path / "old"  # an earlier version's output: only names apply writes
    old.mkdir()
    (old / "report.json").write_text("{}")
    (old / ".model.onnx.abc.tmp").write_text("")  # an interrupted atomic write
    check_replaceable(old, KNOWN)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.json").write_text("{}")
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(SpecError, match="holds files edgefit did not write \\(thesis.tex\\)"):
        check_replaceable(mine, KNOWN)
    (mine / MARKER).write_text("")  # edgefit's own folder: replaced as a whole
    check_replaceable(mine, KNOWN)
    (tmp_path / "file").write_text("x")
    with pytest.raises(SpecError, match="is a file, not a folder"):
        check_replaceable(tmp_path / "file", KNOWN)
    os.symlink(old, tmp_path / "link")
    with pytest.raises(SpecError, match="is a symbolic link"):
        check_replaceable(tmp_path / "link", KNOWN)
    with pytest.raises(SpecError, match="is not a folder"):
        check_replaceable(tmp_path / "file" / "out", KNOWN)
