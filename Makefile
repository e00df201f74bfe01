# The two commands the README opens with. Each creates .venv and installs what it needs first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned, so that the CPU build is used where one is available
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[embedded,test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/riskstream demo

test: $(STAMP)
	$(BIN)/python -m pytest

# The benchmark scripts (BENCHMARKS.md gives each one's figures); the 10 M-decision query store is built once.
bench: $(STAMP)
	$(BIN)/python bench/model_cost.py
	$(BIN)/python bench/explain_cost.py
	$(BIN)/python bench/audit_writer.py --sequence
	$(BIN)/python bench/audit_query.py
	$(BIN)/python bench/pipeline_cost.py
	$(BIN)/python bench/worker_throughput.py --events 50000
	$(BIN)/python bench/latency.py --seconds 30 --fetch-wait 0.01
	$(BIN)/python bench/fetch_wait.py
	$(BIN)/python bench/scale_out.py

clean:
	rm -rf $(VENV) var
