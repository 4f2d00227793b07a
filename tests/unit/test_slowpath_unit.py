"""The mac1 slow path (wgmux.slowpath) on the real datapath under
BPF_PROG_TEST_RUN: what the datapath queues, what the slow path decides,
which sessions it opens, and what it re-sends (a fake sender records it;
tests/unit/test_datapath.py::test_real_traffic_is_reflected sends for real).

Keys: mac1 needs only public keys, so any 32 bytes serve as one here.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import os
import secrets
from types import SimpleNamespace

import pytest

from netlab import wait_for
from harness import golden as g
from wgmux import mac1, wire
from harness.testrun import TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT

bcc = pytest.importorskip("bcc", reason="bcc (python3-bpfcc) is not installed")
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (eBPF, namespaces)")

from wgmux.datapath import Datapath  # noqa: E402
from wgmux.model import Endpoint  # noqa: E402
from wgmux.slowpath import SlowPath  # noqa: E402
from wgmux.status import session_pairs  # noqa: E402


def key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


HUB_KEY, I_KEY, R_KEY, OTHER_KEY = key(), key(), key(), key()


def ep(t) -> Endpoint:
    import ipaddress
    return Endpoint(ipaddress.ip_address(t[0]), t[1])


class FakeSender:
    def __init__(self, fail: bool = False, fail_from=()):
        self.sent = []
        self.fail = fail
        self.fail_from = {ep((a, 0)).ip for a in fail_from}   # sources that cannot send

    def send(self, src, dst, payload, ttl, tos=0, ip_id=0, df=False):
        if self.fail or src.ip in self.fail_from:
            raise OSError(101, "Network is unreachable")
        self.sent.append(SimpleNamespace(src=src, dst=dst, payload=payload, ttl=ttl, tos=tos,
                                         ip_id=ip_id, df=df))

    def close(self):
        pass


class Hub:
    """Datapath + slow path, driven one packet at a time."""

    def __init__(self, env: g.Env, peers=None, device_keys=None, classifier=wire.WIREGUARD):
        self.env = env
        env.reset(classifier)
        g.with_responder(env)
        self.config = SimpleNamespace(peers=[SimpleNamespace(port=p, public_key=k)
                                             for p, k in (peers or [(g.P, R_KEY)])])
        keys = device_keys if device_keys is not None else [I_KEY, R_KEY, OTHER_KEY]
        self.device = SimpleNamespace(peers={k: None for k in keys})
        self.sender = FakeSender()
        self.slow = SlowPath(env.dp, lambda: self.config, lambda: self.device, sender=self.sender)

    def packet(self, src, dst, payload, verdict, **kw):
        """Send a frame in; `verdict` it must get; the slow path's decisions."""
        res = self.env.run(g.inbound(src, dst, payload, **kw))
        assert res.retval == verdict, res.retval
        return res, [self.slow.handle(m) for m in self.env.dp.drain_slow_path()]

    def one(self, src, dst, payload, verdict=TC_ACT_SHOT, **kw):
        _res, ds = self.packet(src, dst, payload, verdict, **kw)
        assert len(ds) == 1, ds
        return ds[0]


@pytest.fixture(scope="module")
def env():
    with g.GoldenNet() as net, Datapath(g.HUB_PORT) as dp:
        yield g.Env(dp, net)


def init_for(k: str, sender: int = g.I_IDX, **kw) -> bytes:
    return mac1.with_mac1(g.initiation(sender, **kw), mac1.mac1_key(k))


def response_for(k: str, sender: int = g.R_IDX, receiver: int = g.I_IDX, **kw) -> bytes:
    return mac1.with_mac1(g.response(sender, receiver, **kw), mac1.mac1_key(k))


def counters(env, *names):
    c = env.dp.counters()
    return {n: c[n] for n in names}


# ---- initiations on a peer port ------------------------------------------------

def test_valid_mac1_opens_session_and_resends_to_responder(env):
    hub = Hub(env)
    m = init_for(R_KEY)
    d = hub.one(g.E_I, g.hub(g.P), m)
    assert d.counter == "sp_reflect_initiation"
    s = env.dp.session(g.HUB_PORT, g.I_IDX)
    assert (s.dst, s.src_port, s.expect, s.reverse) == (ep(g.E_I), g.P, ep(g.E_R), None)
    (sent,) = hub.sender.sent
    assert (sent.src, sent.dst) == (ep(g.hub(g.HUB_PORT)), ep(g.E_R))
    assert (sent.payload, sent.ttl, sent.df, sent.ip_id) == (m, 63, True, 0x4242)
    assert counters(env, "slow_initiation", "sp_reflect_initiation") == {
        "slow_initiation": 1, "sp_reflect_initiation": 1}


@pytest.mark.parametrize("what", ["random_mac1", "initiators_own_key", "hub_key", "random_key",
                                  "type1_random_bytes", "mac1_of_other_bytes"])
def test_initiation_not_for_the_responder_is_dropped(env, what):
    hub = Hub(env)
    m = {
        "random_mac1": lambda: g.initiation(),
        "initiators_own_key": lambda: init_for(I_KEY),
        "hub_key": lambda: init_for(HUB_KEY),
        "random_key": lambda: init_for(key()),
        "type1_random_bytes": lambda: b"\x01\0\0\0" + secrets.token_bytes(144),
        # a valid mac1 for R, over other bytes: any change breaks it
        "mac1_of_other_bytes": lambda: (lambda x: x[:20] + bytes([x[20] ^ 1]) + x[21:])(
            init_for(R_KEY)),
    }[what]()
    d = hub.one(g.E_I, g.hub(g.P), m)
    assert d.counter == "sp_drop_mac1" and d.sent is None
    assert env.dp.sessions() == [] and hub.sender.sent == []
    assert counters(env, "sp_drop_mac1", "sp_reflect_initiation") == {
        "sp_drop_mac1": 1, "sp_reflect_initiation": 0}


def test_duplicate_resent_index_clash_dropped(env):
    hub = Hub(env)
    m = init_for(R_KEY)
    assert hub.one(g.E_I, g.hub(g.P), m).counter == "sp_reflect_initiation"
    assert hub.one(g.E_I, g.hub(g.P), m).counter == "sp_reflect_initiation"
    assert len(hub.sender.sent) == 2 and len(env.dp.sessions()) == 1
    # the same index from elsewhere must not take the session over
    assert hub.one(g.E_I_MOVED, g.hub(g.P), m).counter == "sp_drop_index_clash"
    assert env.dp.session(g.HUB_PORT, g.I_IDX).dst == ep(g.E_I)
    assert len(hub.sender.sent) == 2


def test_stale_initiation_dropped(env):
    hub = Hub(env)
    env.run(g.inbound(g.E_I, g.hub(g.P), init_for(R_KEY)))
    (msg,) = env.dp.drain_slow_path()
    old = dataclasses.replace(msg, ktime=msg.ktime - 6 * 10**9)
    assert hub.slow.handle(old).counter == "sp_drop_stale"
    assert env.dp.sessions() == [] and hub.sender.sent == []
    assert hub.slow.handle(msg).counter == "sp_reflect_initiation"


def test_port_without_configured_key_dropped(env):
    hub = Hub(env, peers=[(40009, R_KEY)])      # P is in the map, not in the config
    assert hub.one(g.E_I, g.hub(g.P), init_for(R_KEY)).counter == "sp_drop_no_responder"
    assert env.dp.sessions() == []


def test_responder_gone_meanwhile_dropped(env):
    hub = Hub(env)
    env.run(g.inbound(g.E_I, g.hub(g.P), init_for(R_KEY)))
    env.dp.set_responder(g.P)                    # endpoint unknown now
    (msg,) = env.dp.drain_slow_path()
    assert hub.slow.handle(msg).counter == "sp_drop_no_responder"


def test_send_failure_counted_and_session_removed(env):
    hub = Hub(env)
    hub.slow.sender = FakeSender(fail=True)
    assert hub.one(g.E_I, g.hub(g.P), init_for(R_KEY)).counter == "sp_drop_send"
    assert env.dp.sessions() == []


# The hub's addresses as a hub with two interfaces has them (spec §4c): the
# golden net's two IPv4 addresses on interfaces of their own.
TWO_INTERFACES = {g.HUB4: "pub0", g.HUB6: "pub0", g.NOFWD4: "nofwd0"}


def test_with_several_interfaces_the_first_initiation_leaves_from_each_address(env):
    """Which of the hub's addresses R talks to is unknown before R answers
    (two providers: routing cannot tell), so the initiation leaves from
    each address of R's family, the one it came to first; with one
    interface (the tests above: the same two addresses, interfaces
    unknown) from the one it came to only."""
    hub = Hub(env)
    env.dp.set_hub_addresses(TWO_INTERFACES)
    d = hub.one(g.E_I, g.hub(g.P), init_for(R_KEY))
    assert d.counter == "sp_reflect_initiation" and d.sent == (ep(g.hub(g.HUB_PORT)), ep(g.E_R))
    assert [(s.src, s.dst) for s in hub.sender.sent] == [
        (ep(g.hub(g.HUB_PORT)), ep(g.E_R)), (ep((g.NOFWD4, g.HUB_PORT)), ep(g.E_R))]
    assert counters(env, "slow_initiation", "sp_reflect_initiation") == {
        "slow_initiation": 1, "sp_reflect_initiation": 1}


def test_with_several_interfaces_one_address_that_sends_is_enough(env):
    hub = Hub(env)
    env.dp.set_hub_addresses(TWO_INTERFACES)
    hub.slow.sender = FakeSender(fail_from=[g.HUB4])
    d = hub.one(g.E_I, g.hub(g.P), init_for(R_KEY))
    assert d.counter == "sp_reflect_initiation", d
    assert d.sent == (ep((g.NOFWD4, g.HUB_PORT)), ep(g.E_R))
    assert env.dp.session(g.HUB_PORT, g.I_IDX) is not None


@pytest.mark.parametrize("answered_at", ["first", "other"])
def test_with_several_interfaces_once_r_answered_its_address_alone(env, answered_at):
    """R's response came to one hub address, which the datapath wrote into
    R's direction of the pair (`via`): the next initiation to R (a rekey,
    or anyone's) leaves from that address alone; before, from each."""
    hub = Hub(env)
    env.dp.set_hub_addresses(TWO_INTERFACES)
    address = g.HUB4 if answered_at == "first" else g.NOFWD4
    assert hub.one(g.E_I, g.hub(g.P), init_for(R_KEY)).counter == "sp_reflect_initiation"
    assert len(hub.sender.sent) == 2
    _res, ds = hub.packet(g.E_R, (address, g.HUB_PORT), response_for(I_KEY), TC_ACT_REDIRECT)
    assert [x.counter for x in ds] == ["sp_learn_initiator"]
    hub.sender.sent.clear()
    d = hub.one(g.E_I, g.hub(g.P), init_for(R_KEY, sender=0x11110077))
    assert d.counter == "sp_reflect_initiation", d
    assert [(s.src, s.dst) for s in hub.sender.sent] == [
        (ep((address, g.HUB_PORT)), ep(g.E_R))]
    # the pair gone (expired), unknown again: from each
    for s in env.dp.sessions():
        env.dp.delete_session(s.port, s.index)
    hub.sender.sent.clear()
    hub.one(g.E_I, g.hub(g.P), init_for(R_KEY, sender=0x11110078))
    assert len(hub.sender.sent) == 2, hub.sender.sent


def test_sessions_full():
    with g.GoldenNet() as net, Datapath(g.HUB_PORT, max_sessions=2) as dp:
        env = g.Env(dp, net)
        hub = Hub(env)
        dp.set_session(g.HUB_PORT, 1, g.E_I, g.P)
        dp.set_session(g.HUB_PORT, 2, g.E_I, g.P)
        assert hub.one(g.E_I, g.hub(g.P), init_for(R_KEY)).counter == "sp_drop_sessions_full"
        assert sorted(s.index for s in dp.sessions()) == [1, 2] and hub.sender.sent == []


def test_unreadable_message_counted(env):
    hub = Hub(env)
    assert hub.slow.handle(ValueError("short")).counter == "sp_drop_malformed"
    env.run(g.inbound(g.E_I, g.hub(g.P), init_for(R_KEY)))
    (msg,) = env.dp.drain_slow_path()
    bad = dataclasses.replace(msg, payload=msg.payload[:-1])
    assert hub.slow.handle(bad).counter == "sp_drop_malformed"
    assert env.dp.counters()["sp_drop_malformed"] == 2


# ---- the whole walk, then a responder-initiated handshake --------------------

def walk_to_established(hub: Hub, e_i=g.E_I, e_r=g.E_R, v6=False):
    d = hub.one(e_i, g.hub(g.P, v6), init_for(R_KEY))
    assert d.counter == "sp_reflect_initiation"
    m = response_for(I_KEY)
    res, ds = hub.packet(e_r, g.hub(g.HUB_PORT, v6), m, TC_ACT_REDIRECT)
    assert res.data == g.reflected(g.hub(g.P, v6), e_i, m)
    assert [x.counter for x in ds] == ["sp_learn_initiator"]
    assert ds[0].learned == (g.P, I_KEY)


def test_learns_initiator_from_response(env):
    hub = Hub(env)
    walk_to_established(hub)
    (li,) = env.dp.initiators()
    assert (li.port, li.public_key, li.endpoint, li.index) == (
        g.P, base64.b64decode(I_KEY), ep(g.E_I), g.I_IDX)
    st = hub.slow.status()
    assert [(x["port"], x["public_key"], x["endpoint"]) for x in st["initiators"]] == [
        (g.P, I_KEY, "198.51.100.10:43210")]
    assert st["warnings"] == []


def test_response_for_a_key_the_hub_does_not_know_is_not_learned(env):
    hub = Hub(env, device_keys=[R_KEY, OTHER_KEY])     # I is no peer of the hub
    hub.one(g.E_I, g.hub(g.P), init_for(R_KEY))
    _res, ds = hub.packet(g.E_R, g.hub(g.HUB_PORT), response_for(I_KEY), TC_ACT_REDIRECT)
    assert [x.counter for x in ds] == ["sp_learn_unknown"]
    assert env.dp.initiators() == []


def test_responder_initiated_handshake(env):
    hub = Hub(env)
    walk_to_established(hub)
    hub.sender.sent.clear()
    R2, I2 = 0x22220001, 0x11110002
    # The session expired; R's endpoint for I is h:HubPort, so R's
    # initiation to I arrives there.  The stack gets it as well.
    m = init_for(I_KEY, sender=R2)
    res, (d,) = hub.packet(g.E_R, g.hub(g.HUB_PORT), m, TC_ACT_OK)
    assert res.data == g.inbound(g.E_R, g.hub(g.HUB_PORT), m)
    assert d.counter == "sp_reflect_hub_initiation"
    (sent,) = hub.sender.sent
    assert (sent.src, sent.dst, sent.payload, sent.ttl) == (ep(g.hub(g.P)), ep(g.E_I), m, 63)
    s = env.dp.session(g.P, R2)
    assert (s.dst, s.src_port, s.expect, s.reverse) == (ep(g.E_R), g.HUB_PORT, ep(g.E_I), None)
    # I answers to h:P; the datapath reflects it to R from HubPort and
    # establishes the pair, no slow path involved.
    m = response_for(R_KEY, sender=I2, receiver=R2)
    res, ds = hub.packet(g.E_I, g.hub(g.P), m, TC_ACT_REDIRECT)
    assert res.data == g.reflected(g.hub(g.HUB_PORT), g.E_R, m) and ds == []
    s = env.dp.session(g.HUB_PORT, I2)
    assert (s.dst, s.src_port, s.reverse) == (ep(g.E_I), g.P, (g.P, R2))
    # transport both ways
    m = g.transport(I2)
    res = env.run(g.inbound(g.E_R, g.hub(g.HUB_PORT), m))
    assert res.data == g.reflected(g.hub(g.P), g.E_I, m)
    m = g.transport(R2)
    res = env.run(g.inbound(g.E_I, g.hub(g.P), m))
    assert res.data == g.reflected(g.hub(g.HUB_PORT), g.E_R, m)
    pairs = [p for p in session_pairs(env.dp.sessions(), env.dp.hub_port)
             if p["responder_index"] == R2]
    assert len(pairs) == 1 and pairs[0]["initiator_index"] == I2
    assert env.dp.counters()["sp_reflect_hub_initiation"] == 1


def test_responder_initiated_follows_initiator_roaming(env):
    hub = Hub(env)
    walk_to_established(hub)
    env.run(g.inbound(g.E_I_MOVED, g.hub(g.P), g.transport(g.R_IDX)))   # I's NAT rebinds
    hub.sender.sent.clear()
    assert hub.one(g.E_R, g.hub(g.HUB_PORT), init_for(I_KEY, sender=7),
                   TC_ACT_OK).counter == "sp_reflect_hub_initiation"
    assert hub.sender.sent[0].dst == ep(g.E_I_MOVED)


def test_responder_initiated_after_sessions_collected(env):
    """The learned E_I is kept with the identity: it serves when the
    session entries it came from are gone."""
    hub = Hub(env)
    walk_to_established(hub)
    env.dp.flush_sessions()
    hub.sender.sent.clear()
    assert hub.one(g.E_R, g.hub(g.HUB_PORT), init_for(I_KEY, sender=7),
                   TC_ACT_OK).counter == "sp_reflect_hub_initiation"
    assert hub.sender.sent[0].dst == ep(g.E_I)


def test_forgotten_port_no_longer_reaches_its_initiators(env):
    """A reload that removes P or gives it to another responder forgets
    what was learned on it: R's initiation to I then passes to the stack."""
    hub = Hub(env)
    walk_to_established(hub)
    env.dp.flush_sessions()
    assert hub.slow.forget_port(g.P) == 1
    assert env.dp.initiators() == [] and hub.slow.status()["initiators"] == []
    hub.sender.sent.clear()
    assert hub.one(g.E_R, g.hub(g.HUB_PORT), init_for(I_KEY, sender=7),
                   TC_ACT_OK).counter == "sp_pass_hub"
    assert hub.sender.sent == []


@pytest.mark.parametrize("what", ["hub_key", "not_learned", "other_source", "not_a_peer_now",
                                  "random"])
def test_hub_port_initiation_left_to_the_stack(env, what):
    hub = Hub(env)
    if what != "not_learned":
        walk_to_established(hub)
    hub.sender.sent.clear()
    sessions = env.dp.sessions()
    m = {"hub_key": init_for(HUB_KEY, sender=7), "random": g.initiation(7)}.get(
        what, init_for(I_KEY, sender=7))
    src = g.E_R
    if what == "other_source":
        src = ("203.0.113.66", g.E_R[1])     # only R may start a handshake via P
    if what == "not_a_peer_now":
        hub.device = SimpleNamespace(peers={R_KEY: None})
    res, ds = hub.packet(src, g.hub(g.HUB_PORT), m, TC_ACT_OK)
    assert res.data == g.inbound(src, g.hub(g.HUB_PORT), m)
    # from anyone but a responder, the datapath does not even copy it
    assert [d.counter for d in ds] == ([] if what == "other_source" else ["sp_pass_hub"])
    assert hub.sender.sent == [] and env.dp.sessions() == sessions


def test_learned_identities_survive_a_new_slow_path(env):
    """A restarted daemon (same pinned maps) knows whom it learned."""
    hub = Hub(env)
    walk_to_established(hub)
    fresh = Hub.__new__(Hub)
    fresh.__dict__.update(hub.__dict__)
    fresh.sender = FakeSender()
    fresh.slow = SlowPath(env.dp, lambda: hub.config, lambda: hub.device, sender=fresh.sender)
    fresh.slow.load()
    assert fresh.one(g.E_R, g.hub(g.HUB_PORT), init_for(I_KEY, sender=9),
                     TC_ACT_OK).counter == "sp_reflect_hub_initiation"


def test_ipv6_walk(env):
    hub = Hub(env)
    env.dp.set_responder(g.P, *g.E_R6)
    walk_to_established(hub, g.E_I6, g.E_R6, v6=True)
    hub.sender.sent.clear()
    m = init_for(I_KEY, sender=0x66)
    res, (d,) = hub.packet(g.E_R6, g.hub(g.HUB_PORT, True), m, TC_ACT_OK)
    assert d.counter == "sp_reflect_hub_initiation"
    assert (hub.sender.sent[0].src, hub.sender.sent[0].dst) == (ep(g.hub(g.P, True)), ep(g.E_I6))


def test_amneziawg_prefix_kept_mac1_without_it(env):
    c = g.AWG2
    hub = Hub(env, classifier=c)
    I, R = wire.MessageType.INITIATION, wire.MessageType.RESPONSE
    msg = mac1.with_mac1(g.initiation(header=c.headers[I][1]), mac1.mac1_key(R_KEY))
    m = secrets.token_bytes(c.prefixes[I]) + msg
    assert hub.one(g.E_I, g.hub(g.P), m).counter == "sp_reflect_initiation"
    assert hub.sender.sent[0].payload == m           # prefix and all
    resp = mac1.with_mac1(g.response(header=c.headers[R][0]), mac1.mac1_key(I_KEY))
    _res, (d,) = hub.packet(g.E_R, g.hub(g.HUB_PORT), secrets.token_bytes(c.prefixes[R]) + resp,
                            TC_ACT_REDIRECT)
    assert d.counter == "sp_learn_initiator"
    # mac1 computed with WireGuard's type 1 where the H value is sent: not R's
    plain = mac1.with_mac1(g.initiation(sender=3), mac1.mac1_key(R_KEY))
    bad = c.headers[I][1].to_bytes(4, "little") + plain[4:]
    assert hub.one(g.E_I, g.hub(g.P), secrets.token_bytes(c.prefixes[I]) + bad
                   ).counter == "sp_drop_mac1"


# ---- both sides configured as initiator ------------------------------------------

def test_both_initiators_detected(env, caplog):
    """A (responder on P) and B (responder on Q) each point at the other's
    port.  Each handshake is reflected through the port it was sent to;
    once both directions were seen, the slow path warns."""
    A, B, Q = R_KEY, I_KEY, 40003
    E_A, E_B = g.E_R, g.E_I
    hub = Hub(env, peers=[(g.P, A), (Q, B)])
    env.dp.set_responder(Q, *E_B)
    caplog.set_level(logging.INFO, logger="wgmux")
    # B -> h:P (A's port): reflected to A from HubPort; A answers there
    assert hub.one(E_B, g.hub(g.P), init_for(A, sender=0xB1)).counter == "sp_reflect_initiation"
    _r, ds = hub.packet(E_A, g.hub(g.HUB_PORT), response_for(B, sender=0xA1, receiver=0xB1),
                        TC_ACT_REDIRECT)
    assert [d.learned for d in ds] == [(g.P, B)]
    assert hub.slow.warnings() == []                 # one direction: an ordinary pair
    # A -> h:Q (B's port)
    assert hub.one(E_A, g.hub(Q), init_for(B, sender=0xA2)).counter == "sp_reflect_initiation"
    _r, ds = hub.packet(E_B, g.hub(g.HUB_PORT), response_for(A, sender=0xB2, receiver=0xA2),
                        TC_ACT_REDIRECT)
    assert [d.learned for d in ds] == [(Q, A)]
    (w,) = hub.slow.warnings()
    assert "both configured as initiator" in w and f"port {g.P}" in w and f"port {Q}" in w
    assert any("both configured as initiator" in r.message and r.levelname == "WARNING"
               for r in caplog.records)
    assert hub.slow.status()["warnings"] == [w]
    # and each side may still start a handshake through HubPort
    hub.sender.sent.clear()
    assert hub.one(E_A, g.hub(g.HUB_PORT), init_for(B, sender=0xA3),
                   TC_ACT_OK).counter == "sp_reflect_hub_initiation"
    assert hub.sender.sent[-1].src == ep(g.hub(g.P)) and hub.sender.sent[-1].dst == ep(E_B)
    assert hub.one(E_B, g.hub(g.HUB_PORT), init_for(A, sender=0xB3),
                   TC_ACT_OK).counter == "sp_reflect_hub_initiation"
    assert hub.sender.sent[-1].src == ep(g.hub(Q)) and hub.sender.sent[-1].dst == ep(E_A)


# ---- the thread ---------------------------------------------------------------------

def test_thread_consumes_the_ring(env):
    hub = Hub(env)
    hub.slow.start()
    try:
        env.run(g.inbound(g.E_I, g.hub(g.P), init_for(R_KEY)))
        wait_for(lambda: env.dp.counters()["sp_reflect_initiation"] == 1, timeout=5,
                 what="the slow path thread")
        assert len(hub.sender.sent) == 1
    finally:
        hub.slow.stop()
    env.run(g.inbound(g.E_I, g.hub(g.P), init_for(R_KEY, sender=5)))
    assert len(env.dp.drain_slow_path()) == 1       # stopped: nobody consumed it


def test_chain_of_responder_initiated_handshakes_follows_the_initiator(env):
    """R starts every handshake now (it rekeys as the initiator of the last
    one): each response of I comes in on P, never through the slow path,
    yet the next handshake must reach I where it is now."""
    hub = Hub(env)
    walk_to_established(hub)
    env.dp.flush_sessions()              # the first handshake's entries are gone
    E_I2, E_I3 = ("198.51.100.12", 40000), ("198.51.100.13", 40001)
    for n, (was, now) in enumerate([(g.E_I, E_I2), (E_I2, E_I3)]):
        hub.sender.sent.clear()
        r_idx, i_idx = 0x7000 + n, 0x8000 + n
        assert hub.one(g.E_R, g.hub(g.HUB_PORT), init_for(I_KEY, sender=r_idx),
                       TC_ACT_OK).counter == "sp_reflect_hub_initiation"
        assert hub.sender.sent[0].dst == ep(was)
        # I answers (on P), then moves: its transport comes from a new place
        hub.packet(was, g.hub(g.P), response_for(R_KEY, sender=i_idx, receiver=r_idx),
                   TC_ACT_REDIRECT)
        env.run(g.inbound(now, g.hub(g.P), g.transport(r_idx)))
        assert env.dp.session(g.HUB_PORT, i_idx).dst == ep(now)
    hub.sender.sent.clear()
    assert hub.one(g.E_R, g.hub(g.HUB_PORT), init_for(I_KEY, sender=0x7777),
                   TC_ACT_OK).counter == "sp_reflect_hub_initiation"
    assert hub.sender.sent[0].dst == ep(E_I3)
    (li,) = env.dp.initiators()
    assert (li.endpoint, li.index) == (ep(E_I3), 0x8001)


# ---- under load: cookies on the responder's behalf (issue 10) ------------------

def _consume(reply: bytes, responder_key: str, initiation: bytes) -> bytes:
    """The initiator's side of a cookie reply: the cookie (what WireGuard
    does with it, tests/unit/test_cookie.py has the full story)."""
    from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_decrypt
    from wgmux.cookie import cookie_key
    nonce = reply[wire.WG_COOKIE_OFF_NONCE:wire.WG_COOKIE_OFF_COOKIE]
    return crypto_aead_xchacha20poly1305_ietf_decrypt(
        reply[wire.WG_COOKIE_OFF_COOKIE:], initiation[wire.WG_INITIATION_OFF_MAC1:
                                                      wire.WG_INITIATION_OFF_MAC2],
        nonce, cookie_key(responder_key))


def _with_mac2(initiation: bytes, cookie: bytes) -> bytes:
    return initiation[:wire.WG_INITIATION_OFF_MAC2] + mac1.mac(
        cookie, initiation[:wire.WG_INITIATION_OFF_MAC2])


def _loaded_hub(env) -> Hub:
    """A hub whose port P is under load: budget 1/s, used up."""
    hub = Hub(env)
    env.dp.set_port_budget(1, 1)
    hub.one(g.E_I_MOVED, g.hub(g.P), init_for(R_KEY, sender=0x99))
    hub.sender.sent.clear()
    return hub


def test_under_load_cookie_reply_then_mac2_gets_in(env):
    hub = _loaded_hub(env)
    first = init_for(R_KEY)
    d = hub.one(g.E_I, g.hub(g.P), first)
    assert d.counter == "sp_cookie_sent", d
    assert env.dp.session(g.HUB_PORT, g.I_IDX) is None      # nothing opened, nothing sent to R
    (reply,) = hub.sender.sent
    assert (reply.src, reply.dst) == (ep(g.hub(g.P)), ep(g.E_I))
    assert wire.parse_message(reply.payload).__class__.__name__ == "Cookie"
    cookie = _consume(reply.payload, R_KEY, first)

    # WireGuard retries with a new sender index and the cookie's mac2
    retry = _with_mac2(init_for(R_KEY, sender=g.I_IDX + 1), cookie)
    env.dp.set_port_budget(1000, 1000)          # the forward budget has room again
    env.dp.set_port_budget(1, 1)
    hub.slow._budgets.clear()
    d = hub.one(g.E_I, g.hub(g.P), retry)
    assert d.counter == "sp_reflect_mac2", d
    assert hub.sender.sent[-1].dst == ep(g.E_R)
    assert env.dp.session(g.HUB_PORT, g.I_IDX + 1) is not None


def test_under_load_mac2_from_another_source_gets_a_cookie_not_in(env):
    hub = _loaded_hub(env)
    first = init_for(R_KEY)
    hub.one(g.E_I, g.hub(g.P), first)
    cookie = _consume(hub.sender.sent[-1].payload, R_KEY, first)
    # the same mac2 from a spoofed source (a different port) is no good
    d = hub.one((g.E_I[0], g.E_I[1] + 1), g.hub(g.P),
                _with_mac2(init_for(R_KEY, sender=0x4242), cookie))
    assert d.counter == "sp_cookie_sent", d
    assert env.dp.session(g.HUB_PORT, 0x4242) is None


def test_under_load_bad_mac1_gets_nothing(env):
    hub = _loaded_hub(env)
    d = hub.one(g.E_I, g.hub(g.P), init_for(OTHER_KEY))
    assert d.counter == "sp_drop_mac1"
    assert hub.sender.sent == []


def test_forwards_stay_within_the_port_budget(env):
    hub = Hub(env)
    from wgmux.slowpath import Gcra
    env.dp.set_port_budget(0, 0)                 # the datapath never marks it loaded ...
    budget = Gcra(1, 2)
    hub.slow._budget = lambda port: budget
    got = [hub.one((f"198.51.100.{10 + i}", 4000), g.hub(g.P),
                   init_for(R_KEY, sender=0x100 + i)).counter for i in range(4)]
    # ... but the slow path still forwards no more than its budget: beyond
    # it, a cookie (the next try has a mac2), or a wait for one with a mac2
    assert got == ["sp_reflect_initiation"] * 2 + ["sp_cookie_sent"] * 2, got
    first = init_for(R_KEY, sender=0x1FF)
    hub.one(g.E_I, g.hub(g.P), first)
    cookie = _consume(hub.sender.sent[-1].payload, R_KEY, first)
    d = hub.one(g.E_I, g.hub(g.P), _with_mac2(init_for(R_KEY, sender=0x200), cookie))
    assert d.counter == "sp_drop_port_budget", d


def test_half_open_space_per_source_and_oldest_first(env, monkeypatch):
    import wgmux.slowpath as sp
    hub = Hub(env)
    env.dp.set_port_budget(0, 0)
    hub.slow.half_open = sp.HalfOpenSpace(5, 3, hub.slow._still_half_open)
    got = [hub.one((g.E_I[0], 4000 + i), g.hub(g.P), init_for(R_KEY, sender=0x200 + i)).counter
           for i in range(4)]
    assert got == ["sp_reflect_initiation"] * 3 + ["sp_drop_half_open_source"], got
    before = env.dp.counters()["ev_half_open_evicted"]
    for i in range(3):     # other sources: the fourth and fifth evict the oldest
        d = hub.one((f"198.51.100.{50 + i}", 4000), g.hub(g.P), init_for(R_KEY, sender=0x300 + i))
        assert d.counter == "sp_reflect_initiation"
    assert env.dp.counters()["ev_half_open_evicted"] - before == 1
    assert env.dp.session(g.HUB_PORT, 0x200) is None           # the oldest went
    assert env.dp.session(g.HUB_PORT, 0x201) is not None
    # an entry the datapath established leaves the half-open books
    hub.packet(g.E_R, g.hub(g.HUB_PORT), response_for(I_KEY, sender=0x777, receiver=0x201),
               TC_ACT_REDIRECT)
    assert not hub.slow._still_half_open((g.HUB_PORT, 0x201))


def test_martian_source_never_opens(env):
    """The datapath drops them first; the slow path's own check is the
    second line (its messages could come from an older program)."""
    import ipaddress

    from wgmux.model import SlowMessage, monotonic_ns
    hub = Hub(env)
    m = init_for(R_KEY)
    msg = SlowMessage(ktime=monotonic_ns(),
                      ifindex=1, kind=0, src=Endpoint(ipaddress.ip_address("127.0.0.1"), 4),
                      dst=ep(g.hub(g.P)), ttl=64, tos=0, ip_id=0, df=False, payload=m)
    assert hub.slow.handle(msg).counter == "sp_drop_martian"
    assert env.dp.sessions() == []


def test_can_be_peer_agrees_with_the_datapath():
    """The daemon's copy of the datapath's martian rule (for endpoints it
    reads from the device) says no to every martian the golden table
    proves the program refuses, and yes to the peers it serves."""
    from wgmux.slowpath import can_be_peer
    for a in g.MARTIANS4 + g.MARTIANS6:
        assert not can_be_peer(a), a
    for a in (g.E_I[0], g.E_R[0], g.E_I6[0], g.E_R6[0], "64:ff9b::c633:640a", "1.1.1.1"):
        assert can_be_peer(a), a
