# The two commands (see README): `make demo` and `make test`. Each creates or
# refreshes .venv and installs everything: tfkd with its C++ extension,
# TensorFlow 2.21 and the extras below. A second run with nothing changed
# only re-runs the job. pyproject.toml holds every requirement and pin.
PYTHON ?= python3
EXTRAS := agents,box2d,atari,deploy,minatar,ray,test
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.tfkd-installed
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

# pyproject.toml's lists, one requirement a line (tomllib: Python 3.11+).
# setup.py builds against the installed TensorFlow, so the build's tools and
# every dependency are installed before tfkd, which is then built without
# build isolation; tf-agents goes in without its dependencies (its pins
# cannot be resolved beside TF 2.21; the `agents` extra lists its real needs).
READ_PYPROJECT := $(BIN)/python -c 'import sys, tomllib; \
  p = tomllib.load(open("pyproject.toml", "rb")); extras = p["project"]["optional-dependencies"]; \
  print(*(p["build-system"]["requires"] + p["project"]["dependencies"] \
          + [r for e in sys.argv[1].split(",") for r in extras[e]]), sep="\n") \
  if sys.argv[1] else print(*p["tool"]["tfkd"]["install-without-deps"], sep="\n")'

.PHONY: demo test test-all bench install clean

$(STAMP): setup.py pyproject.toml CMakeLists.txt $(wildcard csrc/*)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(READ_PYPROJECT) $(EXTRAS) > $(VENV)/requirements.txt
	@$(READ_PYPROJECT) "" > $(VENV)/requirements-no-deps.txt
	$(PIP) install -r $(VENV)/requirements.txt
	$(PIP) install --no-deps -r $(VENV)/requirements-no-deps.txt
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
