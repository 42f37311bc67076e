# stabilityscope — common tasks. `make demo` and `make test` work on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
# Datasets: $STABILITYSCOPE_DATA if set, else a sibling shared/data folder when present, else ./data.
STABILITYSCOPE_DATA ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),data)
export STABILITYSCOPE_DATA

.PHONY: install demo lint test wheel-check docs bench coverage clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

# The canonical run, short: trace and figures land in checkpoints/fmnist_fc-fashion_mnist/<timestamp>/.
# dataset.download=true only downloads when the files are not already in $(STABILITYSCOPE_DATA).
demo: install
	$(PY) -m stabilityscope experiment=demo dataset.download=true

# pyflakes, import order, the 120-column lines and the library's docstrings (pyproject.toml [tool.ruff.lint]).
# `$(VENV)/bin/ruff check --fix .` sorts imports and drops unused ones; long lines and docstrings are fixed by hand.
lint: install
	$(VENV)/bin/ruff check .

# Idle OpenMP threads sleep instead of spinning: the suite runs many small torch ops and is
# often run beside other work on few cores, where spinning threads stall each other.
test: install
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -q

# The built wheel works outside the repository: sdist and wheel by `python -m build`, the wheel installed
# into a fresh environment (borrowing this one's dependencies), then --help, --version, a 2-epoch canonical
# run on a data subset and task=report on its trace, from a folder outside the checkout (about a minute).
wheel-check: install
	PY=$(PY) .ci/wheel_check.sh

# The docs site: docs/_build/html/index.html. Warnings are errors and every cross-reference must resolve
# (tests/test_docs.py builds it the same way, so `make test` and CI check it too).
docs: install
	$(PY) -m sphinx -b html -W --keep-going -n -q docs docs/_build/html
	@echo "docs: docs/_build/html/index.html"

bench: install
	$(PY) benchmarks/bench_training.py
	$(PY) benchmarks/bench_tracking.py
	$(PY) benchmarks/bench_recorder.py
	$(PY) benchmarks/bench_phase_diagram.py
	$(PY) benchmarks/bench_lyapunov.py
	$(PY) benchmarks/bench_vision.py --sample
	$(PY) benchmarks/bench_batched.py --k 8 32
	$(PY) benchmarks/estimate_presets.py

# Dissection coverage: every timm.list_models() name and every torchvision classification model, built
# on the meta device (no weights) and dissected; prints the figures and the names that do not build,
# with the reason (about 20 minutes on 2 CPU cores). CI runs the sample in tests/models/test_coverage.py.
coverage: install
	mkdir -p checkpoints && OMP_NUM_THREADS=1 $(PY) -m stabilityscope.models.coverage --quiet --json checkpoints/coverage.json

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache docs/_build
