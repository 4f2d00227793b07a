"""What the golden sections build their rows from: frames, map states
(setups), checks on the maps, and `Table`, whose verbs say what the
datapath does with one packet:

    table.reflects(name, message, src=..., at=..., to=..., counter=..., ...)
    table.passes(name, message, src=..., at=..., counter=..., ...)
    table.queues(name, message, src=..., at=..., counter=..., ...)
    table.drops(name, message, src=..., at=..., counter=..., ...)

The shared keywords: `given` (the setup, or several run in order),
`then` (a check on the maps, or several), `events` (the ev_* counters the
packet moves, each exactly once, space-separated), `warm` (the same frame
went through once first: the next hop is cached and the row measures the
steady state); any other keyword is a Case field (classifier, roaming,
dev, gso_size, bench).  A frame the message form cannot say (IP options,
a TTL, a foreign ethertype) is given whole as `frame=`, and a reflected
one's output as `out=`.
"""

from __future__ import annotations

import random
from typing import Callable, List, Optional, Sequence, Tuple, Union

from wgmux import packet as pk
from wgmux import wire
from harness.testrun import TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT
from harness.golden.fixtures import (
    E_I, E_I6, E_R, E_R6, GW_MAC, HUB4, HUB6, HUB_MAC, HUB_PORT, I_IDX, P, P_NOEP, R_IDX, SAME,
    Case, Check, Env, Setup)

Endpoint = Tuple[str, int]

# ---- random fields -----------------------------------------------------------
# Only the bytes the datapath never reads (keys, macs, ciphertext) are
# random.  Table reseeds this generator per section and per row, and the
# fuzz test per run (reseed()).
_rng = random.Random(0x77676D7578)


def reseed(seed: Union[int, str]) -> None:
    """Draw every later random field from `seed`."""
    _rng.seed(seed)


def rand(n: int) -> bytes:
    return bytes(_rng.getrandbits(8) for _ in range(n))


# ---- frames ------------------------------------------------------------------
def _ip_kw(addr: str, ttl: int, kw: dict) -> dict:
    if ":" not in addr:
        kw.setdefault("ident", 0x4242)
        kw.setdefault("flags", pk.IP_DF)
    return dict(ttl=ttl, **kw)


def inbound(src, dst, payload: bytes, ttl: int = 64, **kw) -> bytes:
    """A frame arriving at the hub's pub0 from the gateway."""
    return pk.udp_frame(src, dst, payload, src_mac=GW_MAC, dst_mac=HUB_MAC,
                        **_ip_kw(src[0], ttl, kw))


def inbound_ip(src: str, payload: bytes, **kw) -> bytes:
    """An IP packet from `src` to the hub (IPv6 for an IPv6 src) that is
    not a whole UDP datagram: another protocol, a later fragment, a UDP
    header cut short.  `kw` goes to wgmux.packet.ipv4 or ipv6."""
    if ":" in src:
        return pk.ethernet(HUB_MAC, GW_MAC, pk.ETH_P_IPV6, pk.ipv6(src, HUB6, payload, **kw))
    return pk.ethernet(HUB_MAC, GW_MAC, pk.ETH_P_IP, pk.ipv4(src, HUB4, payload, **kw))


def reflected(src, dst, payload: bytes, ttl: int = 63, **kw) -> bytes:
    """The frame the hub must send back out through the gateway, every
    checksum computed from scratch."""
    return pk.udp_frame(src, dst, payload, src_mac=HUB_MAC, dst_mac=GW_MAC,
                        **_ip_kw(src[0], ttl, kw))


def hub(port: int, v6: bool = False) -> Endpoint:
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


def junk(classifier: wire.Classifier, n: int) -> bytes:
    """n random bytes that `classifier` does not classify (the Python
    classifier is the oracle; redraw in the unlikely case they look like a
    message)."""
    while True:
        data = rand(n)
        if classifier.classify(data)[0] is None:
            return data


def _udp_sum(src, dst, payload: bytes) -> int:
    seg = pk.udp(src[0], dst[0], src[1], dst[1], payload, csum=0)
    return pk.csum_sum(pk._pseudo_header(pk.ip(src[0]), pk.ip(dst[0]), pk.IPPROTO_UDP,
                                         len(seg)) + seg)


def force_udp_csum(src, dst, payload: bytes, at: int, computed: int) -> bytes:
    """Change the payload word at `at` so that the UDP checksum of
    src -> dst computes to `computed` (before 0 is sent as 0xffff)."""
    p = bytearray(payload)
    p[at:at + 2] = b"\0\0"
    want = ~computed & 0xFFFF            # the folded sum that complements to it
    word = (want - _udp_sum(src, dst, bytes(p))) % 0xFFFF
    p[at:at + 2] = word.to_bytes(2, "big")
    assert ~_udp_sum(src, dst, bytes(p)) & 0xFFFF == computed
    return bytes(p)


def partial_csum(src, dst, payload: bytes) -> int:
    """The UDP checksum field of a CHECKSUM_PARTIAL skb src -> dst."""
    return pk.udp_pseudo_sum(src[0], dst[0], pk.UDP_HLEN + len(payload))


# ---- map states (Case.setup) ------------------------------------------------------
def with_responder(env: Env):
    env.dp.set_responder(P, *E_R)
    env.dp.set_responder(P_NOEP)


def with_responder6(env: Env):
    """with_responder, P's responder at an IPv6 endpoint."""
    with_responder(env)
    env.dp.set_responder(P, *E_R6)


def with_half_open(env: Env):
    with_responder(env)
    env.dp.set_session(HUB_PORT, I_IDX, E_I, P, expect=E_R)


def with_half_open6(env: Env):
    with_responder6(env)
    env.dp.set_session(HUB_PORT, I_IDX, E_I6, P, expect=E_R6)


def with_established(env: Env, e_i=E_I, e_r=E_R):
    with_responder(env)
    env.dp.set_session(HUB_PORT, I_IDX, e_i, P, expect=e_r, reverse=(P, R_IDX))
    env.dp.set_session(P, R_IDX, e_r, HUB_PORT, expect=e_i, reverse=(HUB_PORT, I_IDX))


def with_established6(env: Env):
    with_established(env, E_I6, E_R6)


def with_established_to(endpoint: Endpoint) -> Setup:
    """The established pair (IPv6 for an IPv6 endpoint), its I -> R entry
    sending to `endpoint`: the row sees what that endpoint's next hop is."""
    v6 = _is_v6(endpoint)

    def _setup(env: Env):
        (with_established6 if v6 else with_established)(env)
        env.dp.set_session(P, R_IDX, endpoint, HUB_PORT, expect=E_I6 if v6 else E_I,
                           reverse=(HUB_PORT, I_IDX))
    return _setup


def primed(setup: Setup, frame: bytes, dev: str = "pub0") -> Setup:
    """setup, then one packet through the program: the next hop is cached
    and the row measures the steady state."""
    def _setup(env: Env):
        setup(env)
        env.run(frame, dev=dev)
    return _setup


# ---- checks on the maps (Case.check) ---------------------------------------------
_ANY = object()


def established(e_i, e_r, via_i: str, via_r: str) -> Setup:
    """The pair I <-> R on P, each entry sending from the hub address its
    target talks to (`via_i`: I's, `via_r`: R's; docs/spec.md §4b, §4c)."""
    def _setup(env: Env):
        env.dp.set_responder(P, *e_r)
        env.dp.set_session(HUB_PORT, I_IDX, e_i, P, expect=e_r, reverse=(P, R_IDX),
                           via=env.dp.via_of(via_i))
        env.dp.set_session(P, R_IDX, e_r, HUB_PORT, expect=e_i, reverse=(HUB_PORT, I_IDX),
                           via=env.dp.via_of(via_r))
    return _setup


def expect_session(port, index, dst, src_port, expect=None, reverse=_ANY,
                   packets=None, nh_state=None, via: Optional[str] = None) -> Check:
    """`via`: the hub address the entry's translated packets leave from
    (docs/spec.md §4b)."""
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
        if via is not None:
            assert s.via == env.dp.via_of(via) != 0, s
    return _check


def expect_no_sessions(env: Env, _res):
    assert env.dp.sessions() == [], env.dp.sessions()


def expect_sessions(n: int) -> Check:
    def _check(env: Env, _res):
        assert len(env.dp.sessions()) == n, env.dp.sessions()
    return _check


def expect_udp_checksum(value: int) -> Check:
    """The output frame's UDP checksum field is `value`."""
    def _check(_env: Env, res):
        got = pk.parse(res.data).udp_checksum
        assert got == value, f"UDP checksum field {got:#06x}, want {value:#06x}"
    return _check


# ---- rows ----------------------------------------------------------------------
Steps = Union[None, Callable, Sequence[Callable]]


def _in_order(steps: Steps) -> Optional[Callable]:
    """One setup or check from several, run in the order given."""
    if steps is None or callable(steps):
        return steps
    steps = tuple(steps)

    def _steps(*args):
        for step in steps:
            step(*args)
    return _steps


def _is_v6(endpoint: Endpoint) -> bool:
    return ":" in endpoint[0]


def _arriving(message: Optional[bytes], src: Optional[Endpoint],
              at: Union[int, Endpoint, None], frame: Optional[bytes], **kw) -> bytes:
    """`frame`, or `message` from `src` to the hub's port `at` (on the
    hub's address of src's family) or to the endpoint `at`."""
    if frame is not None:
        assert message is None and src is None and at is None, "frame= or message, not both"
        return frame
    assert message is not None and src is not None and at is not None, "message, src= and at="
    dst = at if isinstance(at, tuple) else hub(at, _is_v6(src))
    return inbound(src, dst, message, **kw)


class Table:
    """One section's rows, with the section's own seed.

    The generator is reseeded from the seed and each row's name as the row
    is added, so a row's random bytes depend on its section and on the name
    of the row before it, never on what other rows drew: a row changed or
    added leaves the bytes of the others as they were.  `shared` are Case
    fields every row of the table has (classifier=AWG1).
    """

    def __init__(self, seed: str, **shared):
        self.seed = seed
        self.shared = shared
        self.rows: List[Case] = []
        reseed(seed)

    def reflects(self, name: str, message: Optional[bytes] = None, *, src=None, at=None,
                 to: Optional[Endpoint] = None, frame: Optional[bytes] = None,
                 out: Optional[bytes] = None, counter: str, copied: bool = False,
                 partial: bool = False, via: Optional[str] = None, ident: int = 0,
                 **row) -> None:
        """Redirected back out of the hub: `message` from `src` at the hub's
        port `at` leaves from the other of P and HubPort to `to`, TTL one
        less, every checksum recomputed.  `copied`: the slow path also gets
        the response (docs/spec.md §9).  `partial`: both frames carry a
        partial checksum (CHECKSUM_PARTIAL, docs/spec.md §4).  A `to` of the
        other family (docs/spec.md §4b): the frame leaves from the hub's
        address `via` (default its first of that family), IPv4 without DF
        and with identification `ident` (the transport counter's low bits)."""
        kw = {}
        if frame is None and partial:
            kw["udp_csum"] = partial_csum(src, hub(at, _is_v6(src)), message)
        frame = _arriving(message, src, at, frame, **kw)
        if out is None:
            assert message is not None and to is not None and at in (P, HUB_PORT), name
            outer = hub(HUB_PORT if at == P else P, _is_v6(to))
            kw = {"udp_csum": partial_csum(outer, to, message)} if partial else {}
            if _is_v6(to) != _is_v6(src):
                outer = (via or outer[0], outer[1])
                if not _is_v6(to):
                    kw.update(ident=ident, flags=0)
            out = reflected(outer, to, message, **kw)
        self._add(name, frame, TC_ACT_REDIRECT, counter, out,
                  slow="response" if copied else None, partial_csum=partial, **row)

    def passes(self, name: str, message: Optional[bytes] = None, *, src=None, at=None,
               frame: Optional[bytes] = None, counter: str, copied: bool = False,
               **row) -> None:
        """Left to the kernel untouched.  `copied`: an initiation on
        HubPort whose copy goes to the slow path (docs/spec.md §9)."""
        self._add(name, _arriving(message, src, at, frame), TC_ACT_OK, counter, SAME,
                  slow="initiation" if copied else None, **row)

    def queues(self, name: str, message: Optional[bytes] = None, *, src=None, at=None,
               frame: Optional[bytes] = None, counter: str, load: int = 0, **row) -> None:
        """An initiation on a peer port handed to the slow path, the
        original dropped untouched; `load` says why (bpf/wgmux.c
        SLOW_LOAD_*: 1 the port is under load, 2 under load and mac2
        presented; docs/spec.md §9)."""
        self._add(name, _arriving(message, src, at, frame), TC_ACT_SHOT, counter, SAME,
                  slow="initiation", slow_load=load, **row)

    def drops(self, name: str, message: Optional[bytes] = None, *, src=None, at=None,
              frame: Optional[bytes] = None, counter: str, untouched: bool = True,
              **row) -> None:
        """Dropped.  `untouched=False` where the program dropped it after
        rewriting (the output is not compared)."""
        self._add(name, _arriving(message, src, at, frame), TC_ACT_SHOT, counter,
                  SAME if untouched else None, **row)

    def _add(self, name: str, packet: bytes, verdict: int, counter: str, output,
             given: Steps = None, then: Steps = None, events: str = "", warm: bool = False,
             **fields) -> None:
        fields = {**self.shared, **fields}
        setup = _in_order(given)
        if warm:
            setup = primed(setup, packet, fields.get("dev", "pub0"))
        self.rows.append(Case(name, packet, verdict, counter, output, setup=setup,
                              check=_in_order(then), events=dict.fromkeys(events.split(), 1),
                              **fields))
        reseed(f"{self.seed}/{name}")
