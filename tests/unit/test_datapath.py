"""The datapath (bpf/wgmux.c) under BPF_PROG_TEST_RUN: the golden table of
harness.golden against the TC program and against the XDP one in front of
it, plus walks and map/attach behaviour the table cannot express.

Needs root and bcc.  The program is compiled once per test session (per
xdist worker); fib lookups run in a private namespace (harness.golden).
"""

from __future__ import annotations

import os
import secrets

import pytest

from netlab import wait_for
from netlab.lab import scaled
from netlab.netns import inside
from harness import golden as g
from wgmux import packet as pk
from wgmux import wire
from wgmux.status import session_pairs
from harness.testrun import TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, XDP_PASS, XDP_TX

bcc = pytest.importorskip("bcc", reason="bcc (python3-bpfcc) is not installed")
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (eBPF, namespaces)")

from wgmux.datapath import COUNTERS, Datapath  # noqa: E402  (needs bcc at use only)

CASES = g.cases()


@pytest.fixture(scope="session")
def golden_env():
    with g.GoldenNet() as net, Datapath(g.HUB_PORT) as dp:
        yield g.Env(dp, net)


# ---- the golden table ------------------------------------------------------

def _describe(frame: bytes) -> str:
    try:
        f = pk.parse(frame)
    except ValueError as e:
        return f"<unparsable: {e}>"
    return (f"{f.src_mac}->{f.dst_mac} {f.src}:{f.sport} -> {f.dst}:{f.dport} ttl={f.ttl} "
            f"ipsum={f.ip_checksum:#06x} udpsum={f.udp_checksum:#06x} len={len(frame)}")


def _assert_row(env, case: g.Case, out: g.Outcome, verdict=None):
    """`out` is what the row says (`verdict`: the program's code for it,
    XDP_TX where XDP finished a reflect row)."""
    got = out.result
    verdict = case.verdict if verdict is None else verdict
    assert got.retval == verdict, f"verdict {got.retval}, want {verdict}"
    assert out.verdicts == {case.reason: 1}, out.verdicts
    assert out.events == case.events, out.events
    problem = g.slow_problem(env, case, out.slow)
    assert problem is None, problem
    if case.output is g.SAME:
        assert got.data == case.packet, "frame must be left untouched"
    elif case.output is not None:
        assert got.data == case.output, (
            f"\n got  {_describe(got.data)}\n want {_describe(case.output)}")
        f = pk.parse(got.data)
        # Redundant with the byte comparison, but says *what* is wrong.
        assert f.ip_checksum_ok(), "IPv4 header checksum"
        if case.partial_csum:
            assert f.udp_checksum_partial(), "UDP checksum field (partial sum)"
        else:
            assert f.udp_checksum_ok() or f.udp_checksum == 0, "UDP checksum"
    if case.check:
        case.check(env, got)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_golden(golden_env, case: g.Case):
    _assert_row(golden_env, case, g.run_case(golden_env, case))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_golden_xdp(golden_env, case: g.Case):
    """XDP in front of TC (docs/spec.md §4a): it finishes exactly the rows
    g.xdp_finishes() names, with the TC row's output, counters, events and
    maps; every other row it passes untouched, counting nothing and writing
    nothing, and the row then holds for TC."""
    out = g.run_case_xdp(golden_env, case)
    x = out.xdp
    if g.xdp_finishes(case):
        assert x.result.retval == XDP_TX, f"XDP gave {x.result.retval}, must finish it (XDP_TX)"
        _assert_row(golden_env, case, x, verdict=XDP_TX)
        return
    assert x.result.retval == XDP_PASS, f"XDP gave {x.result.retval}, must pass it to TC"
    assert x.result.data == case.packet, "XDP must pass the frame untouched"
    assert (x.verdicts, x.events, x.slow) == ({}, {}, []), "XDP must count nothing it passes"
    assert out.after_state == out.passed_state, "XDP must write nothing for what it passes"
    _assert_row(golden_env, case, out.tc)


def test_table_rows_can_fail():
    """Every row pins something that a broken datapath would change."""
    for c in CASES:
        assert c.reason in COUNTERS, c.name
        if c.verdict == TC_ACT_REDIRECT:
            assert isinstance(c.output, bytes) and c.output != c.packet, c.name
            assert c.reason.startswith("reflect_"), c.name
        elif c.verdict == TC_ACT_OK:
            assert c.reason.startswith("pass_") or c.reason == "slow_hub_initiation", c.name
            assert c.output is g.SAME, c.name
        elif c.reason in ("slow_initiation", "slow_under_load"):
            # queued for the slow path, the original dropped untouched
            assert c.verdict == TC_ACT_SHOT and c.output is g.SAME, c.name
        else:
            assert c.verdict == TC_ACT_SHOT and c.reason.startswith("drop_"), c.name
        # what goes to the slow path is exactly what the verdict says
        if c.reason.startswith("slow_"):
            assert c.slow == "initiation", c.name
        elif c.slow is not None:
            assert c.reason == "reflect_response" and c.events.get("ev_slow_response") == 1, c.name
        else:
            assert not c.events.get("ev_slow_response"), c.name
    names = {c.reason for c in CASES} | {e for c in CASES for e in c.events}
    for counter in ("slow_initiation", "slow_hub_initiation", "drop_rate_limited",
                    "pass_hub_rate_limited", "ev_slow_response",
                    "ev_slow_response_rate_limited"):
        assert counter in names, f"no row counts {counter}"
    # XDP finishes rows of every kind it can (test_golden_xdp)
    fast = [c for c in CASES if g.xdp_finishes(c)]
    assert {c.reason for c in fast} == {"reflect_transport", "reflect_cookie"}
    assert any(c.events.get("ev_roam") for c in fast)
    assert any(pk.parse(c.packet).version == 6 for c in fast)
    assert any(c.classifier != wire.WIREGUARD for c in fast)
    assert any(c.bench for c in fast)
    reflected = [c for c in CASES if c.verdict == TC_ACT_REDIRECT]
    for c in reflected:
        f = pk.parse(c.output)
        assert f.ip_checksum_ok(), c.name
        if c.partial_csum:
            assert f.udp_checksum_partial() and not f.udp_checksum_ok(), c.name
        else:
            assert f.udp_checksum_ok() or f.udp_checksum == 0, c.name


def test_checksum_oracle_rejects_stale_checksum():
    """The classic reflector bug (docs/spec.md §4): addresses rewritten, UDP
    checksum left alone.  The oracle must see it."""
    m = g.transport(g.R_IDX)
    good = g.reflected(g.hub(g.HUB_PORT), g.E_R, m)
    stale_udp = g.inbound(g.E_I, g.hub(g.P), m)[40:42]
    bad = good[:40] + stale_udp + good[42:]
    assert pk.parse(good).udp_checksum_ok()
    assert not pk.parse(bad).udp_checksum_ok()
    bad_ip = bytearray(good)
    bad_ip[22] += 1   # TTL changed without the header checksum
    assert not pk.parse(bytes(bad_ip)).ip_checksum_ok()


def test_wire_h_matches_wire_py():
    from wgmux.program import SOURCE
    defines = dict(wire.defines_of_header((SOURCE.parent / "wire.h").read_text()))
    assert len(defines) > 30
    for name, value in defines.items():
        assert getattr(wire, name, None) == value, name


def test_python_classifier_agrees_with_table():
    """wire.Classifier (used by the daemon and netlab) decides as the
    datapath does on every table row that carries UDP."""
    for c in CASES:
        try:
            f = pk.parse(c.packet)
        except ValueError:
            continue
        if f.sport is None:
            continue
        kind, _ = c.classifier.classify(f.payload)
        if c.reason == "drop_unclassified":
            assert kind is None, c.name
        elif c.reason.startswith("reflect_"):
            assert kind is not None and c.reason == f"reflect_{kind.name.lower()}", c.name


# ---- walks: state built by the datapath itself -------------------------------

def _run(env, frame, dev="pub0"):
    before = env.dp.counters()
    res = env.run(frame, dev=dev)
    after = env.dp.counters()
    return res, {k: after[k] - before[k] for k in after if after[k] != before[k]}


def test_walk_handshake_transport_cookie(golden_env):
    env = golden_env
    env.reset()
    g.with_responder(env)

    m = g.initiation()
    res, d = _run(env, g.inbound(g.E_I, g.hub(g.P), m))
    assert res.retval == TC_ACT_SHOT and d == {"slow_initiation": 1}
    (msg,) = env.dp.drain_slow_path()
    assert msg.payload == m
    # what the slow path does once mac1 checks out (tests/unit/test_slowpath_unit.py)
    assert env.dp.insert_session(g.HUB_PORT, g.I_IDX, g.E_I, g.P, expect=g.E_R) == "created"

    m = g.response()
    res, d = _run(env, g.inbound(g.E_R, g.hub(g.HUB_PORT), m))
    assert res.retval == TC_ACT_REDIRECT and d["reflect_response"] == 1
    assert [x.payload for x in env.dp.drain_slow_path()] == [m]
    assert res.data == g.reflected(g.hub(g.P), g.E_I, m)

    k1, k2 = env.dp.session(g.HUB_PORT, g.I_IDX), env.dp.session(g.P, g.R_IDX)
    assert k1.reverse == k2.key and k2.reverse == k1.key
    assert (str(k2.dst.ip), k2.dst.port) == g.E_R and k2.src_port == g.HUB_PORT

    for i in range(3):
        m = g.transport(g.R_IDX, counter=i)
        res, d = _run(env, g.inbound(g.E_I, g.hub(g.P), m))
        assert res.data == g.reflected(g.hub(g.HUB_PORT), g.E_R, m)
        m = g.transport(g.I_IDX, counter=i, n=200)
        res, d = _run(env, g.inbound(g.E_R, g.hub(g.HUB_PORT), m))
        assert res.data == g.reflected(g.hub(g.P), g.E_I, m)
        assert d == {"reflect_transport": 1}, d     # cached next hop: no events

    m = g.cookie(g.R_IDX)
    res, d = _run(env, g.inbound(g.E_I, g.hub(g.P), m))
    assert res.data == g.reflected(g.hub(g.HUB_PORT), g.E_R, m) and d == {"reflect_cookie": 1}

    k2 = env.dp.session(g.P, g.R_IDX)
    assert k2.packets == 4
    assert k2.bytes == 3 * (20 + 8 + 16 + 64 + 16) + (20 + 8 + 64)
    assert k2.last_seen >= k2.created > 0


def test_walk_roaming_follows_initiator(golden_env):
    env = golden_env
    env.reset()
    g.with_established(env)
    env.run(g.inbound(g.E_R, g.hub(g.HUB_PORT), g.transport(g.I_IDX)))
    # I's NAT rebinds: its next packet comes from a new address and port...
    env.run(g.inbound(g.E_I_MOVED, g.hub(g.P), g.transport(g.R_IDX)))
    # ...and R's packets follow it there.
    m = g.transport(g.I_IDX)
    res, d = _run(env, g.inbound(g.E_R, g.hub(g.HUB_PORT), m))
    assert res.data == g.reflected(g.hub(g.P), g.E_I_MOVED, m)
    assert d == {"reflect_transport": 1, "ev_nh_resolved": 1}


def test_invalidate_next_hops(golden_env):
    env = golden_env
    env.reset()
    g.with_established(env)
    f = g.inbound(g.E_I, g.hub(g.P), g.transport(g.R_IDX))
    assert _run(env, f)[1] == {"reflect_transport": 1, "ev_nh_resolved": 1}
    assert _run(env, f)[1] == {"reflect_transport": 1}
    assert env.dp.session(g.P, g.R_IDX).next_hop.current
    env.dp.invalidate_next_hops()
    assert not env.dp.session(g.P, g.R_IDX).next_hop.current
    assert _run(env, f)[1] == {"reflect_transport": 1, "ev_nh_resolved": 1}
    assert env.dp.session(g.P, g.R_IDX).next_hop.current


def test_disabled_passes_everything(golden_env):
    env = golden_env
    env.reset()
    g.with_established(env)
    env.dp.disable()
    f = g.inbound(g.E_I, g.hub(g.P), g.transport(g.R_IDX))
    res, d = _run(env, f)
    assert res.retval == TC_ACT_OK and res.data == f and d == {"pass_not_configured": 1}
    env.reset()


def test_remove_responder_flushes_its_sessions(golden_env):
    env = golden_env
    env.reset()
    g.with_established(env)
    env.dp.set_session(g.HUB_PORT, 0x5555, g.E_I, 40009)   # another port's session
    assert env.dp.remove_responder(g.P)
    assert [s.key for s in env.dp.sessions()] == [(g.HUB_PORT, 0x5555)]
    assert g.P not in env.dp.responders()
    res, d = _run(env, g.inbound(g.E_I, g.hub(g.P), g.transport(g.R_IDX)))
    assert res.retval == TC_ACT_OK and d == {"pass_other_port": 1}


def test_responders_api(golden_env):
    env = golden_env
    env.reset()
    env.dp.set_responder(g.P, *g.E_R)
    env.dp.set_responder(g.P_NOEP)
    r = env.dp.responders()
    assert (str(r[g.P].endpoint.ip), r[g.P].endpoint.port) == g.E_R
    assert r[g.P_NOEP].endpoint is None
    assert env.dp.responder(g.P) == r[g.P] and env.dp.responder(12345) is None
    env.dp.set_responder(g.P, *g.E_R)          # unchanged
    assert env.dp.responder(g.P) == r[g.P]
    env.dp.set_responder(g.P, "203.0.113.99", 1)   # moved
    assert str(env.dp.responder(g.P).endpoint) == "203.0.113.99:1"
    assert not env.dp.remove_responder(12345)


def test_initiators_map_api(golden_env):
    env = golden_env
    env.reset()
    assert env.dp.initiators() == []
    key = bytes(range(32))
    env.dp.learn_initiator(g.P, key, g.E_I, 0x1234)
    (li,) = env.dp.initiators()
    assert (li.port, li.public_key, str(li.endpoint), li.index) == (g.P, key, "198.51.100.10:43210",
                                                                    0x1234)
    env.dp.learn_initiator(g.P, key, g.E_I_MOVED, 0x99)    # relearned: replaced
    (li,) = env.dp.initiators()
    assert li.index == 0x99
    assert env.dp.forget_initiator(g.P, key) and not env.dp.forget_initiator(g.P, key)
    assert env.dp.initiators() == []


def test_slow_rate_config(golden_env):
    dp = golden_env.dp
    golden_env.reset()
    rate, burst = dp.slow_rate()
    assert (rate, burst) == (250.0, 100)
    dp.set_slow_rate(4, 10)
    assert dp.slow_rate() == (4.0, 10)
    dp.set_slow_rate(0)
    assert dp.slow_rate() == (0.0, 0)
    with pytest.raises(ValueError):
        dp.set_slow_rate(-1)
    golden_env.reset()


def test_userspace_counters_only_for_slow_path(golden_env):
    dp = golden_env.dp
    golden_env.reset()
    dp.count("sp_drop_mac1")
    dp.count("sp_drop_mac1", 2)
    assert dp.counters()["sp_drop_mac1"] == 3
    with pytest.raises(ValueError):
        dp.count("reflect_transport")
    from wgmux.datapath import EVENT_COUNTERS, SLOW_PATH_COUNTERS, VERDICT_COUNTERS
    assert not set(SLOW_PATH_COUNTERS) & set(VERDICT_COUNTERS)
    assert len(VERDICT_COUNTERS) + len(EVENT_COUNTERS) + len(SLOW_PATH_COUNTERS) == len(COUNTERS)
    golden_env.reset()


# ---- bounded session table ---------------------------------------------------

def test_sessions_full_is_counted_not_evicting():
    with g.GoldenNet() as net, Datapath(g.HUB_PORT, max_sessions=4) as dp:
        env = g.Env(dp, net)
        env.reset()
        g.with_half_open(env)
        for i in range(3):
            dp.set_session(g.HUB_PORT, 100 + i, g.E_I, g.P)
        res, d = _run(env, g.inbound(g.E_R, g.hub(g.HUB_PORT), g.response()))
        assert res.retval == TC_ACT_SHOT and d == {"drop_sessions_full": 1}
        assert sorted(s.index for s in dp.sessions()) == [100, 101, 102, g.I_IDX]
        # the slow path's inserts fail the same way, without evicting
        assert dp.insert_session(g.HUB_PORT, 7, g.E_I, g.P) == "full"
        assert len(dp.sessions()) == 4


def test_slow_ring_full_is_counted():
    """A ring buffer nobody reads fills up: initiations on a peer port are
    then dropped, on HubPort passed, response copies lost, all counted."""
    with g.GoldenNet() as net, Datapath(g.HUB_PORT,
                                        cflags=["-DWGMUX_SLOW_RING_PAGES=1"]) as dp:
        env = g.Env(dp, net)
        env.reset()
        g.with_half_open(env)
        dp.set_slow_rate(0, 0)
        queued = 0
        while True:
            res, d = _run(env, g.inbound(g.E_I, g.hub(g.P), g.initiation()))
            if d != {"slow_initiation": 1}:
                break
            queued += 1
            assert queued < 100
        assert res.retval == TC_ACT_SHOT and d == {"drop_slow_full": 1}
        assert 10 < queued < 4096 // (64 + 148)
        res, d = _run(env, g.inbound(g.E_R, g.hub(g.HUB_PORT), g.initiation()))
        assert res.retval == TC_ACT_OK and d == {"pass_hub_slow_full": 1}
        res, d = _run(env, g.inbound(g.E_R, g.hub(g.HUB_PORT), g.response()))
        assert res.retval == TC_ACT_REDIRECT
        assert d["reflect_response"] == 1 and d["ev_slow_response_full"] == 1
        assert len(dp.drain_slow_path()) == queued
        res, d = _run(env, g.inbound(g.E_I, g.hub(g.P), g.initiation()))
        assert d == {"slow_initiation": 1}


# ---- attach / detach ---------------------------------------------------------

def _tc(node, *args) -> str:
    return node.run(["tc", *args]).stdout


def test_attach_detach_own_clsact(golden_env, veth):
    dp = golden_env.dp
    dp.attach("a0", netns=veth.netns)
    try:
        assert "clsact" in _tc(veth, "qdisc", "show", "dev", "a0")
        shown = _tc(veth, "filter", "show", "dev", "a0", "ingress")
        assert "wgmux_ingress" in shown and "direct-action" in shown
        assert f"pref {0x5747}" in shown
    finally:
        dp.detach()
    assert "clsact" not in _tc(veth, "qdisc", "show", "dev", "a0")
    assert dp.attachments == []


def test_detach_keeps_foreign_clsact_and_filters(golden_env, veth):
    from pyroute2 import IPRoute
    dp = golden_env.dp
    _tc(veth, "qdisc", "add", "dev", "a0", "clsact")
    # Someone else's filter on the clsact (only cls_bpf is sure to exist
    # on a kernel without modules, so it is a bpf one under another name).
    with IPRoute(netns=veth.netns) as ipr:
        idx = ipr.link_lookup(ifname="a0")[0]
        ipr.tc("add-filter", "bpf", idx, 1, fd=dp.prog_fd, name="foreign",
               parent=0xFFFFFFF3, prio=7, classid=1, direct_action=True)
    ifindex = dp.attach("a0", netns=veth.netns)
    assert ifindex == idx
    assert "wgmux_ingress" in _tc(veth, "filter", "show", "dev", "a0", "ingress")
    dp.detach()
    assert "clsact" in _tc(veth, "qdisc", "show", "dev", "a0")
    assert "wgmux" not in _tc(veth, "filter", "show", "dev", "a0", "ingress")
    assert "foreign" in _tc(veth, "filter", "show", "dev", "a0", "egress")


def test_replace_hands_over_without_detaching_the_successor(golden_env, veth):
    old = golden_env.dp
    old.attach("a0", netns=veth.netns)
    with Datapath(g.HUB_PORT) as new:
        new.attach("a0", netns=veth.netns, replace=True)
        shown = _tc(veth, "filter", "show", "dev", "a0", "ingress")
        assert new.filter_name in shown and old.filter_name not in shown
        old.detach()     # must not remove the successor's filter
        assert new.filter_name in _tc(veth, "filter", "show", "dev", "a0", "ingress")
        assert "clsact" in _tc(veth, "qdisc", "show", "dev", "a0")
        new.detach()
    assert "wgmux" not in _tc(veth, "filter", "show", "dev", "a0", "ingress")


def test_detach_after_namespace_is_gone(golden_env):
    from netlab import Lab
    with Lab() as lab:
        node = lab.add_node("gone")
        lab.link(node, "a0", node, "b0")
        golden_env.dp.attach("a0", netns=node.netns)
    golden_env.dp.detach()
    assert golden_env.dp.attachments == []


# ---- real packets ------------------------------------------------------------
# Test-run records a redirect but never performs it.  Here the program sits
# on a real veth and real sockets exchange the walk, with transmit checksum
# offload off so that receivers verify every checksum in software.

@pytest.fixture(params=["peers_csum_offload", "peers_csum_software"])
def lan(request, lab):
    """Nodes hub, i, r on one bridge: 192.0.2.{1,10,20}/24.  The hub
    finishes checksums in software (tx off), so what leaves it is what the
    datapath computed.  The peers either leave their checksums to the
    "device" (the hub then receives CHECKSUM_PARTIAL skbs) or finish them."""
    peers_offload = request.param == "peers_csum_offload"
    addrs = {"hub": "192.0.2.1", "i": "192.0.2.10", "r": "192.0.2.20"}
    sw = lab.add_node("sw")
    lab.bridge(sw)
    ns = {}
    for role, addr in addrs.items():
        node = lab.add_node(role)
        lab.link(sw, f"{role}s", node, "eth0", b_addr=f"{addr}/24")
        lab.enslave(sw, f"{role}s", "br0")
        if role == "hub" or not peers_offload:
            node.set_tx_checksum("eth0", False)
        ns[role] = node
    return ns, addrs, peers_offload


def _udp_socket(netns: str, port: int):
    import socket
    with inside(netns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    s.settimeout(scaled(5))
    return s


class _Sniffer:
    """Frames as they arrive on a namespace's eth0 (AF_PACKET)."""

    def __init__(self, netns: str):
        import socket
        with inside(netns):
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
            self.sock.bind(("eth0", 0))
        self.sock.settimeout(scaled(5))

    def udp_to(self, port: int, payload: bytes) -> pk.Frame:
        import socket
        while True:
            data, addr = self.sock.recvfrom(65535)
            if addr[2] == socket.PACKET_OUTGOING:
                continue
            try:
                f = pk.parse(data)
            except ValueError:
                continue
            if f.dport == port and f.payload == payload:
                return f

    def close(self):
        self.sock.close()


@pytest.mark.parametrize("forwarding", [False, True], ids=["fwd_off", "fwd_on"])
def test_real_traffic_is_reflected(golden_env, lan, forwarding):
    ns, addrs, peers_offload = lan
    dp = golden_env.dp
    golden_env.reset()
    dp.set_responder(g.P, addrs["r"], 51820)
    si, sr = _udp_socket(ns["i"].netns, 43210), _udp_socket(ns["r"].netns, 51820)
    wi, wr = _Sniffer(ns["i"].netns), _Sniffer(ns["r"].netns)

    def on_wire(sniffer, port, m):
        f = sniffer.udp_to(port, m)
        assert f.ip_checksum_ok() and f.udp_checksum_ok(), f
        assert f.udp_checksum != 0

    if forwarding:
        ns["hub"].sysctl("net.ipv4.conf.eth0.forwarding", 1)
    # The slow path as the daemon runs it, re-sending through the hub's
    # stack with a raw socket opened in the hub's namespace.
    from types import SimpleNamespace

    from wgmux import mac1
    from wgmux.slowpath import RawSender, SlowPath
    r_key = secrets.token_bytes(32)
    with inside(ns["hub"].netns):
        sender = RawSender()
    config = SimpleNamespace(peers=[SimpleNamespace(port=g.P, public_key=r_key)])
    slow = SlowPath(dp, lambda: config, lambda: None, sender=sender)
    dp.attach("eth0", netns=ns["hub"].netns)
    try:
        slow.start()
        # Forwarding off: bpf_fib_lookup() refuses, the datapath falls back
        # to bpf_redirect_neigh().  The initiation leaves through the stack.
        m = mac1.with_mac1(g.initiation(), mac1.mac1_key(r_key))
        si.sendto(m, (addrs["hub"], g.P))
        data, src = sr.recvfrom(2048)
        assert (data, src) == (m, (addrs["hub"], g.HUB_PORT))
        on_wire(wr, 51820, m)

        m = g.response()
        sr.sendto(m, (addrs["hub"], g.HUB_PORT))
        data, src = si.recvfrom(2048)
        assert (data, src) == (m, (addrs["hub"], g.P))
        on_wire(wi, 43210, m)

        ns["hub"].sysctl("net.ipv4.conf.eth0.forwarding", 1)
        dp.invalidate_next_hops()
        for i in range(3):
            m = g.transport(g.R_IDX, counter=i, n=100 * i)
            si.sendto(m, (addrs["hub"], g.P))
            assert sr.recvfrom(2048) == (m, (addrs["hub"], g.HUB_PORT))
            on_wire(wr, 51820, m)
            m = g.transport(g.I_IDX, counter=i)
            sr.sendto(m, (addrs["hub"], g.HUB_PORT))
            assert si.recvfrom(2048) == (m, (addrs["hub"], g.P))
            on_wire(wi, 43210, m)
        # the slow path counts its decision after sending: wait for it
        wait_for(lambda: dp.counters()["sp_reflect_initiation"] == 1, timeout=5,
                 what="the slow path to count the reflected initiation")
        c = dp.counters()
        assert c["slow_initiation"] == 1 and c["sp_reflect_initiation"] == 1
        assert c["reflect_response"] == 1
        assert c["reflect_transport"] == 6
        if forwarding:
            # (the hub learnt the peers' MACs from their ARP requests and
            # its own sends, so every lookup finds a neighbour here; the
            # golden table covers NO_NEIGH)
            assert c["ev_nh_fwd_disabled"] == 0
        else:
            assert c["ev_nh_fwd_disabled"] == 1
        assert c["ev_nh_resolved"] >= 2
        assert dp.session(g.P, g.R_IDX).next_hop.state == "direct"
        # every reflected packet went the partial way, or none did
        assert c["ev_csum_partial"] == (7 if peers_offload else 0), c

        # an initiation whose mac1 is not R's never reaches R
        m = g.initiation(sender=0x5151)
        si.sendto(m, (addrs["hub"], g.P))
        wait_for(lambda: dp.counters()["sp_drop_mac1"] == 1, timeout=5, what="the mac1 drop")
        sr.settimeout(0.5)
        with pytest.raises(OSError):
            sr.recvfrom(2048)
        assert dp.session(g.HUB_PORT, 0x5151) is None
    finally:
        slow.stop()
        sender.close()
        dp.detach()
        for sock in (si, sr, wi, wr):
            sock.close()


# ---- the table catches broken datapaths ----------------------------------------
# Each mutant is a classic reflector bug; the table must fail on it.  If
# wgmux.c changes so that a snippet no longer matches, update the snippet.
MUTANTS = {
    "udp checksum not updated": (
        "\t\tudp->check = check ? check : 0xffff;\n\t}\n\tudp->source = sport;\n",
        "\t}\n\tudp->source = sport;\n"),
    "ttl not decremented": ("\tip->ttl--;\n", "\n"),
    "computed zero checksum sent as zero": (
        "\t\tudp->check = check ? check : 0xffff;\n", "\t\tudp->check = check;\n"),
    "same-family packets leave from the address they came to": (
        "\t\t\t via_addr4(cfg, s, ((struct iphdr *)l3)->daddr));",
        "\t\t\t ((struct iphdr *)l3)->daddr);"),
    "per-interface counting skipped": (
        "\tif (!cfg || cfg->n_ifaces <= 1)\n\t\treturn action;",
        "\treturn action;"),
    "udp checksum misses the address change": (
        "\tsum = (partial ? udp->check : (__u16)~udp->check) + delta;\n",
        "\tsum = partial ? udp->check : (__u16)~udp->check;\n"),
    "header range upper bound excluded": (
        "if (load_le32(m) - lo > cfg->cls[i].hi - lo)",
        "if (load_le32(m) - lo >= cfg->cls[i].hi - lo)"),
    "partial checksums treated as finished ones": (
        "\t\tpartial = udp_csum_partial(ctx, l3, udp, v6);", "\t\tpartial = 0;"),
    "looks-partial checksums never verified": (
        "\tevent(CTR_EV_CSUM_VERIFIED);\n\treturn !segment_sums_to_zero(",
        "\tevent(CTR_EV_CSUM_VERIFIED);\n\treturn 1 || !segment_sums_to_zero("),
    "first fragments not recognised": (
        "if (ip->ihl != 5 || (ip->frag_off & WG_HTONS(WGMUX_IP_MF)))", "if (ip->ihl != 5)"),
    # slow path
    "peer port initiation passed on after queueing": (
        "CTR_SLOW_UNDER_LOAD : CTR_SLOW_INITIATION, TC_ACT_SHOT);",
        "CTR_SLOW_UNDER_LOAD : CTR_SLOW_INITIATION, TC_ACT_OK);"),
    "HubPort initiations not copied": (
        "\t\treturn hub_initiation(skb, cfg, l3, udp, plen, v6);",
        "\t\treturn verdict(CTR_PASS_HUB, TC_ACT_OK);"),
    "responses not copied": (
        "\t\tif (dport == cfg->hub_port)\n\t\t\tcopy_response(ctx, cfg, l3, udp, plen, v6);\n",
        "\n"),
    "payload copied from the UDP header on": (
        "__u32 off = (void *)(udp + 1) - (void *)(long)skb->data;",
        "__u32 off = (void *)udp - (void *)(long)skb->data;"),
    "rate limit never sheds": (
        "\tif (t - now > tolerance)\n\t\treturn 0;",
        "\tif (t - now > tolerance)\n\t\treturn 1;"),
    "the first message from a source not limited": (
        "\t\tslow_rate.update(&k, &next);\n", "\n"),
    "IPv6 sources limited per address, not per /64": (
        "\t\tk->addr[1] = a[1];", "\t\t__builtin_memcpy(k->addr, a, 16);"),
    "rate limit per address and port": (
        "\t\tk->addr[0] = ((struct iphdr *)l3)->saddr;\n",
        "\t\tk->addr[0] = ((struct iphdr *)l3)->saddr;\n"
        "\t\tk->addr[1] = *(__u32 *)((struct iphdr *)l3 + 1);\n"),
    # hostile input (issue 10)
    "roams without a counter check": (
        "\tif (c <= max || c - max > WGMUX_ROAM_WINDOW)", "\tif (0)"),
    "roaming window unbounded": (
        "\tif (c <= max || c - max > WGMUX_ROAM_WINDOW)", "\tif (c <= max)"),
    "martian sources accepted": (
        "\treturn first == 0 || first == 127 || first >= 224 || (h >> 16) == 0xa9fe;",
        "\treturn 0;"),
    "packets for any address reflected": (
        "\t\t__u8 local = hub_addr4(cfg, ip->daddr);\n\t\tif (!local)\n",
        "\t\t__u8 local = 1;\n\t\tif (0)\n"),
    "bad IPv4 header checksums reflected": ("\t\tif (!ipv4_csum_ok(ip))\n", "\t\tif (0)\n"),
    "transport through half-open entries": (
        "\t\tif (half_open)\n\t\t\treturn tc_shot(CTR_DROP_HALF_OPEN, xdp);\n", ""),
    "responses and cookies from anywhere": (
        "\t} else if (!source_is(&s->expect, l3, udp, v6)) {", "\t} else if (0) {"),
    "half-open entries refreshed": ("\tif (!half_open)\n\t\taccount(s, ip_bytes);",
                                    "\taccount(s, ip_bytes);"),
    "ports never under load": ("\tif (!cfg->port_interval_ns)\n\t\treturn 0;",
                               "\tif (1)\n\t\treturn 0;"),
    "HubPort initiations copied from anyone": (
        "\tif (!responder_eps.lookup(&src))\n\t\treturn verdict(CTR_PASS_HUB, TC_ACT_OK);\n", ""),
    "load gates always open": ("\tif (*at && now - *at < WGMUX_GATE_NS)\n\t\treturn -1;\n", ""),
    # the other family (docs/spec.md §4b)
    "the other family never reflected": (
        "\tif (dst->family != family_of(v6)) {", "\tif (dst->family != family_of(v6)) {\n"
        "\t\treturn CTR_DROP_FAMILY;"),
    "translated packets leave from the first address": (
        "\t__u32 i = s->via ? s->via - 1 : 0;", "\t__u32 i = 0;"),
    "translated packets not checked against the MTU": (
        "\t\tif (bpf_check_mtu(skb, ifindex ? ifindex : nh->ifindex, &mtu, 0, 0) > 0)",
        "\t\tif (0)"),
    "IPv4 without UDP checksum translated": (
        "\tif (!v6 && !udp->check)\n\t\treturn verdict(CTR_DROP_NO_CHECKSUM",
        "\tif (0)\n\t\treturn verdict(CTR_DROP_NO_CHECKSUM"),
    "a new session sends from the first address": ("\t\tr.via = via;\n", "\n"),
    # XDP in front of TC (docs/spec.md §4a): caught by test_golden_xdp's rule
    "XDP finishes next hops TC has not cached": (
        "\tif (nh->state != NH_DIRECT || nh->gen != cfg->nh_gen)\n\t\treturn 0;\n", ""),
    "XDP sends out of another interface": (
        "\tif (nh->ifindex != ((struct xdp_md *)ctx)->ingress_ifindex)\n\t\treturn 0;\n", ""),
    "XDP finishes what may be a partial checksum": (
        "\treturn !udp->check || udp->check != pseudo_sum(l3, udp, v6);", "\treturn 1;"),
    "XDP counts what it passes to TC": (
        "\treturn xdp ? XDP_PASS : verdict(reason, TC_ACT_OK);",
        "\treturn verdict(reason, xdp ? XDP_PASS : TC_ACT_OK);"),
}


def _row_holds(env, c: g.Case, out: g.Outcome, verdict: int) -> bool:
    want = c.packet if c.output is g.SAME else c.output
    ok = (out.result.retval == verdict and out.verdicts == {c.reason: 1}
          and out.events == c.events and (want is None or out.result.data == want)
          and g.slow_problem(env, c, out.slow) is None)
    if ok and c.check:
        try:
            c.check(env, out.result)
        except AssertionError:
            ok = False
    return ok


def _failing_rows(env) -> list:
    """The rows that fail against TC, or XDP in front of it."""
    failing = []
    for c in CASES:
        if not _row_holds(env, c, g.run_case(env, c), c.verdict):
            failing.append(c.name)
            continue
        out = g.run_case_xdp(env, c)
        if g.xdp_finishes(c):
            ok = _row_holds(env, c, out.xdp, XDP_TX)
        else:
            x = out.xdp
            ok = (x.result.retval == XDP_PASS and x.result.data == c.packet
                  and (x.verdicts, x.events, x.slow) == ({}, {}, [])
                  and out.after_state == out.passed_state
                  and _row_holds(env, c, out.tc, c.verdict))
        if not ok:
            failing.append(f"{c.name} (XDP)")
    return failing


def test_mutants_are_caught(golden_env, tmp_path):
    from wgmux.program import SOURCE
    original = SOURCE.read_text()
    (tmp_path / "wire.h").write_text((SOURCE.parent / "wire.h").read_text())
    assert _failing_rows(golden_env) == []
    for what, (old, new) in MUTANTS.items():
        assert original.count(old) == 1, f"mutant {what!r} no longer applies to wgmux.c"
        mutant = tmp_path / "wgmux.c"
        mutant.write_text(original.replace(old, new))
        with Datapath(g.HUB_PORT, source=mutant) as dp:
            assert _failing_rows(g.Env(dp, golden_env.net)), f"table misses: {what}"


def test_attach_errors_are_datapath_errors(golden_env, veth):
    from wgmux.model import DatapathError
    with pytest.raises(DatapathError, match="no interface"):
        golden_env.dp.attach("nonexistent0", netns=veth.netns)
    with pytest.raises(DatapathError, match="no network namespace"):
        golden_env.dp.attach("a0", netns=veth.netns + "-gone")
    assert not os.path.exists(f"/var/run/netns/{veth.netns}-gone")
    golden_env.dp.attach("a0", netns=veth.netns)
    try:
        with Datapath(g.HUB_PORT) as other, pytest.raises(DatapathError, match="already"):
            other.attach("a0", netns=veth.netns)
    finally:
        golden_env.dp.detach()
    assert golden_env.dp.attachments == []


# ---- control-plane views -----------------------------------------------------

def test_pairs_say_each_sides_family(golden_env):
    """show (--json): a pair across families says so (docs/spec.md §4b)."""
    env = golden_env
    env.reset()
    g.with_established(env, g.E_I, g.E_R6)
    (pair,) = session_pairs(env.dp.sessions(), env.dp.hub_port)
    assert pair["initiator"] == "198.51.100.10:43210"
    assert pair["responder"] == "[2001:db8:200::20]:51820"
    assert (pair["initiator_family"], pair["responder_family"], pair["translated"]) == \
        ("ipv4", "ipv6", True)


def test_summary_counts_what_the_listing_lists(golden_env):
    """show --summary (and the metrics) count from the table's columns
    what the full listing and its live/stale split say, per port too."""
    from wgmux.daemon import live_pairs
    from wgmux.metrics import render
    from wgmux.model import monotonic_ns
    from wgmux.status import session_summary
    env = golden_env
    env.reset()
    # Times ahead of the clock, never behind it (a machine may have booted
    # seconds ago): the live entries are born 300 s from now, the stale
    # pair now, and both are judged 300 s from now with a 250 s lifetime.
    now = monotonic_ns()
    born = now + 300 * 10**9
    env.dp.set_responder(g.P, *g.E_R)
    env.dp.set_session(g.HUB_PORT, g.I_IDX, g.E_I, g.P, expect=g.E_R, reverse=(g.P, g.R_IDX),
                       created=born)
    env.dp.set_session(g.P, g.R_IDX, g.E_R, g.HUB_PORT, expect=g.E_I,
                       reverse=(g.HUB_PORT, g.I_IDX), created=born)
    env.dp.set_session(g.HUB_PORT, 0x77, g.E_I, g.P, expect=g.E_R, created=born)  # half-open
    env.dp.set_session(g.P_NOEP, 0x78, g.E_R, g.HUB_PORT, expect=g.E_I,         # half-open
                       created=born)
    env.dp.set_session(g.HUB_PORT, 0x99, g.E_I, g.P, expect=g.E_R, created=now)  # stale
    env.run(g.inbound(g.E_I, g.hub(g.P), g.transport(g.R_IDX)))
    env.run(g.inbound(g.E_R, g.hub(g.HUB_PORT), g.transport(g.I_IDX, n=200)))
    args = (1000.0, 1000.0, 250.0)
    now = born
    pairs = session_pairs(env.dp.sessions(), env.dp.hub_port, wall_clock=False)
    live, stale = live_pairs(pairs, now, *args)
    summary = session_summary(env.dp.session_columns(), env.dp.hub_port, now, *args)
    assert (summary["established"], summary["half_open"], summary["stale"]) == (
        sum(p["state"] == "established" for p in live),
        sum(p["state"] == "half-open" for p in live), len(stale)) == (1, 2, 1)
    assert summary["confirmed"] == 1 and summary["entries"] == 5
    want = {}
    for p in live:
        acc = want.setdefault(p["port"], dict.fromkeys(
            ("established", "half_open", "i2r_packets", "i2r_bytes", "r2i_packets",
             "r2i_bytes"), 0))
        acc["established" if p["state"] == "established" else "half_open"] += 1
        for k in ("i2r_packets", "i2r_bytes", "r2i_packets", "r2i_bytes"):
            acc[k] += p[k]
    assert summary["by_port"] == want
    assert summary["by_port"][g.P]["r2i_bytes"] > summary["by_port"][g.P]["i2r_bytes"] > 0
    listed = render({"sessions": live, "stale_sessions": len(stale)})
    counted = render({"sessions_summary": summary, "stale_sessions": summary["stale"]})
    assert listed == counted


def test_collect_idle_and_pairs(golden_env):
    env = golden_env
    env.reset()
    g.with_established(env)
    env.dp.set_session(g.HUB_PORT, 0x77, g.E_I, g.P, expect=g.E_R)       # half-open
    env.run(g.inbound(g.E_I, g.hub(g.P), g.transport(g.R_IDX)))
    env.run(g.inbound(g.E_R, g.hub(g.HUB_PORT), g.transport(g.I_IDX)))
    pairs = {p["state"]: p for p in session_pairs(env.dp.sessions(), env.dp.hub_port)}
    est, half = pairs["established"], pairs["half-open"]
    assert est["port"] == g.P and est["initiator"] == "198.51.100.10:43210"
    assert est["responder"] == "203.0.113.20:51820"
    assert (est["initiator_index"], est["responder_index"]) == (g.I_IDX, g.R_IDX)
    assert (est["i2r_packets"], est["r2i_packets"]) == (1, 1)
    assert est["confirmed"] and not half["confirmed"]
    assert half["responder_index"] is None and half["initiator_index"] == 0x77
    assert (est["initiator_family"], est["responder_family"], est["translated"]) == \
        ("ipv4", "ipv4", False)
    import time
    assert abs(est["last_seen"] - time.time()) < 5

    from wgmux.model import monotonic_ns
    now = monotonic_ns()
    assert env.dp.collect_idle(60, now_ns=now) == 0
    # one direction busy keeps the pair; the half-open entry may go earlier
    assert env.dp.collect_idle(60, half_open_timeout_s=0, now_ns=now + 1) == 1
    assert len(env.dp.sessions()) == 2
    assert env.dp.collect_idle(60, now_ns=now + 61 * 10**9) == 2
    assert env.dp.sessions() == []

    # A pair that has not carried transport both ways (a forged response
    # makes one) keeps the half-open timeout.
    g.with_established(env)
    env.run(g.inbound(g.E_I, g.hub(g.P), g.transport(g.R_IDX)))
    now = monotonic_ns()
    assert env.dp.collect_idle(60, half_open_timeout_s=5, now_ns=now) == 0
    assert env.dp.collect_idle(60, half_open_timeout_s=5, now_ns=now + 6 * 10**9) == 2


def test_amnezia_params_object(golden_env):
    """Anything with s1..s4 and h1..h4 configures the classifier, as
    wgmux.config.AmneziaParams does."""
    from types import SimpleNamespace
    params = SimpleNamespace(s1=23, s2=41, s3=9, s4=5, h1=(100_000, 100_999),
                             h2=(200_000, 299_999), h3=(3_000_000_000, 3_000_000_000),
                             h4=(400_000, 4_000_000))
    assert wire.Classifier.from_params(params) == g.AWG2
    env = golden_env
    env.reset()
    env.dp.configure(g.HUB_PORT, params)
    g.with_responder(env)
    m = g.initiation(header=100_500, prefix=g.rand(23))
    res = env.run(g.inbound(g.E_I, g.hub(g.P), m))
    assert res.retval == TC_ACT_SHOT and env.dp.counters()["slow_initiation"] == 1
    assert [x.payload for x in env.dp.drain_slow_path()] == [m]
    env.reset()


# ---- AmneziaWG junk of every size (issue 5) -----------------------------------

@pytest.mark.parametrize("name", sorted(g.AWG_JUNK_RANGES))
def test_awg_junk_of_every_size_is_never_reflected(golden_env, name):
    """Jc junk and I-packets are random datagrams of any size in [Jmin,
    Jmax), the handshake sizes included.  On a peer port every one is
    dropped and counted (drop_unclassified); on HubPort every one passes to
    the hub's own AmneziaWG untouched; none reaches the slow path, none
    creates state."""
    classifier, jmin, jmax = g.AWG_JUNK_RANGES[name]
    env = golden_env
    env.reset(classifier)
    g.with_established(env)
    sessions = env.dp.sessions()
    env.dp.drain_slow_path()
    for port, verdict, reason in ((g.P, TC_ACT_SHOT, "drop_unclassified"),
                                  (g.HUB_PORT, TC_ACT_OK, "pass_hub")):
        before = env.dp.counters()
        for n in range(jmin, jmax):
            junk = g.junk(classifier, n)
            frame = g.inbound(g.E_I, g.hub(port), junk)
            res = env.run(frame)
            assert res.retval == verdict, (port, n)
            assert res.data == frame, (port, n)
        after = env.dp.counters()
        delta = {k: after[k] - before[k] for k in after if after[k] != before[k]}
        assert delta == {reason: jmax - jmin}, (port, delta)
    assert env.dp.drain_slow_path() == []
    assert env.dp.sessions() == sessions
    env.reset()


def test_ctypes_layouts_match_the_kernels_maps(golden_env):
    """bcc describes each map's key and value to Python from its own parse
    of wgmux.c; where that parse is wrong (it flattens a 2-D array to its
    first dimension) every read and write of the map is out of bounds.
    Every map's ctypes key and value must be the kernel's size."""
    import ctypes as ct

    from wgmux.pinning import map_info_fd
    bpf = golden_env.dp.bpf
    checked = 0
    # (scratch is the program's alone: Python never reads it)
    for name in ("config", "ports", "sessions", "counters", "slow_rate", "load_gates",
                 "initiators", "slow_buf"):
        table = bpf[name.encode()]
        info = map_info_fd(table.get_fd())
        assert ct.sizeof(table.Key) == info["key_size"], (name, "key")
        if info["type"] not in (5, 6, 10):      # per-CPU maps: bcc sizes the per-CPU leaf
            assert ct.sizeof(table.Leaf) == info["value_size"], (name, "value")
        else:
            assert ct.sizeof(table.sLeaf) == info["value_size"], (name, "value")
        checked += 1
    assert checked == 8
