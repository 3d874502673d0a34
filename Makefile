# The two commands (see README): `make demo` and `make test`. Each creates or
# refreshes .venv and installs everything: tfkd with its C++ extension,
# TensorFlow 2.21 and the TF-Agents extra. A second run with nothing changed
# only re-runs the job.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.tfkd-installed
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: demo test test-all bench install clean

$(STAMP): requirements.txt setup.py pyproject.toml CMakeLists.txt $(wildcard csrc/*)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -r requirements.txt
	# tf-agents' own metadata pins cannot be resolved beside TF 2.21; its real
	# needs are in requirements.txt (see DESIGN.md).
	$(PIP) install --no-deps tf-agents==0.19.0
	$(PIP) install --no-build-isolation --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/tfkd demo

test: $(STAMP)
	$(BIN)/python -m pytest

test-all: $(STAMP)
	$(BIN)/python -m pytest -m ""

bench: $(STAMP)
	$(BIN)/python benchmarks/kernel.py
	$(BIN)/python benchmarks/distiller.py
	$(BIN)/python benchmarks/rl.py

clean:
	rm -rf $(VENV) build *.egg-info tfkd/_C*.so tfkd/_tf_ops.so
