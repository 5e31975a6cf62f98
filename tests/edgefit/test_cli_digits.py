"""Flag values that are numbers written with other digits ('３', '１e3') are refused like the
limits are (issue #16 item 3), before anything is imported or solved."""

from __future__ import annotations

import pytest

from edgefit.cli import main, plan_main


@pytest.mark.parametrize("argv", [
    ["--target", "jetson-nano", "--max-latency", "30ms", "--time-limit", "３"],
    ["--target", "jetson-nano", "--max-latency", "30ms", "--time-limit=１e3"],
])
def test_plan_refuses_non_ascii_numbers(argv: list[str], capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    with pytest.raises(SystemExit) as exc:
        plan_main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and "digits other than 0-9" in err[0]


def test_resolve_refuses_them_and_names_stay_names(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["resolve", "plan.json", "--gap", "０.５"])
    assert exc.value.code == 2 and "digits other than 0-9" in capsys.readouterr().err
    from edgefit.cli import _non_ascii_number

    assert _non_ascii_number(["模型３.onnx", "--out", "结果"]) is None  # not numbers
