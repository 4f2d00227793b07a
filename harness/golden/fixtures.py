"""The datapath's golden table: (state, input frame) -> (verdict, output
frame, counter reason), run through BPF_PROG_TEST_RUN.

tests/unit/test_datapath.py asserts every row; `python -m harness.bench`
times the rows marked `bench`.  It lives in the package, not under tests/,
so that the benchmark (and a kernel-matrix run) works wherever wgmux is
installed.

Next hops under test-run: the program calls bpf_fib_lookup() in the
network namespace of the thread that runs the test, on the device whose
ifindex we pass as the skb's.  `GoldenNet` builds a private namespace where
every answer is fixed: `pub0` (the hub's public interface, forwarding on)
with a default route via a gateway that has a permanent neighbour entry,
an on-link address with no neighbour (NO_NEIGH), a blackhole route, and
`nofwd0`, a device with forwarding off (FWD_DISABLED).  Each run enters
the namespace only for the syscall, so the test process stays where it was.
"""

from __future__ import annotations

import random
import socket
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple, Union

from wgmux import packet as pk
from wgmux import wire
from netlab.netns import inside
from harness.testrun import TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, TestRunResult, test_run

# ---- the namespace's fixed answers -----------------------------------------
HUB_MAC = "02:00:00:00:00:01"      # pub0
GW_MAC = "02:00:00:00:00:fe"       # the default gateway, permanent neighbour
NOFWD_MAC = "02:00:00:00:00:03"    # nofwd0
HUB4 = "192.0.2.1"
GW4 = "192.0.2.254"
HUB6 = "2001:db8::1"
GW6 = "2001:db8::fe"
NOFWD4 = "100.64.0.1"
HUB_ADDRESSES = (HUB4, HUB6, NOFWD4)

HUB_PORT = 51820
P = 40001          # peer port of responder R
P_NOEP = 40002     # peer port whose responder endpoint is not known yet
OTHER_PORT = 5353

E_I = ("198.51.100.10", 43210)       # initiator, behind NAT, via the gateway
E_I_MOVED = ("198.51.100.11", 50001)
E_R = ("203.0.113.20", 51820)
E_I6 = ("2001:db8:100::10", 43210)
E_R6 = ("2001:db8:200::20", 51820)
E_NO_NEIGH = ("192.0.2.77", 51820)   # on pub0's subnet, never resolved
E_BLACKHOLE = ("198.51.100.66", 51820)

I_IDX = 0x11223344
R_IDX = 0xA1B2C3D4                   # > 2**31 on purpose
STRANGER_IDX = 0x0BADF00D

SAME = "same"    # Case.output: the program must leave the frame untouched


class GoldenNet:
    """A private network namespace giving bpf_fib_lookup() fixed answers.

    A netlab lab of one node, so a crashed run's namespace is reaped and the
    test suite's leak check sees it like any other.
    """

    def __init__(self):
        self.lab = None
        self.name = None
        self.ifindex: Dict[str, int] = {}

    def __enter__(self) -> "GoldenNet":
        from netlab import Lab

        self.lab = Lab().__enter__()
        try:
            node = self.lab.add_node("dp")
            self.name = node.netns
            ipr = node.ipr
            for dev, mac in (("pub0", HUB_MAC), ("nofwd0", NOFWD_MAC)):
                ipr.link("add", ifname=dev, kind="veth", address=mac, peer=f"{dev}p")
                node.up(dev)
                node.up(f"{dev}p")
                self.ifindex[dev] = node.index(dev)
            node.add_address("pub0", f"{HUB4}/24")
            node.add_address("pub0", f"{HUB6}/64")
            node.add_address("nofwd0", f"{NOFWD4}/24")
            node.add_route("0.0.0.0/0", gateway=GW4, ifname="pub0")
            node.add_route("::/0", gateway=GW6, ifname="pub0")
            for gw in (GW4, GW6):
                ipr.neigh("add", dst=gw, lladdr=GW_MAC, ifindex=self.ifindex["pub0"],
                          state=0x80)  # NUD_PERMANENT
            ipr.route("add", dst=f"{E_BLACKHOLE[0]}/32", type="blackhole")
            ipr.route("add", dst="2001:db8:dead::/48", type="blackhole", family=socket.AF_INET6)
            # bpf_fib_lookup() answers FWD_DISABLED unless the input device
            # forwards; nofwd0 keeps the default (off) to test that branch.
            node.sysctl("net.ipv4.conf.pub0.forwarding", 1)
            node.sysctl("net.ipv6.conf.pub0.forwarding", 1)
        except BaseException:
            self.close()
            raise
        return self

    def close(self):
        if self.lab is not None:
            self.lab.close()
            self.lab = None

    def __exit__(self, *exc):
        self.close()

    def inside(self):
        return inside(self.name)

    def run(self, prog_fd: int, frame: bytes, dev: str = "pub0", repeat: int = 1,
            gso_size: int = 0) -> TestRunResult:
        with self.inside():
            return test_run(prog_fd, frame, repeat=repeat, ifindex=self.ifindex[dev],
                            gso_size=gso_size, gso_segs=2 if gso_size else 0)


class Env:
    """A loaded Datapath + its GoldenNet: what a row's setup works with."""

    def __init__(self, dp, net: GoldenNet):
        self.dp = dp
        self.net = net
        dp.set_hub_addresses(HUB_ADDRESSES)

    def reset(self, classifier: wire.Classifier = wire.WIREGUARD, roaming: bool = True):
        self.dp.flush_sessions()
        self.dp.flush_responders()
        self.dp.flush_rate_limits()
        self.dp.flush_initiators()
        self.dp.configure(HUB_PORT, classifier, roaming)
        self.dp.set_hub_addresses(HUB_ADDRESSES)
        self.dp.drain_slow_path()
        self.dp.reset_counters()

    def run(self, frame: bytes, dev: str = "pub0", repeat: int = 1,
            gso_size: int = 0) -> TestRunResult:
        return self.net.run(self.dp.prog_fd, frame, dev=dev, repeat=repeat, gso_size=gso_size)


Setup = Callable[[Env], None]
Check = Callable[[Env, TestRunResult], None]


@dataclass
class Case:
    name: str
    packet: bytes
    verdict: int                         # TC_ACT_* the program returns under test-run
    reason: str                          # the one verdict counter that must count it
    output: Union[bytes, str, None] = SAME   # bytes, SAME, or None (not compared)
    setup: Optional[Setup] = None
    events: Dict[str, int] = field(default_factory=dict)   # exact ev_* deltas
    check: Optional[Check] = None        # further assertions on the maps
    dev: str = "pub0"
    gso_size: int = 0                    # > 0: the skb claims to be a GRO batch
    partial_csum: bool = False           # output UDP checksum field is a partial sum
    classifier: wire.Classifier = wire.WIREGUARD
    roaming: bool = True
    bench: bool = False                  # timed by harness.bench
    # the one message the slow path must get for this packet ("initiation"
    # or "response", checked against the input frame by slow_problem()),
    # or None: it must get nothing
    slow: Optional[str] = None
    slow_load: int = 0                   # its `load` (datapath.LOAD_*): port under load


@dataclass
class Outcome:
    result: TestRunResult
    verdicts: Dict[str, int]             # non-zero verdict counter deltas
    events: Dict[str, int]               # non-zero event counter deltas
    slow: list = field(default_factory=list)   # slow-path messages it caused


def run_case(env: Env, case: Case) -> Outcome:
    env.reset(case.classifier, case.roaming)
    if case.setup:
        case.setup(env)
    env.dp.drain_slow_path()             # what the setup's own packets queued
    before = env.dp.counters()
    result = env.run(case.packet, dev=case.dev, gso_size=case.gso_size)
    after = env.dp.counters()
    slow = env.dp.drain_slow_path()
    delta = {k: after[k] - before[k] for k in after if after[k] != before[k]}
    return Outcome(result,
                   {k: v for k, v in delta.items() if not k.startswith("ev_")},
                   {k: v for k, v in delta.items() if k.startswith("ev_")},
                   slow)


def slow_problem(env: Env, case: Case, msgs: list) -> Optional[str]:
    """None if the slow path got exactly what `case.slow` says: one
    message of that kind carrying the input frame's addresses, ports, TTL
    and whole UDP payload; else what is wrong."""
    if case.slow is None:
        return f"the slow path must get nothing, got {msgs}" if msgs else None
    if len(msgs) != 1:
        return f"the slow path must get one {case.slow}, got {msgs}"
    m, f = msgs[0], pk.parse(case.packet)
    want = {
        "kind": wire.MessageType[case.slow.upper()].value,
        "src": (f.src, f.sport), "dst": (f.dst, f.dport), "ttl": f.ttl,
        "payload": f.payload, "ifindex": env.net.ifindex[case.dev], "load": case.slow_load,
    }
    got = {
        "kind": getattr(m, "kind", None),
        "src": (m.src.ip, m.src.port) if hasattr(m, "src") else None,
        "dst": (m.dst.ip, m.dst.port) if hasattr(m, "dst") else None,
        "ttl": getattr(m, "ttl", None), "payload": getattr(m, "payload", None),
        "ifindex": getattr(m, "ifindex", None), "load": getattr(m, "load", None),
    }
    bad = [k for k in want if want[k] != got[k]]
    return f"slow-path message differs in {bad}: {m}" if bad else None


# ---- frame builders --------------------------------------------------------
_rng = random.Random(0x77676D7578)   # fixed: rows are reproducible


def rand(n: int) -> bytes:
    return bytes(_rng.getrandbits(8) for _ in range(n))


def _ip_kw(addr: str, ttl: int, kw: dict) -> dict:
    if ":" not in addr:
        kw.setdefault("ident", 0x4242)
        kw.setdefault("flags", pk.IP_DF)
    return dict(ttl=ttl, **kw)


def inbound(src, dst, payload: bytes, ttl: int = 64, **kw) -> bytes:
    """A frame arriving at the hub's pub0 from the gateway."""
    return pk.udp_frame(src, dst, payload, src_mac=GW_MAC, dst_mac=HUB_MAC,
                        **_ip_kw(src[0], ttl, kw))


def reflected(src, dst, payload: bytes, ttl: int = 63, **kw) -> bytes:
    """The frame the hub must send back out through the gateway, every
    checksum computed from scratch."""
    return pk.udp_frame(src, dst, payload, src_mac=HUB_MAC, dst_mac=GW_MAC,
                        **_ip_kw(src[0], ttl, kw))


def hub(port: int, v6: bool = False) -> Tuple[str, int]:
    return (HUB6 if v6 else HUB4, port)


def initiation(sender: int = I_IDX, **kw) -> bytes:
    return wire.build_initiation(sender, ephemeral=rand(32), static=rand(48),
                                 timestamp=rand(28), mac1=rand(16), **kw)


def response(sender: int = R_IDX, receiver: int = I_IDX, **kw) -> bytes:
    return wire.build_response(sender, receiver, ephemeral=rand(32), empty=rand(16),
                               mac1=rand(16), **kw)


def cookie(receiver: int, **kw) -> bytes:
    return wire.build_cookie(receiver, nonce=rand(24), cookie=rand(32), **kw)


def transport(receiver: int, n: int = 64, counter: int = 7, **kw) -> bytes:
    return wire.build_transport(receiver, counter, rand(n + 16), **kw)


def _udp_sum(src, dst, payload: bytes) -> int:
    seg = pk.udp(src[0], dst[0], src[1], dst[1], payload, csum=0)
    return pk.csum_sum(pk._pseudo_header(pk.ip(src[0]), pk.ip(dst[0]), pk.IPPROTO_UDP,
                                         len(seg)) + seg)


def _force_udp_csum(src, dst, payload: bytes, at: int, computed: int) -> bytes:
    """Change the payload word at `at` so that the UDP checksum of
    src -> dst computes to `computed` (before 0 is sent as 0xffff)."""
    p = bytearray(payload)
    p[at:at + 2] = b"\0\0"
    want = ~computed & 0xFFFF            # the folded sum that complements to it
    word = (want - _udp_sum(src, dst, bytes(p))) % 0xFFFF
    p[at:at + 2] = word.to_bytes(2, "big")
    assert ~_udp_sum(src, dst, bytes(p)) & 0xFFFF == computed
    return bytes(p)


def _fix_udp_sum_to_zero(src, dst, payload: bytes, at: int) -> bytes:
    return _force_udp_csum(src, dst, payload, at, 0)


def partial_csum(src, dst, payload: bytes) -> int:
    """The UDP checksum field of a CHECKSUM_PARTIAL skb src -> dst."""
    return pk.udp_pseudo_sum(src[0], dst[0], pk.UDP_HLEN + len(payload))


# ---- states ----------------------------------------------------------------
def with_responder(env: Env):
    env.dp.set_responder(P, *E_R)
    env.dp.set_responder(P_NOEP)


def with_half_open(env: Env):
    with_responder(env)
    env.dp.set_session(HUB_PORT, I_IDX, E_I, P, expect=E_R)


def with_established(env: Env, e_i=E_I, e_r=E_R):
    with_responder(env)
    env.dp.set_session(HUB_PORT, I_IDX, e_i, P, expect=e_r, reverse=(P, R_IDX))
    env.dp.set_session(P, R_IDX, e_r, HUB_PORT, expect=e_i, reverse=(HUB_PORT, I_IDX))


def with_established6(env: Env):
    with_established(env, E_I6, E_R6)


def primed(setup: Setup, frame: bytes, dev: str = "pub0") -> Setup:
    """setup, then one packet through the program: the next hop is cached
    and the row measures the steady state."""
    def _setup(env: Env):
        setup(env)
        env.run(frame, dev=dev)
    return _setup


# ---- checks ----------------------------------------------------------------
_ANY = object()


def expect_session(port, index, dst, src_port, expect=None, reverse=_ANY,
                   packets=None, nh_state=None, also: Optional[Check] = None) -> Check:
    def _check(env: Env, _res):
        s = env.dp.session(port, index)
        assert s is not None, f"no session ({port}, {index:#x})"
        assert (str(s.dst.ip), s.dst.port) == tuple(dst), s
        assert s.src_port == src_port, s
        if expect is not None:
            assert (str(s.expect.ip), s.expect.port) == tuple(expect), s
        if reverse is not _ANY:
            assert s.reverse == reverse, s
        if packets is not None:
            assert s.packets == packets, s
        if nh_state is not None:
            assert s.next_hop.state == nh_state, s
        if also:
            also(env, _res)
    return _check


def expect_no_sessions(env: Env, _res):
    assert env.dp.sessions() == [], env.dp.sessions()


def expect_sessions(n: int) -> Check:
    def _check(env: Env, _res):
        assert len(env.dp.sessions()) == n, env.dp.sessions()
    return _check


def _all(*checks: Check) -> Check:
    def _check(env, res):
        for c in checks:
            c(env, res)
    return _check


# ---- AmneziaWG classifiers -------------------------------------------------
AWG1 = wire.Classifier(prefixes=(17, 54, 0, 0),
                       headers=(1404981361, 2092863451, 881264325, 1663391220))
AWG2 = wire.Classifier(prefixes=(23, 41, 9, 5),
                       headers=((100_000, 100_999), (200_000, 299_999),
                                (3_000_000_000, 3_000_000_000), (400_000, 4_000_000)))
# 2.0 with every header a range (the cookie's too), for rows at both ends of
# each range and just outside it.
AWG3 = wire.Classifier(prefixes=(31, 17, 11, 7),
                       headers=((1_000_000, 1_000_999), (2_000_000, 2_099_999),
                                (3_000_000, 3_000_009), (4_000_000, 4_999_999)))
# Junk size ranges [Jmin, Jmax) the datapath test sends every size of; they
# take in every handshake size of their classifier (and Jmin 0 for AWG2).
AWG_JUNK_RANGES = {"awg1": (AWG1, 32, 200), "awg2": (AWG2, 0, 256), "awg3": (AWG3, 20, 200)}


def _h(c: wire.Classifier, kind: wire.MessageType, where: str = "lo") -> int:
    lo, hi = c.headers[kind]
    return {"lo": lo, "hi": hi, "below": lo - 1, "above": hi + 1}[where]


def _junk(c: wire.Classifier, n: int) -> bytes:
    """n random bytes that `c` does not classify (the Python classifier is
    the oracle; redraw in the unlikely case they look like a message)."""
    while True:
        junk = rand(n)
        if c.classify(junk)[0] is None:
            return junk


def cases() -> List[Case]:
    """The table.  Built fresh on each call (rows carry random payloads
    drawn from a fixed seed, so every call returns the same bytes)."""
    _rng.seed(0x77676D7578)
    I = wire.MessageType.INITIATION
    R = wire.MessageType.RESPONSE
    C = wire.MessageType.COOKIE
    T = wire.MessageType.TRANSPORT
    rows: List[Case] = []
    add = rows.append

    # -- handshake, IPv4 ----------------------------------------------------
    # Initiations are never reflected here: on a peer port the datapath
    # queues them for the slow path (mac1 against R's key, wgmux.slowpath)
    # and drops the original; on HubPort it queues a copy and passes them.
    m = initiation()
    add(Case("init_peer_port_to_slow_path", inbound(E_I, hub(P), m), TC_ACT_SHOT,
             "slow_initiation", SAME, setup=with_responder, slow="initiation",
             check=expect_no_sessions))
    m = initiation()
    add(Case("init_peer_port_no_responder_endpoint", inbound(E_I, hub(P_NOEP), m), TC_ACT_SHOT,
             "drop_no_responder", SAME, setup=with_responder, check=expect_no_sessions))
    m = initiation()
    add(Case("init_hub_port_passes_and_copied", inbound(E_R, hub(HUB_PORT), m), TC_ACT_OK,
             "slow_hub_initiation", setup=with_responder, slow="initiation",
             check=expect_no_sessions))
    m = initiation()
    add(Case("init_hub_port_established_passes_and_copied", inbound(E_R, hub(HUB_PORT), m),
             TC_ACT_OK, "slow_hub_initiation", setup=with_established, slow="initiation",
             check=expect_sessions(2)))
    m = initiation()
    add(Case("init_hub_port_not_from_a_responder_not_copied", inbound(E_I, hub(HUB_PORT), m),
             TC_ACT_OK, "pass_hub", setup=with_responder, check=expect_no_sessions))
    m = initiation()
    add(Case("init_hub_port_from_responder_other_port_not_copied",
             inbound((E_R[0], E_R[1] + 1), hub(HUB_PORT), m), TC_ACT_OK, "pass_hub",
             setup=with_responder, check=expect_no_sessions))
    m = initiation()
    add(Case("init_other_port_passes", inbound(E_I, hub(OTHER_PORT), m), TC_ACT_OK,
             "pass_other_port", setup=with_responder, check=expect_no_sessions))
    m = initiation()
    add(Case("init_short_dropped", inbound(E_I, hub(P), m[:-1]), TC_ACT_SHOT,
             "drop_unclassified", setup=with_responder, check=expect_no_sessions))
    m = initiation() + b"\0"
    add(Case("init_oversized_dropped", inbound(E_I, hub(P), m), TC_ACT_SHOT,
             "drop_unclassified", setup=with_responder, check=expect_no_sessions))
    m = initiation()
    add(Case("init_short_hub_port_passes", inbound(E_R, hub(HUB_PORT), m[:-1]), TC_ACT_OK,
             "pass_hub", setup=with_responder))
    m = initiation()
    add(Case("init_ttl1_dropped_no_state", inbound(E_I, hub(P), m, ttl=1), TC_ACT_SHOT,
             "drop_ttl", None, setup=with_responder, check=expect_no_sessions))
    m = initiation()
    add(Case("init_ttl2_to_slow_path", inbound(E_I, hub(P), m, ttl=2), TC_ACT_SHOT,
             "slow_initiation", SAME, setup=with_responder, slow="initiation"))
    m = initiation()
    add(Case("init_ttl1_hub_port_copied", inbound(E_R, hub(HUB_PORT), m, ttl=1), TC_ACT_OK,
             "slow_hub_initiation", setup=with_responder, slow="initiation"))
    m = initiation()
    add(Case("v6_init_to_v4_responder_dropped", inbound(E_I6, hub(P, True), m), TC_ACT_SHOT,
             "drop_family", SAME, setup=with_responder, check=expect_no_sessions))

    # -- slow-path rate limit (per source address, GCRA) ----------------------
    def limited(rate: float, burst: int, *primes, v6: bool = False) -> Setup:
        """A responder (IPv6 with v6), the limit, then one initiation from
        each of `primes` ((src, port) pairs) to use up its allowance."""
        def _setup(env: Env):
            with_responder(env)
            if v6:
                env.dp.set_responder(P, *E_R6)
            env.dp.set_slow_rate(rate, burst)
            for src, port in primes:
                env.run(inbound(src, hub(port, ":" in src[0]), initiation()))
        return _setup

    m = initiation()
    add(Case("rate_first_initiation_passes", inbound(E_I, hub(P), m), TC_ACT_SHOT,
             "slow_initiation", SAME, setup=limited(1, 1), slow="initiation"))
    m = initiation()
    add(Case("rate_second_initiation_shed", inbound(E_I, hub(P), m), TC_ACT_SHOT,
             "drop_rate_limited", SAME, setup=limited(1, 1, (E_I, P))))
    m = initiation()
    add(Case("rate_is_per_address_not_port", inbound((E_I[0], 1), hub(P), m), TC_ACT_SHOT,
             "drop_rate_limited", SAME, setup=limited(1, 1, (E_I, P))))
    m = initiation()
    add(Case("rate_other_source_unaffected", inbound(E_I_MOVED, hub(P), m), TC_ACT_SHOT,
             "slow_initiation", SAME, setup=limited(1, 1, (E_I, P)), slow="initiation"))
    m = initiation()
    add(Case("rate_burst_allows_third", inbound(E_I, hub(P), m), TC_ACT_SHOT,
             "slow_initiation", SAME, setup=limited(1, 3, (E_I, P), (E_I, P)),
             slow="initiation"))
    m = initiation()
    add(Case("rate_burst_exhausted", inbound(E_I, hub(P), m), TC_ACT_SHOT,
             "drop_rate_limited", SAME, setup=limited(1, 3, (E_I, P), (E_I, P), (E_I, P))))
    m = initiation()
    add(Case("rate_zero_is_unlimited", inbound(E_I, hub(P), m), TC_ACT_SHOT,
             "slow_initiation", SAME, setup=limited(0, 0, *[(E_I, P)] * 20),
             slow="initiation"))
    m = initiation()
    add(Case("rate_hub_port_shed_still_passes", inbound(E_R, hub(HUB_PORT), m), TC_ACT_OK,
             "pass_hub_rate_limited", setup=limited(1, 1, (E_R, HUB_PORT))))
    m = initiation()
    add(Case("rate_shared_by_hub_and_peer_ports", inbound(E_R, hub(HUB_PORT), m), TC_ACT_OK,
             "pass_hub_rate_limited", setup=limited(1, 1, (E_R, P))))
    m = initiation()
    add(Case("rate_v6_same_64_shed", inbound(("2001:db8:100::99", 7), hub(P, True), m),
             TC_ACT_SHOT, "drop_rate_limited", SAME, setup=limited(1, 1, (E_I6, P), v6=True)))
    m = initiation()
    add(Case("rate_v6_other_64_unaffected", inbound(("2001:db8:100:1::10", 7), hub(P, True), m),
             TC_ACT_SHOT, "slow_initiation", SAME, setup=limited(1, 1, (E_I6, P), v6=True),
             slow="initiation"))
    m = response()
    add(Case("rate_response_copy_shed_still_reflected", inbound(E_R, hub(HUB_PORT), m),
             TC_ACT_REDIRECT, "reflect_response", reflected(hub(P), E_I, m),
             setup=lambda env: (limited(1, 1, (E_R, HUB_PORT))(env),
                                env.dp.set_session(HUB_PORT, I_IDX, E_I, P, expect=E_R)),
             events={"ev_session_established": 1, "ev_nh_resolved": 1,
                     "ev_slow_response_rate_limited": 1},
             check=expect_session(P, R_IDX, E_R, HUB_PORT, reverse=(HUB_PORT, I_IDX))))

    # -- responses ------------------------------------------------------------
    # A reflected response on HubPort is also copied to the slow path: its
    # mac1 names the initiator, which the hub learns (wgmux.slowpath).
    m = response()
    add(Case("response_hub_port_half_open_reflected", inbound(E_R, hub(HUB_PORT), m),
             TC_ACT_REDIRECT, "reflect_response", reflected(hub(P), E_I, m),
             setup=with_half_open, slow="response",
             events={"ev_session_established": 1, "ev_nh_resolved": 1,
                     "ev_slow_response": 1},
             check=expect_session(P, R_IDX, E_R, HUB_PORT, expect=E_I,
                                  reverse=(HUB_PORT, I_IDX), packets=0,
                                  also=expect_session(HUB_PORT, I_IDX, E_I, P, expect=E_R,
                                                      reverse=(P, R_IDX), packets=1,
                                                      nh_state="direct"))))
    m = response()
    add(Case("response_duplicate_reflected_again", inbound(E_R, hub(HUB_PORT), m),
             TC_ACT_REDIRECT, "reflect_response", reflected(hub(P), E_I, m),
             setup=with_established, slow="response",
             events={"ev_nh_resolved": 1, "ev_slow_response": 1}, check=expect_sessions(2)))
    m = response(sender=STRANGER_IDX)
    add(Case("response_sender_index_clash_dropped", inbound(E_R, hub(HUB_PORT), m),
             TC_ACT_SHOT, "drop_index_clash", SAME,
             setup=lambda env: (with_half_open(env),
                                env.dp.set_session(P, STRANGER_IDX, E_I_MOVED, HUB_PORT)),
             check=expect_session(HUB_PORT, I_IDX, E_I, P, reverse=None)))
    # Responder-initiated handshake (docs/spec.md §9): R's initiation came in on
    # HubPort, the slow path opened (P, R's sender) -> {E_R, from HubPort}
    # and sent it to E_I from P; I's response comes back on P.
    def with_half_open_from_r(env: Env):
        with_responder(env)
        env.dp.set_session(P, R_IDX, E_R, HUB_PORT, expect=E_I)

    m = response(sender=I_IDX, receiver=R_IDX)
    add(Case("response_responder_initiated_reflected", inbound(E_I, hub(P), m),
             TC_ACT_REDIRECT, "reflect_response", reflected(hub(HUB_PORT), E_R, m),
             setup=with_half_open_from_r,
             events={"ev_session_established": 1, "ev_nh_resolved": 1},
             check=expect_session(HUB_PORT, I_IDX, E_I, P, expect=E_R, reverse=(P, R_IDX),
                                  packets=0,
                                  also=expect_session(P, R_IDX, E_R, HUB_PORT, expect=E_I,
                                                      reverse=(HUB_PORT, I_IDX), packets=1))))
    m = transport(I_IDX)
    add(Case("transport_after_responder_initiated", inbound(E_R, hub(HUB_PORT), m),
             TC_ACT_REDIRECT, "reflect_transport", reflected(hub(P), E_I, m),
             setup=primed(with_half_open_from_r,
                          inbound(E_I, hub(P), response(sender=I_IDX, receiver=R_IDX))),
             events={"ev_nh_resolved": 1},
             check=expect_session(HUB_PORT, I_IDX, E_I, P, packets=1)))
    m = response(receiver=STRANGER_IDX)
    add(Case("response_hub_port_unknown_passes", inbound(E_R, hub(HUB_PORT), m), TC_ACT_OK,
             "pass_hub", setup=with_half_open, check=expect_sessions(1)))
    m = response(receiver=STRANGER_IDX)
    add(Case("response_peer_port_unknown_dropped", inbound(E_R, hub(P), m), TC_ACT_SHOT,
             "drop_unknown_index", setup=with_half_open, check=expect_sessions(1)))

    m = cookie(I_IDX)
    add(Case("cookie_r_to_i_reflected", inbound(E_R, hub(HUB_PORT), m), TC_ACT_REDIRECT,
             "reflect_cookie", reflected(hub(P), E_I, m), setup=with_half_open,
             events={"ev_nh_resolved": 1},
             # reflected, but a half-open entry is never refreshed
             check=expect_session(HUB_PORT, I_IDX, E_I, P, reverse=None, packets=0)))
    m = cookie(R_IDX)
    add(Case("cookie_i_to_r_reflected", inbound(E_I, hub(P), m), TC_ACT_REDIRECT,
             "reflect_cookie", reflected(hub(HUB_PORT), E_R, m), setup=with_established,
             events={"ev_nh_resolved": 1}))
    m = cookie(STRANGER_IDX)
    add(Case("cookie_peer_port_unknown_dropped", inbound(E_R, hub(P), m), TC_ACT_SHOT,
             "drop_unknown_index", setup=with_established))

    # -- transport, IPv4 ----------------------------------------------------
    m = transport(R_IDX)
    f = inbound(E_I, hub(P), m)
    add(Case("transport_i_to_r", f, TC_ACT_REDIRECT, "reflect_transport",
             reflected(hub(HUB_PORT), E_R, m), setup=with_established,
             events={"ev_nh_resolved": 1},
             check=expect_session(P, R_IDX, E_R, HUB_PORT, packets=1, nh_state="direct")))
    add(Case("transport_i_to_r_warm", f, TC_ACT_REDIRECT, "reflect_transport",
             reflected(hub(HUB_PORT), E_R, m), setup=primed(with_established, f),
             check=expect_session(P, R_IDX, E_R, HUB_PORT, packets=2), bench=True))
    m = transport(I_IDX, n=1280)
    f = inbound(E_R, hub(HUB_PORT), m)
    add(Case("transport_r_to_i", f, TC_ACT_REDIRECT, "reflect_transport",
             reflected(hub(P), E_I, m), setup=with_established, events={"ev_nh_resolved": 1},
             check=expect_session(HUB_PORT, I_IDX, E_I, P, packets=1)))
    add(Case("transport_r_to_i_warm", f, TC_ACT_REDIRECT, "reflect_transport",
             reflected(hub(P), E_I, m), setup=primed(with_established, f), bench=True))
    m = transport(R_IDX, n=0)
    add(Case("keepalive_i_to_r", inbound(E_I, hub(P), m), TC_ACT_REDIRECT,
             "reflect_transport", reflected(hub(HUB_PORT), E_R, m), setup=with_established,
             events={"ev_nh_resolved": 1}))
    m = transport(R_IDX)
    add(Case("transport_peer_port_unknown_dropped",
             inbound(E_I, hub(P), transport(STRANGER_IDX)), TC_ACT_SHOT, "drop_unknown_index",
             setup=with_established))
    m = transport(STRANGER_IDX)
    f = inbound(E_R, hub(HUB_PORT), m)
    add(Case("transport_hub_port_unknown_passes", f, TC_ACT_OK, "pass_hub",
             setup=with_established))
    add(Case("transport_hub_port_own_wireguard", f, TC_ACT_OK, "pass_hub",
             setup=with_established, bench=True))
    m = transport(R_IDX)
    add(Case("transport_i_to_r_ttl1_dropped", inbound(E_I, hub(P), m, ttl=1), TC_ACT_SHOT,
             "drop_ttl", setup=with_established,
             check=expect_session(P, R_IDX, E_R, HUB_PORT, packets=0)))
    m = transport(R_IDX)
    add(Case("transport_udp_csum_zero_stays_zero", inbound(E_I, hub(P), m, udp_csum=False),
             TC_ACT_REDIRECT, "reflect_transport",
             reflected(hub(HUB_PORT), E_R, m, udp_csum=False), setup=with_established,
             events={"ev_nh_resolved": 1}))
    m = _fix_udp_sum_to_zero(hub(HUB_PORT), E_R, transport(R_IDX), 40)
    add(Case("transport_udp_csum_computes_zero_sent_ffff", inbound(E_I, hub(P), m),
             TC_ACT_REDIRECT, "reflect_transport", reflected(hub(HUB_PORT), E_R, m),
             setup=with_established, events={"ev_nh_resolved": 1},
             check=lambda env, res: _assert(pk.parse(res.data).udp_checksum == 0xFFFF,
                                            "checksum 0 must be sent as 0xffff")))
    m = _fix_udp_sum_to_zero(E_I, hub(P), transport(R_IDX), 40)
    add(Case("transport_udp_csum_ffff_in", inbound(E_I, hub(P), m), TC_ACT_REDIRECT,
             "reflect_transport", reflected(hub(HUB_PORT), E_R, m), setup=with_established,
             events={"ev_nh_resolved": 1}))

    # -- partial checksums (CHECKSUM_PARTIAL skbs, GRO batches) -------------
    # Test-run skbs are CHECKSUM_NONE, so a field that looks partial is
    # settled by summing the segment.
    m = transport(R_IDX)
    add(Case("transport_partial_csum_stays_partial",
             inbound(E_I, hub(P), m, udp_csum=partial_csum(E_I, hub(P), m)),
             TC_ACT_REDIRECT, "reflect_transport",
             reflected(hub(HUB_PORT), E_R, m, udp_csum=partial_csum(hub(HUB_PORT), E_R, m)),
             setup=with_established,
             partial_csum=True,
             events={"ev_nh_resolved": 1, "ev_csum_verified": 1, "ev_csum_partial": 1}))
    m = transport(I_IDX)
    add(Case("transport_partial_csum_gro_batch",
             inbound(E_R, hub(HUB_PORT), m, udp_csum=partial_csum(E_R, hub(HUB_PORT), m)),
             TC_ACT_REDIRECT, "reflect_transport",
             reflected(hub(P), E_I, m, udp_csum=partial_csum(hub(P), E_I, m)),
             setup=with_established, gso_size=len(m),
             partial_csum=True,
             events={"ev_nh_resolved": 1, "ev_gso": 1, "ev_csum_partial": 1}))
    m = transport(R_IDX, n=1400)
    f = inbound(E_I, hub(P), m, udp_csum=partial_csum(E_I, hub(P), m))
    add(Case("transport_partial_csum_1400_warm", f, TC_ACT_REDIRECT, "reflect_transport",
             reflected(hub(HUB_PORT), E_R, m, udp_csum=partial_csum(hub(HUB_PORT), E_R, m)),
             setup=primed(with_established, f), partial_csum=True,
             events={"ev_csum_verified": 1, "ev_csum_partial": 1}, bench=True))
    m = transport(R_IDX)
    add(Case("v6_transport_partial_csum_stays_partial",
             inbound(E_I6, hub(P, True), m, udp_csum=partial_csum(E_I6, hub(P, True), m)),
             TC_ACT_REDIRECT, "reflect_transport",
             reflected(hub(HUB_PORT, True), E_R6, m,
                       udp_csum=partial_csum(hub(HUB_PORT, True), E_R6, m)),
             setup=with_established6,
             partial_csum=True,
             events={"ev_nh_resolved": 1, "ev_csum_verified": 1, "ev_csum_partial": 1}))
    m = _force_udp_csum(E_I, hub(P), transport(R_IDX), 40,
                        partial_csum(E_I, hub(P), transport(R_IDX)))
    assert pk.parse(inbound(E_I, hub(P), m)).udp_checksum == partial_csum(E_I, hub(P), m)
    add(Case("transport_full_csum_that_looks_partial", inbound(E_I, hub(P), m),
             TC_ACT_REDIRECT, "reflect_transport", reflected(hub(HUB_PORT), E_R, m),
             setup=with_established, events={"ev_nh_resolved": 1, "ev_csum_verified": 1}))
    m = _force_udp_csum(E_R, hub(HUB_PORT), response(), 60,
                        partial_csum(E_R, hub(HUB_PORT), response()))
    add(Case("response_full_csum_that_looks_partial", inbound(E_R, hub(HUB_PORT), m),
             TC_ACT_REDIRECT, "reflect_response", reflected(hub(P), E_I, m),
             setup=with_half_open, slow="response",
             events={"ev_nh_resolved": 1, "ev_csum_verified": 1, "ev_session_established": 1,
                     "ev_slow_response": 1}))

    # -- roaming -----------------------------------------------------------
    m = transport(R_IDX)
    add(Case("transport_i_roamed_updates_reverse", inbound(E_I_MOVED, hub(P), m),
             TC_ACT_REDIRECT, "reflect_transport", reflected(hub(HUB_PORT), E_R, m),
             setup=primed(with_established, inbound(E_R, hub(HUB_PORT), transport(I_IDX))),
             events={"ev_roam": 1, "ev_nh_resolved": 1},
             check=expect_session(P, R_IDX, E_R, HUB_PORT, expect=E_I_MOVED,
                                  reverse=(HUB_PORT, I_IDX),
                                  also=expect_session(HUB_PORT, I_IDX, E_I_MOVED, P,
                                                      reverse=(P, R_IDX), nh_state="none"))))
    add(Case("transport_i_roamed_roaming_off_dropped", inbound(E_I_MOVED, hub(P), m),
             TC_ACT_SHOT, "drop_not_expected", SAME,
             setup=with_established, roaming=False,
             check=expect_session(HUB_PORT, I_IDX, E_I, P, reverse=(P, R_IDX))))

    # -- junk on a peer port ---------------------------------------------------
    for n in (0, 1, 3, 4, 11, 31, 63, 91, 147, 500, 1400):
        junk = _junk(wire.WIREGUARD, n)
        add(Case(f"junk_{n}_peer_port_dropped", inbound(E_I, hub(P), junk), TC_ACT_SHOT,
                 "drop_unclassified", setup=with_established))
    junk = rand(200)
    add(Case("junk_hub_port_passes", inbound(E_I, hub(HUB_PORT), junk), TC_ACT_OK, "pass_hub",
             setup=with_established))
    for t, size in ((1, 92), (2, 148), (3, 92), (2, 64), (5, 148)):
        # a type field that does not go with the size
        junk = t.to_bytes(4, "little") + rand(size - 4)
        add(Case(f"type{t}_size{size}_peer_port_dropped", inbound(E_I, hub(P), junk),
                 TC_ACT_SHOT, "drop_unclassified", setup=with_established))

    # -- not ours --------------------------------------------------------------
    f = pk.ethernet(HUB_MAC, GW_MAC, pk.ETH_P_IP,
                    pk.ipv4(E_I[0], HUB4, rand(40), proto=pk.IPPROTO_TCP))
    add(Case("tcp_passes", f, TC_ACT_OK, "pass_not_udp", setup=with_established))
    f = pk.ethernet(HUB_MAC, GW_MAC, pk.ETH_P_IP,
                    pk.ipv4(E_I[0], HUB4, b"\x08\0" + rand(30), proto=pk.IPPROTO_ICMP))
    add(Case("icmp_passes", f, TC_ACT_OK, "pass_not_udp", setup=with_established))
    f = pk.ethernet("ff:ff:ff:ff:ff:ff", GW_MAC, pk.ETH_P_ARP, rand(28))
    add(Case("arp_passes", f, TC_ACT_OK, "pass_not_ip", setup=with_established))
    f = pk.ethernet(HUB_MAC, GW_MAC, 0x8100, rand(60))
    add(Case("vlan_passes", f, TC_ACT_OK, "pass_not_ip", setup=with_established))
    f = inbound(E_I, hub(53), rand(40))
    add(Case("dns_other_port_passes", f, TC_ACT_OK, "pass_other_port", setup=with_established,
             bench=True))
    add(Case("transport_other_port_passes", inbound(E_I, hub(OTHER_PORT), transport(R_IDX)),
             TC_ACT_OK, "pass_other_port", setup=with_established))
    # (test-run refuses frames without a whole IP header, so truncation is
    # tested at the UDP header)
    f = pk.ethernet(HUB_MAC, GW_MAC, pk.ETH_P_IP, pk.ipv4(E_I[0], HUB4, b"\0" * 4))
    add(Case("udp_truncated_passes", f, TC_ACT_OK, "pass_truncated", setup=with_established))

    # -- IPv4 options, fragments, lengths ------------------------------------
    opts = b"\x01\x01\x01\x00"   # NOP NOP NOP EOL
    m = transport(R_IDX)
    add(Case("ip_options_peer_port_dropped", inbound(E_I, hub(P), m, options=opts),
             TC_ACT_SHOT, "drop_ip_options", setup=with_established))
    add(Case("ip_options_hub_port_passes",
             inbound(E_R, hub(HUB_PORT), transport(I_IDX), options=opts), TC_ACT_OK, "pass_hub",
             setup=with_established))
    add(Case("ip_options_other_port_passes", inbound(E_R, hub(53), rand(20), options=opts),
             TC_ACT_OK, "pass_other_port", setup=with_established))
    add(Case("first_fragment_peer_port_dropped",
             inbound(E_I, hub(P), transport(R_IDX), flags=pk.IP_MF), TC_ACT_SHOT,
             "drop_fragment", setup=with_established))
    add(Case("first_fragment_hub_port_passes",
             inbound(E_R, hub(HUB_PORT), transport(I_IDX), flags=pk.IP_MF), TC_ACT_OK,
             "pass_hub", setup=with_established))
    f = pk.ethernet(HUB_MAC, GW_MAC, pk.ETH_P_IP,
                    pk.ipv4(E_I[0], HUB4, rand(100), frag_offset=185))
    add(Case("later_fragment_passes", f, TC_ACT_OK, "pass_fragment", setup=with_established))
    m = transport(R_IDX)
    add(Case("udp_len_beyond_ip_peer_port_dropped",
             inbound(E_I, hub(P), m, udp_length=len(m) + 9), TC_ACT_SHOT, "drop_malformed",
             setup=with_established))
    add(Case("udp_len_short_of_ip_peer_port_dropped",
             inbound(E_I, hub(P), m, udp_length=len(m) + 7), TC_ACT_SHOT, "drop_malformed",
             setup=with_established))
    add(Case("udp_len_bad_hub_port_passes",
             inbound(E_R, hub(HUB_PORT), m, udp_length=len(m) + 9), TC_ACT_OK, "pass_hub",
             setup=with_established))
    f = inbound(E_I, hub(P), m) + b"\0" * 6   # Ethernet padding beyond the IP packet
    add(Case("ethernet_padding_reflected", f, TC_ACT_REDIRECT, "reflect_transport",
             reflected(hub(HUB_PORT), E_R, m) + b"\0" * 6, setup=with_established,
             events={"ev_nh_resolved": 1}))

    # -- next hops ------------------------------------------------------------
    def with_session_to(ep):
        def _setup(env: Env):
            with_established(env)
            env.dp.set_session(P, R_IDX, ep, HUB_PORT, expect=E_I, reverse=(HUB_PORT, I_IDX))
        return _setup

    m = transport(R_IDX)
    add(Case("next_hop_no_neigh_left_to_kernel", inbound(E_I, hub(P), m), TC_ACT_REDIRECT,
             "reflect_transport",
             pk.udp_frame(hub(HUB_PORT), E_NO_NEIGH, m, src_mac=GW_MAC, dst_mac=HUB_MAC,
                          ttl=63, ident=0x4242, flags=pk.IP_DF),
             setup=with_session_to(E_NO_NEIGH), events={"ev_nh_no_neigh": 1},
             check=expect_session(P, R_IDX, E_NO_NEIGH, HUB_PORT, nh_state="none")))
    add(Case("next_hop_blackhole_dropped", inbound(E_I, hub(P), m), TC_ACT_SHOT,
             "drop_no_route", None, setup=with_session_to(E_BLACKHOLE)))
    m = transport(R_IDX)
    add(Case("next_hop_forwarding_disabled", pk.udp_frame(E_I, (NOFWD4, P), m, src_mac=GW_MAC,
                                                           dst_mac=NOFWD_MAC, ident=0x4242,
                                                           flags=pk.IP_DF),
             TC_ACT_REDIRECT, "reflect_transport",
             pk.udp_frame((NOFWD4, HUB_PORT), E_R, m, src_mac=GW_MAC, dst_mac=NOFWD_MAC,
                          ttl=63, ident=0x4242, flags=pk.IP_DF),
             setup=with_established, dev="nofwd0", events={"ev_nh_fwd_disabled": 1},
             check=expect_session(P, R_IDX, E_R, HUB_PORT, nh_state="neigh")))

    # -- IPv6 -------------------------------------------------------------
    def with_responder6(env: Env):
        env.dp.set_responder(P, *E_R6)

    m = initiation()
    add(Case("v6_init_peer_port_to_slow_path", inbound(E_I6, hub(P, True), m), TC_ACT_SHOT,
             "slow_initiation", SAME, setup=with_responder6, slow="initiation",
             check=expect_no_sessions))
    m = initiation()
    add(Case("v6_init_hub_port_passes_and_copied", inbound(E_R6, hub(HUB_PORT, True), m),
             TC_ACT_OK, "slow_hub_initiation", setup=with_responder6, slow="initiation"))
    m = response()
    add(Case("v6_response_reflected", inbound(E_R6, hub(HUB_PORT, True), m), TC_ACT_REDIRECT,
             "reflect_response", reflected(hub(P, True), E_I6, m), slow="response",
             setup=lambda env: (with_responder6(env),
                                env.dp.set_session(HUB_PORT, I_IDX, E_I6, P, expect=E_R6)),
             events={"ev_session_established": 1, "ev_nh_resolved": 1, "ev_slow_response": 1},
             check=expect_session(P, R_IDX, E_R6, HUB_PORT, expect=E_I6,
                                  reverse=(HUB_PORT, I_IDX))))
    m = transport(R_IDX)
    f = inbound(E_I6, hub(P, True), m)
    add(Case("v6_transport_i_to_r", f, TC_ACT_REDIRECT, "reflect_transport",
             reflected(hub(HUB_PORT, True), E_R6, m), setup=with_established6,
             events={"ev_nh_resolved": 1}))
    add(Case("v6_transport_i_to_r_warm", f, TC_ACT_REDIRECT, "reflect_transport",
             reflected(hub(HUB_PORT, True), E_R6, m), setup=primed(with_established6, f),
             bench=True))
    m = transport(I_IDX, n=1000)
    add(Case("v6_transport_r_to_i", inbound(E_R6, hub(HUB_PORT, True), m), TC_ACT_REDIRECT,
             "reflect_transport", reflected(hub(P, True), E_I6, m), setup=with_established6,
             events={"ev_nh_resolved": 1}))
    m = transport(R_IDX)
    add(Case("v6_hop_limit1_dropped", inbound(E_I6, hub(P, True), m, ttl=1), TC_ACT_SHOT,
             "drop_ttl", setup=with_established6))
    add(Case("v6_unknown_index_peer_port_dropped",
             inbound(E_I6, hub(P, True), transport(STRANGER_IDX)), TC_ACT_SHOT,
             "drop_unknown_index", setup=with_established6))
    add(Case("v6_to_v4_session_family_dropped", inbound(E_I6, hub(P, True), m), TC_ACT_SHOT,
             "drop_family", setup=with_established))
    f = pk.ethernet(HUB_MAC, GW_MAC, pk.ETH_P_IPV6,
                    pk.ipv6(E_I6[0], HUB6, b"\x11\0\0\0\0\0\0\0" + rand(40),
                            nexthdr=pk.IPPROTO_FRAGMENT))
    add(Case("v6_extension_header_passes", f, TC_ACT_OK, "pass_not_udp",
             setup=with_established6))
    m = transport(R_IDX)
    add(Case("v6_to_blackhole_dropped", inbound(E_I6, hub(P, True), m), TC_ACT_SHOT,
             "drop_no_route", None,
             setup=lambda env: (with_established6(env),
                                env.dp.set_session(P, R_IDX, ("2001:db8:dead::1", 51820),
                                                   HUB_PORT, expect=E_I6,
                                                   reverse=(HUB_PORT, I_IDX)))))

    # -- AmneziaWG 1.0: prefixes S1/S2, single headers -------------------------
    def awg_init(c, where="lo", sender=I_IDX):
        return initiation(sender, header=_h(c, I, where), prefix=rand(c.prefixes[I]))

    m = awg_init(AWG1)
    add(Case("awg1_init_to_slow_path_prefix_kept", inbound(E_I, hub(P), m), TC_ACT_SHOT,
             "slow_initiation", SAME, setup=with_responder, classifier=AWG1,
             slow="initiation", check=expect_no_sessions))
    m = awg_init(AWG1)
    add(Case("awg1_init_hub_port_copied", inbound(E_R, hub(HUB_PORT), m), TC_ACT_OK,
             "slow_hub_initiation", setup=with_responder, classifier=AWG1, slow="initiation"))
    m = response(header=_h(AWG1, R), prefix=rand(AWG1.prefixes[R]))
    add(Case("awg1_response_reflected", inbound(E_R, hub(HUB_PORT), m), TC_ACT_REDIRECT,
             "reflect_response", reflected(hub(P), E_I, m), setup=with_half_open,
             classifier=AWG1, slow="response",
             events={"ev_session_established": 1, "ev_nh_resolved": 1, "ev_slow_response": 1},
             check=expect_session(P, R_IDX, E_R, HUB_PORT, reverse=(HUB_PORT, I_IDX))))
    m = cookie(I_IDX, header=_h(AWG1, C))
    add(Case("awg1_cookie_reflected", inbound(E_R, hub(HUB_PORT), m), TC_ACT_REDIRECT,
             "reflect_cookie", reflected(hub(P), E_I, m), setup=with_half_open,
             classifier=AWG1, events={"ev_nh_resolved": 1}))
    m = transport(R_IDX, header=_h(AWG1, T))
    add(Case("awg1_transport_reflected", inbound(E_I, hub(P), m), TC_ACT_REDIRECT,
             "reflect_transport", reflected(hub(HUB_PORT), E_R, m), setup=with_established,
             classifier=AWG1, events={"ev_nh_resolved": 1}))
    m = initiation()
    add(Case("awg1_plain_wireguard_init_dropped", inbound(E_I, hub(P), m), TC_ACT_SHOT,
             "drop_unclassified", setup=with_responder, classifier=AWG1,
             check=expect_no_sessions))
    m = transport(R_IDX)
    add(Case("awg1_plain_wireguard_transport_dropped", inbound(E_I, hub(P), m), TC_ACT_SHOT,
             "drop_unclassified", setup=with_established, classifier=AWG1))
    m = awg_init(AWG1)[1:]
    add(Case("awg1_init_prefix_short_dropped", inbound(E_I, hub(P), m), TC_ACT_SHOT,
             "drop_unclassified", setup=with_responder, classifier=AWG1))
    for n in (40, 64, 120, 146, 165, 600):   # Jc junk in [Jmin, Jmax)
        junk = _junk(AWG1, n)
        add(Case(f"awg1_junk_{n}_dropped", inbound(E_I, hub(P), junk), TC_ACT_SHOT,
                 "drop_unclassified", setup=with_responder, classifier=AWG1))

    # -- AmneziaWG 2.0: S1..S4, header ranges ------------------------------------
    for where in ("lo", "hi"):
        m = awg_init(AWG2, where)
        add(Case(f"awg2_init_header_{where}_to_slow_path", inbound(E_I, hub(P), m),
                 TC_ACT_SHOT, "slow_initiation", SAME, setup=with_responder, classifier=AWG2,
                 slow="initiation", check=expect_no_sessions))
    for where in ("below", "above"):
        m = awg_init(AWG2, where)
        add(Case(f"awg2_init_header_{where}_range_dropped", inbound(E_I, hub(P), m),
                 TC_ACT_SHOT, "drop_unclassified", setup=with_responder, classifier=AWG2,
                 check=expect_no_sessions))
    m = response(header=_h(AWG2, R, "hi"), prefix=rand(AWG2.prefixes[R]))
    add(Case("awg2_response_reflected", inbound(E_R, hub(HUB_PORT), m), TC_ACT_REDIRECT,
             "reflect_response", reflected(hub(P), E_I, m), setup=with_half_open,
             classifier=AWG2, slow="response",
             events={"ev_session_established": 1, "ev_nh_resolved": 1, "ev_slow_response": 1},
             check=expect_session(P, R_IDX, E_R, HUB_PORT, reverse=(HUB_PORT, I_IDX))))
    m = cookie(I_IDX, header=_h(AWG2, C), prefix=rand(AWG2.prefixes[C]))
    add(Case("awg2_cookie_reflected", inbound(E_R, hub(HUB_PORT), m), TC_ACT_REDIRECT,
             "reflect_cookie", reflected(hub(P), E_I, m), setup=with_half_open,
             classifier=AWG2, events={"ev_nh_resolved": 1}))
    m = transport(R_IDX, header=_h(AWG2, T, "hi"), prefix=rand(AWG2.prefixes[T]))
    f = inbound(E_I, hub(P), m)
    add(Case("awg2_transport_reflected", f, TC_ACT_REDIRECT, "reflect_transport",
             reflected(hub(HUB_PORT), E_R, m), setup=with_established, classifier=AWG2,
             events={"ev_nh_resolved": 1},
             check=expect_session(P, R_IDX, E_R, HUB_PORT, packets=1)))
    add(Case("awg2_transport_warm", f, TC_ACT_REDIRECT, "reflect_transport",
             reflected(hub(HUB_PORT), E_R, m), setup=primed(with_established, f),
             classifier=AWG2, bench=True))
    m = transport(R_IDX, n=0, header=_h(AWG2, T, "lo"), prefix=rand(AWG2.prefixes[T]))
    add(Case("awg2_keepalive_reflected", inbound(E_I, hub(P), m), TC_ACT_REDIRECT,
             "reflect_transport", reflected(hub(HUB_PORT), E_R, m), setup=with_established,
             classifier=AWG2, events={"ev_nh_resolved": 1}))
    m = transport(R_IDX, header=_h(AWG2, T, "above"), prefix=rand(AWG2.prefixes[T]))
    add(Case("awg2_transport_header_above_dropped", inbound(E_I, hub(P), m), TC_ACT_SHOT,
             "drop_unclassified", setup=with_established, classifier=AWG2))
    m = transport(I_IDX, header=_h(AWG2, T, "below"), prefix=rand(AWG2.prefixes[T]))
    add(Case("awg2_transport_header_below_hub_port_passes", inbound(E_R, hub(HUB_PORT), m),
             TC_ACT_OK, "pass_hub", setup=with_established, classifier=AWG2))
    m = transport(R_IDX, header=_h(AWG2, T))   # right header, prefix missing
    add(Case("awg2_transport_without_prefix_dropped", inbound(E_I, hub(P), m), TC_ACT_SHOT,
             "drop_unclassified", setup=with_established, classifier=AWG2))
    for n in (9, 37, 73, 100, 133, 171, 1000):
        junk = _junk(AWG2, n)
        add(Case(f"awg2_junk_{n}_dropped", inbound(E_I, hub(P), junk), TC_ACT_SHOT,
                 "drop_unclassified", setup=with_responder, classifier=AWG2))

    # -- AmneziaWG 2.0, every header a range: each message type with its
    # prefix at both ends of its range, and just outside it on both ports ----
    A3 = dict(classifier=AWG3)
    for where in ("lo", "hi"):
        m = awg_init(AWG3, where)
        add(Case(f"awg3_init_header_{where}_to_slow_path", inbound(E_I, hub(P), m), TC_ACT_SHOT,
                 "slow_initiation", SAME, setup=with_responder, slow="initiation",
                 check=expect_no_sessions, **A3))
        m = awg_init(AWG3, where)
        add(Case(f"awg3_init_header_{where}_hub_port_copied", inbound(E_R, hub(HUB_PORT), m),
                 TC_ACT_OK, "slow_hub_initiation", setup=with_responder, slow="initiation", **A3))
        m = response(header=_h(AWG3, R, where), prefix=rand(AWG3.prefixes[R]))
        add(Case(f"awg3_response_header_{where}_reflected", inbound(E_R, hub(HUB_PORT), m),
                 TC_ACT_REDIRECT, "reflect_response", reflected(hub(P), E_I, m),
                 setup=with_half_open, slow="response",
                 events={"ev_session_established": 1, "ev_nh_resolved": 1,
                         "ev_slow_response": 1},
                 check=expect_session(P, R_IDX, E_R, HUB_PORT, reverse=(HUB_PORT, I_IDX)), **A3))
        m = cookie(I_IDX, header=_h(AWG3, C, where), prefix=rand(AWG3.prefixes[C]))
        add(Case(f"awg3_cookie_header_{where}_reflected", inbound(E_R, hub(HUB_PORT), m),
                 TC_ACT_REDIRECT, "reflect_cookie", reflected(hub(P), E_I, m),
                 setup=with_half_open, events={"ev_nh_resolved": 1}, **A3))
        m = cookie(R_IDX, header=_h(AWG3, C, where), prefix=rand(AWG3.prefixes[C]))
        add(Case(f"awg3_cookie_i_to_r_header_{where}_reflected", inbound(E_I, hub(P), m),
                 TC_ACT_REDIRECT, "reflect_cookie", reflected(hub(HUB_PORT), E_R, m),
                 setup=with_established, events={"ev_nh_resolved": 1}, **A3))
        m = transport(R_IDX, header=_h(AWG3, T, where), prefix=rand(AWG3.prefixes[T]))
        add(Case(f"awg3_transport_i_to_r_header_{where}_reflected", inbound(E_I, hub(P), m),
                 TC_ACT_REDIRECT, "reflect_transport", reflected(hub(HUB_PORT), E_R, m),
                 setup=with_established, events={"ev_nh_resolved": 1}, **A3))
        m = transport(I_IDX, n=300, header=_h(AWG3, T, where), prefix=rand(AWG3.prefixes[T]))
        add(Case(f"awg3_transport_r_to_i_header_{where}_reflected",
                 inbound(E_R, hub(HUB_PORT), m), TC_ACT_REDIRECT, "reflect_transport",
                 reflected(hub(P), E_I, m), setup=with_established,
                 events={"ev_nh_resolved": 1}, **A3))
    for where in ("below", "above"):
        outside = (
            ("init", lambda: awg_init(AWG3, where), with_responder),
            ("response", lambda: response(header=_h(AWG3, R, where),
                                          prefix=rand(AWG3.prefixes[R])), with_half_open),
            ("cookie", lambda: cookie(I_IDX, header=_h(AWG3, C, where),
                                      prefix=rand(AWG3.prefixes[C])), with_half_open),
            ("transport", lambda: transport(R_IDX, header=_h(AWG3, T, where),
                                            prefix=rand(AWG3.prefixes[T])), with_established),
        )
        for name, build, setup in outside:
            add(Case(f"awg3_{name}_header_{where}_range_peer_port_dropped",
                     inbound(E_I, hub(P), build()), TC_ACT_SHOT, "drop_unclassified",
                     setup=setup, **A3))
            add(Case(f"awg3_{name}_header_{where}_range_hub_port_passes",
                     inbound(E_R, hub(HUB_PORT), build()), TC_ACT_OK, "pass_hub",
                     setup=setup, **A3))

    rows.extend(hostile_cases())
    names = [c.name for c in rows]
    assert len(names) == len(set(names)), "duplicate row names"
    return rows


# ---- hostile input (docs/security.md) ----------------------------------------
MARTIANS4 = ("0.0.0.0", "0.1.2.3", "127.0.0.1", "169.254.1.1", "224.0.0.1", "239.255.255.250", "240.0.0.1",
             "255.255.255.255")
MARTIANS6 = ("::", "::1", "::ffff:198.51.100.10", "::198.51.100.10", "fe80::1", "febf::1",
             "ff02::1")
MAX_COUNTER = 1000                    # the established session's highest counter so far
ROAM_WINDOW = 8192                    # bpf/wgmux.c WGMUX_ROAM_WINDOW


def with_counted(env: Env):
    """An established pair whose I -> R direction has seen counter
    MAX_COUNTER (and the other direction the same)."""
    with_responder(env)
    env.dp.set_session(HUB_PORT, I_IDX, E_I, P, expect=E_R, reverse=(P, R_IDX),
                       max_counter=MAX_COUNTER)
    env.dp.set_session(P, R_IDX, E_R, HUB_PORT, expect=E_I, reverse=(HUB_PORT, I_IDX),
                       max_counter=MAX_COUNTER)


def expect_unmoved(env: Env, _res):
    """Both entries of the counted pair are where they were."""
    to_r, to_i = env.dp.session(P, R_IDX), env.dp.session(HUB_PORT, I_IDX)
    assert (str(to_r.expect), str(to_i.dst)) == (f"{E_I[0]}:{E_I[1]}",) * 2, (to_r, to_i)
    assert (str(to_i.expect), str(to_r.dst)) == (f"{E_R[0]}:{E_R[1]}",) * 2, (to_r, to_i)
    assert to_r.max_counter == MAX_COUNTER and to_r.packets == 0, to_r


def expect_max_counter(port, index, value) -> Check:
    def _check(env: Env, _res):
        s = env.dp.session(port, index)
        assert s.max_counter == value, s
    return _check


def loaded(rate: float, burst: int, *primes) -> Setup:
    """A responder whose port takes `rate` initiations per second (burst
    `burst`), then one initiation from each of `primes` ((src, mac2) pairs)."""
    def _setup(env: Env):
        with_responder(env)
        env.dp.set_port_budget(rate, burst)
        for src, mac2 in primes:
            env.run(inbound(src, hub(P), initiation(mac2=mac2)))
    return _setup


def hostile_cases() -> List[Case]:
    """Rows for issue 10's rules: roaming needs the counter, martians and
    packets for others are never reflected, half-open entries take only
    their answer, ports under load admit cookie requests and mac2s."""
    rows: List[Case] = []
    add = rows.append
    m2 = rand(16)                        # some non-zero mac2

    # -- roaming by counter -------------------------------------------------
    for counter, verdict in ((MAX_COUNTER + 1, "roams"), (MAX_COUNTER + ROAM_WINDOW, "roams"),
                             (MAX_COUNTER, "rejected"), (MAX_COUNTER - 1, "rejected"),
                             (0, "rejected"), (MAX_COUNTER + ROAM_WINDOW + 1, "rejected"),
                             (2**64 - 1, "rejected")):
        m = transport(R_IDX, counter=counter)
        name = f"roam_counter_{counter - MAX_COUNTER:+d}_{verdict}"
        if verdict == "roams":
            add(Case(name, inbound(E_I_MOVED, hub(P), m), TC_ACT_REDIRECT, "reflect_transport",
                     reflected(hub(HUB_PORT), E_R, m), setup=with_counted,
                     events={"ev_roam": 1, "ev_nh_resolved": 1},
                     check=expect_session(P, R_IDX, E_R, HUB_PORT, expect=E_I_MOVED,
                                          also=_all(expect_max_counter(P, R_IDX, counter),
                                                    expect_session(HUB_PORT, I_IDX, E_I_MOVED,
                                                                   P)))))
        else:
            add(Case(name, inbound(E_I_MOVED, hub(P), m), TC_ACT_SHOT, "drop_roam_rejected",
                     SAME, setup=with_counted, check=expect_unmoved))
    m = transport(I_IDX, counter=MAX_COUNTER)
    add(Case("roam_hub_port_replayed_counter_rejected", inbound(E_I_MOVED, hub(HUB_PORT), m),
             TC_ACT_SHOT, "drop_roam_rejected", SAME, setup=with_counted, check=expect_unmoved))
    m = transport(I_IDX, counter=MAX_COUNTER + 5)
    add(Case("roam_responder_moved_follows", inbound(E_I_MOVED, hub(HUB_PORT), m),
             TC_ACT_REDIRECT, "reflect_transport", reflected(hub(P), E_I, m), setup=with_counted,
             events={"ev_roam": 1, "ev_nh_resolved": 1},
             check=expect_session(HUB_PORT, I_IDX, E_I, P, expect=E_I_MOVED,
                                  also=expect_session(P, R_IDX, E_I_MOVED, HUB_PORT))))
    m = transport(R_IDX, counter=MAX_COUNTER - 10)
    add(Case("transport_late_from_expected_keeps_max", inbound(E_I, hub(P), m),
             TC_ACT_REDIRECT, "reflect_transport", reflected(hub(HUB_PORT), E_R, m),
             setup=with_counted, events={"ev_nh_resolved": 1},
             check=expect_max_counter(P, R_IDX, MAX_COUNTER)))
    m = transport(R_IDX, counter=MAX_COUNTER + 10**6)
    add(Case("transport_from_expected_raises_max", inbound(E_I, hub(P), m),
             TC_ACT_REDIRECT, "reflect_transport", reflected(hub(HUB_PORT), E_R, m),
             setup=with_counted, events={"ev_nh_resolved": 1},
             check=expect_max_counter(P, R_IDX, MAX_COUNTER + 10**6)))
    for src in ("127.0.0.1", "224.0.0.1", HUB4):
        m = transport(R_IDX, counter=MAX_COUNTER + 1)
        add(Case(f"roam_to_{src}_dropped", inbound((src, 4242), hub(P), m), TC_ACT_SHOT,
                 "drop_martian", SAME, setup=with_counted, check=expect_unmoved))
    m = response(sender=STRANGER_IDX)
    add(Case("response_from_elsewhere_dropped", inbound(E_I_MOVED, hub(HUB_PORT), m),
             TC_ACT_SHOT, "drop_not_expected", SAME, setup=with_half_open,
             check=expect_session(HUB_PORT, I_IDX, E_I, P, reverse=None)))
    m = cookie(I_IDX)
    add(Case("cookie_from_elsewhere_dropped", inbound(E_I_MOVED, hub(HUB_PORT), m),
             TC_ACT_SHOT, "drop_not_expected", SAME, setup=with_counted, check=expect_unmoved))
    m = cookie(R_IDX)
    add(Case("cookie_from_elsewhere_peer_port_dropped", inbound(E_I_MOVED, hub(P), m),
             TC_ACT_SHOT, "drop_not_expected", SAME, setup=with_counted, check=expect_unmoved))

    # -- half-open entries take their answer and nothing else -----------------
    m = transport(I_IDX, counter=1)
    add(Case("half_open_transport_from_responder_dropped", inbound(E_R, hub(HUB_PORT), m),
             TC_ACT_SHOT, "drop_half_open", SAME, setup=with_half_open,
             check=expect_session(HUB_PORT, I_IDX, E_I, P, reverse=None, packets=0)))
    add(Case("half_open_transport_from_elsewhere_dropped",
             inbound(E_I_MOVED, hub(HUB_PORT), m), TC_ACT_SHOT, "drop_half_open", SAME,
             setup=with_half_open,
             check=expect_session(HUB_PORT, I_IDX, E_I, P, expect=E_R, reverse=None)))

    # -- martian sources, packets not for the hub, broken IP ------------------
    for src in MARTIANS4 + (HUB4,):
        add(Case(f"init_from_{src}_dropped", inbound((src, 4242), hub(P), initiation()),
                 TC_ACT_SHOT, "drop_martian", SAME, setup=with_responder,
                 check=expect_no_sessions))
        add(Case(f"init_from_{src}_hub_port_not_copied",
                 inbound((src, 4242), hub(HUB_PORT), initiation()), TC_ACT_OK, "pass_hub",
                 setup=with_responder, check=expect_no_sessions))
    for src in MARTIANS6 + (HUB6,):
        add(Case(f"v6_init_from_{src}_dropped", inbound((src, 4242), hub(P, True), initiation()),
                 TC_ACT_SHOT, "drop_martian", SAME,
                 setup=lambda env: (with_responder(env), env.dp.set_responder(P, *E_R6)),
                 check=expect_no_sessions))
    m = transport(R_IDX)
    for dst in ("198.51.100.200", "192.0.2.255", "255.255.255.255", "127.0.0.1", "224.0.0.1"):
        add(Case(f"transport_to_{dst}_not_for_hub_passes", inbound(E_I, (dst, P), m),
                 TC_ACT_OK, "pass_not_local", SAME, setup=with_established))
    add(Case("init_to_transit_address_passes",
             inbound(E_I, ("198.51.100.200", P), initiation()), TC_ACT_OK, "pass_not_local",
             SAME, setup=with_responder))
    add(Case("v6_transport_not_for_hub_passes",
             inbound(E_I6, ("2001:db8:300::1", P), m), TC_ACT_OK, "pass_not_local", SAME,
             setup=with_established6))
    f = inbound(E_I, hub(P), m, header_checksum=0x1234)
    add(Case("transport_bad_ip_checksum_passes", f, TC_ACT_OK, "pass_bad_ip", SAME,
             setup=with_established, check=expect_session(P, R_IDX, E_R, HUB_PORT, packets=0)))
    v4 = inbound(E_I, hub(P), m)
    f = v4[:14] + bytes([0x65]) + v4[15:]            # version 6 behind an IPv4 ethertype
    add(Case("transport_ipv4_ethertype_version6_passes", f, TC_ACT_OK, "pass_bad_ip", SAME,
             setup=with_established))
    add(Case("v6_transport_udp_csum_zero_dropped",
             inbound(E_I6, hub(P, True), m, udp_csum=False), TC_ACT_SHOT, "drop_malformed",
             SAME, setup=with_established6))
    v6 = inbound(E_I6, hub(P, True), m)
    f = v6[:14] + bytes([0x40 | (v6[14] & 0x0F)]) + v6[15:]
    add(Case("transport_ipv6_ethertype_version4_passes", f, TC_ACT_OK, "pass_bad_ip", SAME,
             setup=with_established6))

    # -- ports under load: cookie requests and mac2s --------------------------
    add(Case("load_over_budget_asks_cookie", inbound(E_I, hub(P), initiation()), TC_ACT_SHOT,
             "slow_under_load", SAME, setup=loaded(1, 1, (E_I_MOVED, None)),
             slow="initiation", slow_load=1, events={"ev_port_over_budget": 1}))
    add(Case("load_cookie_request_once_per_source", inbound(E_I, hub(P), initiation()),
             TC_ACT_SHOT, "drop_under_load", SAME,
             setup=loaded(1, 1, (E_I_MOVED, None), (E_I, None))))
    add(Case("load_mac2_presented", inbound(E_I, hub(P), initiation(mac2=m2)), TC_ACT_SHOT,
             "slow_under_load", SAME, setup=loaded(1, 1, (E_I_MOVED, None), (E_I, None)),
             slow="initiation", slow_load=2))
    add(Case("load_mac2_once_per_source", inbound(E_I, hub(P), initiation(mac2=m2)),
             TC_ACT_SHOT, "drop_under_load", SAME,
             setup=loaded(1, 1, (E_I_MOVED, None), (E_I, m2))))
    add(Case("load_within_budget_normal", inbound(E_I, hub(P), initiation()), TC_ACT_SHOT,
             "slow_initiation", SAME, setup=loaded(1, 2, (E_I_MOVED, None)),
             slow="initiation"))
    add(Case("load_budget_off_never_loaded", inbound(E_I, hub(P), initiation()), TC_ACT_SHOT,
             "slow_initiation", SAME, setup=loaded(0, 0, *[(E_I_MOVED, None)] * 5),
             slow="initiation"))
    return rows


def _assert(cond: bool, msg: str):
    assert cond, msg
