# wgmux — see README.md. Everything here runs as root (namespaces, eBPF).
PY      ?= .venv/bin/python
PYTEST  ?= $(PY) -m pytest
WORKERS ?= 2

.PHONY: help setup test unit-test netlab-test netlab-test-slow demo bench reap clean

help:
	@echo "make setup             install Debian packages, kernel headers for bcc, .venv (root, idempotent)"
	@echo "make demo              build a netlab topology, run wgmux on its hub, ping through it, tear down"
	@echo "make test              unit + integration tests in parallel (the CI job)"
	@echo "make unit-test         unit tests only"
	@echo "make netlab-test       integration tests on netlab (namespaces, real WireGuard)"
	@echo "make netlab-test-slow  the minutes-long tests (rekeys, idle timeouts)"
	@echo "make bench             datapath micro-benchmark (BPF_PROG_TEST_RUN)"
	@echo "make reap              remove what crashed netlab runs left behind"

setup:
	bash scripts/setup.sh

test: setup-check
	$(PYTEST) -n $(WORKERS) -m "not slow" tests

unit-test: setup-check
	$(PYTEST) -n $(WORKERS) -m "not slow" tests/unit

netlab-test: setup-check
	$(PYTEST) -n $(WORKERS) -m "not slow" tests/integration

netlab-test-slow: setup-check
	$(PYTEST) -n $(WORKERS) -m slow tests

demo: setup
	$(PY) -m wgmux.demo

bench: setup-check
	$(PY) -m wgmux.bench

reap: setup-check
	$(PY) -m netlab reap

clean: reap
	rm -rf .venv build *.egg-info

.PHONY: setup-check
setup-check:
	@test -x $(PY) || { echo "run 'sudo make setup' first"; exit 1; }
