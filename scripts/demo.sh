#!/usr/bin/env bash
# `make demo`: plan and apply the default job, then show the plan and the measured report.
# Exit code is non-zero when apply's checks fail (accuracy floor, accuracy limit, artifacts).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN=$(dirname "${PYTHON:-.venv/bin/python}")
OUT=out/demo
mkdir -p "$OUT"
echo "== plan --budget examples/budgets/demo-arduino.yaml --apply"
"$BIN/plan" --budget examples/budgets/demo-arduino.yaml --out "$OUT/plan.json" \
    --apply --report-dir "$OUT"
