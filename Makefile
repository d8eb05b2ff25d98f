# qwatch: `make demo` and `make test` set up everything they need on Debian 12 / Raspberry Pi OS.
# Both are idempotent: Debian packages are installed only when missing, the venv only when
# pyproject.toml changed. Services run as child processes on free loopback ports.

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
SYSTEM_PYTHON ?= $(shell command -v python3)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=

# mosquitto + victoria-metrics: broker and time-series store. gstreamer + python3-gi: the RTSP
# test server, run by the system python. ffmpeg: test videos. chromium: dashboard tests.
# gcc + python3-dev: the tick kernels' ahead-of-time build.
APT_PACKAGES := mosquitto victoria-metrics python3-venv python3-gi ffmpeg \
	gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base \
	gstreamer1.0-plugins-good gstreamer1.0-plugins-bad \
	chromium fonts-dejavu-core systemd postgresql gcc python3-dev

.PHONY: all demo test deps venv lint typecheck imports unit bench clean

all: test

deps:
	@missing=$$(for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

$(VENV)/.installed: pyproject.toml
	@[ -x $(PY) ] || $(SYSTEM_PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@# Compile the wristband tick kernels now, not in the first replay or agent start: into the JIT's
	@# on-disk cache and ahead of time into an extension module that runs without numba (~120 MB less
	@# RSS). A failed AOT build only warns: the kernels then run on the JIT (docs/bands.md).
	QWATCH_KERNELS=jit $(PY) -c 'from edge.bands.kernel_aot import prepare; print(prepare()[1])'
	@touch $@

venv: deps $(VENV)/.installed

lint: venv
	$(VENV)/bin/ruff check .

typecheck: venv
	$(VENV)/bin/mypy

# Package boundaries (docs/architecture.md): the contracts in pyproject.toml [tool.importlinter].
imports: venv
	$(VENV)/bin/lint-imports

unit: venv
	$(VENV)/bin/pytest -q -m "not slow and not integration and not faults" $(PYTEST_ARGS)

test: venv lint typecheck imports
	$(VENV)/bin/pytest -q -m "not slow" --durations=15 $(PYTEST_ARGS)

demo: venv
	$(PY) -m devtools.demo

# Benchmarks run as modules from the repo root (`python -m bench.NAME`), so they import
# bench/, devtools/ and tests/ as packages without path set-up.
bench: venv
	@for b in bench/[a-z]*.py; do m=$$(basename $$b .py); echo "== bench.$$m"; $(PY) -m bench.$$m || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache var
