# The two commands the README leads with: `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
QF := $(VENV)/bin/quipfeed
SHARED_FEED := ../shared/data/bluesky/bluesky_posts_2024-05-01_to_05-23.jsonl
# The public sample beside a checkout when it is there, else the small one bundled with quipfeed.
DEMO_SOURCE := $(if $(wildcard $(SHARED_FEED)),jsonl:$(SHARED_FEED),sample)
DEMO_QUERY ?= what are people saying about the Met Gala
DEMO_NOW ?= 2024-05-08T00:00:00Z

.PHONY: install demo test lint

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: the CPU build from local disk, not a multi-GB CUDA one.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(QF) ingest --once --source $(DEMO_SOURCE)
	$(QF) stats
	$(QF) search "$(DEMO_QUERY)" --now $(DEMO_NOW) --k 5

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	bash .ci/compose-check

test: lint
	# The venv's console scripts (sglang-router) on PATH, as an activated venv would have them.
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/pytest -q -p no:cacheprovider
