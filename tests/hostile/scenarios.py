"""Attacks on a real `wgmux serve`, each defined once: the hostile tests
assert on what these return, `make hostile` (bench.py) prints it.

Every scenario runs on an `Arena`: the standard topology (port-restricted
NATs), wireguard-go peers, host 1 the initiator of host 2 through hub:PORT,
the pair established, and netlab.attack's attacker (`atk`) and victim on
the internet segment; the hub routes the spoofed prefix 198.19.0.0/16 to
the victim, so what the hub sends to a spoofed source is counted there.
What reaches whom is counted with nftables counters (netlab.attack.Observer)
at the victim and at each site router's WAN (before its NAT drops
anything), and forged packets carry markers so that they are told apart
from the pair's own traffic.

Absence is only concluded behind a barrier: something sent after the
forged packets that must arrive (a control that is reflected, or an ICMP
error the hub sends to the victim), never after a sleep.

The hub runs its datapath as the arena's `datapath` says ("tc", or "xdp":
XDP in eth0's driver in front of TC, docs/spec.md §4a; the far end of the
hub's wire, inet's bridge port "hub", then takes what XDP sends back,
netlab.xdp).  What the hub receives is therefore watched on that far end,
never on the hub's eth0, whose taps do not see what XDP finishes; and
datapath_problems() says whether the mode really ran.
"""

from __future__ import annotations

import os
import secrets
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from netlab import wait_for
from netlab.attack import (Count, FloodResult, Flooder, Hostile, Observer, add_behind_hub,
                           add_hostile, build_frames, forged_transport, initiations,
                           match_initiation, match_marker, match_udp, peak_rate, Sampler, spoof)
from netlab.capture import Capture
from netlab.nat import NatKind
from netlab.topology import Host, Topology, standard
from netlab.traffic import ProbeStats, UdpEcho, UdpSeq, ping
from wgmux import wire
from wgmux.memory import rss_kib
from harness.hub import WgmuxHub

PORT = 51821
ECHO_PORT, FRESH_ECHO_PORT, FLOW_PORT = 7007, 7008, 7009
VICTIM_PORT = 4444
HALF_OPEN_SPACE = 65536 - 2    # session entries (docs/spec.md §2) less the pair's two
MARTIANS = ("0.0.0.0", "127.0.0.1", "224.0.0.1", "255.255.255.255", "240.0.0.1")
DATAPATHS = ("tc", "xdp")      # the hub's Datapath settings the arena runs (docs/spec.md §4a)
HUB_WIRE = "hub"               # inet's end of the hub's eth0 (a bridge port)


# ---- the arena ----------------------------------------------------------------

@dataclass
class Arena:
    topo: Topology
    hub: WgmuxHub
    initiator: Host
    responder: Host
    hostile: Hostile
    fresh: Optional[Host] = None        # an initiator of the responder with no handshake yet
    datapath: str = "tc"                # the hub's Datapath: "tc" or "xdp"
    xdp_at_start: Dict[str, int] = field(default_factory=dict)   # eth0's XDP counters then
    _barriers: int = 0
    _pair_index: Optional[int] = None

    @property
    def hub_ip(self) -> str:
        return self.topo.hub_ip

    @property
    def hub_port(self) -> int:
        return self.topo.hub_port

    def session(self) -> dict:
        """The pair's session as `show` lists it: the one established from
        the initiator's address, then (wherever a forgery moved it) the one
        with the same indices."""
        sessions = self.hub.show()["sessions"]
        if self._pair_index is None:
            mine = [s for s in sessions if s["port"] == PORT and s["state"] == "established"
                    and s["initiator"].startswith(self.initiator.site.public_ip + ":")]
        else:
            mine = [s for s in sessions if s["initiator_index"] == self._pair_index]
        if len(mine) != 1:
            raise AssertionError(f"expected the pair's one session, got {mine}")
        self._pair_index = mine[0]["initiator_index"]
        return mine[0]

    def counters(self) -> dict:
        return self.hub.show()["counters"]

    def victim_source(self, n: int) -> Tuple[str, int]:
        """A spoofed source (routed to the victim): the n-th of the prefix."""
        return self.hostile.sources(1, offset=n)[0], VICTIM_PORT

    def barrier(self):
        """Returns once the hub has handled everything the attacker sent
        before: a datagram to a closed port of the hub, from a spoofed
        source, comes back to the victim as an ICMP error."""
        self._barriers += 1
        src = self.victim_source(60000 + self._barriers)
        seen = Observer(self.hostile.victim, {"icmp": f"ip daddr {src[0]} meta l4proto icmp"})
        seen.start()
        try:
            spoof(self.hostile.atk, src, (self.hub_ip, 9), b"barrier")
            wait_for(lambda: seen["icmp"].packets, timeout=5, what="the barrier's ICMP error")
        finally:
            seen.stop()


def arena(lab, extra_config: str = "", fresh: bool = False, datapath: str = "tc") -> Arena:
    """Build the arena; with `fresh`, a third site whose host is configured
    as another initiator of the responder (through the same port) but has
    not talked to it yet.  `datapath`: the hub's Datapath, "tc" or "xdp"
    (then the far end of the hub's wire gets netlab.xdp's pass program)."""
    if datapath not in DATAPATHS:
        raise ValueError(f"datapath {datapath!r}: one of {DATAPATHS}")
    kinds = [NatKind.PORT_RESTRICTED] * (3 if fresh else 2)
    # transmit checksum offload off on every veth, in both modes: a packet
    # from a real wire has a finished UDP checksum, which XDP needs to finish
    # it (a partial one, veth's default, it leaves to TC: spec §4a)
    topo = standard(lab, kinds, wireguard=True, tx_checksum=False)
    initiator, responder = topo.host(1), topo.host(2)
    for host in topo.hosts:
        topo.hub_wg.wait_handshake(host.wg.public_key)
    if datapath == "xdp":
        topo.inet.take_xdp_frames(HUB_WIRE)
    hub = WgmuxHub(topo, extra_config=f'{extra_config}\nDatapath = "{datapath}"')
    hub.pair(initiator, responder, PORT)
    newcomer = None
    if fresh:
        newcomer = topo.host(3)
        hub.pair(newcomer, responder, PORT)
    hub.start()
    running = hub.show()["datapath"]
    if running != datapath:
        raise AssertionError(f'Datapath = "{datapath}" but the hub runs {running!r}:\n'
                             + hub.log())
    wait_for(lambda: ping(initiator.node, responder.overlay_ip), timeout=30,
             what="the first ping through the hub")
    return Arena(topo, hub, initiator, responder, add_hostile(topo), newcomer, datapath,
                 topo.hub.xdp_stats("eth0"))


def datapath_problems(a: Arena, pings: int = 5) -> List[str]:
    """Whether the hub's datapath ran as the arena's mode says, at the end
    of a test (so that no test passes in XDP's name while TC did the work):
    the pair pings `pings` times, and with "xdp" wgmux_xdp is attached to
    eth0 and sent at least one packet of each ping back itself (XDP_TX,
    the veth's xdp_tx counter; the first of each direction after a roam or
    a new next hop is TC's), none failed, and over the whole test XDP_TX
    sent no more than the datapath counted as reflected; with "tc" no XDP
    program is attached and none ran.  One line per problem (none: fine)."""
    hub = a.topo.hub
    link = hub.run(["ip", "link", "show", "eth0"]).stdout
    before = hub.xdp_stats("eth0")
    answered = ping(a.initiator.node, a.responder.overlay_ip, count=pings, interval=0.05)
    after = hub.xdp_stats("eth0")
    status = a.hub.show()
    problems = [] if answered else [f"the pair did not answer all of {pings} pings"]
    if status["datapath"] != a.datapath:
        problems.append(f"the hub runs {status['datapath']!r}, not {a.datapath!r}")
    tx = after.get("xdp_tx", 0) - before.get("xdp_tx", 0)
    if a.datapath == "xdp":
        c = status["counters"]
        reflected = c["reflect_transport"] + c["reflect_cookie"]
        total = after.get("xdp_tx", 0) - a.xdp_at_start.get("xdp_tx", 0)
        if "prog/xdp" not in link or "wgmux_xdp" not in link:
            problems.append(f"wgmux_xdp is not attached to the hub's eth0: {link.strip()}")
        if tx < pings:
            problems.append(f"XDP sent back {tx} of the pair's {2 * pings} ping packets "
                            f"(XDP_TX at least {pings}): {before} -> {after}")
        if after.get("xdp_tx_errors", 0):
            problems.append(f"XDP_TX failed: {after}")
        if after.get("xdp_tx", 0) > reflected:
            problems.append(f"XDP_TX sent {after.get('xdp_tx', 0)}, more than the datapath "
                            f"counted as reflected ({reflected})")
        if total <= 0:
            problems.append("XDP sent nothing back during the test")
    else:
        if "prog/xdp" in link:
            problems.append(f"an XDP program is attached to the hub's eth0: {link.strip()}")
        if after.get("xdp_packets", 0):
            problems.append(f"an XDP program ran on the hub's eth0: {after}")
    return problems


def xdp_sent_back(a: Arena) -> int:
    """Packets XDP sent back out of the hub's eth0 since the arena was built."""
    return a.topo.hub.xdp_stats("eth0").get("xdp_tx", 0) - a.xdp_at_start.get("xdp_tx", 0)


class RssPeak:
    """The highest resident set of process `pid` (KiB), read every
    `interval` seconds from a thread between start() and stop()."""

    def __init__(self, pid: int, interval: float = 0.1):
        self.pid, self.interval, self.peak = pid, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while True:
            try:
                self.peak = max(self.peak, rss_kib(self.pid))
            except (OSError, StopIteration):
                return
            if self._stop.wait(self.interval):
                return

    def start(self) -> "RssPeak":
        self._thread.start()
        return self

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        return self.peak


def real_transport(a: Arena, port: int) -> bytes:
    """A transport message the pair really sent to hub:`port` (the
    initiator's to the peer port, the responder's to HubPort), captured on
    the hub while that side pings the other."""
    s = a.session()
    sender, receiver, index = ((a.initiator, a.responder, s["responder_index"]) if port == PORT
                               else (a.responder, a.initiator, s["initiator_index"]))
    with Capture(a.topo.inet, HUB_WIRE,
                 f"udp dst port {port} and src host {sender.site.public_ip}") as cap:
        assert ping(sender.node, receiver.overlay_ip), "the pair does not answer pings"
        found = cap.wait_for(
            lambda p: wire.parse_message(p.payload) is not None
            and wire.parse_message(p.payload).kind is wire.MessageType.TRANSPORT
            and wire.receiver_index(p.payload) == index, what="a transport of the pair")
    return found[-1].payload


def counter_of(message: bytes) -> int:
    return struct.unpack_from("<Q", message, wire.WG_TRANSPORT_OFF_COUNTER)[0]


def mib(n: float) -> str:
    return f"{n / (1 << 20):.2f} MiB" if n >= 1 << 20 else f"{n / 1024:.1f} KiB"


# ---- forged transport with a live index ---------------------------------------------

@dataclass
class Forgery:
    """One forged transport from a spoofed victim source, with a live index."""

    where: str                  # "peer port 51821" / "HubPort 51820"
    kind: str                   # which counter
    counter: int
    sent_bytes: int             # IP bytes the attacker sent
    victim: Count               # what reached the victim from the hub in the window
    roams: int                  # ev_roam
    moved_to: Optional[str]     # the endpoint the forgery put in the session, if any
    outage: float               # longest time without arrival of the hijackable flow
    window: float
    flow: str                   # which direction the forgery could steal

    @property
    def achieved(self) -> bool:
        return bool(self.victim.bytes or self.roams or self.moved_to)

    def describe(self) -> str:
        if not self.achieved:
            return (f"{self.where}, {self.kind}: nothing moved, 0 bytes to the victim, "
                    f"longest gap {self.outage:.2f} s")
        return (f"{self.where}, {self.kind} (counter {self.counter}): forged transport moved the "
                f"session to {self.moved_to or '?'}: {mib(self.victim.bytes)} of the "
                f"{self.flow} flow ({self.victim.packets} packets) reached the victim in "
                f"{self.window:.1f} s for one {self.sent_bytes}-byte packet; the flow stopped "
                f"for {self.outage:.1f} s")


def forged_transports(a: Arena, port: int, window: float = 2.0, restore: bool = True,
                      flow_interval: float = 0.01, flow_size: int = 1000) -> List[Forgery]:
    """Forge a transport for the pair's live index on `port` (PORT: the
    responder's index, which steals responder->initiator traffic; HubPort:
    the initiator's, which steals initiator->responder traffic) from a
    spoofed victim source, with counter 0, a random 64-bit counter and a
    replay of a captured one, one after the other.  The stolen direction
    carries a numbered UDP flow; its other side stays silent (as a
    receiving peer does for 10 s), so a hijack lasts.  Each forgery is
    watched for `window` s; with `restore`, the silent side then pings to
    win its session back (if it was lost) before the next one."""
    on_peer_port = port == PORT
    where = f"peer port {port}" if on_peer_port else f"HubPort {port}"
    talker, silent = ((a.responder, a.initiator) if on_peer_port
                      else (a.initiator, a.responder))
    side = "initiator" if on_peer_port else "responder"    # whose endpoint a forgery replaces
    captured = real_transport(a, port)
    s = a.session()
    index = s["responder_index"] if on_peer_port else s["initiator_index"]
    forgeries = [("counter 0", forged_transport(index, 0, size=len(captured))),
                 ("random 64-bit counter",
                  forged_transport(index, secrets.randbits(64), size=len(captured))),
                 ("replayed counter", captured)]
    src = a.victim_source(100 if on_peer_port else 101)
    victim = Observer(a.hostile.victim, {"from_hub": match_udp(src=a.hub_ip)}).start()
    flow = UdpSeq(talker.node, silent.node, silent.overlay_ip, FLOW_PORT,
                  interval=flow_interval, size=flow_size).start()
    a.topo.lab.on_close(flow.stop)
    results = []
    try:
        flow.wait_flowing(n=20)
        for kind, payload in forgeries:
            before, mark, endpoint = a.counters(), victim.read(), a.session()[side]
            t = time.monotonic()
            sent = spoof(a.hostile.atk, src, (a.hub_ip, port), payload)
            a.barrier()
            moved = a.session()[side]   # where the session is once the hub handled it
            time.sleep(max(0.0, t + window - time.monotonic()))   # the measurement window
            end = time.monotonic()
            got = victim.since(mark)["from_hub"]
            roams = a.counters()["ev_roam"] - before["ev_roam"]
            now = a.session()[side]
            gap, _ = flow.largest_gap(t, end)
            results.append(Forgery(where, kind, counter_of(payload), sent, got, roams,
                                   moved if moved != endpoint else None, gap, end - t,
                                   f"{talker.name}->{silent.name}"))
            if restore and (roams or now != endpoint or gap > 0.5):
                assert ping(silent.node, talker.overlay_ip, count=1, timeout=2)
                flow.wait_flowing(n=10, timeout=10, what="the flow after the pair won back")
    finally:
        flow.stop()
    return results


# ---- forged packets that must not be reflected ----------------------------------------

@dataclass
class Shot:
    """A forged packet and the WAN where it would show up if reflected."""

    name: str
    src: Tuple[str, int]
    dst: Tuple[str, int]
    payload: bytes
    marker: bytes
    offset: int                 # of the marker in the UDP payload
    at: str                     # "initiator" / "responder": whose NAT's WAN would see it
    control: bool = False       # must be reflected: the positive control and barrier


@dataclass
class Volley:
    """What the hub reflected of a set of shots."""

    reflected: Dict[str, Count]
    roams: int
    sessions_created: List[dict]
    moved: Dict[str, Tuple[str, str]]        # side: (before, after)
    counters: Dict[str, int]                 # every counter that changed

    def leaks(self, shots: Sequence[Shot]) -> List[str]:
        """What the non-control shots achieved, one line each."""
        out = [f"{s.name}: reflected to the {s.at} ({self.reflected[s.name].packets} packets)"
               for s in shots if not s.control and self.reflected[s.name].packets]
        out += [f"the session's {side} moved {old} -> {new}" for side, (old, new)
                in self.moved.items()]
        out += [f"{self.roams} roams (ev_roam)"] if self.roams else []
        out += [f"session created: {x['initiator']} index {x['initiator_index']:#x} "
                f"({x['state']})" for x in self.sessions_created]
        return out


_marker_serial = [0]


def marker() -> bytes:
    _marker_serial[0] += 1
    return b"HS" + os.urandom(4) + struct.pack("!H", _marker_serial[0] & 0xFFFF)


def initiation_shot(a: Arena, name: str, src, dst, control: bool = False) -> Shot:
    m = marker()
    return Shot(name, src, dst, initiations(a.responder.wg.public_key, marker=m)(0), m, 8,
                "responder", control)


def transport_shot(a: Arena, name: str, src, dst, port: int, counter: int,
                   control: bool = False) -> Shot:
    """A transport with the pair's live index for `port` (see forged_transports)."""
    s = a.session()
    index = s["responder_index"] if port == PORT else s["initiator_index"]
    m = marker()
    return Shot(name, src, dst, forged_transport(index, counter, marker=m), m, 16,
                "responder" if port == PORT else "initiator", control)


def live_counters(a: Arena) -> Dict[int, int]:
    """{port: the highest counter the pair has used there}, captured."""
    return {port: counter_of(real_transport(a, port)) for port in (PORT, a.hub_port)}


def volley(a: Arena, shots: Sequence[Shot]) -> Volley:
    """Send `shots` (controls last) and report what the hub did with them,
    once every control has arrived where it was sent."""
    names = {"initiator": a.initiator, "responder": a.responder}
    observers = {side: Observer(host.site.router, {
        s.name: match_udp(src=None, iifname="wan") + " " + match_marker(s.marker, s.offset)
        for s in shots if s.at == side}).start() for side, host in names.items()}
    pair_before = a.session()
    before = a.hub.show()
    ordered = [s for s in shots if not s.control] + [s for s in shots if s.control]
    for s in ordered:
        spoof(a.hostile.atk, s.src, s.dst, s.payload)
    for s in shots:
        if s.control:
            # sent again until it arrives: a forgery the hub followed may
            # have moved where it goes until another control moves it back
            wait_for(lambda s=s: observers[s.at][s.name].packets
                     or spoof(a.hostile.atk, s.src, s.dst, s.payload) < 0,
                     timeout=10, interval=0.3, what=f"the control {s.name} at the {s.at}'s NAT")
    a.barrier()
    after = a.hub.show()
    reflected = {}
    for obs in observers.values():
        reflected.update(obs.read())
    senders = {wire.sender_index(s.payload) for s in shots if not s.control} - {None}
    created = [x for x in after["sessions"] if x["initiator_index"] in senders]
    pair_after = next((x for x in after["sessions"]
                       if x["initiator_index"] == pair_before["initiator_index"]), None)
    moved = {side: (pair_before[side], pair_after[side] if pair_after else None)
             for side in ("initiator", "responder")
             if not pair_after or pair_after[side] != pair_before[side]}
    changed = {k: after["counters"][k] - before["counters"].get(k, 0)
               for k in after["counters"] if after["counters"][k] != before["counters"].get(k)}
    return Volley(reflected, changed.get("ev_roam", 0), created, moved, changed)


def martian_volley(a: Arena, sources: Sequence[str] = MARTIANS) -> Tuple[List[Shot], Volley]:
    """From each martian source: a valid-mac1 initiation to the peer port,
    and transports with the pair's live indices (counter one above the
    highest the pair used: only the source is wrong) on the peer port and
    on HubPort.  Controls: the same initiation from an ordinary spoofed
    source, the same transports from the pair's own endpoints."""
    counters = live_counters(a)
    s = a.session()
    own = {PORT: _endpoint(s["initiator"]), a.hub_port: _endpoint(s["responder"])}
    shots = []
    for m in sources:
        shots.append(initiation_shot(a, f"init_{_ident(m)}", (m, 5555), (a.hub_ip, PORT)))
        for port in (PORT, a.hub_port):
            shots.append(transport_shot(a, f"xport{port}_{_ident(m)}", (m, 5555),
                                        (a.hub_ip, port), port, counters[port] + 1))
    shots.append(initiation_shot(a, "init_control", a.victim_source(7), (a.hub_ip, PORT),
                                 control=True))
    for port in (PORT, a.hub_port):
        shots.append(transport_shot(a, f"xport{port}_control", own[port], (a.hub_ip, port),
                                    port, counters[port] + 2, control=True))
    return shots, volley(a, shots)


def not_addressed_volley(a: Arena) -> Tuple[List[Shot], Volley, Count]:
    """The hub routes BEHIND_NET to a node behind it; the attacker sends,
    to an address there: a valid-mac1 initiation on the peer port, and
    transports with the pair's live indices and plausible counters on the
    peer port and HubPort, all from a spoofed victim source.  Control: the
    same initiation to the hub's own address.  Also returns what the node
    behind received (the hub routing them on is fine; reflecting is not)."""
    behind, behind_ip = add_behind_hub(a.topo, a.hostile)
    seen_behind = Observer(behind, {"all": match_udp(dst=behind_ip)}).start()
    counters = live_counters(a)
    src = a.victim_source(8)
    shots = [initiation_shot(a, "init_behind", src, (behind_ip, PORT))]
    for port in (PORT, a.hub_port):
        shots.append(transport_shot(a, f"xport{port}_behind", src, (behind_ip, port), port,
                                    counters[port] + 1))
    shots.append(initiation_shot(a, "init_control", a.victim_source(9), (a.hub_ip, PORT),
                                 control=True))
    result = volley(a, shots)
    return shots, result, seen_behind["all"]


def _ident(address: str) -> str:
    return address.replace(".", "_").replace(":", "_")


def _endpoint(text: str) -> Tuple[str, int]:
    host, port = text.rsplit(":", 1)
    return host.strip("[]"), int(port)


# ---- half-open entries ------------------------------------------------------------

@dataclass
class HalfOpenAbuse:
    """A spoofed initiation opens a half-open entry towards the victim;
    then the attacker sends on it."""

    victim_src: Tuple[str, int]
    index: int
    opened: Optional[dict]                     # the entry as show listed it (the control)
    sent: Dict[str, int] = field(default_factory=dict)          # IP bytes per message kind
    victim: Dict[str, Count] = field(default_factory=dict)      # what reached the victim
    after: Optional[dict] = None               # the entry after everything

    @property
    def extended(self) -> float:
        """How much later the entry's last_seen is than its creation."""
        return (self.after["last_seen"] - self.after["created"]) if self.after else 0.0

    def leaks(self) -> List[str]:
        out = [f"{kind}: {mib(self.victim[kind].bytes)} reached the victim for "
               f"{mib(self.sent[kind])} sent ({self.victim[kind].bytes / self.sent[kind]:.2f} "
               f"bytes per byte)" for kind in self.sent if self.victim[kind].bytes]
        if self.after is None:
            out.append("the half-open entry is gone")
        else:
            if self.after["state"] != "half-open":
                out.append(f"the entry became {self.after['state']} (responder "
                           f"{self.after['responder']}, index {self.after['responder_index']})")
            if self.extended > 0.05:
                out.append(f"its last_seen moved {self.extended:.2f} s past its creation")
        return out


def half_open_abuse(a: Arena, transports: int = 20, size: int = 1400) -> HalfOpenAbuse:
    """A valid-mac1 initiation from a spoofed victim source opens a
    half-open entry (HubPort, index) -> victim; from its own address the
    attacker then sends on HubPort, to that index: `transports` transport
    messages of `size` bytes, a forged response, a forged cookie reply."""
    src = a.victim_source(50)
    index = secrets.randbits(31) | 1
    make = initiations(a.responder.wg.public_key, first_index=index)
    spoof(a.hostile.atk, src, (a.hub_ip, PORT), make(0))

    def entry():
        return next((x for x in a.hub.show()["sessions"] if x["initiator_index"] == index), None)
    result = HalfOpenAbuse(src, index, wait_for(entry, timeout=10, what="the half-open entry"))
    atk = (a.hostile.atk_ip, 5555)
    hub = (a.hub_ip, a.hub_port)
    messages = {
        "transport": [forged_transport(index, i + 1, size=size - 28) for i in range(transports)],
        "response": [wire.build_response(secrets.randbits(31) | 1, index,
                                         ephemeral=os.urandom(32), empty=os.urandom(16),
                                         mac1=os.urandom(16))],
        "cookie": [wire.build_cookie(index, nonce=os.urandom(24), cookie=os.urandom(32))],
    }
    observer = Observer(a.hostile.victim, {
        kind: match_udp(src=a.hub_ip, dst=src[0], dport=src[1])
        + f" udp length {8 + len(msgs[0])}" for kind, msgs in messages.items()}).start()
    for kind, msgs in messages.items():
        result.sent[kind] = sum(spoof(a.hostile.atk, atk, hub, m) for m in msgs)
    a.barrier()
    result.victim = observer.read()
    result.after = entry()
    return result


# ---- floods ---------------------------------------------------------------------

@dataclass
class FloodRun:
    """A flood of valid-mac1 initiations for the responder's key from many
    spoofed sources, and what it did."""

    flood: FloodResult
    sources: int
    pair: ProbeStats                       # the established pair during the flood
    handshake: Optional[float]             # a fresh initiator's first round trip, s (None: none)
    handshake_timeout: float
    at_responder: Count                    # initiations from the hub at the responder's NAT
    at_responder_peak: float               # the highest per-second rate of those
    victim: Count                          # what the hub sent to the spoofed sources
    counters: Dict[str, int]
    rss_before: int                        # the daemon's, KiB
    rss_after: int
    rss_peak: int                          # from the flood to the whole `show` after it
    half_open_before: int = 0              # half-open entries in show
    half_open_after: int = 0
    fill: Optional[FloodResult] = None     # the fill phase, if any
    filled: Count = Count()                # initiations the responder got during it
    fresh_timeline: List[Tuple[float, str]] = field(default_factory=list)   # its handshake

    @property
    def rss_growth(self) -> float:
        """Peak RSS over idle RSS."""
        return self.rss_peak / self.rss_before if self.rss_before else 0.0

    def rss_text(self) -> str:
        return (f"{self.rss_before / 1024:.0f} MiB idle, peak {self.rss_peak / 1024:.0f} MiB "
                f"({self.rss_growth:.2f}x), {self.rss_after / 1024:.0f} MiB after")

    @property
    def amplification(self) -> float:
        return self.victim.bytes / self.flood.ip_bytes if self.flood.ip_bytes else 0.0

    @property
    def responder_rate(self) -> float:
        return self.at_responder.packets / self.flood.seconds if self.flood.seconds else 0.0

    def handshake_text(self) -> str:
        return (f"{self.handshake:.1f} s" if self.handshake is not None
                else f"none within {self.handshake_timeout:.0f} s")

    def handshake_problem(self, within: float) -> Optional[str]:
        """Why the fresh handshake missed `within` seconds, or None."""
        if self.handshake is not None and self.handshake <= within:
            return None
        return (f"a fresh wireguard-go handshake during the flood: {self.handshake_text()} "
                f"(at most {within:.0f} s); {self.timeline_text()}")

    def timeline_text(self) -> str:
        return "its handshake messages at its NAT: " + (", ".join(
            f"+{t:.1f} s {what}" for t, what in self.fresh_timeline) or "none")

    def loss_problem(self, at_most: float) -> Optional[str]:
        """Why the established pair's loss is above `at_most`, or None."""
        if self.pair.sent and self.pair.loss <= at_most:
            return None
        return (f"the established pair lost {self.pair.lost} of {self.pair.sent} probes "
                f"({self.pair.loss:.1%}, at most {at_most:.0%})")

    def describe(self) -> str:
        fill = (f"fill phase: {self.fill}, {self.filled.packets} initiations at the responder; "
                if self.fill else "")
        return (fill + f"flood: {self.flood} from {self.sources} sources; established pair: "
                f"{self.pair}; fresh handshake: {self.handshake_text()}; the responder got "
                f"{self.at_responder.packets} initiations ({self.responder_rate:.0f}/s, peak "
                f"{self.at_responder_peak:.0f}/s); the victim got {mib(self.victim.bytes)} "
                f"({self.amplification:.3f} bytes per byte sent); half-open entries "
                f"{self.half_open_before} -> {self.half_open_after}; daemon RSS "
                f"{self.rss_text()}")


def flood(a: Arena, rate: float = 150_000, seconds: float = 10.0, sources: int = 1000,
          handshake_timeout: float = 10.0, frames: int = 16384, fill: float = 0.0,
          fill_rate: float = 6000, fill_until: int = HALF_OPEN_SPACE) -> FloodRun:
    """Flood hub:PORT with valid-mac1 initiations for the responder from
    `sources` spoofed addresses at `rate` for `seconds`, while the
    established pair is probed (100 pps each way) and, as the flood starts,
    a fresh initiator (the arena needs `fresh`) starts its first handshake:
    how long until its first round trip.

    With `fill`, a fill phase comes first: up to `fill` seconds at
    `fill_rate` (about what the slow path keeps up with), every frame with
    a new sender index so that each one the hub takes opens a half-open
    entry, until the responder has received `fill_until` of them (the
    half-open space is full)."""
    assert a.fresh is not None, "the flood needs an arena with a fresh initiator"
    r, hs = a.responder, None
    status = a.hub.show()
    pid = status["pid"]
    half_before = sum(1 for x in status["sessions"] if x["state"] == "half-open")
    rss_before = rss_kib(pid)
    spoofed = a.hostile.sources(sources)
    packets = build_frames(a.hostile.atk, (a.hub_ip, PORT), spoofed,
                           initiations(r.wg.public_key), frames)
    filling = fill and build_frames(a.hostile.atk, (a.hub_ip, PORT), spoofed,
                                    initiations(r.wg.public_key), int(fill * fill_rate) + 1)
    at_r = Observer(r.site.router, {"init": match_udp(src=a.hub_ip, iifname="wan") + " "
                                    + match_initiation()}).start()
    victim = Observer(a.hostile.victim, {"from_hub": match_udp(src=a.hub_ip)}).start()
    probe = UdpEcho(a.initiator.node, r.node, r.overlay_ip, ECHO_PORT, interval=0.01).start()
    fresh = UdpEcho(a.fresh.node, r.node, r.overlay_ip, FRESH_ECHO_PORT, interval=0.05)
    for p in (probe, fresh):
        a.topo.lab.on_close(p.stop)
    probe.wait_answered(20)
    counters_before = status["counters"]
    marks = (at_r.read(), victim.read())
    sampler = Sampler(at_r, "init").start()
    rss = RssPeak(pid).start()
    filled, fill_result = Count(), None
    t0 = time.monotonic()
    try:
        if filling:
            filler = Flooder(a.hostile.atk, filling, rate=fill_rate, duration=fill).start()
            a.topo.lab.on_close(filler.stop)
            wait_for(lambda: not filler.running()
                     or at_r.since(marks[0])["init"].packets >= fill_until,
                     timeout=fill + 10, what="the fill phase to end")
            filler.stop()
            fill_result = filler.wait(timeout=5)
            filled = at_r.since(marks[0])["init"]
        main_mark = at_r.read()
        flooder = Flooder(a.hostile.atk, packets, rate=rate, duration=seconds).start()
        a.topo.lab.on_close(flooder.stop)
        handshake = Capture(a.fresh.site.router, "wan",
                            f"udp and host {a.hub_ip} and port {PORT}").start()
        t_hs = time.monotonic()
        fresh.start()
        try:
            hs = fresh.wait_answered(1, after=t_hs, timeout=handshake_timeout) - t_hs
        except TimeoutError:
            pass
        timeline = handshake_messages(handshake.stop(), t_hs)
        result = flooder.wait()
        t1 = time.monotonic()
    finally:
        fresh.stop()
        sampler.stop()
    # with the session table full the reply is ~18 MB, and a busy daemon
    # may cut it short (wgmux show then fails): asked again until whole
    status = wait_for(lambda: a.hub.show(check=False), timeout=60, interval=1,
                      what="a whole `wgmux show` after the flood")
    rss_peak = rss.stop()
    # a probe is lost when its echo has not come back `grace` seconds after it left
    wait_for(lambda: time.monotonic() > t1 + probe.grace, timeout=probe.grace + 1,
             what="the last probes' grace period")
    pair = probe.stats(t0, t1)
    probe.stop()
    counters = {k: v - counters_before.get(k, 0) for k, v in status["counters"].items()
                if v != counters_before.get(k, 0)}
    return FloodRun(result, sources, pair, hs, handshake_timeout,
                    at_r.since(main_mark)["init"], peak_rate(sampler.points),
                    victim.since(marks[1])["from_hub"], counters, rss_before, rss_kib(pid),
                    rss_peak,
                    half_before, sum(1 for x in status["sessions"] if x["state"] == "half-open"),
                    fill_result, filled, timeline)


def handshake_messages(packets, since: float) -> List[Tuple[float, str]]:
    """(seconds after `since`, what) for the handshake messages among
    captured packets (capture times are CLOCK_REALTIME: converted)."""
    offset = time.time() - time.monotonic()
    out = []
    for p in packets:
        m = wire.parse_message(p.payload)
        if m is None or m.kind is wire.MessageType.TRANSPORT:
            continue
        what = m.kind.name.lower()
        if m.kind is wire.MessageType.INITIATION:
            what += " with mac2" if any(m.mac2) else ""
        out.append((p.time - offset - since, what))
    return out


# ---- a hub with two uplinks (docs/spec.md §4c) ------------------------------------

@dataclass
class UplinkForgery:
    """Forged transports with the pair's live index from an attacker on
    one uplink's segment (its own address: nothing on a real uplink stops
    that), and what they achieved."""

    interface: str              # where they arrived
    where: str                  # "peer port 51821" / "HubPort 51820"
    sent: int                   # forged packets
    dropped: int                # counted as dropped on `interface`
    moved: bool                 # the session's endpoints changed
    roams: int                  # ev_roam
    to_attacker: int            # packets that reached the attacker from the hub
    xdp_ran: Optional[bool] = None   # "xdp": the program saw packets on both uplinks

    @property
    def achieved(self) -> bool:
        return bool(self.moved or self.roams or self.to_attacker)

    def describe(self) -> str:
        return (f"{self.where} via {self.interface}: {self.sent} forged, {self.dropped} counted "
                f"as dropped on {self.interface}, "
                + ("session moved, " if self.moved else "nothing moved, ")
                + f"{self.roams} roams, {self.to_attacker} packets to the attacker")


def uplink_forgeries(lab, extra_config: str = "", datapath: str = "tc") -> List[UplinkForgery]:
    """netlab.topology.two_uplinks with the pair across the uplinks
    (initiator on eth0's segment, responder on eth1's), then, on each
    uplink, an attacker there forges transports (counter 0 and a random
    64-bit one) with the index whose flow it could steal: on eth0 the
    responder's, to PORT; on eth1 the initiator's, to HubPort."""
    from netlab.topology import HUB_IP, HUB_IP2, WAN2_NET, WAN_NET, two_uplinks

    topo = two_uplinks(lab, [NatKind.PORT_RESTRICTED] * 2, wireguard=True, tx_checksum=False)
    initiator, responder = topo.host(1), topo.host(2)
    for host in topo.hosts:
        topo.hub_wg.wait_handshake(host.wg.public_key)
    if datapath == "xdp":
        for port in ("hub", "hub1"):
            topo.inet.take_xdp_frames(port)
    hub = WgmuxHub(topo, interfaces=["eth0", "eth1"],
                   extra_config=f'{extra_config}\nDatapath = "{datapath}"')
    hub.pair(initiator, responder, PORT)
    hub.start()
    wait_for(lambda: ping(initiator.node, responder.overlay_ip), timeout=30,
             what="the first ping across the uplinks")
    results = []
    for uplink, (ifname, net, hub_ip) in enumerate(
            (("eth0", WAN_NET, HUB_IP), ("eth1", WAN2_NET, HUB_IP2)), start=1):
        atk = topo.add_internet_host(f"atk{uplink}", 200, uplink=uplink)
        atk_ip = str(net[200])
        before = hub.show()
        s = [s for s in before["sessions"] if s["port"] == PORT and s["state"] == "established"]
        if len(s) != 1:
            raise AssertionError(f"expected the pair's one session, got {before['sessions']}")
        s = s[0]
        index, port, where = ((s["responder_index"], PORT, f"peer port {PORT}") if uplink == 1
                              else (s["initiator_index"], topo.hub_port,
                                    f"HubPort {topo.hub_port}"))
        dropped = {i["name"]: i["dropped"] for i in before["interfaces"]}[ifname]
        forgeries = [forged_transport(index, 0), forged_transport(index, secrets.randbits(64))]
        with Capture(atk, "eth0", f"udp and src host {hub_ip}") as heard:
            for payload in forgeries:
                spoof(atk, (atk_ip, 40000 + uplink), (hub_ip, port), payload)
            # the barrier: the hub counted them where they arrived
            now = wait_for(lambda: {i["name"]: i["dropped"] for i in hub.show()["interfaces"]}
                           [ifname] >= dropped + len(forgeries) and hub.show(),
                           timeout=10, what=f"the forgeries counted as dropped on {ifname}")
        after = [x for x in now["sessions"] if x["initiator_index"] == s["initiator_index"]]
        moved = not after or (after[0]["initiator"], after[0]["responder"]) != \
            (s["initiator"], s["responder"])
        results.append(UplinkForgery(
            ifname, where, len(forgeries),
            {i["name"]: i["dropped"] for i in now["interfaces"]}[ifname] - dropped, moved,
            now["counters"]["ev_roam"] - before["counters"]["ev_roam"], len(heard.packets)))
    if not ping(initiator.node, responder.overlay_ip, count=2):
        raise AssertionError("the pair no longer answers after the forgeries")
    if datapath == "xdp":
        ran = all(topo.hub.xdp_stats(i).get("xdp_packets", 0) > 0 for i in ("eth0", "eth1"))
        for r in results:
            r.xdp_ran = ran
    return results


# ---- a hub multi-homed to two providers: the slow path's fan-out (§4c) -------------

FAN_OUT_MARKER = b"fanout!"


@dataclass
class FanOut:
    """A flood of valid-mac1 initiations for the responder, to its peer
    port on a hub multi-homed to two providers, and how many copies the
    slow path's fan-out (one per hub address, docs/security.md §3.5) sent
    the responder."""

    sent: int                       # initiations the attacker sent
    seconds: float
    forwarded: int                  # initiations the slow path passed on (sp_reflect_*)
    at_responder: Dict[str, int]    # hub address -> the flood's initiations at the responder's NAT
    into_responder: int             # ... that its NAT let through to the responder
    elsewhere: int                  # the flood's initiations the hub sent anyone else
    bcp38: Dict[str, int]           # what each provider dropped for a wrong source address

    @property
    def copies(self) -> int:
        return sum(self.at_responder.values())

    @property
    def addresses(self) -> int:
        return len(self.at_responder)

    def describe(self) -> str:
        per = ", ".join(f"{n} from {a}" for a, n in self.at_responder.items())
        return (f"{self.sent} valid-mac1 initiations in {self.seconds:.1f} s: "
                f"{self.forwarded} forwarded; at the responder's NAT {self.copies} ({per}), "
                f"{self.into_responder} let in; {self.elsewhere} sent anywhere else; "
                f"BCP 38 drops {self.bcp38}")


def fan_out_flood(lab, extra_config: str = "", rate: float = 5000, seconds: float = 5.0,
                  sources: int = 200, datapath: str = "tc", paired: bool = False) -> FanOut:
    """netlab.topology.two_providers, responder (host 2) configured on PORT
    and never contacted by its initiator; an attacker on the internet floods
    hub address A:PORT with valid-mac1 initiations for the responder (its
    public key is all it takes) from `sources` spoofed addresses.  Counted:
    what the slow path forwarded, and the flood's initiations (marked) at
    the responder's NAT from each hub address and past it.  `datapath`:
    the hub's Datapath (XDP passes initiations to TC and the slow path).
    With `paired`, the initiator's handshake through the hub comes first:
    the hub then knows which of its addresses the responder talks to."""
    from netlab.attack import SPOOF_NET, add_attacker
    from netlab.topology import PROVIDER_NETS, PROVIDER_WAN_IPS, bcp38_drops, two_providers

    topo = two_providers(lab, [NatKind.PORT_RESTRICTED] * 2, wireguard=True, tx_checksum=False)
    initiator, responder = topo.host(1), topo.host(2)
    topo.hub_wg.wait_handshake(responder.wg.public_key)
    if datapath == "xdp":
        for name in ("pA", "pB"):      # the veths' far ends take XDP_TX (netlab.xdp)
            lab.nodes[name].take_xdp_frames("hub0")
    hub = WgmuxHub(topo, interfaces=["eth0", "eth1"],
                   extra_config=f'{extra_config}\nDatapath = "{datapath}"')
    hub.pair(initiator, responder, PORT)
    if not paired:
        initiator.wg.remove_peer(responder.wg.public_key)    # only the attacker initiates
    hub.start()
    if paired:
        wait_for(lambda: ping(initiator.node, responder.overlay_ip), timeout=30,
                 what="the pair's first ping across the providers")
    atk = add_attacker(topo, 200)
    for net, wan_ip in zip(PROVIDER_NETS, PROVIDER_WAN_IPS):
        atk.add_route(str(net), gateway=wan_ip)
    addresses = [str(net[254]) for net in PROVIDER_NETS]
    spoofed = [str(SPOOF_NET[1 + i]) for i in range(sources)]
    frames = build_frames(atk, (addresses[0], PORT), spoofed,
                          initiations(responder.wg.public_key, marker=FAN_OUT_MARKER),
                          int(rate * seconds))
    mark = match_marker(FAN_OUT_MARKER, 8)
    at_nat = Observer(responder.site.router, {
        f"a{i}": f"{match_udp(src=a, iifname='wan')} {match_initiation()} {mark}"
        for i, a in enumerate(addresses)}).start()
    past_nat = Observer(responder.node, {"init": f"{match_initiation()} {mark}"}).start()
    # the flood's initiations the hub sends anywhere but the responder,
    # seen where they leave the hub: at each provider
    elsewhere = [Observer(lab.nodes[name], {"init": f'iifname "hub0" ip daddr != '
                                            f'{responder.public_ip} {match_initiation()} {mark}'}
                          ).start() for name in ("pA", "pB")]
    before = hub.show()["counters"]
    flooder = Flooder(atk, frames, rate=rate, duration=seconds, count=len(frames)).start()
    lab.on_close(flooder.stop)
    result = flooder.wait(timeout=seconds + 30)
    # the barrier: every message the datapath queued for the slow path
    # (slow_*) has ended in its one sp_* counter, sends included
    def handled():
        c = hub.show()["counters"]
        moved = {k: c.get(k, 0) - before.get(k, 0) for k in c}
        queued = sum(v for k, v in moved.items() if k.startswith("slow_"))
        return queued and sum(v for k, v in moved.items() if k.startswith("sp_")) >= queued and c

    counters = wait_for(handled, timeout=60, interval=0.5,
                        what="the slow path to finish with the flood")
    at, past = at_nat.read(), past_nat.read()
    forwarded = sum(counters.get(k, 0) - before.get(k, 0)
                    for k in ("sp_reflect_initiation", "sp_reflect_mac2"))
    return FanOut(result.sent, result.seconds, forwarded,
                  {a: at[f"a{i}"].packets for i, a in enumerate(addresses)},
                  past["init"].packets, sum(o["init"].packets for o in elsewhere),
                  bcp38_drops(topo))
