# One-command entry points. Each (re)creates the virtual environment only when something changed
# (tools/setup_env.sh keeps a stamp), so a second run starts working within seconds.
VENV ?= .venv
PY := $(VENV)/bin/python
export MMEFF_VENV := $(abspath $(VENV))
# The README's test command. --import-mode=importlib: mmsegmentation's wheel installs a top-level
# `tests` package that would otherwise shadow ours.
PYTEST_ARGS ?=

.PHONY: env demo test test-fast clean-env

env:
	bash tools/setup_env.sh

demo: env
	$(PY) tools/demo.py

test: env
	$(PY) -m pytest tests $(PYTEST_ARGS)

test-fast: env
	$(PY) -m pytest tests -m "not slow" $(PYTEST_ARGS)

clean-env:
	rm -rf $(VENV)
