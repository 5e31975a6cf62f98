# edgefit: two set-up commands on a fresh machine — `make demo` and `make test`.
# Each creates the virtualenv, installs pinned dependencies and fetches the data itself.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# the TFLite tool virtualenv: litert-torch & co. cannot share .venv (scripts/tflite-tool.txt);
# apply runs scripts/tflite_tool.py with it to write and check model.tflite
TFLITE_VENV  := .venv-tflite
TFLITE_STAMP := $(TFLITE_VENV)/.installed

.PHONY: demo test bench data venv tflite-venv lint schemas readme report clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch pinned in the same command so pip takes the local CPU wheel, never a CUDA build
	$(VENV)/bin/pip install -q torch==2.13.0 -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

$(TFLITE_STAMP): scripts/tflite-tool.txt
	@start=$$(date +%s); \
	$(PYTHON) -m venv $(TFLITE_VENV) && \
	$(TFLITE_VENV)/bin/pip install -q -r scripts/tflite-tool.txt && \
	echo "$(TFLITE_VENV): installed in $$(( $$(date +%s) - start )) s"
	touch $(TFLITE_STAMP)

tflite-venv: $(TFLITE_STAMP)

# idempotent and quick when everything is present, so it runs every time
data: $(STAMP)
	PYTHON=$(PY) bash scripts/fetch_data.sh

demo: data $(TFLITE_STAMP)
	PYTHON=$(PY) bash scripts/demo.sh

# empty temporary caches every run (a new user's machine), wall time printed at the end
test: data $(TFLITE_STAMP)
	VENV=$(VENV) bash scripts/test.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy edgefit_common formats techniques planner cost_models device_specs executors workloads edgefit edgefit_measure.py
	$(VENV)/bin/lint-imports --no-cache

schemas: $(STAMP)
	$(VENV)/bin/edgefit schemas --out docs/schemas

# the README's example outputs, from real runs (scripts/readme_examples.py)
readme: $(STAMP)
	$(VENV)/bin/python scripts/readme_examples.py

# docs/report.md and its figures, from the benchmarks' committed outputs (never edited by hand)
report: $(STAMP)
	$(PY) benchmarks/report.py

bench: data
	$(PY) benchmarks/run.py
	$(PY) benchmarks/fit_catalog.py
	$(PY) benchmarks/cost_model_accuracy.py
	$(PY) benchmarks/compare_techniques.py
	$(PY) benchmarks/compare_techniques.py --models mobilenetv2-fashion --out docs/bench-techniques-mobilenet.md
	$(PY) benchmarks/compare_techniques.py --models minilm-l6 --out docs/bench-techniques-minilm.md
	$(PY) benchmarks/qat.py
	$(PY) benchmarks/int4_matmulnbits.py --threads 1 --rounds 30 --iters 200
	$(PY) benchmarks/int8_qlinear.py
	$(PY) benchmarks/micro_latency.py
	$(PY) benchmarks/boundary_latency.py
	$(PY) benchmarks/peers.py
	$(PY) benchmarks/deep_compression.py
	$(PY) benchmarks/accuracy_planning.py
	$(PY) benchmarks/accuracy_estimators.py --plans 24 --finetuned 3
	$(PY) benchmarks/accuracy_estimators.py --dataset fashion --plans 24 --kl-only --json out/accuracy-estimators
	$(PY) benchmarks/solver_scale.py --time-limit 10
	$(PY) benchmarks/solver_scale.py --time-limit 10 --instances builtin --out docs/bench-solver-builtin.md
	$(PY) benchmarks/report.py

clean:
	rm -rf $(VENV) $(TFLITE_VENV) out plan.json
