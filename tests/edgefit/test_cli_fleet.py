"""Bad fleet-cost input to the real CLI: one line on stderr, exit 2, nothing written (all
refused before torch is imported, so these run fast)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefit.cli import _plan_app, _run

BASE = ["--target", "arduino-nano-33-ble", "--max-flash", "1MB"]

CASES = {
    "a price without a link": (["--data-price", "0.05USD/MB"],
                               ["--data-price needs --link"]),
    "a fleet size without a link": (["--fleet-size", "100"], ["--fleet-size needs --link"]),
    "a cost limit without a price": (["--link", "lte-m", "--max-update-cost", "0.1"],
                                     ["cost limit needs a data price", "--data-price"]),
    "a price without /MB": (["--link", "lte-m", "--data-price", "0.05"],
                            ["--data-price", "price per MB"]),
    "a zero price": (["--link", "lte-m", "--data-price", "0/MB"], ["greater than zero"]),
    "an absurd price": (["--link", "lte-m", "--data-price", "1e9USD/MB"], ["a typo"]),
    "a negative cost": (["--link", "lte-m", "--data-price", "0.05/MB",
                         "--max-update-cost", "-0.1"], ["--max-update-cost"]),
    "two currencies": (["--link", "lte-m", "--data-price", "0.05USD/MB",
                        "--max-update-cost", "0.1EUR"], ["one currency"]),
    "a zero fleet": (["--link", "lte-m", "--fleet-size", "0"],
                     ["--fleet-size", "greater than or equal to 1"]),
    "a billion billion devices": (["--link", "lte-m", "--fleet-size", "1000000000000"],
                                  ["--fleet-size"]),
    "updates not a number": (["--link", "lte-m", "--updates-per-month", "weekly"],
                             ["--updates-per-month"]),
    "negative updates": (["--link", "lte-m", "--updates-per-month", "-4"],
                         ["--updates-per-month", "greater than 0"]),
    "a budget file's price without a link": (["--budget", "no-link.yaml"], ["needs the link"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_fleet_input_exits_2_with_one_line(case: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "no-link.yaml").write_text(
        "schema_version: 1\ntarget: arduino-nano-33-ble\nlimits:\n  flash: 1MB\n"
        "fleet:\n  data_price: 0.05USD/MB\n")
    argv, needles = CASES[case]
    code = _run(_plan_app, argv if argv[0] == "--budget" else [*BASE, *argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not (tmp_path / "plan.json").exists()


def test_a_cost_limit_alone_is_a_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--max-update-cost` without any other --max-* flag is not 'no limits'."""
    from edgefit.budgeting import resolve_budget

    monkeypatch.chdir(tmp_path)
    resolved = resolve_budget(
        tmp_path, budget_file=None, target="arduino-nano-33-ble", profile=None, model=None,
        weights=None, data=None, margin=None, limits={}, link="lte-m",
        fleet={"data_price": "0.05USD/MB", "max_cost": "0.1", "size": 10,
               "updates_per_month": "2"})
    fleet = resolved.budget.fleet
    assert fleet is not None and fleet.max_cost == 0.1 and fleet.updates == 2.0
    assert fleet.currency == "USD" and fleet.size == 10
