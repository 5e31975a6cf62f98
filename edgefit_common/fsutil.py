"""Atomic file writes (write beside the target, then rename, so nothing is ever half-written) and
the one reader of input files (regular files only, size-capped, never blocking)."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: Path, mode: int = 0o644) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block succeeds it replaces `path`
    (readable by others: mkstemp makes 0600), when it fails the temporary file is removed.
    For writers that want a file name (onnx.save, torch.save, savefig)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes, fsync: bool = False) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        if fsync:
            fh.flush()
            os.fsync(fh.fileno())


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


# --- reading input files --------------------------------------------------------------------------
# Every file a user hands edgefit (budget, plan, device spec, calibration file, edgefit.yaml) is
# read here: a regular file only (a FIFO, a device such as /dev/zero, a directory or a socket is
# refused before it is opened, and the open never blocks), at most a size cap, UTF-8 text.

MAX_YAML_BYTES = 1 << 20
"""1 MiB: budgets and device specs are a few KB; a YAML parser takes seconds per MB."""

MAX_JSON_BYTES = 16 << 20
"""16 MiB: plan.json and measure results of the largest models are a few MB."""

_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def shown(path: Path | str, limit: int = 200) -> str:
    """`path` for a one-line message: control characters escaped, very long names shortened."""
    text = str(path)
    if not text.isprintable():
        text = repr(text)[1:-1]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _size_text(n: int) -> str:
    return f"{n / (1 << 20):g} MiB" if n >= 1 << 20 else f"{n / 1024:g} KiB"


def _os_problem(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "symbolic link loop"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return (exc.strerror or type(exc).__name__).lower()


def _not_regular(mode: int) -> str | None:
    for test, kind in _KINDS:
        if test(mode):
            return kind
    return None if stat.S_ISREG(mode) else "not a regular file"


def file_problem(path: Path | str, what: str = "file", folder: bool = False) -> str | None:
    """Why `path` cannot be read as a `what` (one line naming it: not found, a FIFO or device,
    a symbolic link loop, permission denied), or None. ``folder``: a directory is what is
    wanted. Reads nothing: a check made before anything slow starts."""
    name = shown(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"{name}: {what} not found"
    except OSError as exc:
        return f"{name}: cannot read {what}: {_os_problem(exc)}"
    except ValueError:  # an embedded NUL byte in the name
        return f"{name}: not a valid file name"
    if folder:
        return None if stat.S_ISDIR(st.st_mode) else f"{name}: {what} is not a folder"
    kind = _not_regular(st.st_mode)
    return None if kind is None else f"{name}: {what} is {kind}, not a regular file"


def read_bytes(path: Path, what: str = "file", max_bytes: int = MAX_JSON_BYTES) -> bytes:
    """The bytes of regular file `path` (at most `max_bytes`), or a one-line SpecError naming it:
    missing, a directory / FIFO / device / socket, a symbolic link loop, permission denied, too
    large. Never blocks and never reads more than `max_bytes` + 1 bytes."""
    from edgefit_common.errors import SpecError

    name = shown(path)
    try:
        st = os.stat(path)  # follows symbolic links: what would be read
        kind = _not_regular(st.st_mode)
        if kind is not None:
            raise SpecError(f"{name}: {what} is {kind}, not a regular file")
        if st.st_size > max_bytes:
            raise SpecError(f"{name}: {what} is {_size_text(st.st_size)}, over the "
                            f"{_size_text(max_bytes)} limit for a {what}")
        fd = os.open(path, _OPEN_FLAGS)  # O_NONBLOCK: a FIFO swapped in after stat opens at once
        try:
            kind = _not_regular(os.fstat(fd).st_mode)
            if kind is not None:
                raise SpecError(f"{name}: {what} is {kind}, not a regular file")
            data = _read_at_most(fd, max_bytes + 1)
        finally:
            os.close(fd)
    except FileNotFoundError:
        raise SpecError(f"{name}: {what} not found") from None
    except OSError as exc:
        raise SpecError(f"{name}: cannot read {what}: {_os_problem(exc)}") from None
    except ValueError:  # an embedded NUL byte in the name
        raise SpecError(f"{name}: not a valid file name") from None
    if len(data) > max_bytes:
        raise SpecError(f"{name}: {what} is over the {_size_text(max_bytes)} limit for a {what}")
    return data


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks, total = [], 0
    while total < limit:
        chunk = os.read(fd, min(1 << 20, limit - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def read_text(path: Path, what: str = "file", max_bytes: int = MAX_JSON_BYTES) -> str:
    """The UTF-8 text of regular file `path` (see `read_bytes`), or a one-line SpecError."""
    from edgefit_common.errors import SpecError

    data = read_bytes(path, what, max_bytes)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise SpecError(f"{shown(path)}:{line}: {what} is not UTF-8 text "
                        f"(byte {exc.start})") from None
