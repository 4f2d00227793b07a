"""What `wgmux show` reports, shaped from the datapath's state.

docs/spec.md §11 promises the shape: sessions as initiator/responder
pairs, times as Unix seconds, endpoints as "ip:port" / "[ipv6]:port" or
null.  The daemon, the slow path and the status they build take these from
here, so that each is written once.
"""

from __future__ import annotations

import time
from typing import Dict, Iterable, List, NamedTuple, Optional

from wgmux.model import SF_TRANSPORT, EndpointLike, Session, as_endpoint, monotonic_ns

# What runs (status "datapath", docs/spec.md §4a), as the start line and
# `show` say it.
MODE_TEXT = {"xdp": "XDP in the driver, in front of TC ingress", "tc": "TC ingress",
             "mixed": "XDP on some interfaces, TC ingress alone on the others"}


class Clock(NamedTuple):
    """The datapath's monotonic clock and the wall clock, read together:
    every time in one status is converted from the same reading, so that
    they agree with each other and with its `now`."""
    mono: int       # model.monotonic_ns()
    wall: float     # time.time()

    @classmethod
    def now(cls) -> "Clock":
        return cls(monotonic_ns(), time.time())

    def wall_time(self, mono_ns: int) -> float:
        """A monotonic ns reading (`created`, `last_seen`, `learned`) as Unix seconds."""
        return self.wall - (self.mono - mono_ns) / 1e9


def endpoint_text(ep: Optional[EndpointLike]) -> Optional[str]:
    """An Endpoint or (address, port) as show spells it; None for none."""
    return str(as_endpoint(ep)) if ep else None


def session_pairs(sessions: Iterable[Session], hub_port: int,
                  wall_clock: bool = True) -> List[dict]:
    """Sessions (Datapath.sessions()) grouped into initiator/responder pairs.

    The initiator is the peer that talks to a peer port P; its packets
    arrive on P under the responder's index, the responder's arrive on
    HubPort under the initiator's index.  Times are epoch seconds
    (wall_clock) or monotonic ns.  Keys: port, initiator, responder,
    state ("half-open" | "established"), initiator_index,
    responder_index (None while half-open), created, last_seen,
    i2r_packets, i2r_bytes, r2i_packets, r2i_bytes, confirmed (both
    directions have carried transport: the full timeout applies),
    initiator_family / responder_family ("ipv4" | "ipv6" | None), translated
    (the two sides' families differ: every packet changes family at the
    hub, docs/spec.md §4b), initiator_ifindex / responder_ifindex (the
    interface packets to that side leave by, 0 until the datapath resolved
    it; docs/spec.md §4c).
    """
    by_key = {s.key: s for s in sessions}
    conv = Clock.now().wall_time if wall_clock else (lambda t: t)
    seen, out = set(), []
    for key, s in sorted(by_key.items()):
        if key in seen:
            continue
        other = by_key.get(s.reverse) if s.reverse else None
        seen.add(key)
        if other is not None:
            seen.add(other.key)
        if s.port == hub_port:
            r2i, i2r = s, other
        elif other is not None and other.port == hub_port:
            r2i, i2r = other, s
        else:
            r2i, i2r = None, s
        initiator = r2i.dst if r2i else (i2r.expect if i2r else None)
        responder = i2r.dst if i2r else (r2i.expect if r2i else None)
        port = i2r.port if i2r else r2i.src_port
        parts = [x for x in (r2i, i2r) if x is not None]
        out.append({
            "port": port,
            "initiator": endpoint_text(initiator),
            "responder": endpoint_text(responder),
            "state": "established" if other is not None else "half-open",
            "confirmed": bool(i2r and r2i and i2r.transport_seen and r2i.transport_seen),
            "initiator_index": r2i.index if r2i else None,
            "responder_index": i2r.index if i2r else None,
            "created": conv(min(x.created for x in parts)),
            "last_seen": conv(max(x.last_seen for x in parts)),
            "i2r_packets": i2r.packets if i2r else 0,
            "i2r_bytes": i2r.bytes if i2r else 0,
            "r2i_packets": r2i.packets if r2i else 0,
            "r2i_bytes": r2i.bytes if r2i else 0,
            "initiator_family": _family(initiator),
            "responder_family": _family(responder),
            "translated": bool(initiator and responder
                               and _family(initiator) != _family(responder)),
            # the interface each side's packets leave by (0: not resolved yet)
            "initiator_ifindex": _egress(r2i),
            "responder_ifindex": _egress(i2r),
        })
    return out


def _egress(s: Optional[Session]) -> int:
    return s.next_hop.ifindex if s is not None and s.next_hop.state != "none" else 0


def _family(ep: Optional[EndpointLike]) -> Optional[str]:
    return f"ipv{as_endpoint(ep).ip.version}" if ep else None


def session_summary(c, hub_port: int, now_ns: int, idle_s: float, half_open_s: float,
                    expire_s: float) -> dict:
    """`show --summary` and the metrics: what session_pairs() + the daemon's
    live/stale split would say, counted from the table's columns
    (Datapath.session_columns()) without decoding an entry.  Keys:
    established, half_open (live ones), confirmed, stale (pairs and
    half-open entries awaiting collection), entries (the table's), and
    by_port: {port: {established, half_open, i2r_packets, i2r_bytes,
    r2i_packets, r2i_bytes}} over live sessions."""
    hub = hub_port
    keys, rev = c.keys.tolist(), c.reverse.tolist()
    last, created, flags = c.last_seen.tolist(), c.created.tolist(), c.flags.tolist()
    packets, nbytes = c.packets.tolist(), c.bytes.tolist()
    pos = dict(zip(keys, range(len(keys))))
    sums: Dict[int, List[int]] = {}    # port -> established, half-open, i2r p/b, r2i p/b
    est = half = confirmed = stale = 0
    idle_cut, half_cut = now_ns - idle_s * 1e9, now_ns - half_open_s * 1e9
    born_cut = now_ns - expire_s * 1e9
    # Every pair has one entry on HubPort (responder -> initiator) linked to
    # one on its peer port; only those are walked in Python.  The rest is
    # half-open entries, found by a comprehension each.
    get = pos.get
    half_open = []
    for j in [j for j, k in enumerate(keys) if k >> 32 == hub]:
        k, r = keys[j], rev[j]
        i = get(r) if r >> 32 else None
        if i is None or rev[i] != k:
            half_open.append(j)
            continue
        both = flags[i] & flags[j] & SF_TRANSPORT
        seen = last[i] if last[i] > last[j] else last[j]
        born = created[i] if created[i] < created[j] else created[j]
        if seen < (idle_cut if both else half_cut) or born < born_cut:
            stale += 1
            continue
        est += 1
        if both:
            confirmed += 1
        port = keys[i] >> 32
        acc = sums.get(port)
        if acc is None:
            acc = sums[port] = [0, 0, 0, 0, 0, 0]
        acc[0] += 1
        acc[2] += packets[i]
        acc[3] += nbytes[i]
        acc[4] += packets[j]
        acc[5] += nbytes[j]
    # entries on a peer port without a partner that links back
    half_open += [j for j, k in enumerate(keys) if k >> 32 != hub
                  and (not rev[j] >> 32 or rev[get(rev[j], j)] != k or get(rev[j]) is None)]
    src_port = c.src_port
    for j in half_open:
        if last[j] < half_cut or created[j] < born_cut:
            stale += 1
            continue
        half += 1
        on_hub = keys[j] >> 32 == hub
        port = src_port[j] if on_hub else keys[j] >> 32
        acc = sums.get(port)
        if acc is None:
            acc = sums[port] = [0, 0, 0, 0, 0, 0]
        acc[1] += 1
        if on_hub:
            acc[4] += packets[j]
            acc[5] += nbytes[j]
        else:
            acc[2] += packets[j]
            acc[3] += nbytes[j]
    by_port = {port: dict(zip(_PORT_FIELDS, acc)) for port, acc in sums.items()}
    return {"entries": len(keys), "established": est, "half_open": half,
            "confirmed": confirmed, "stale": stale,
            "by_port": {p: by_port[p] for p in sorted(by_port)}}


_PORT_FIELDS = ("established", "half_open", "i2r_packets", "i2r_bytes", "r2i_packets",
                "r2i_bytes")
