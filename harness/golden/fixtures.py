"""The world every golden row runs in: the hub's addresses, ports,
endpoints and indices, GoldenNet's namespace, Env, Case, run_case, and
the AmneziaWG classifiers and martian sources the rows and tests share.

Next hops under test-run: the program calls bpf_fib_lookup() in the
network namespace of the thread that runs the test, on the device whose
ifindex we pass as the skb's.  `GoldenNet` builds a private namespace where
every answer is fixed: `pub0` (the hub's public interface, forwarding on)
with a default route via a gateway that has a permanent neighbour entry,
an on-link address with no neighbour (NO_NEIGH), a blackhole route,
`nofwd0`, a device with forwarding off (FWD_DISABLED), and `in0`, another
forwarding device whose packets leave through pub0 (XDP leaves those to
TC, docs/spec.md §4a).  Each run enters
the namespace only for the syscall, so the test process stays where it was.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Union

from wgmux import packet as pk
from wgmux import wire
from netlab.netns import inside
from harness.testrun import TC_ACT_REDIRECT, XDP_PASS, TestRunResult, test_run

# ---- the namespace's fixed answers -----------------------------------------
HUB_MAC = "02:00:00:00:00:01"      # pub0
GW_MAC = "02:00:00:00:00:fe"       # the default gateway, permanent neighbour
NOFWD_MAC = "02:00:00:00:00:03"    # nofwd0
IN_MAC = "02:00:00:00:00:04"       # in0
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
DNS_PORT = 53

E_I = ("198.51.100.10", 43210)       # initiator, behind NAT, via the gateway
E_I_MOVED = ("198.51.100.11", 50001)
E_R = ("203.0.113.20", 51820)
E_I6 = ("2001:db8:100::10", 43210)
E_R6 = ("2001:db8:200::20", 51820)
E_NO_NEIGH = ("192.0.2.77", 51820)   # on pub0's subnet, never resolved
E_BLACKHOLE = ("198.51.100.66", 51820)
E_BLACKHOLE6 = ("2001:db8:dead::1", 51820)

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
            for dev, mac in (("pub0", HUB_MAC), ("nofwd0", NOFWD_MAC), ("in0", IN_MAC)):
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
            node.sysctl("net.ipv4.conf.in0.forwarding", 1)
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
            gso_size: int = 0, xdp: bool = False) -> TestRunResult:
        """`xdp`: prog_fd is an XDP program (which sees no GRO batch:
        gso_size is for TC only)."""
        with self.inside():
            if xdp:
                return test_run(prog_fd, frame, repeat=repeat, ifindex=self.ifindex[dev],
                                xdp=True)
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
        self.dp.set_interfaces([])
        self.dp.drain_slow_path()
        self.dp.reset_counters()

    def run(self, frame: bytes, dev: str = "pub0", repeat: int = 1,
            gso_size: int = 0) -> TestRunResult:
        """The TC program (which also primes what XDP then finishes)."""
        return self.net.run(self.dp.prog_fd, frame, dev=dev, repeat=repeat, gso_size=gso_size)

    def run_xdp(self, frame: bytes, dev: str = "pub0", repeat: int = 1) -> TestRunResult:
        """The XDP program alone (what it passes, TC would see next)."""
        return self.net.run(self.dp.program.xdp_fd, frame, dev=dev, repeat=repeat, xdp=True)


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
    slow_load: int = 0                   # its `load` (bpf/wgmux.c SLOW_LOAD_*): port under load


@dataclass
class Outcome:
    result: TestRunResult
    verdicts: Dict[str, int]             # non-zero verdict counter deltas
    events: Dict[str, int]               # non-zero event counter deltas
    slow: list = field(default_factory=list)   # slow-path messages it caused


def _packet(env: Env, run: Callable[[], TestRunResult]) -> Outcome:
    """One packet through `run`, with the counters it moved and what it
    queued for the slow path."""
    before = env.dp.counters()
    result = run()
    after = env.dp.counters()
    slow = env.dp.drain_slow_path()
    delta = {k: after[k] - before[k] for k in after if after[k] != before[k]}
    return Outcome(result,
                   {k: v for k, v in delta.items() if not k.startswith("ev_")},
                   {k: v for k, v in delta.items() if k.startswith("ev_")},
                   slow)


def _prepare(env: Env, case: Case):
    env.reset(case.classifier, case.roaming)
    if case.setup:
        case.setup(env)
    env.dp.drain_slow_path()             # what the setup's own packets queued


def run_case(env: Env, case: Case) -> Outcome:
    _prepare(env, case)
    return _packet(env, lambda: env.run(case.packet, dev=case.dev, gso_size=case.gso_size))


def state(env: Env) -> tuple:
    """What a packet may change besides counters: sessions, responders and
    the rate limiter's sources (as the maps hold them)."""
    def dump(name):
        return sorted((bytes(k), bytes(v)) for k, v in env.dp.bpf[name].items())
    return tuple(dump(n) for n in (b"sessions", b"ports", b"slow_rate", b"load_gates"))


@dataclass
class XdpOutcome:
    xdp: Outcome                         # the XDP program's run
    passed_state: Optional[tuple] = None   # XDP_PASS: the maps before it, and after
    after_state: Optional[tuple] = None
    tc: Optional[Outcome] = None         # XDP_PASS: then the TC program's, on the same state


def run_case_xdp(env: Env, case: Case) -> XdpOutcome:
    """The row with XDP in front of TC, as a hub with Datapath = "xdp" runs
    it (docs/spec.md §4a): the XDP program first; if it passes, the TC
    program on the same frame and maps."""
    _prepare(env, case)
    before = state(env)
    xdp = _packet(env, lambda: env.run_xdp(case.packet, dev=case.dev))
    if xdp.result.retval != XDP_PASS:
        return XdpOutcome(xdp)
    after = state(env)
    tc = _packet(env, lambda: env.run(case.packet, dev=case.dev, gso_size=case.gso_size))
    return XdpOutcome(xdp, before, after, tc)


def xdp_finishes(case: Case) -> bool:
    """Whether the XDP program must finish the row itself (XDP_TX) rather
    than pass it to TC: a cookie reply or transport message reflected on a
    next hop TC cached before (no ev_nh_*), out of pub0 where it came in,
    with a finished checksum (no ev_csum_*, no GRO batch); a roam is the
    same walk (docs/spec.md §4a)."""
    return (case.verdict == TC_ACT_REDIRECT
            and case.reason in ("reflect_cookie", "reflect_transport")
            and set(case.events) <= {"ev_roam"} and case.dev == "pub0"
            and not case.gso_size)


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


# ---- hostile sources (docs/security.md) ------------------------------------
MARTIANS4 = ("0.0.0.0", "0.1.2.3", "127.0.0.1", "169.254.1.1", "224.0.0.1", "239.255.255.250",
             "240.0.0.1", "255.255.255.255")
MARTIANS6 = ("::", "::1", "::ffff:198.51.100.10", "::198.51.100.10", "fe80::1", "febf::1",
             "ff02::1")
