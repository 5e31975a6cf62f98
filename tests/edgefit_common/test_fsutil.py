"""The one reader of input files: regular files only, size-capped, never blocking, one-line
errors."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from edgefit_common.errors import SpecError
from edgefit_common.fsutil import MAX_YAML_BYTES, read_bytes, read_text


def refused(path: Path | str, **kwargs: object) -> str:
    with pytest.raises(SpecError) as info:
        read_text(Path(path), "budget file", **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_a_regular_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "b.yaml"
    path.write_text("target: esp32-s3\n")
    assert read_text(path) == "target: esp32-s3\n"
    assert read_bytes(path) == b"target: esp32-s3\n"


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "budget.yaml"
    os.mkfifo(fifo)  # no writer: an open() without O_NONBLOCK would wait forever
    message = refused(fifo)
    assert message == f"{fifo}: budget file is a named pipe (FIFO), not a regular file"


def test_a_symlink_to_a_fifo_is_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "b.yaml").symlink_to(tmp_path / "pipe")
    assert "named pipe" in refused(tmp_path / "b.yaml")


def test_dev_zero_is_refused_before_reading() -> None:
    assert "/dev/zero: budget file is a character device" in refused("/dev/zero")


def test_a_directory_is_refused(tmp_path: Path) -> None:
    assert refused(tmp_path) == f"{tmp_path}: budget file is a directory, not a regular file"


def test_a_socket_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        assert "is a socket" in refused(path)
    finally:
        sock.close()


def test_a_missing_file_and_a_dangling_link(tmp_path: Path) -> None:
    assert refused(tmp_path / "nope.yaml") == f"{tmp_path / 'nope.yaml'}: budget file not found"
    (tmp_path / "dangling.yaml").symlink_to(tmp_path / "gone")
    assert "not found" in refused(tmp_path / "dangling.yaml")


def test_a_symlink_loop(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").symlink_to(tmp_path / "b.yaml")
    (tmp_path / "b.yaml").symlink_to(tmp_path / "a.yaml")
    assert refused(tmp_path / "a.yaml") == (
        f"{tmp_path / 'a.yaml'}: cannot read budget file: symbolic link loop")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 file anyway")
def test_an_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "secret.yaml"
    path.write_text("target: esp32-s3\n")
    path.chmod(0)
    try:
        assert refused(path) == f"{path}: cannot read budget file: permission denied"
    finally:
        path.chmod(0o600)


def test_a_file_over_the_cap_names_the_cap(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    with path.open("wb") as fh:  # sparse: no disk used
        fh.truncate(MAX_YAML_BYTES + 1)
    message = refused(path, max_bytes=MAX_YAML_BYTES)
    assert "over the 1 MiB limit for a budget file" in message


def test_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"target: esp32-s3\nnotes: caf\xe9\n")
    assert refused(path) == f"{path}:2: budget file is not UTF-8 text (byte 27)"


def test_control_characters_in_a_name_stay_on_one_line(tmp_path: Path) -> None:
    message = refused(tmp_path / "evil\nname.yaml")
    assert "evil\\nname.yaml" in message
    assert "null byte" not in refused("bad\0name.yaml")


def test_permission_denied_also_as_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "secret.yaml"
    path.write_text("target: esp32-s3\n")

    def denied(*args: object) -> int:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "open", denied)
    assert refused(path) == f"{path}: cannot read budget file: permission denied"
