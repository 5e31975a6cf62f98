"""Every case of the hostile-input corpus (tests/hostile/corpus.py) against the real CLI: its
exit code, exactly one line on stderr (no traceback, no warnings), nothing written, nothing run
(no marker file, no folder from a factory, no Zen of Python), within a time limit per case.

Most cases run in this process through the CLI's own entry point (`_run`, what `main()` calls),
with file-descriptor capture so a warning printed by a C library counts too; the cases where a
failure would kill or hang the test run go through the installed console script.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("hostile_corpus",
                                               Path(__file__).with_name("corpus.py"))
assert _spec is not None and _spec.loader is not None
corpus = importlib.util.module_from_spec(_spec)
sys.modules["hostile_corpus"] = corpus  # pickle finds _Evil by its module's name
_spec.loader.exec_module(corpus)

BIN = Path(sys.executable).parent
IN_PROCESS_LIMIT_S = 30  # the first case that imports torch pays for it
SUBPROCESS_LIMIT_S = 60


class CaseTimeout(BaseException):
    """Not an Exception: the CLI's own handlers must not turn it into an exit code."""


@pytest.fixture
def time_limit() -> Iterator[None]:
    def expire(_signum: int, _frame: object) -> None:
        raise CaseTimeout(f"the case ran over {IN_PROCESS_LIMIT_S} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, IN_PROCESS_LIMIT_S)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every entry under `folder` (symbolic links not followed) with its size and mtime."""
    seen = {}
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in dirs + files:
            path = Path(root, name)
            if path.relative_to(folder).parts[0] in ("tmp", "cache"):
                continue
            st = path.lstat()
            seen[str(path.relative_to(folder))] = (st.st_size, st.st_mtime_ns)
    return seen


def _params() -> list[object]:
    out = []
    for name, case in corpus.CASES.items():
        marks = []
        if "not-root" in case.tags and corpus.is_root():
            marks.append(pytest.mark.skip(reason="root reads every file"))
        out.append(pytest.param(name, marks=marks, id=name))
    return out


@pytest.mark.parametrize("name", _params())
def test_hostile_case(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                      capfd: pytest.CaptureFixture[str], time_limit: None) -> None:
    case = corpus.CASES[name]
    folder = tmp_path / "case"
    corpus.setup_case(case, folder)
    before = snapshot(folder)
    env = {"TMPDIR": str(folder / "tmp"), "EDGEFIT_CACHE": str(folder / "cache")}
    try:
        if case.subprocess:
            code, out, err = _in_subprocess(case, folder, env)
        else:
            code, out, err = _in_process(case, folder, env, monkeypatch, capfd)
    finally:
        corpus.clean_up(folder)
    lines = err.strip().splitlines()
    assert "Traceback" not in err, err
    assert len(lines) == 1, f"stderr should be one line:\n{err}"
    assert code == case.code, (code, lines)
    assert lines[0].startswith("error: "), lines
    assert case.needle in lines[0], lines[0]
    assert not corpus.markers(folder), "hostile code ran"
    assert corpus.ZEN not in out
    assert snapshot(folder) == before, "bad input wrote or removed something"


def _in_process(case: object, folder: Path, env: dict[str, str],
                monkeypatch: pytest.MonkeyPatch,
                capfd: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from edgefit.cli import _plan_app, _run, app

    monkeypatch.chdir(folder)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(tempfile, "tempdir", env["TMPDIR"])
    capfd.readouterr()
    argv = list(case.argv)  # type: ignore[attr-defined]
    code = _run(_plan_app if argv[0] == "plan" else app, argv[1:])
    out, err = capfd.readouterr()
    return code, out, err


def _in_subprocess(case: object, folder: Path, env: dict[str, str]) -> tuple[int, str, str]:
    argv = list(case.argv)  # type: ignore[attr-defined]
    script = BIN / argv[0]
    if not script.exists():
        pytest.skip(f"{script} is not installed (pip install -e .)")
    result = subprocess.run([str(script), *argv[1:]], cwd=folder, capture_output=True,
                            text=True, timeout=SUBPROCESS_LIMIT_S, stdin=subprocess.DEVNULL,
                            env={**os.environ, **env})
    return result.returncode, result.stdout, result.stderr


def test_the_corpus_covers_the_issue() -> None:
    """The kinds of input issue #16 lists are all in the corpus."""
    names = " ".join(corpus.CASES)
    for kind in ("os:abort", "tempfile:mkdtemp", "this:x", "alias bomb", "FIFO", "/dev/zero",
                 "2 MiB", "etc/passwd", "negative margin", "duplicate key", "３０ms",
                 "schema_version", "telepathy", "not an alternative", "1e300ms", "NaN",
                 "5000-digit", "nested", "symlink loop", "unreadable", "--input-shape",
                 "huge input", "pickle as --model evil.pt", "truncated", "empty",
                 "right-to-left", "a folder of the user's files"):
        assert kind in names, kind
    assert len(corpus.CASES) >= 100
