# ptycho_exp — every target that needs the environment depends on it, so each works from a fresh clone.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= multirun/demo

.PHONY: install demo test test-e2e test-full test-slurm test-browser lint bench bench-quality clean tike-env

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m pip check
	@touch $(STAMP)

install: $(STAMP)

# A small real study on CPU (conf/study/demo.yaml): PINN, baseline and PtyLab ePIE on one phase-carrying object,
# then the aggregate report with the three-way reconstruction figure (docs/PERFORMANCE.md, "Demo study").
demo: $(STAMP)
	rm -rf $(DEMO_DIR)
	$(BIN)/python -m ptycho_exp study=demo hydra.sweep.dir=$(DEMO_DIR) ++hydra.callbacks.report.final=false
	$(BIN)/ptycho-exp aggregate $(DEMO_DIR) --out $(DEMO_DIR)/aggregate
	@echo "Figures: $(DEMO_DIR)/aggregate/plots/three_way_seed1.png, $(DEMO_DIR)/*/compare_amp_phase.png ; report: $(DEMO_DIR)/aggregate/report.html"

# The fast suite, one worker per core; a file's tests stay together (they share module fixtures).
test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --dist loadfile

test-e2e: $(STAMP)
	$(BIN)/python -m pytest -q -m e2e

test-full: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slurm and not browser" -p no:cacheprovider

test-slurm: $(STAMP)
	bash scripts/slurm-dev-cluster.sh up
	$(BIN)/python -m pytest -q -m slurm tests/sweep/test_slurm.py; rc=$$?; bash scripts/slurm-dev-cluster.sh down; exit $$rc

test-browser: $(STAMP)
	bash scripts/install-browser.sh
	$(BIN)/python -m pytest -q -m browser tests/report/test_report_browser.py

lint: $(STAMP)
	$(BIN)/ruff check ptycho_exp tests bench

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

# The reference quality (docs/CONTRACT.md §7) on the CPU protocol (lines, N=64, 2,048 patterns, 20 epochs; g=1 and g=2): about an hour.
bench-quality: $(STAMP)
	$(BIN)/python bench/quality.py

tike-env:
	bash scripts/make_tike_env.sh

clean:
	rm -rf $(VENV) .cache build *.egg-info outputs multirun/*/ .pytest_cache
