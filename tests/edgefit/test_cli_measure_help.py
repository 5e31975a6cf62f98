"""`edgefit measure --help` names every option edgefit_measure.py takes (issue #21: it left out
--input-shape)."""

from __future__ import annotations

import pytest

from edgefit.cli import _run, app


def test_measure_help_lists_every_option_of_edgefit_measure(
        capsys: pytest.CaptureFixture[str]) -> None:
    import edgefit_measure

    flags = [a.option_strings[0] for a in edgefit_measure._parser()._actions
             if a.option_strings and a.option_strings[0] != "-h"]
    assert "--input-shape" in flags
    assert _run(app, ["measure", "--help"]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    missing = [f for f in flags if f not in shown]
    assert not missing, f"edgefit measure --help does not name {missing}"
