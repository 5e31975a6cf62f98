#!/usr/bin/env bash
# `make test` (what CI runs through .ci/run): lint, types, then the whole suite as a new user's
# machine runs it. Every per-user cache the code or its libraries read (EDGEFIT_CACHE: trained
# models, host probes, profiles, sensitivities, decoded data; XDG_CACHE_HOME; matplotlib's)
# points into one empty temporary folder, removed at the end, so each run trains and profiles
# from nothing. Fetched data is reused only because scripts/fetch_data.sh (make data) has just
# checked it against scripts/data.sha256. Prints the wall time at the end, pass or fail.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV=${VENV:-.venv}

start=$(date +%s)
scratch=$(mktemp -d "${TMPDIR:-/tmp}/edgefit-test.XXXXXX")
finish() {
    local code=$?
    rm -rf "$scratch"
    local s=$(( $(date +%s) - start ))
    echo "make test: wall time $((s / 60)) min $((s % 60)) s from empty caches ($(nproc) cores)," \
         "exit $code"
    exit "$code"
}
trap finish EXIT

export EDGEFIT_CACHE="$scratch/edgefit-cache"
export XDG_CACHE_HOME="$scratch/xdg-cache"
export MPLCONFIGDIR="$scratch/matplotlib"
mkdir -p "$EDGEFIT_CACHE" "$XDG_CACHE_HOME" "$MPLCONFIGDIR"

"$VENV/bin/ruff" check .
"$VENV/bin/mypy" edgefit_common formats techniques planner cost_models device_specs executors workloads edgefit edgefit_measure.py
"$VENV/bin/lint-imports" --no-cache
"$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
