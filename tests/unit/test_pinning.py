"""Pinned maps (wgmux.pinning, Datapath(pin_dir=...)): reuse, refusal to
reuse what does not fit, takeover of a killed instance's attachment, and
removal.  Needs root and bcc; each test pins under a directory of its own
on /sys/fs/bpf and removes it.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

import pytest

pytest.importorskip("bcc", reason="bcc (python3-bpfcc) is not installed")
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (eBPF, bpffs)")

from wgmux import pinning  # noqa: E402
from wgmux.datapath import Datapath  # noqa: E402
from wgmux.model import DatapathError  # noqa: E402
from wgmux.program import PROGRAM  # noqa: E402
from wgmux.tc import TC_PRIO, attached_filter, remove_leftovers  # noqa: E402

HUB = 51820
P = 40001


@pytest.fixture
def pin_dir():
    root = pinning.BPFFS / f"wgmux-unit-{os.getpid()}-{secrets.token_hex(3)}"
    d = root / "4026531840-eth0"
    try:
        yield d
    finally:
        pinning.purge(d)
        if root.exists():
            root.rmdir()


def test_pin_dir_names_netns_and_interface():
    ino = os.stat("/proc/self/ns/net").st_ino
    assert pinning.pin_dir_for("eth0") == Path(f"/sys/fs/bpf/wgmux/{ino}-eth0")
    assert pinning.pin_dir_for("wg0", 42) == Path("/sys/fs/bpf/wgmux/42-wg0")
    with pytest.raises(ValueError):
        pinning.pin_dir_for("../x")
    assert pinning.bpffs_mounted()
    assert not pinning.bpffs_mounted(Path("/tmp"))


def test_unpinned_datapath_pins_nothing():
    with Datapath(HUB) as dp:
        assert dp.pin_dir is None and not dp.reused
        assert dp.fresh_reasons == []


def test_state_is_reused_by_the_next_instance(pin_dir):
    with Datapath(HUB, pin_dir=pin_dir, max_sessions=64) as dp:
        assert not dp.reused and dp.fresh_reasons == []
        dp.set_responder(P, "203.0.113.20", 51820)
        dp.set_session(HUB, 7, ("198.51.100.10", 43210), P, expect=("203.0.113.20", 51820),
                       reverse=(P, 9))
        dp.set_session(P, 9, ("203.0.113.20", 51820), HUB, expect=("198.51.100.10", 43210),
                       reverse=(HUB, 7))
        sessions = sorted(dp.sessions(), key=lambda s: s.key)
    names = set(os.listdir(pin_dir))
    assert {"config", "ports", "sessions", "counters", pinning.STATE_FILE} <= names
    state = pinning.read_state(pin_dir)
    assert state["maps"]["sessions"]["max_entries"] == 64
    assert state["netns_cookie"] == pinning.netns_cookie()

    with Datapath(HUB, pin_dir=pin_dir, max_sessions=64) as dp:
        assert dp.reused and dp.fresh_reasons == []
        assert dp.previous_hub_port == HUB
        assert sorted(dp.sessions(), key=lambda s: s.key) == sessions
        assert str(dp.responders()[P].endpoint) == "203.0.113.20:51820"


def test_two_instances_share_the_pinned_maps(pin_dir):
    """What a takeover relies on: the successor's program works on the
    very maps the predecessor's program uses."""
    with Datapath(HUB, pin_dir=pin_dir) as a, Datapath(HUB, pin_dir=pin_dir) as b:
        assert b.reused
        b.set_session(HUB, 5, ("198.51.100.10", 1), P)
        assert [s.index for s in a.sessions()] == [5]


def test_other_max_sessions_carries_the_sessions_over(pin_dir):
    """MaxSessions changed (a restart): a table of the new size takes the
    sessions over, every other map is kept; shrunk below what it holds,
    the most recently used stay (docs/spec.md §10)."""
    with Datapath(HUB, pin_dir=pin_dir, max_sessions=64) as dp:
        for i in range(40):
            dp.set_session(HUB, i, ("198.51.100.10", 43210), P, last_seen=1000 + i)
        dp.set_responder(P, "203.0.113.20", 51820)
        dp.count("sp_drop_mac1", 3)
    with Datapath(HUB, pin_dir=pin_dir, max_sessions=128) as dp:
        assert dp.reused and dp.fresh_reasons == []
        assert dp.program.resized_sessions == (40, 0)
        assert sorted(s.index for s in dp.sessions()) == list(range(40))
        assert dp.responder(P).endpoint is not None and dp.counters()["sp_drop_mac1"] == 3
        assert pinning.read_state(pin_dir)["maps"]["sessions"]["max_entries"] == 128
        assert pinning.map_info_path(pin_dir / "sessions")["max_entries"] == 128
    with Datapath(HUB, pin_dir=pin_dir, max_sessions=32) as dp:
        assert dp.program.resized_sessions == (32, 8)
        assert sorted(s.index for s in dp.sessions()) == list(range(8, 40))


def test_other_max_entries_starts_fresh(pin_dir):
    """Any other map of another size (a build with other limits) is not
    resized: the build starts over."""
    with Datapath(HUB, pin_dir=pin_dir, max_sessions=64, max_ports=64) as dp:
        dp.set_session(HUB, 7, ("198.51.100.10", 43210), P)
    with Datapath(HUB, pin_dir=pin_dir, max_sessions=128, max_ports=128) as dp:
        assert not dp.reused
        assert any("map ports: max_entries is 64 in the pinned map, 128 in this build" in r
                   for r in dp.fresh_reasons), dp.fresh_reasons
        assert dp.sessions() == []
        assert pinning.read_state(pin_dir)["maps"]["sessions"]["max_entries"] == 128


def test_other_session_layout_starts_fresh(pin_dir, tmp_path):
    """A build whose session struct differs (a field added) must not read
    the old entries with the new struct."""
    from wgmux.program import SOURCE

    src = tmp_path / "bpf"
    shutil.copytree(SOURCE.parent, src, ignore=shutil.ignore_patterns("__pycache__"))
    c = src / "wgmux.c"
    text = c.read_text()
    anchor = "\t__u64 last_jiffies;"
    assert text.count(anchor) == 1
    c.write_text(text.replace(anchor, anchor + "\n\t__u64 added_by_a_later_version;"))

    with Datapath(HUB, pin_dir=pin_dir) as dp:
        dp.set_session(HUB, 7, ("198.51.100.10", 43210), P)
    with Datapath(HUB, pin_dir=pin_dir, source=c) as dp:
        assert not dp.reused
        assert any("map sessions: value_size" in r for r in dp.fresh_reasons), dp.fresh_reasons
        assert dp.sessions() == []
    with Datapath(HUB, pin_dir=pin_dir, source=c) as dp:
        assert dp.reused and dp.fresh_reasons == []


def test_same_sizes_other_layout_starts_fresh(pin_dir, tmp_path):
    """Sizes alone would not notice two fields swapped: bcc's layout
    description in the record does."""
    with Datapath(HUB, pin_dir=pin_dir) as dp:
        dp.set_session(HUB, 7, ("198.51.100.10", 43210), P)
    state = pinning.read_state(pin_dir)
    state["maps"]["sessions"]["layout"][1] = state["maps"]["sessions"]["layout"][1].replace(
        "packets", "pockets")
    pinning.write_state(pin_dir, state)
    with Datapath(HUB, pin_dir=pin_dir) as dp:
        assert not dp.reused
        assert "map sessions: key/value layout changed" in dp.fresh_reasons
        assert dp.sessions() == []


@pytest.mark.parametrize("damage", ["no record", "other netns", "record disagrees"])
def test_untrustworthy_pins_start_fresh(pin_dir, damage):
    with Datapath(HUB, pin_dir=pin_dir, max_sessions=64) as dp:
        dp.set_session(HUB, 7, ("198.51.100.10", 43210), P)
    if damage == "no record":
        (pin_dir / pinning.STATE_FILE).unlink()
        expected = "missing or unreadable"
    elif damage == "other netns":
        # an earlier namespace with the same inode, long gone
        state = pinning.read_state(pin_dir)
        state["netns_cookie"] += 1
        pinning.write_state(pin_dir, state)
        expected = "another network namespace"
    else:
        state = pinning.read_state(pin_dir)
        state["maps"]["sessions"]["value_size"] += 8
        pinning.write_state(pin_dir, state)
        expected = "pinned map sessions: value_size"
    with Datapath(HUB, pin_dir=pin_dir, max_sessions=64) as dp:
        assert not dp.reused
        assert any(expected in r for r in dp.fresh_reasons), dp.fresh_reasons
        assert dp.sessions() == []


def test_purge_removes_the_directory(pin_dir):
    with Datapath(HUB, pin_dir=pin_dir):
        pass
    assert pin_dir.is_dir()
    removed = pinning.purge(pin_dir)
    assert "sessions" in removed and pinning.STATE_FILE in removed
    assert not pin_dir.exists()
    assert pinning.purge(pin_dir) == []


# ---- attachment: takeover after SIGKILL, purge -------------------------------

def _tc(node, *args) -> str:
    return node.run(["tc", *args]).stdout


def _killed(dp):
    """What SIGKILL leaves: the filter stays attached, nobody detaches."""
    dp._attached.clear()


def test_takeover_inherits_the_clsact_it_must_remove(pin_dir, veth):
    old = Datapath(HUB, pin_dir=pin_dir)
    old.attach("a0", netns=veth.netns)
    _killed(old)
    try:
        with Datapath(HUB, pin_dir=pin_dir) as new:
            new.attach("a0", netns=veth.netns, replace=True)
            assert new.replaced_filter == old.filter_name
            assert attached_filter("a0", veth.netns) == new.filter_name
            new.detach()
            assert "clsact" not in _tc(veth, "qdisc", "show", "dev", "a0")
    finally:
        old.close()


def test_takeover_leaves_a_foreign_clsact(pin_dir, veth):
    _tc(veth, "qdisc", "add", "dev", "a0", "clsact")
    old = Datapath(HUB, pin_dir=pin_dir)
    old.attach("a0", netns=veth.netns)
    _killed(old)
    try:
        with Datapath(HUB, pin_dir=pin_dir) as new:
            new.attach("a0", netns=veth.netns, replace=True)
            new.detach()
        assert "clsact" in _tc(veth, "qdisc", "show", "dev", "a0")
        assert attached_filter("a0", veth.netns) is None
    finally:
        old.close()


def test_replace_refuses_a_foreign_filter(pin_dir, veth):
    from pyroute2 import IPRoute

    with Datapath(HUB, pin_dir=pin_dir) as dp:
        _tc(veth, "qdisc", "add", "dev", "a0", "clsact")
        with IPRoute(netns=veth.netns) as ipr:
            idx = ipr.link_lookup(ifname="a0")[0]
            ipr.tc("add-filter", "bpf", idx, 1, fd=dp.prog_fd, name="foreign",
                   parent=0xFFFFFFF2, prio=TC_PRIO, protocol=3, classid=1, direct_action=True)
        with pytest.raises(DatapathError, match="not wgmux's"):
            dp.attach("a0", netns=veth.netns, replace=True)
        assert "foreign" in _tc(veth, "filter", "show", "dev", "a0", "ingress")


def test_remove_leftovers_after_a_kill(pin_dir, veth):
    old = Datapath(HUB, pin_dir=pin_dir)
    old.attach("a0", netns=veth.netns)
    _killed(old)
    old.close()                      # its fds go; the attached program stays
    name = attached_filter("a0", veth.netns)
    assert name and name.startswith(PROGRAM)
    removed = remove_leftovers("a0", pin_dir, netns=veth.netns)
    assert removed == [f"TC filter {name} on a0", "clsact qdisc on a0",
                       f"pinned state {pin_dir}"]
    assert attached_filter("a0", veth.netns) is None
    assert "clsact" not in _tc(veth, "qdisc", "show", "dev", "a0")
    assert not pin_dir.exists()
    assert remove_leftovers("a0", pin_dir, netns=veth.netns) == []
