"""The real `plan` console script on hostile input files and flags: exit code 2, one line on
stderr, no traceback, nothing written, and no hang (each run has a generous time limit)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PLAN = Path(sys.executable).with_name("plan")


def bomb() -> str:
    """A ~1 KB alias bomb (9**9 strings once expanded) in the latency limit."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\ntarget: esp32-s3\nlimits:\n  latency: *i\n"


def run_plan(cwd: Path, *argv: str) -> tuple[int, list[str]]:
    out = subprocess.run([str(PLAN), *argv], cwd=cwd, capture_output=True, text=True,
                         timeout=120, stdin=subprocess.DEVNULL)
    assert "Traceback" not in out.stderr, out.stderr
    return out.returncode, out.stderr.strip().splitlines()


@pytest.fixture(scope="module", autouse=True)
def _script() -> None:
    if not PLAN.exists():
        pytest.skip(f"{PLAN} is not installed (pip install -e .)")


def test_a_fifo_budget(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "budget.yaml")  # no writer: reading it would block forever
    code, err = run_plan(tmp_path, "--budget", "budget.yaml")
    assert code == 2 and err == [
        "error: budget.yaml: budget file is a named pipe (FIFO), not a regular file"]
    assert not (tmp_path / "plan.json").exists()


def test_an_alias_bomb_budget(tmp_path: Path) -> None:
    (tmp_path / "budget.yaml").write_text(bomb())
    code, err = run_plan(tmp_path, "--budget", "budget.yaml")
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: budget.yaml:1: malformed YAML: anchor &a is not accepted")
    assert not (tmp_path / "plan.json").exists()


def test_full_width_digits_in_a_limit(tmp_path: Path) -> None:
    code, err = run_plan(tmp_path, "--target", "esp32-s3", "--max-latency", "３０ms")
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: --max-latency: '３０ms' has digits other than 0-9")
    (tmp_path / "budget.yaml").write_text("target: esp32-s3\nlimits:\n  latency: ３０ms\n")
    code, err = run_plan(tmp_path, "--budget", "budget.yaml")
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: budget.yaml:3: limits.latency: '３０ms' has digits other")
    assert not (tmp_path / "plan.json").exists()


def test_a_finite_but_huge_limit(tmp_path: Path) -> None:
    code, err = run_plan(tmp_path, "--target", "esp32-s3", "--max-latency=1e300ms")
    assert code == 2 and err == ["error: --max-latency: '1e300ms' is above one day (86400s), "
                                 "the largest time edgefit accepts"]


def test_a_target_path_outside_the_catalog_that_is_no_spec(tmp_path: Path) -> None:
    (tmp_path / "budget.yaml").write_text(
        "target: ../../../../../../etc/passwd\nlimits:\n  latency: 30ms\n")
    code, err = run_plan(tmp_path, "--budget", "budget.yaml")
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: unknown target '../../../../../../etc/passwd'")


def run_edgefit(cwd: Path, *argv: str) -> tuple[int, list[str]]:
    out = subprocess.run([str(PLAN.with_name("edgefit")), *argv], cwd=cwd, capture_output=True,
                         text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert "Traceback" not in out.stderr, out.stderr
    return out.returncode, out.stderr.strip().splitlines()


def hostile_plan(edit: str) -> str:
    """The review fixture plan (a real plan) with one hostile edit, as JSON text."""
    d = json.loads((Path(__file__).parents[1] / "review" / "data" / "plan.json").read_text())
    if edit == "no-schema-version":
        del d["schema_version"]
    elif edit == "option-not-an-alternative":
        d["layers"]["conv1"]["option"] = "telepathy"
    elif edit == "negative-margin":
        d["margin"] = -5.0
    elif edit == "nan-cost":
        d["totals"]["latency_ms"] = 123456.789
        return json.dumps(d, indent=2).replace("123456.789", "NaN")
    return json.dumps(d, indent=2)


@pytest.mark.parametrize(("edit", "needle"), [
    ("no-schema-version", "plan.json: schema_version is missing"),
    ("option-not-an-alternative", "layers.conv1.option 'telepathy' is not one"),
    ("negative-margin", "plan.json: margin: "),
    ("nan-cost", "refused JSON: NaN"),
])
def test_resolve_refuses_a_hostile_plan(edit: str, needle: str, tmp_path: Path) -> None:
    (tmp_path / "plan.json").write_text(hostile_plan(edit))
    before = (tmp_path / "plan.json").read_text()
    code, err = run_edgefit(tmp_path, "resolve", "plan.json")
    assert code == 2 and len(err) == 1, err
    assert needle in err[0]
    assert (tmp_path / "plan.json").read_text() == before, "the plan is left as it was"
