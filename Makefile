# wgmux — see README.md. Everything here runs as root (namespaces, eBPF).
PY      ?= .venv/bin/python
PYTEST  ?= $(PY) -m pytest
WORKERS ?= 2

.PHONY: help setup build build-test deb deb-test dashboard-test dashboard-png test unit-test netlab-test netlab-test-slow kernel-matrix verifier-test demo bench reap clean

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
	@echo "                       guests booting Debian kernels 6.1 and 6.12 (kernel WireGuard; 1-2 h)"
	@echo "make verifier-test     the datapath table on Debian 12's 6.1 kernel in a guest (CI runs it)"
	@echo "make bench             datapath micro-benchmark (BPF_PROG_TEST_RUN); TC vs XDP vs plain forwarding"
	@echo "                       on a single-interface hub (pps, hub CPU per packet; ~1 min); end to end"
	@echo "                       (IPv4, IPv6, across families); the table at 1k..1M sessions (--scale, ~3 min)"
	@echo "make hostile           attacks on a real wgmux serve (tests/hostile/bench.py), TC and XDP: outage,"
	@echo "                       amplification, a 30 s 1,000-source flood's toll on a pair and a new handshake (~7 min)"
	@echo "make reap              remove what crashed netlab runs left behind"
	@echo "make build             bin/wgmux: one file (a zipapp: wgmux, its C datapath, pyroute2) to copy"
	@echo "                       to a hub, run by its /usr/bin/python3 (python3-bpfcc, python3-nacl)"
	@echo "make build-test        bin/wgmux alone in a fresh Debian 12 chroot: --version, check, and serve"
	@echo "                       on a netlab hub end to end (root; ~30 s, ~1 min more the first time)"
	@echo "make deb               build/deb/wgmux_<version>_all.deb: the Debian package (dpkg-deb; lintian clean)"
	@echo "make deb-test          apt-get install the .deb in a fresh Debian 12 chroot: dependencies from Debian,"
	@echo "                       --version, check, systemd-analyze verify, serve end to end, purge (root, network)"
	@echo "make dashboard-test    packaging/grafana/wgmux.json's queries through Debian's prometheus scraping a"
	@echo "                       netlab hub (fetches the package with apt-get download, unpacks it; ~1 min)"
	@echo "make dashboard-png     docs/dashboard.png: that run's queries drawn with matplotlib"
	@echo "make install           after make build: bin/wgmux as PREFIX/bin/wgmux (/usr/local), systemd"
	@echo "                       unit, docs, example /etc/wgmux/config.toml if none (root)"
	@echo "make install-venv      the same, but wgmux in its own venv under PREFIX/lib/wgmux (needs pip)"
	@echo "make uninstall         remove what either install put, except the config"

setup:
	bash scripts/setup.sh

# One file for a hub (docs/build.md): reproducible, pyroute2 pinned in
# packaging/zipapp-requirements.txt (cached in build/wheels by make setup).
build:
	$(SYSTEM_PYTHON) scripts/build.py -o bin/wgmux

# Not part of `test`: the built file copied alone into a debootstrap'ed
# Debian 12 (scripts/chroot.sh, cached in /var/cache/wgmux-chroot).
build-test: build setup-check
	WGMUX_BUILD_TEST=$(CURDIR)/bin/wgmux $(PYTEST) tests/integration/test_zipapp.py

# The Debian package (docs/build.md): dpkg-deb, reproducible (SOURCE_DATE_EPOCH,
# default the last commit's time); lintian runs when it is installed.
DEB_OUT ?= build/deb
deb:
	$(SYSTEM_PYTHON) scripts/deb.py -o $(DEB_OUT)
	@if command -v lintian >/dev/null; then lintian -I --pedantic --fail-on error,warning $$(ls -t $(DEB_OUT)/wgmux_*_all.deb | head -n 1) && echo "lintian: no error, no warning"; \
	else echo "lintian not installed (make setup installs it): not checked"; fi

# Not part of `test`: apt installs the .deb in a debootstrap'ed Debian 12
# (scripts/chroot.sh, cached) from Debian's mirror, then purges it.
deb-test: deb setup-check
	WGMUX_DEB_TEST=$(CURDIR)/$$(ls -t $(DEB_OUT)/wgmux_*_all.deb | head -n 1) $(PYTEST) tests/integration/test_deb.py

# Optional, not part of `test`: the dashboard's queries through Debian's
# prometheus scraping a live netlab hub. The package is fetched with apt-get
# download and unpacked in build/prometheus, not installed (no service).
PROMETHEUS ?= build/prometheus/usr/bin/prometheus
dashboard-test: setup-check $(PROMETHEUS)
	WGMUX_PROMETHEUS=$(CURDIR)/$(PROMETHEUS) $(PYTEST) tests/integration/test_dashboard_scrape.py

# docs/dashboard.png: the same run, each panel's queries over it drawn with
# matplotlib (python3-matplotlib) as Grafana lays them out.
dashboard-png: setup-check $(PROMETHEUS)
	WGMUX_PROMETHEUS=$(CURDIR)/$(PROMETHEUS) WGMUX_DASHBOARD_PNG=$(CURDIR)/docs/dashboard.png \
	  $(PYTEST) tests/integration/test_dashboard_scrape.py

$(PROMETHEUS):
	mkdir -p build/prometheus
	cd build/prometheus && apt-get download prometheus && dpkg-deb -x prometheus_*.deb . && rm -f prometheus_*.deb

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
# accept. The golden table in a 6.1 guest (~5 min, plus ~2 min of
# installs on a fresh machine; its deadlines scaled by the guest's measured
# slowness, the guest's own time limit 30 min for a busy machine); a
# machine that cannot boot the guest skips.
verifier-test: setup-check
	KM_KERNELS=6.1 KM_TIMEOUT=1800 KM_UNAVAILABLE_OK=1 \
	  bash scripts/kernel-matrix.sh -- tests/unit/test_datapath.py -k "not mutants"

demo: setup
	$(PY) -m harness.demo

bench: setup-check
	$(PY) -m harness.bench
	$(PY) -m harness.bench --modes
	$(PY) -m harness.bench --e2e
	$(PY) -m harness.bench --scale

.PHONY: hostile
hostile: setup-check
	$(PY) tests/hostile/bench.py

.PHONY: install install-venv uninstall
install:
	$(INSTALL_VARS) $(if $(FILE),FILE="$(FILE)") sh packaging/install.sh install-file

install-venv:
	$(INSTALL_VARS) sh packaging/install.sh install

uninstall:
	$(INSTALL_VARS) sh packaging/install.sh uninstall

reap: setup-check
	$(PY) -m netlab reap

clean: reap
	rm -rf .venv build bin *.egg-info

.PHONY: setup-check
setup-check:
	@test -x $(PY) || { echo "run 'sudo make setup' first"; exit 1; }
