"""Shared fixtures and the suite-wide leak check.

Every lab a test run creates (in any xdist worker) is listed in the file
named by NETLAB_RUN_LOG; at the end the controller checks that none of them
left a namespace, socket, registration or process behind, and fails the
run if one did.
"""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The project, and the integration suite's helper modules (flows.py), import
# by plain name under --import-mode=importlib.
for path in (ROOT, ROOT / "tests" / "integration"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))


def _is_worker(config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config):
    if not _is_worker(config) and "WGMUX_BYTECODE_CACHE" not in os.environ:
        # The datapath's compile cache (wgmux/bytecode.py) of this run alone,
        # shared by its workers and the daemons they start: the first start
        # of a build compiles in full, the others load what it kept, and
        # nothing is left in /var/cache on the machine that runs the tests.
        import tempfile
        os.environ["WGMUX_BYTECODE_CACHE"] = tempfile.mkdtemp(prefix="wgmux-bytecode-")
        config._bytecode_cache = os.environ["WGMUX_BYTECODE_CACHE"]
    if not _is_worker(config) and os.geteuid() == 0:
        run_dir = Path("/run/netlab-runs")
        run_dir.mkdir(parents=True, exist_ok=True)
        log = run_dir / f"run-{os.getpid()}.log"
        log.write_text("")
        # Workers inherit the environment, so their labs land in this log.
        os.environ["NETLAB_RUN_LOG"] = str(log)


def pytest_sessionfinish(session, exitstatus):
    if _is_worker(session.config):
        return
    cache = getattr(session.config, "_bytecode_cache", None)
    if cache:
        import shutil
        shutil.rmtree(cache, ignore_errors=True)
    log = os.environ.get("NETLAB_RUN_LOG")
    if not log or not os.path.exists(log):
        return
    from netlab.lab import leftovers

    prefixes = sorted(set(Path(log).read_text().split()))
    os.unlink(log)
    leaks = [item for p in prefixes for item in leftovers(p)]
    leaks += _pinned_leftovers(prefixes)
    if leaks:
        session.config.pluginmanager.get_plugin("terminalreporter").write_line(
            "LEAK CHECK FAILED: the test run left these behind:\n  " + "\n  ".join(leaks), red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    else:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter:
            reporter.write_line(f"leak check: {len(prefixes)} labs, nothing left behind")


def _pinned_leftovers(prefixes) -> list:
    """wgmux pin directories (/sys/fs/bpf/wgmux/...) left by this run's labs:
    each records the name of the network namespace it was made in."""
    try:
        from wgmux import pinning
    except ImportError:
        return []
    if not pinning.PIN_ROOT.is_dir():
        return []
    found = []
    for d in sorted(pinning.PIN_ROOT.iterdir()):
        netns = (pinning.read_state(d) or {}).get("netns") or ""
        if any(netns.startswith(p + "-") for p in prefixes):
            found.append(f"pinned maps {d} (netns {netns})")
    return found


def pytest_collection_modifyitems(config, items):
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="needs root (network namespaces, eBPF)")
        for item in items:
            if "netlab" in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def lab():
    from netlab import Lab

    with Lab() as lab:
        yield lab


@pytest.fixture
def veth(lab):
    """A fresh namespace (a netlab node) holding a veth pair a0 <-> b0."""
    node = lab.add_node("veth")
    lab.link(node, "a0", node, "b0")
    return node
