# talkinghead -- every target bootstraps what it needs (venv, Debian packages) idempotently.
#   make demo   set up, run the whole pipeline on the embedded demo presenter, write reports/demo/demo.mp4
#   make test   set up, run the test suite
#   make bench  set up, time every stage on this machine (JSON in reports/bench.json)
#   make ui     MLflow UI on http://127.0.0.1:5000
#   make app    the local web app (speak from text or audio, onboard, reports) on http://127.0.0.1:8000
#   make real-clips  set up, run the pipeline on every video in ../shared/media/video in a scratch clone, print a table
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMPS := .stamps
export PYTHONUNBUFFERED := 1

.PHONY: help setup system venv demo test bench ui app repro real-clips head-model

help:
	@sed -n '1,7p' Makefile

setup: system venv

system:
	@bash scripts/setup_system.sh

venv: $(STAMPS)/venv

# torch 2.14.1 / torchaudio 2.11.0 / torchvision 0.29.1 come from pip's local wheel store here (pip, not uv/poetry).
$(STAMPS)/venv: requirements.txt requirements-lock.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# (this machine's pip config names local index folders that may not exist: drop those warnings only)
	set -o pipefail; $(PY) -m pip install -q --upgrade pip 2>&1 | { grep -v '^WARNING: Location' || true; }
	set -o pipefail; $(PY) -m pip install -q -r requirements.txt -c requirements-lock.txt 2>&1 | { grep -v '^WARNING: Location' || true; }
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@mkdir -p $(STAMPS) && touch $@

demo: setup
	$(VENV)/bin/talkinghead demo

repro: setup
	$(VENV)/bin/talkinghead repro

test: setup
	$(PY) -m pytest -q -p no:cacheprovider

bench: setup
	$(VENV)/bin/talkinghead bench --out reports/bench.json

real-clips: setup
	bash scripts/real_clips.sh

ui: setup
	$(VENV)/bin/mlflow ui --backend-store-uri "$${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db}" --host 127.0.0.1 --port 5000

app: setup
	$(VENV)/bin/talkinghead app

# Rebuild the shipped open head model asset (needs ../shared/media for the expression PCA; the result is committed).
head-model: setup
	$(PY) -m talkinghead.headmodel.build_open
