# wgmux — see README.md. Everything here runs as root (namespaces, eBPF).
PY      ?= .venv/bin/python
PYTEST  ?= $(PY) -m pytest
WORKERS ?= 2

.PHONY: help setup test unit-test netlab-test netlab-test-slow kernel-matrix verifier-test demo bench reap clean

# `make install` (see packaging/install.sh and README.md, "Install on a real
# hub"). Every directory is overridable; DESTDIR stages the tree elsewhere
# with its final paths inside.
PREFIX        ?= /usr/local
BINDIR        ?= $(PREFIX)/bin
VENVDIR       ?= $(PREFIX)/lib/wgmux
UNITDIR       ?= $(PREFIX)/lib/systemd/system
DOCDIR        ?= $(PREFIX)/share/doc/wgmux
SYSCONFDIR    ?= /etc
SYSTEM_PYTHON ?= /usr/bin/python3
DESTDIR       ?=
INSTALL_VARS   = PREFIX="$(PREFIX)" BINDIR="$(BINDIR)" VENVDIR="$(VENVDIR)" \
		 UNITDIR="$(UNITDIR)" DOCDIR="$(DOCDIR)" SYSCONFDIR="$(SYSCONFDIR)" \
		 SYSTEM_PYTHON="$(SYSTEM_PYTHON)" DESTDIR="$(DESTDIR)"

help:
	@echo "make setup             install Debian packages, kernel headers for bcc, .venv (root, idempotent)"
	@echo "make demo              build a netlab topology, run wgmux on its hub, ping through it, tear down"
	@echo "make test              unit + integration tests in parallel (the CI job)"
	@echo "make unit-test         unit tests only"
	@echo "make netlab-test       integration tests on netlab (namespaces, real WireGuard)"
	@echo "make netlab-test-slow  the minutes-long tests (rekeys, idle timeouts)"
	@echo "make kernel-matrix     datapath table, discovery, slow path and end-to-end tests in virtme-ng"
	@echo "                       guests booting Debian kernels 6.1 and 6.12 (kernel WireGuard; ~30 min)"
	@echo "make verifier-test     the datapath table on Debian 12's 6.1 kernel in a guest (CI runs it)"
	@echo "make bench             datapath micro-benchmark (BPF_PROG_TEST_RUN); TC vs XDP vs plain forwarding"
	@echo "                       on a single-interface hub (pps, hub CPU per packet; ~1 min); end to end"
	@echo "make hostile           attacks on a real wgmux serve (tests/hostile/bench.py): outage, amplification,"
	@echo "                       a 30 s 1,000-source flood's toll on a pair and a new handshake (~3 min)"
	@echo "make reap              remove what crashed netlab runs left behind"
	@echo "make install           wgmux in its own venv under PREFIX (/usr/local), launcher,"
	@echo "                       systemd unit, example /etc/wgmux/config.toml if none (root)"
	@echo "make uninstall         remove what install put, except the config"

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

# Optional, not part of `test` (see docs/kernel-matrix.md): root, minutes
# per kernel. KM_KERNELS="6.1" picks kernels, KM_TESTS="tests/..." the tests.
kernel-matrix: setup-check
	$(if $(KM_KERNELS),KM_KERNELS="$(KM_KERNELS)") bash scripts/kernel-matrix.sh $(if $(KM_TESTS),-- $(KM_TESTS))

# CI's guard for the datapath on Debian 12's own kernel: its verifier is
# older than most development kernels' and has rejected programs they
# accept. The golden table in a 6.1 guest (~2.5 min, plus ~2 min of
# installs on a fresh machine); a machine that cannot boot the guest skips.
verifier-test: setup-check
	KM_KERNELS=6.1 KM_TIMEOUT=900 KM_UNAVAILABLE_OK=1 \
	  bash scripts/kernel-matrix.sh -- tests/unit/test_datapath.py -k "not mutants"

demo: setup
	$(PY) -m harness.demo

bench: setup-check
	$(PY) -m harness.bench
	$(PY) -m harness.bench --modes
	$(PY) -m harness.bench --e2e

.PHONY: hostile
hostile: setup-check
	$(PY) tests/hostile/bench.py

.PHONY: install uninstall
install:
	$(INSTALL_VARS) sh packaging/install.sh install

uninstall:
	$(INSTALL_VARS) sh packaging/install.sh uninstall

reap: setup-check
	$(PY) -m netlab reap

clean: reap
	rm -rf .venv build *.egg-info

.PHONY: setup-check
setup-check:
	@test -x $(PY) || { echo "run 'sudo make setup' first"; exit 1; }
