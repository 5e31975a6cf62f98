#!/usr/bin/env bash
# One example run per scenario of device_specs/scenarios (`edgefit scenarios` lists them), with
# the default solver settings; each plan goes to $OUT/<scenario>.plan.json and its output to
# $OUT/<scenario>.txt (examples/scenarios/README.md pastes these outputs). The MLPerf Tiny
# models have seeded random weights and no data set here: their accuracy cannot be measured,
# so --allow-unmeasured offers the compressed options anyway (plan marks them "not measured").
# Usage: examples/scenarios/run.sh [OUT]   (from the repository root; OUT defaults to out/scenarios)
set -u
OUT=${1:-out/scenarios}
PLAN=${PLAN:-.venv/bin/plan}
mkdir -p "$OUT"
run() {  # scenario, then the model flags of its example run (NAME=... names the output)
  local scenario=$1; shift
  local name=${NAME:-$scenario}
  echo "\$ plan --scenario $scenario $* --out $OUT/$name.plan.json" > "$OUT/$name.txt"
  COLUMNS=120 "$PLAN" --scenario "$scenario" "$@" --out "$OUT/$name.plan.json" >> "$OUT/$name.txt" 2>&1
  echo "exit code $?" >> "$OUT/$name.txt"
}
run kws-cortex-m4 --model workloads.mlperf_tiny:DSCNN --input-shape 1x49x10 --allow-unmeasured
run person-detection-esp32s3 --model workloads.mlperf_tiny:MobileNetV1 --input-shape 3x96x96 --allow-unmeasured
run image-classification-rpi4-30fps --model fashion-cnn
run sentence-embeddings-phone --model minilm-l6
run battery-sensor --model lenet5-mnist
# a flag overrides the scenario: a tighter energy limit than the battery's
NAME=battery-sensor-37mJ run battery-sensor --model lenet5-mnist --max-energy 37mJ
