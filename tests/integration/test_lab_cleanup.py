"""A lab leaves nothing behind: on success, on exception, on SIGINT/SIGTERM,
and after SIGKILL once the reaper has run."""

import signal
import subprocess
import sys
import textwrap

import pytest

from netlab import Lab, leftovers, reap, wait_for
from netlab.lab import scaled
from netlab.capture import Capture
from netlab.wireguard import WireGuard

pytestmark = pytest.mark.netlab


def attach_pass_filter(node, ifname):
    """A real bcc program on clsact ingress, attached with pyroute2."""
    from bcc import BPF

    prog = BPF(text=b"int pass(struct __sk_buff *skb) { return 0; }")
    fn = prog.load_func(b"pass", BPF.SCHED_CLS)
    idx = node.index(ifname)
    node.ipr.tc("add", "clsact", idx)
    node.ipr.tc("add-filter", "bpf", idx, ":1", fd=fn.fd, name="netlab-test",
                parent="ffff:fff2", classid=1, direct_action=True)
    assert node.ipr.get_filters(index=idx, parent="ffff:fff2")


def populate(lab: Lab):
    """One of each kind of thing a lab owns."""
    a, b = lab.add_node("a"), lab.add_node("b")
    lab.link(a, "eth0", b, "eth0", "10.0.0.1/24", "10.0.0.2/24")
    attach_pass_filter(a, "eth0")
    wg = WireGuard.create(a, "w0", 51820, "10.9.0.1/24")
    cap = Capture(a, "eth0", "udp").start()
    a.popen(["sleep", "300"])
    return wg, cap


def test_lab_owns_and_removes_everything():
    with Lab() as lab:
        wg, _cap = populate(lab)
        prefix = lab.prefix
        # The things exist while the lab is open (so the check below can fail).
        found = leftovers(prefix)
        assert any(x.startswith("netns") for x in found)
        if wg.implementation == "wireguard-go":
            assert any(x.startswith("socket") for x in found)
            assert any("wireguard-go" in x for x in found)
        assert any("tcpdump" in x for x in found)
    assert leftovers(prefix) == []


def test_cleanup_on_exception():
    with pytest.raises(RuntimeError, match="boom"):
        with Lab() as lab:
            prefix = lab.prefix
            populate(lab)
            raise RuntimeError("boom")
    assert leftovers(prefix) == []


CHILD = textwrap.dedent("""
    import faulthandler, signal, sys
    # SIGINT as an interactive shell leaves it: a job started in the
    # background of a script inherits it ignored (POSIX), and the test
    # would then wait out a signal that does nothing
    signal.signal(signal.SIGINT, signal.default_int_handler)
    faulthandler.register(signal.SIGUSR1)     # where it is, if it hangs
    sys.path.insert(0, {root!r})
    sys.path.insert(0, {tests!r})
    from netlab import Lab
    from netlab.lab import wait_for_signal
    from test_lab_cleanup import populate
    with Lab() as lab:
        populate(lab)
        print(lab.prefix, flush=True)
        wait_for_signal()
""")


@pytest.fixture
def run_child():
    """Start a child process that holds a populated lab; whatever happens in
    the test, the child is killed and its leftovers reaped afterwards (a
    child whose own cleanup overran the test's wait must not leak)."""
    children = []

    def start():
        child, prefix = _start_child()
        children.append(child)
        return child, prefix

    yield start
    for child in children:
        if child.poll() is None:
            child.kill()
            child.wait()
    reap()


def _start_child():
    import os
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(root=root, tests=here)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    prefix = child.stdout.readline().strip()
    assert prefix, child.stderr.read()
    return child, prefix


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_cleanup_on_signal(run_child, sig):
    child, prefix = run_child()
    assert leftovers(prefix)
    child.send_signal(sig)
    try:
        child.wait(scaled(30))
    except subprocess.TimeoutExpired:
        child.send_signal(signal.SIGUSR1)     # its threads' stacks to stderr
        try:
            child.wait(2)                     # (the dump is written as it lands)
        except subprocess.TimeoutExpired:
            child.kill()
        _out, err = child.communicate()
        pytest.fail(f"the lab's owner did not exit within {scaled(30):g} s of "
                    f"{sig.name}; where it was:\n{err}")
    assert leftovers(prefix) == []


def test_reaper_removes_a_killed_labs_leftovers(run_child):
    child, prefix = run_child()
    child.kill()
    child.wait(30)
    # SIGKILL gives the lab no chance: its things are still there...
    assert any(x.startswith("netns") for x in leftovers(prefix))
    # ...until the reaper sees the owner is dead.
    assert prefix in reap()
    wait_for(lambda: leftovers(prefix) == [], timeout=10, what="reaped leftovers to vanish")


def test_reaper_spares_live_labs():
    with Lab() as lab:
        lab.add_node("a")
        reap()
        assert any(x.startswith("netns") for x in leftovers(lab.prefix))
