# farmkeeper — two commands on a fresh Debian machine: `make demo` and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APT_PACKAGES := samba smbclient rclone postgresql chromium

.PHONY: demo test bench lint typecheck unit system-deps install clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e . pytest hypothesis pytest-timeout aiosmtpd playwright ruff mypy types-PyYAML pandas-stubs py-spy
	touch $(STAMP)

install: $(STAMP)

# Debian packages the tests and benchmarks run against (real Samba, PostgreSQL, rclone, Chromium).
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

demo: install
	$(BIN)/farmkeeper demo

lint: install
	$(BIN)/ruff check farmkeeper tasks flows deployments tests bench

typecheck: install
	$(BIN)/mypy farmkeeper

test: system-deps install lint typecheck
	$(BIN)/python -m pytest -q

bench: system-deps install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
