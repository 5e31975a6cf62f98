"""`python -m edgefit.review PLAN [--report REPORT]` (the same as `edgefit review`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edgefit review",
                                     description="Inspect, edit and re-solve a plan.")
    parser.add_argument("plan", type=Path, help="plan.json written by `plan`")
    parser.add_argument("--report", type=Path, default=None,
                        help="report.json written by `edgefit apply` (measured flash column)")
    args = parser.parse_args(argv)
    from edgefit.review.app import run_review

    return run_review(args.plan, args.report)


if __name__ == "__main__":
    sys.exit(main())
