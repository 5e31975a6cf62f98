"""Fit the MCU latency model per runtime family on the MLPerf Tiny rows and print the report.

    .venv/bin/python scripts/fit_mcu.py [--write docs/cost-model-fit.md]

--write replaces the "## MCU latency per runtime family" section of that file (appended when
absent); benchmarks/fit_catalog.py writes the same section when it regenerates the file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cost_models.mcu_report import report_lines  # noqa: E402
from edgefit_common.fsutil import atomic_write_text  # noqa: E402

HEADING = "## MCU latency per runtime family"


def replace_section(text: str, section: str) -> str:
    """``text`` with its MCU section (from its heading to the next "## " heading) replaced."""
    start = text.find(HEADING)
    if start < 0:
        return text.rstrip("\n") + "\n\n" + section
    end = text.find("\n## ", start + len(HEADING))
    return text[:start] + section + ("" if end < 0 else "\n" + text[end + 1:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, help="markdown file whose MCU section to replace")
    args = parser.parse_args(argv)
    section = "\n".join(report_lines()) + "\n"
    sys.stdout.write(section)
    if args.write:
        atomic_write_text(args.write, replace_section(args.write.read_text(), section))
        print(f"wrote {args.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
