"""The handshake slow path: mac1 checks in userspace (docs/spec.md §9).

The datapath (bpf/wgmux.c) never reflects a handshake initiation itself.
It queues it on the ring buffer `slow_ring`, rate-limited per source
address, with what this module needs to act on it: source and destination
address and port, TTL, TOS, IP id and DF, ingress ifindex, arrival time and
the whole UDP payload.  One thread here (`SlowPath`) reads the ring and
decides, with public keys only (wgmux.mac1):

* **Initiation on a peer port P** (the datapath dropped the original):
  reflected only if its mac1 is valid for P's responder R (the key in the
  config's `[[Peer]]`): the half-open session (HubPort, I's sender index)
  -> {E_I, from P} goes into the session map, then the initiation is sent
  from h:HubPort to E_R.  Anything else is dropped and counted
  (sp_drop_mac1): the hub is no open reflector.

* **Initiation on HubPort** (the datapath passed the original to the stack
  and sent a copy): the hub's own handshake, or a responder-initiated one -
  after a session expired, R's endpoint for I is h:HubPort, so R's
  initiation to I arrives there.  If it comes from the endpoint of P's
  responder and its mac1 is valid for an initiator I learned on P (below),
  it is R's: the half-open session (P, R's sender index) -> {E_R, from
  HubPort} goes into the map and the initiation is sent from h:P to E_I
  (I's endpoint as seen on P).  I answers to h:P, and the datapath's
  generic response handling establishes the pair (docs/spec.md §3 with the roles
  swapped).  Otherwise nothing happens (sp_pass_hub): the stack already
  has it.

* **Response on HubPort** that the datapath reflected (R -> I): its mac1 is
  keyed with I's public key, which must be one of the hub device's peers.
  That teaches the hub "I talks to R through P" (map `initiators`, kept in
  the kernel so that it survives a restart with the sessions).

Packets are re-sent through the hub's own stack with raw sockets (IP header
included, so addresses, ports, TTL - 1, TOS, id and DF are ours; the UDP
checksum is computed here, the IPv4 one by the kernel), routed as the
hub's own packets from that source are (IP_PKTINFO: source policy rules
of a multi-homed hub apply).  They leave by the egress path, so they
never meet the TC ingress program again.  Raw sockets need CAP_NET_RAW.

**Which hub address** a re-sent initiation leaves from: the one its
target's owner talks to, which its NAT or firewall requires (_sources).
Known when a session names it (`via`); else guessed; and with several
interfaces (spec §4c) the guess can be wrong (two providers: the hub's
routing cannot tell which of its addresses a peer was given), so the
initiation is then sent from each of the hub's addresses of the target's
family, the guess first: the target's NAT takes the right one, and its
answer, to that address, fixes the session's `via`.  A responder's `via`
is then read from the pair that handshake made (_responder_via), so that
later initiations to it (rekeys, other initiators) leave from its address
alone while that pair is in the table.

**Under load** (a peer port over its initiation budget, measured by the
datapath) the hub speaks WireGuard's cookie mechanism for the responder
(wgmux.cookie): an initiation without a valid mac2 gets a cookie reply from
h:P (sp_cookie_sent), one with a valid mac2 is forwarded
(sp_reflect_mac2).  A spoofed source never sees its cookie, so a flood
from spoofed sources never reaches the responder; a real initiator retries
with the cookie's mac2 and gets in.  Forwarded initiations never exceed the
port's budget (sp_drop_port_budget).

Half-open entries are this module's alone (the datapath only turns them
into pairs), so it keeps their space bounded: at most a quarter of the
session table, the oldest evicted first (ev_half_open_evicted), and at
most HALF_OPEN_PER_SOURCE per source address (IPv4 address, IPv6 /64;
sp_drop_half_open_source), so that established sessions always have room
and one source cannot take the space.

Every message ends in exactly one sp_* counter of the datapath's counter
map.  Initiations older than MAX_AGE (the daemon was busy or down) are
dropped: WireGuard has resent a fresh one by then.

Established sessions never involve this thread; while it (or the daemon)
is down, transport keeps flowing and only new handshakes wait.
"""

from __future__ import annotations

import base64
import collections
import ipaddress
import logging
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

from . import cookie, junk, mac1
from . import packet as pk
from . import wire
from .model import LOAD_MAC2, LOAD_NONE, Endpoint, LearnedInitiator, SlowMessage, monotonic_ns
from .status import Clock, endpoint_text

log = logging.getLogger("wgmux")

# WireGuard resends an unanswered initiation after REKEY_TIMEOUT (5 s) with
# a new sender index; an older one is not worth reflecting.
MAX_AGE = 5.0
POLL_MS = 200
# Half-open entries: the share of the session table they may take, and how
# many one source address (IPv4 address, IPv6 /64) may hold.  A NAT with
# many peers behind one address opens one per handshake in flight, for
# well under a second each.
HALF_OPEN_SHARE = 4            # at most max_sessions // HALF_OPEN_SHARE
HALF_OPEN_PER_SOURCE = 32
# TTL of the packets the hub originates (cookie replies)
OWN_TTL = 64


def can_be_peer(ip) -> bool:
    """The datapath's rule (bpf/wgmux.c martian4/martian6), for addresses
    the daemon learns elsewhere: no unspecified, loopback, multicast,
    class-E or broadcast, link-local or IPv4-mapped address is a peer."""
    ip = ipaddress.ip_address(ip)
    if ip.version == 4:
        first = ip.packed[0]
        return not (first == 0 or first == 127 or first >= 224 or ip.packed[:2] == b"\xa9\xfe")
    p = ip.packed
    if p[0] == 0xFF or (p[0] == 0xFE and p[1] & 0xC0 == 0x80):
        return False
    return p[:8] != bytes(8)


def routed_source(dst: Endpoint):
    """The source address this namespace's routing picks for `dst` (a
    connected UDP socket's own address: a route lookup, nothing sent);
    None without a route."""
    family = socket.AF_INET6 if dst.ip.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((str(dst.ip), dst.port or 9))
            return ipaddress.ip_address(s.getsockname()[0])
    except OSError:
        return None


def source_key(ip) -> Tuple[int, bytes]:
    """A source as the datapath's per-source limits key it: the IPv4
    address, or the IPv6 /64."""
    ip = ipaddress.ip_address(ip)
    return (ip.version, ip.packed if ip.version == 4 else ip.packed[:8])


class Gcra:
    """Generic cell rate: `rate` per second on average, `burst` at once
    (rate 0: unlimited), in the caller's clock (seconds)."""

    def __init__(self, rate: float, burst: int):
        self.limit = (rate, burst)
        self.interval = 1.0 / rate if rate else 0.0
        self.tolerance = self.interval * max(burst - 1, 0)
        self.tat = 0.0

    def allow(self, now: float) -> bool:
        if not self.interval:
            return True
        t = max(self.tat, now)
        if t - now > self.tolerance:
            return False
        self.tat = t + self.interval
        return True


class HalfOpenSpace:
    """The half-open entries the slow path opened, oldest first, with
    their sources: the bound on their space (`limit`) and per source
    (`per_source`).  Entries leave when the datapath established them or
    the collector removed them; this notices on the way (`alive(key)` says
    whether a key is still half-open in the map)."""

    def __init__(self, limit: int, per_source: int, alive: Callable[[Tuple[int, int]], bool]):
        self.limit = max(1, limit)
        self.per_source = per_source
        self._alive = alive
        self._order: "collections.OrderedDict[Tuple[int, int], tuple]" = \
            collections.OrderedDict()
        self._by_source: Dict[tuple, List[Tuple[int, int]]] = {}

    def __len__(self):
        return len(self._order)

    def _forget(self, key):
        src = self._order.pop(key, None)
        if src is not None:
            keys = self._by_source.get(src, [])
            if key in keys:
                keys.remove(key)
            if not keys:
                self._by_source.pop(src, None)

    def source_full(self, src: tuple) -> bool:
        """`src` holds per_source entries still half-open."""
        keys = self._by_source.get(src, [])
        if len(keys) < self.per_source:
            return False
        for key in list(keys):
            if not self._alive(key):
                self._forget(key)
        return len(self._by_source.get(src, [])) >= self.per_source

    def make_room(self) -> List[Tuple[int, int]]:
        """Keys to evict (oldest first, still half-open) so that one more
        fits; keys no longer half-open are dropped from the books."""
        evict = []
        while len(self._order) >= self.limit:
            key = next(iter(self._order))
            if self._alive(key):
                evict.append(key)
            self._forget(key)
        return evict

    def add(self, key: Tuple[int, int], src: tuple):
        self._forget(key)
        self._order[key] = src
        self._by_source.setdefault(src, []).append(key)

    def discard(self, key: Tuple[int, int]):
        self._forget(key)


class SlowPathError(RuntimeError):
    """The slow path cannot start; the message says why."""


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


# Linux's value; Python's socket module names only IPV6_PKTINFO
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)


class RawSender:
    """Send a UDP datagram with addresses, ports and IP header fields of our
    choosing through this network namespace's stack (raw sockets with
    IPPROTO_RAW, which implies IP_HDRINCL / IPV6_HDRINCL).  The route is
    looked up with the datagram's source (IP_PKTINFO / IPV6_PKTINFO; a
    raw socket's header alone does not set it), so that a multi-homed
    hub's source rules send it out by the uplink that address belongs to."""

    def __init__(self):
        try:
            self.v4 = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        except PermissionError:
            raise SlowPathError("cannot open a raw socket to re-send verified handshakes: "
                                "wgmux serve needs CAP_NET_RAW") from None
        try:
            self.v6: Optional[socket.socket] = socket.socket(
                socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
        except OSError:
            self.v6 = None   # IPv6 disabled: IPv6 handshakes then fail, counted

    def send(self, src: Endpoint, dst: Endpoint, payload: bytes, ttl: int, tos: int = 0,
             ip_id: int = 0, df: bool = False):
        seg = pk.udp(src.ip, dst.ip, src.port, dst.port, payload)
        if dst.ip.version == 4:
            frame = pk.ipv4(src.ip, dst.ip, seg, ttl=ttl, tos=tos, ident=ip_id,
                            flags=pk.IP_DF if df else 0)
            info = struct.pack("=i4s4s", 0, src.ip.packed, bytes(4))
            self.v4.sendmsg([frame], [(socket.IPPROTO_IP, IP_PKTINFO, info)],
                            0, (str(dst.ip), 0))
        else:
            if self.v6 is None:
                raise OSError("IPv6 raw socket unavailable")
            frame = pk.ipv6(src.ip, dst.ip, seg, hop_limit=ttl, traffic_class=tos)
            info = struct.pack("=16sI", src.ip.packed, 0)
            self.v6.sendmsg([frame], [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, info)],
                            0, (str(dst.ip), 0))

    def close(self):
        for s in (self.v4, self.v6):
            if s is not None:
                s.close()


@dataclass(frozen=True)
class Decision:
    """What the slow path did with one message (for logs and tests)."""
    counter: str                          # the sp_* counter it was counted under
    sent: Optional[Tuple[Endpoint, Endpoint]] = None   # (from, to) if re-sent
    session: Optional[Tuple[int, int]] = None          # the half-open key opened
    learned: Optional[Tuple[int, str]] = None          # (port, initiator key b64)


class SlowPath:
    """Consumes the datapath's slow-path ring buffer in a thread.

    `config()` returns the current wgmux Config (its [[Peer]] ports and
    keys), `device()` the hub device as last read (DeviceInfo: its peers'
    public keys); both are called per message, so a reload or a new peer
    takes effect at once.  `sender` defaults to a RawSender opened by
    start() in the calling thread's network namespace.
    """

    def __init__(self, datapath, config: Callable[[], object], device: Callable[[], object],
                 sender=None, max_age: float = MAX_AGE):
        self.dp = datapath
        self._config = config
        self._device = device
        self.sender = sender
        self.max_age_ns = int(max_age * 1e9)
        self._own_sender = False
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self._lock = threading.Lock()          # guards _learned, _warnings
        # port -> {raw initiator key -> LearnedInitiator}
        self._learned: Dict[int, Dict[bytes, LearnedInitiator]] = {}
        self._warnings: Dict[frozenset, str] = {}
        # (port, raw initiator key) -> the session key (P, R's sender) of the
        # last responder-initiated handshake to it: once I has answered, its
        # reverse entry holds I's new index and endpoint
        self._answered: Dict[Tuple[int, bytes], Tuple[int, int]] = {}
        # peer port -> session keys (HubPort, I's sender) of initiations
        # forwarded to its responder: the latest, and the latest known to
        # have completed (_responder_via)
        self._forwarded: Dict[int, Tuple[int, int]] = {}
        self._completed: Dict[int, Tuple[int, int]] = {}
        self._peer_keys: Tuple[tuple, dict] = ((), {})
        self.last: Optional[Decision] = None   # the latest decision (tests)
        self.cookies = cookie.CookieSecret()
        self.half_open = HalfOpenSpace(getattr(datapath, "max_sessions", 65536)
                                       // HALF_OPEN_SHARE, HALF_OPEN_PER_SOURCE,
                                       self._still_half_open)
        self._budgets: Dict[int, Gcra] = {}    # peer port -> what it forwarded

    # -- lifecycle -----------------------------------------------------------
    def load(self):
        """Take over the identities a previous daemon learned (pinned map),
        and the half-open entries it opened (the oldest first)."""
        with self._lock:
            self._learned.clear()
            for li in self.dp.initiators():
                self._learned.setdefault(li.port, {})[li.public_key] = li
        # charged to the source of the initiation that opened it: its dst
        for s in sorted((s for s in self.dp.sessions() if s.half_open), key=lambda s: s.created):
            if s.dst is not None:
                self.half_open.add(s.key, source_key(s.dst.ip))
        n = sum(len(v) for v in self._learned.values())
        if n:
            log.info("slow path: %d learned initiator identit%s kept", n, "y" if n == 1 else "ies")

    def start(self):
        if self.sender is None:
            self.sender = RawSender()
            self._own_sender = True
        self.load()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="wgmux-slowpath", daemon=True)
        self._thread.start()
        rate, burst = self.dp.slow_rate()
        log.info("slow path: mac1 checks on; at most %s handshake messages/s per source "
                 "(burst %d) reach it", f"{rate:g}" if rate else "unlimited", burst)

    def stop(self, timeout: float = 5.0):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._own_sender and self.sender is not None:
            self.sender.close()
            self.sender = None
            self._own_sender = False

    def _run(self):
        while not self._stop.is_set():
            try:
                self.dp.poll_slow_path(self.handle, POLL_MS)
            except Exception:
                log.exception("slow path: polling the ring buffer failed")
                self._stop.wait(1.0)

    # -- one message ---------------------------------------------------------
    def handle(self, msg) -> Decision:
        """Decide about one message (a SlowMessage, or the exception that
        kept it from parsing), count it, and return the decision."""
        try:
            d = self._decide(msg)
        except Exception:
            log.exception("slow path: cannot handle %r", msg)
            d = Decision("sp_drop_malformed")
        self.dp.count(d.counter)
        self.last = d
        return d

    def _decide(self, msg) -> Decision:
        if not isinstance(msg, SlowMessage):
            log.warning("slow path: unreadable message from the datapath: %s", msg)
            return Decision("sp_drop_malformed")
        # one classifier for the whole decision: a reload may swap it meanwhile
        classifier = self.dp.classifier
        kind, message = classifier.message(msg.payload)
        if kind is None or kind.value != msg.kind or msg.src.ip.version != msg.dst.ip.version:
            return Decision("sp_drop_malformed")
        hub_port = self.dp.hub_port
        if kind is wire.MessageType.RESPONSE:
            if msg.dst.port != hub_port:
                return Decision("sp_drop_malformed")
            return self._learn(msg, message, wire.receiver_index(msg.payload, classifier),
                               hub_port)
        if kind is not wire.MessageType.INITIATION:
            return Decision("sp_drop_malformed")
        if monotonic_ns() - msg.ktime > self.max_age_ns:
            return Decision("sp_drop_stale")
        sender = wire.sender_index(msg.payload, classifier)
        if msg.dst.port == hub_port:
            return self._hub_initiation(msg, message, sender, hub_port)
        return self._peer_initiation(msg, message, sender, hub_port)

    def _responder_keys(self) -> Dict[int, str]:
        return {p.port: p.public_key for p in self._config().peers}

    def _device_keys(self) -> Dict[str, bytes]:
        """{base64 public key: mac1 key} of the hub device's peers."""
        device = self._device()
        names = tuple(device.peers) if device is not None else ()
        if names != self._peer_keys[0]:
            self._peer_keys = (names, mac1.mac1_keys({n: n for n in names}))
        return self._peer_keys[1]

    def _still_half_open(self, key: Tuple[int, int]) -> bool:
        s = self.dp.session(*key)
        return s is not None and s.half_open

    def _budget(self, port: int) -> Gcra:
        """What `port` may still forward (its InitiationRate/Burst; the
        datapath holds the same numbers)."""
        limit = self.dp.port_budget()
        g = self._budgets.get(port)
        if g is None or g.limit != limit:
            g = self._budgets[port] = Gcra(*limit)
        return g

    def _open(self, port: int, index: int, dst: Endpoint, src_port: int,
              expect: Optional[Endpoint], initiator: Endpoint, via: int = 0
              ) -> Tuple[Optional[str], bool]:
        """Open the half-open session within the half-open space
        (`initiator`: whose source it is charged to; `via`: the hub
        address dst's owner sent to); (counter if it failed, created)."""
        src = source_key(initiator.ip)
        old = self.dp.session(port, index)
        if old is None:
            if self.half_open.source_full(src):
                return "sp_drop_half_open_source", False
            for key in self.half_open.make_room():
                if self.dp.delete_session(*key):
                    self.dp.count("ev_half_open_evicted")
        res = self.dp.insert_session(port, index, dst, src_port, expect=expect, via=via)
        if res == "created":
            self.half_open.add((port, index), src)
            return None, True
        if res == "full":
            return "sp_drop_sessions_full", False
        old = self.dp.session(port, index)
        if old is not None and old.dst == dst and old.src_port == src_port:
            return None, False          # the same initiation again: resend it
        return "sp_drop_index_clash", False

    def _send(self, msg: SlowMessage, sources: List[Endpoint], dst: Endpoint,
              key: Tuple[int, int], created: bool, ok: str) -> Decision:
        """Send the initiation to `dst` from each of `sources` (_sources);
        sp_drop_send (and the half-open entry it opened removed) only when
        none could be sent."""
        amnezia = getattr(self._config(), "amnezia", None)
        sent, errors = None, []
        for src in sources:
            try:
                # AmneziaWG: the hub's own Jc junk first, so the second leg of a
                # reflected initiation looks like the first (docs/spec.md §12).
                if amnezia is not None and amnezia.jc:
                    junk.send_junk(lambda datagram: self.sender.send(
                        src, dst, datagram, ttl=msg.ttl - 1, tos=msg.tos), amnezia)
                self.sender.send(src, dst, msg.payload, ttl=msg.ttl - 1, tos=msg.tos,
                                 ip_id=msg.ip_id, df=msg.df)
            except OSError as e:
                errors.append(f"{src} -> {dst}: {e}")
                continue
            sent = sent or src
        if sent is None:
            log.warning("slow path: cannot send the initiation %s", "; ".join(errors))
            if created:
                self.dp.delete_session(*key)
                self.half_open.discard(key)
            return Decision("sp_drop_send")
        if errors:
            log.debug("slow path: the initiation also left from %s, but not %s", sent,
                      "; ".join(errors))
        return Decision(ok, sent=(sent, dst), session=key)

    def _sources(self, msg: SlowMessage, dst: Optional[Endpoint], hub_port: int,
                 via: int = 0) -> List[Endpoint]:
        """Where an initiation re-sent to `dst` leaves from (the module doc):
        _source()'s address, and with several interfaces and no `via`, after
        it every other hub address of its family (at most MAX_HUB_ADDRS,
        within the port's budget: the copies go to the configured target
        only).  Empty if it cannot be sent on."""
        best = self._source(msg, dst, via)
        if best is None:
            return []
        out = [best]
        if not via and self.dp.several_interfaces:
            out += [a for a in self.dp.hub_addresses() if a.version == best.version and a != best]
        return [Endpoint(a, hub_port) for a in out]

    def _source(self, msg: SlowMessage, dst: Optional[Endpoint], via: int = 0):
        """The hub address an initiation re-sent to `dst` leaves from, None
        if it cannot be sent on (TTL, or no hub address of dst's family):
        the one dst's owner talks to, so that its NAT or firewall lets it
        in.  That is the address `via` names (the one dst's owner sent to
        before) when known.  Else, for a target of the message's own family,
        the address it came to, unless the hub's routing reaches dst out of
        another of its interfaces (spec §4c: two uplinks), and then the
        address routing picks, as for one of the other family (spec §4b):
        the address the hub's own WireGuard reaches it from."""
        if dst is None or msg.ttl <= 1:
            return None
        if via:
            return self.dp.source_for(dst.ip.version, via)
        same = dst.ip.version == msg.dst.ip.version
        if same and not self.dp.several_interfaces:
            return msg.dst.ip
        routed = routed_source(dst)
        if routed is not None and self.dp.via_of(routed):
            if not same or self.dp.interface_of(routed) != self.dp.interface_of(msg.dst.ip):
                return routed
        return msg.dst.ip if same else self.dp.source_for(dst.ip.version)

    def _peer_initiation(self, msg: SlowMessage, message: bytes, sender: int,
                         hub_port: int) -> Decision:
        port = msg.dst.port
        key = self._responder_keys().get(port)
        r = self.dp.responder(port)
        if key is None or r is None or r.endpoint is None:
            return Decision("sp_drop_no_responder")
        if not can_be_peer(msg.src.ip):
            return Decision("sp_drop_martian")
        if not mac1.verify_mac1(message, mac1.mac1_key(key)):
            log.debug("slow path: initiation from %s to port %d: mac1 not for its responder, "
                      "dropped", msg.src, port)
            return Decision("sp_drop_mac1")
        sources = self._sources(msg, r.endpoint, hub_port, self._responder_via(port, r.endpoint))
        if not sources:
            return Decision("sp_drop_unreflectable")
        ok = "sp_reflect_initiation"
        if msg.load != LOAD_NONE:
            if msg.load != LOAD_MAC2 or not self.cookies.mac2_valid(message, msg.src.ip,
                                                                    msg.src.port):
                return self._cookie_reply(msg, message, key)
            ok = "sp_reflect_mac2"
        if not self._budget(port).allow(time.monotonic()):
            # The port has forwarded its budget: busy, as a responder under
            # load would say, with a cookie, so that the initiator's next
            # try carries a mac2 (the datapath marks the port under load
            # within the same burst).  One that already does waits.
            if ok == "sp_reflect_initiation" and not self.cookies.mac2_valid(
                    message, msg.src.ip, msg.src.port):
                return self._cookie_reply(msg, message, key)
            return Decision("sp_drop_port_budget")
        why, created = self._open(hub_port, sender, msg.src, port, r.endpoint, msg.src,
                                  via=self.dp.via_of(msg.dst.ip))
        if why:
            return Decision(why)
        d = self._send(msg, sources, r.endpoint, (hub_port, sender), created, ok)
        if d.sent:
            self._forwarded[port] = (hub_port, sender)
        return d

    def _responder_via(self, port: int, endpoint: Endpoint) -> int:
        """The hub address (`via`) the responder of `port` talks to, as a
        handshake forwarded to it learned: its response set `via` on its
        direction of the pair (spec §4c); 0 if no such pair is in the table
        (none yet, or expired).  Only that is known before R answers, so
        only without it does an initiation leave from each address."""
        if not self.dp.several_interfaces:
            return 0
        for keys in (self._forwarded, self._completed):
            key = keys.get(port)
            s = self.dp.session(*key) if key else None
            if s is None or s.reverse is None:
                continue
            back = self.dp.session(*s.reverse)
            if back is not None and back.dst == endpoint and back.via:
                self._completed[port] = key
                return back.via
        return 0

    def _cookie_reply(self, msg: SlowMessage, message: bytes, responder_key: str) -> Decision:
        """Answer for the responder: a cookie for the initiation's source,
        sent from the hub address and port it came to."""
        reply = self.cookies.reply(message, responder_key, msg.src.ip, msg.src.port,
                                   self.dp.classifier)
        try:
            self.sender.send(msg.dst, msg.src, reply, ttl=OWN_TTL, tos=msg.tos)
        except OSError as e:
            log.warning("slow path: cannot send a cookie reply %s -> %s: %s", msg.dst, msg.src, e)
            return Decision("sp_drop_send")
        return Decision("sp_cookie_sent", sent=(msg.dst, msg.src))

    def _hub_initiation(self, msg: SlowMessage, message: bytes, sender: int,
                        hub_port: int) -> Decision:
        device_keys = self._device_keys()
        with self._lock:
            learned = {p: dict(v) for p, v in self._learned.items() if v}
        for port, by_key in sorted(learned.items()):
            r = self.dp.responder(port)
            if r is None or r.endpoint != msg.src:
                continue            # only P's responder may start a handshake via P
            for raw, li in by_key.items():
                name = _b64(raw)
                if name not in device_keys:
                    continue        # no longer a peer of the hub
                if mac1.verify_mac1(message, device_keys[name]):
                    return self._to_initiator(msg, sender, hub_port, port, li)
        return Decision("sp_pass_hub")

    def _refresh(self, hub_port: int, port: int, li: LearnedInitiator) -> LearnedInitiator:
        """After a responder-initiated handshake, I's response (on P, so
        never copied here) created (HubPort, I's new index): follow it, so
        that a chain of handshakes R starts keeps up with I's endpoint."""
        answered = self._answered.get((port, li.public_key))
        s = self.dp.session(*answered) if answered else None
        if s is None or s.reverse is None or s.reverse[0] != hub_port:
            return li
        back = self.dp.session(*s.reverse)
        if back is None or back.dst is None or back.src_port != port:
            return li
        li = LearnedInitiator(port, li.public_key, back.dst, s.reverse[1], monotonic_ns())
        with self._lock:
            self._learned.setdefault(port, {})[li.public_key] = li
            self._answered.pop((port, li.public_key), None)
        self.dp.learn_initiator(port, li.public_key, li.endpoint, li.index, li.learned)
        return li

    def _to_initiator(self, msg: SlowMessage, sender: int, hub_port: int, port: int,
                      li: LearnedInitiator) -> Decision:
        li = self._refresh(hub_port, port, li)
        # E_I as the datapath sees it now (it follows roaming), else as learned
        e_i, via = li.endpoint, 0
        s = self.dp.session(hub_port, li.index)
        if s is not None and s.src_port == port and s.dst is not None:
            e_i, via = s.dst, s.via
        sources = self._sources(msg, e_i, port, via)
        if not sources:
            return Decision("sp_drop_unreflectable")
        why, created = self._open(port, sender, msg.src, hub_port, e_i, msg.src,
                                  via=self.dp.via_of(msg.dst.ip))
        if why:
            return Decision(why)
        log.debug("slow path: responder-initiated handshake %s -> %s… via port %d",
                  msg.src, _b64(li.public_key)[:8], port)
        d = self._send(msg, sources, e_i, (port, sender), created, "sp_reflect_hub_initiation")
        if d.sent:
            with self._lock:
                self._answered[(port, li.public_key)] = (port, sender)
        return d

    def _learn(self, msg: SlowMessage, message: bytes, receiver: int,
               hub_port: int) -> Decision:
        s = self.dp.session(hub_port, receiver)
        if s is None or s.src_port == hub_port or s.dst is None:
            return Decision("sp_learn_unknown")
        port = s.src_port
        name = mac1.find_receiver(message, self._device_keys())
        if name is None:
            return Decision("sp_learn_unknown")
        raw = mac1.public_key_bytes(name)
        li = LearnedInitiator(port, raw, s.dst, receiver, monotonic_ns())
        with self._lock:
            by_key = self._learned.setdefault(port, {})
            new = raw not in by_key
            by_key[raw] = li
        self.dp.learn_initiator(port, raw, s.dst, receiver, li.learned)
        if new:
            log.info("slow path: learned initiator %s… on port %d (at %s)", name[:8], port, s.dst)
            self._check_both_initiators(port, name)
        return Decision("sp_learn_initiator", learned=(port, name))

    def _check_both_initiators(self, port: int, initiator: str):
        """`initiator` was just learned on `port`.  If it is itself the
        responder of another port Q, and the responder of `port` was
        learned as an initiator on Q, both sides of that pair are
        configured with the other's Endpoint = hub:port."""
        keys = self._responder_keys()
        responder = keys.get(port)
        other = [q for q, k in keys.items() if k == initiator and q != port]
        if responder is None or not other:
            return
        with self._lock:
            for q in other:
                if mac1.public_key_bytes(responder) not in self._learned.get(q, {}):
                    continue
                pair = frozenset((port, q))
                if pair in self._warnings:
                    continue
                text = (f"peers {initiator[:8]}… (responder on port {q}) and {responder[:8]}… "
                        f"(responder on port {port}) are both configured as initiator: each "
                        f"has the other's Endpoint = hub:<its port>.  wgmux reflects each "
                        f"handshake through the port it was sent to, which works while their "
                        f"handshakes do not cross; if both start one at once, a session can "
                        f"stall until WireGuard's next handshake.  Set the Endpoint on one "
                        f"side only.")
                self._warnings[pair] = text
                log.warning("%s", text)

    def forget_port(self, port: int) -> int:
        """`port` was removed or got another responder: the initiators
        learned on it (here and in the pinned map) and the warnings about
        it go.  Returns how many initiators were forgotten."""
        with self._lock:
            gone = self._learned.pop(port, {})
            self._answered = {k: v for k, v in self._answered.items() if k[0] != port}
            self._forwarded.pop(port, None)
            self._completed.pop(port, None)
            self._warnings = {pair: text for pair, text in self._warnings.items()
                              if port not in pair}
        for li in self.dp.initiators():
            if li.port == port:
                self.dp.forget_initiator(port, li.public_key)
        return len(gone)

    # -- views ---------------------------------------------------------------
    def learned(self) -> List[LearnedInitiator]:
        with self._lock:
            return [li for v in self._learned.values() for li in v.values()]

    def warnings(self) -> List[str]:
        with self._lock:
            return list(self._warnings.values())

    def status(self) -> dict:
        """For `wgmux show`."""
        rate, burst = self.dp.slow_rate()
        clock = Clock.now()
        return {
            "rate": rate,
            "burst": burst,
            "initiators": [{
                "port": li.port,
                "public_key": _b64(li.public_key),
                "endpoint": endpoint_text(li.endpoint),
                "learned": clock.wall_time(li.learned),
            } for li in sorted(self.learned(), key=lambda x: (x.port, x.public_key))],
            "warnings": self.warnings(),
        }
