"""A folder of artifacts written as one set: built in a fresh temporary folder beside the target,
then swapped into place, so a folder never mixes two runs and an earlier run's files are replaced
as a whole (never a new model beside an old report).

The swap is one atomic exchange where the kernel has it (Linux renameat2 RENAME_EXCHANGE), else
two renames (the old folder is moved aside first, and put back if the second rename fails). A
folder is replaced only when edgefit wrote it (its marker file, or nothing but the names `apply`
writes) or it is empty: an `--out` pointing at a folder of the user's own files is refused.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from edgefit_common.errors import SpecError
from edgefit_common.fsutil import shown

MARKER = ".edgefit-artifacts"
"""Written into every set: the folder is edgefit's to replace."""

APPLY_NAMES = ("model.onnx", "model.fp32.onnx", "model.float.onnx", "model.flash.bin",
               "model.tflite", "model_data.cc", "report.json", "plan.json")
"""What `edgefit apply` writes (here, torch-free, so a bad --out is refused before any model is
loaded): a folder holding only these, or edgefit's marker, may be replaced."""


def check_replaceable(target: Path, known_names: Iterable[str], what: str = "--out") -> None:
    """SpecError (one line) unless `target` is missing, an empty folder, a folder edgefit wrote
    (its marker) or a folder holding only `known_names` (an earlier version's output), and its
    parent folder can take a new folder. Called before any work, so a bad --out fails at once."""
    name = shown(target)
    try:
        if target.is_symlink():
            raise SpecError(f"{what} {name}: is a symbolic link; give the folder itself")
        if target.exists() and not target.is_dir():
            raise SpecError(f"{what} {name}: is a file, not a folder")
        if target.is_dir():
            entries = sorted(os.listdir(target))
            known = set(known_names) | {MARKER}
            foreign = [e for e in entries if e not in known and not _leftover(e)]
            if foreign and MARKER not in entries:
                raise SpecError(
                    f"{what} {name}: holds files edgefit did not write ({shown(foreign[0], 60)}"
                    f"{', ...' if len(foreign) > 1 else ''}); give a new or empty folder (the "
                    "folder is replaced as a whole)")
        parent = target.absolute().parent
        if parent.exists() and not parent.is_dir():
            raise SpecError(f"{what} {name}: {shown(parent)} is not a folder")
        if parent.exists() and not os.access(parent, os.W_OK | os.X_OK):
            raise SpecError(f"{what} {name}: cannot create it in {shown(parent)}: "
                            "permission denied")
    except OSError as exc:
        raise SpecError(f"{what} {name}: {(exc.strerror or type(exc).__name__).lower()}"
                        ) from None


def _leftover(entry: str) -> bool:
    """A temporary file of an interrupted atomic write (fsutil.atomic_path)."""
    return entry.startswith(".") and entry.endswith(".tmp")


@contextlib.contextmanager
def fresh_dir(target: Path) -> Iterator[Path]:
    """Yield a new empty folder beside `target`; when the block succeeds it takes `target`'s
    place as a whole (a folder that was there is removed), when the block fails or is
    interrupted it is removed and `target` is left exactly as it was."""
    target = Path(target)
    parent = target.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        (work / MARKER).write_text("written by edgefit: this folder is replaced as a whole by "
                                   "the next run into it\n", encoding="utf-8")
        yield work
        os.chmod(work, 0o755)  # mkdtemp makes 0700
        _swap_into_place(work, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the new set on failure, the old one after


def _swap_into_place(work: Path, target: Path) -> None:
    """`work` becomes `target`; the folder that was at `target` (if any) ends up at `work`."""
    if not os.path.lexists(target):
        os.rename(work, target)
        return
    if _exchange(work, target):
        return
    aside = Path(tempfile.mkdtemp(dir=work.parent, prefix=f".{target.name}.old-", suffix=".tmp"))
    try:
        os.rename(target, aside / "old")
        try:
            os.rename(work, target)
        except OSError:
            os.rename(aside / "old", target)  # put the earlier run back
            raise
        os.rename(aside / "old", work)
    finally:
        shutil.rmtree(aside, ignore_errors=True)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths (Linux renameat2); False where that is not available."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False  # the file system cannot exchange: fall back to two renames
    raise OSError(code, os.strerror(code), str(b))
