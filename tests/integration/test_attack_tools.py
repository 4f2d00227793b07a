"""The attacker's tools (netlab.attack) and the pair probe
(netlab.traffic.UdpEcho), tested on a plain lab (no wgmux): what the
hostile tests conclude is only as good as these.

- The flooder sends what it says at about the rate asked, from the spoofed
  sources asked, and stops by itself; the rate is printed for the record
  and held to a modest floor only (the machine may be busy).
- A spoofed packet arrives with the forged source, martians included
  (0.0.0.0 is why it is AF_PACKET and not a raw IP socket).
- The victim sees what the hub sends to a spoofed source (the hub routes
  the spoofed prefix to it), and observers count exactly.
- The probe measures round trips through a real tunnel and counts exactly
  the probes a blackout swallowed.
"""

import time

import pytest

from netlab import wait_for
from netlab.attack import (SPOOF_NET, Flooder, Observer, add_hostile, build_frames,
                           forged_transport, initiations, match_initiation, match_marker,
                           match_udp, spoof)
from netlab.capture import Capture
from netlab.topology import HUB_OVERLAY_IP, standard
from netlab.traffic import UdpEcho, percentile, ping

pytestmark = pytest.mark.netlab

PORT = 51821
FLOOR_PPS = 50_000          # far below what it does (~150-350 kpps), far above a broken loop


@pytest.fixture
def hostile(lab):
    topo = standard(lab)
    return topo, add_hostile(topo)


def test_flooder_reaches_its_rate_from_spoofed_sources(hostile):
    topo, h = hostile
    sources = h.sources(1000)
    key = "hBq6YmKu6MvJjDr8zI8h3ij2ncY2ftiVpG3LDf5THTo="
    frames = build_frames(h.atk, (topo.hub_ip, PORT), sources, initiations(key), count=4096)
    assert len({f[26:30] for f in frames}) == 1000          # IPv4 source addresses
    with Observer(topo.hub, {"spoofed": f"ip saddr {SPOOF_NET} " + match_udp(dport=PORT),
                             "initiations": match_initiation()}) as seen:
        flood = Flooder(h.atk, frames, rate=150_000, duration=2.0).start()
        result = flood.wait()
        counted = wait_for(lambda: (lambda c: c if c["spoofed"].packets >= result.sent else None)(
            seen.read()), timeout=5, what="the hub to count every flood frame")
    print(f"flooder: {result} (asked 150 kpps), {result.errors} refused batches")
    assert not flood.running()
    assert 1.9 < result.seconds < 3.0, result
    assert result.sent <= 150_000 * result.seconds * 1.05 + 64, f"over the rate: {result}"
    assert result.rate >= FLOOR_PPS, f"the flooder reached only {result}"
    assert counted["spoofed"].packets == counted["initiations"].packets == result.sent
    assert counted["spoofed"].bytes == result.ip_bytes == result.sent * (20 + 8 + 148)


def test_flooder_stops_at_its_count(hostile):
    topo, h = hostile
    frames = build_frames(h.atk, (topo.hub_ip, PORT), h.sources(10),
                          lambda i: forged_transport(i), count=64)
    with Observer(topo.hub, {"all": match_udp(dport=PORT)}) as seen:
        result = Flooder(h.atk, frames, rate=0, duration=30, count=1000).start().wait()
        assert result.sent == 1000
        wait_for(lambda: seen["all"].packets == 1000, timeout=5, what="1000 frames at the hub")


@pytest.mark.parametrize("src", ["0.0.0.0", "127.0.0.1", "224.0.0.1", "255.255.255.255",
                                 "240.0.0.1", "198.19.3.4"])
def test_spoofed_packet_arrives_with_the_forged_source(hostile, src):
    topo, h = hostile
    payload = f"spoofed from {src}".encode()
    with Capture(h.victim, "eth0", "udp port 5555") as cap:
        sent = spoof(h.atk, (src, 1234), (h.victim_ip, 5555), payload)
        (p,) = cap.wait_for(lambda p: p.payload == payload, what="the spoofed packet")
    assert (p.src, p.sport, p.dst, p.dport) == (src, 1234, h.victim_ip, 5555)
    assert sent == len(p.l3) == 20 + 8 + len(payload)


def test_victim_counts_what_the_hub_sends_to_spoofed_sources(hostile):
    topo, h = hostile
    marker = b"VICTIM01"
    with Observer(h.victim, {"from_hub": f"ip saddr {topo.hub_ip}",
                             "marked": match_udp(src=topo.hub_ip) + " "
                             + match_marker(marker, 16)}) as seen:
        # the hub answers a spoofed source through its route to the victim
        topo.hub.run(["ping", "-n", "-c", "2", "-i", "0.2", "-W", "0.2", "198.19.0.9"],
                     check=False)
        wait_for(lambda: seen["from_hub"].packets == 2, timeout=5, what="2 pings at the victim")
        assert seen["marked"].packets == 0
        # and a marked datagram the hub sends is told apart
        payload = forged_transport(7, marker=marker, size=64)
        topo.hub.run(["python3", "-c", "import socket,sys; socket.socket(socket.AF_INET, "
                      "socket.SOCK_DGRAM).sendto(bytes.fromhex(sys.argv[1]), ('198.19.0.9', 9))",
                      payload.hex()])
        counts = wait_for(lambda: (lambda c: c if c["marked"].packets else None)(seen.read()),
                          timeout=5, what="the marked datagram at the victim")
    assert counts["marked"].packets == 1 and counts["marked"].bytes == 28 + 64
    assert counts["from_hub"].packets == 3


def test_probe_measures_round_trips_through_a_tunnel(lab):
    topo = standard(lab, wireguard=True)
    host = topo.host(1)
    topo.hub_wg.wait_handshake(host.wg.public_key)
    with UdpEcho(host.node, topo.hub, HUB_OVERLAY_IP, count=200, interval=0.01) as probe:
        probe.wait_done()
        stats = probe.stats()
    print(f"probe through the tunnel: {stats}")
    assert stats.sent == stats.answered == 200, stats
    assert 0 < stats.p50 <= stats.p99 <= stats.rtt(100) < 1.0, stats
    # ping agrees on the order of magnitude (both well under a few ms here)
    out = host.node.run(["ping", "-n", "-c", "20", "-i", "0.01", HUB_OVERLAY_IP]).stdout
    pings = [float(w.split("=")[1]) / 1000 for w in out.split() if w.startswith("time=")]
    assert abs(percentile(pings, 50) - stats.p50) < 0.010, (pings, stats)


def test_probe_counts_the_probes_a_blackout_swallowed(lab):
    topo = standard(lab, wireguard=True)
    host = topo.host(1)
    topo.hub_wg.wait_handshake(host.wg.public_key)
    assert ping(host.node, HUB_OVERLAY_IP)
    probe = UdpEcho(host.node, topo.hub, HUB_OVERLAY_IP, interval=0.01).start()
    lab.on_close(probe.stop)
    probe.wait_answered(20)
    table = ("table inet blackout {\n chain in {\n  type filter hook input priority 0;\n"
             "  udp dport 7007 drop\n }\n}\n")
    topo.hub.run(["nft", "-f", "-"], input=table)
    t0 = time.monotonic()
    wait_for(lambda: probe.stats(t0, time.monotonic()).sent >= 30, timeout=5,
             what="30 probes into the blackout")
    topo.hub.run(["nft", "delete", "table", "inet", "blackout"])
    t1 = time.monotonic()
    probe.wait_answered(20, after=t1)
    probe.stop()
    inside = probe.stats(t0 + 0.05, t1 - 0.05)       # surely blacked out
    outside = probe.stats(t1 + 0.05, t1 + 0.15)      # surely not
    assert inside.sent >= 20 and inside.answered == 0, inside
    assert outside.sent >= 5 and outside.lost == 0, outside
    assert inside.loss == 1.0 and outside.loss == 0.0
