"""TC, XDP and plain forwarding side by side: `python -m harness.bench --modes`.

One lab, one run, the same packets through the same hub three ways:

- `tc`: `wgmux serve` with its datapath at TC ingress (`Datapath = "tc"`
  where the config knows the key);
- `xdp`: `wgmux serve` with `Datapath = "xdp"` (or `--datapath xdp`),
  measured only when this checkout has it: otherwise its rows say "not
  available" and why, never a number;
- `forward`: no wgmux; the hub forwards the same packets as a plain IPv4
  router with a stateless nftables rewrite (`Forwarding.WHAT`).

Topology: netlab.topology.single_interface, the VPS case: the hub has one
interface (eth0) behind one router (gw); both NATed sites are reached
through gw, so every packet the hub reflects leaves through the interface
it arrived on.

Generator: one real WireGuard handshake through the real daemon makes the
pair (initiator r1h0 -> hub:PORT -> responder r2h0); then transport-shaped
datagrams for that session (netlab.attack.forged_transport: the pair's
receiver index, a marker in the data) are sent by netlab.attack.Flooder
from the initiator's NAT router (r1), on its WAN with its public endpoint:
byte for byte what r1 forwards for r1h0, without r1h0's WireGuard or r1's
NAT in the generator's budget.  gw hands them to the hub with XDP_REDIRECT
(`feed_hub_by_xdp`), so the hub's veth receives buffers as a NIC's driver
does.  They are counted, and dropped, on the responder's NAT router (r2) as
they arrive on its WAN (`Sink`), so the responder's WireGuard never has to
decrypt a flood.  The sizes are IP packet sizes.

Figures (METHOD, printed with them, says how each is measured):

- open loop: delivered packets per second with the generator as fast as it
  goes, with how busy the hub's and the generator's CPUs were and which one
  was the limit;
- fixed rate: the CPU time of the hub's NAPI thread per delivered packet
  (`Steering` isolates the hub's work in that thread);
- split: per packet and per wakeup of that thread, solved from the two.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import socket
import struct
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from netlab import Lab, wait_for
from netlab.attack import (Flooder, Observer, forged_transport, frame, l2_path, match_marker,
                           match_udp)
from netlab.capture import Capture
from netlab.topology import Host, Topology, single_interface
from netlab.traffic import ping

from harness.hub import WgmuxHub
from wgmux import config as wgconfig
from wgmux import packet

PORT = 51821
SIZES = (128, 1400)
MODES = ("tc", "xdp", "forward")
MARKER = b"wgmxbnch"          # data offset 16 of every generated message
FRAMES_PER_SIZE = 256         # distinct frames (counters), sent round robin
UDP_IP_HEADERS = 28
USER_HZ = os.sysconf("SC_CLK_TCK")
SINK_TABLE = "wgmux_bench_sink"
FORWARD_TABLE = "wgmux_bench_forward"
BUSY = 0.9                    # a core this busy is the limit
NAPI_PRIORITY = 1             # SCHED_FIFO priority of the NAPI threads
COALESCE_POLLS = 2            # polls on the timer after the last packet, before waiting


# ---- which datapaths this checkout has -----------------------------------------

@dataclass(frozen=True)
class Selection:
    """How `wgmux serve` is asked for one datapath: a config line, serve options."""

    config: str = ""
    args: Tuple[str, ...] = ()


def datapath_selections() -> Tuple[Dict[str, Selection], Optional[str]]:
    """mode -> how to ask `wgmux serve` for it, for the wgmux modes this
    checkout has; and why XDP is not among them (None when it is).  XDP is
    there once wgmux.config accepts `Datapath = "xdp"` or `wgmux serve`
    takes `--datapath`."""
    base = '[Interface]\nDevice = "wg0"\nHubPort = 51820\nInterface = "eth0"\n'
    try:
        wgconfig.parse(base + 'Datapath = "xdp"\n')
    except wgconfig.ConfigError as e:
        refused = str(e).splitlines()[0]
    else:
        return {m: Selection(config=f'Datapath = "{m}"') for m in ("tc", "xdp")}, None
    usage = subprocess.run([sys.executable, "-m", "wgmux.cli", "serve", "--help"],
                           capture_output=True, text=True, timeout=60).stdout
    if "--datapath" in usage:
        return {m: Selection(args=("--datapath", m)) for m in ("tc", "xdp")}, None
    return {"tc": Selection()}, (f"this checkout has no XDP datapath: wgmux.config refuses "
                                 f"Datapath = \"xdp\" ({refused}) and `wgmux serve` has "
                                 f"no --datapath")


# ---- NAPI threads (generic netlink, family "netdev") ------------------------------

_NETLINK_GENERIC = 16
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_GENL_ID_CTRL, _CTRL_CMD_GETFAMILY = 0x10, 3
_CTRL_ATTR_FAMILY_ID, _CTRL_ATTR_FAMILY_NAME = 1, 2
_NETDEV_CMD_NAPI_GET = 11
_NAPI_IFINDEX, _NAPI_ID, _NAPI_PID = 1, 2, 4


def _nla(kind: int, payload: bytes) -> bytes:
    size = 4 + len(payload)
    return struct.pack("=HH", size, kind) + payload + b"\0" * (-size % 4)


def _parse_attrs(data: bytes) -> Dict[int, bytes]:
    out, off = {}, 0
    while off + 4 <= len(data):
        size, kind = struct.unpack_from("=HH", data, off)
        if size < 4:
            break
        out[kind & 0x3FFF] = data[off + 4:off + size]
        off += (size + 3) & ~3
    return out


def _genl(sock: socket.socket, family: int, cmd: int, attrs: bytes,
          dump: bool) -> List[Dict[int, bytes]]:
    """One generic netlink request; the attributes of every reply."""
    body = struct.pack("=BBH", cmd, 1, 0) + attrs
    flags = _NLM_F_REQUEST | (_NLM_F_DUMP if dump else 0)
    sock.send(struct.pack("=IHHII", 16 + len(body), family, flags, 1, 0) + body)
    replies = []
    while True:
        data = sock.recv(1 << 16)
        off = 0
        while off + 16 <= len(data):
            size, kind = struct.unpack_from("=IH", data, off)
            if kind == _NLMSG_DONE:
                return replies
            if kind == _NLMSG_ERROR:
                (code,) = struct.unpack_from("=i", data, off + 16)
                if code:
                    raise OSError(-code, f"generic netlink: {os.strerror(-code)}")
                return replies
            replies.append(_parse_attrs(data[off + 20:off + size]))
            off += (size + 3) & ~3
        if not dump:
            return replies


def napi_threads(node, ifname: str) -> List[int]:
    """PIDs of the NAPI threads of `ifname` in `node` (threaded NAPI on);
    the kernel's netdev family says (napi-get, Linux 6.9+)."""
    index = node.index(ifname)
    with node.entered():
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_GENERIC)
    try:
        (fam,) = _genl(sock, _GENL_ID_CTRL, _CTRL_CMD_GETFAMILY,
                       _nla(_CTRL_ATTR_FAMILY_NAME, b"netdev\0"), dump=False)
        family = struct.unpack("=H", fam[_CTRL_ATTR_FAMILY_ID][:2])[0]
        napis = _genl(sock, family, _NETDEV_CMD_NAPI_GET,
                      _nla(_NAPI_IFINDEX, struct.pack("=I", index)), dump=True)
    finally:
        sock.close()
    pids = [struct.unpack("=I", n[_NAPI_PID][:4])[0] for n in napis
            if _NAPI_PID in n and struct.unpack("=I", n.get(_NAPI_IFINDEX, b"\0\0\0\0")[:4])[0]
            == index]
    for pid in pids:
        comm = _read(f"/proc/{pid}/comm").strip()
        if not comm.startswith("napi/"):
            raise RuntimeError(f"{node.name}:{ifname}: netdev napi-get named PID {pid} "
                               f"({comm!r}), not a NAPI thread")
    return pids


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


# ---- steering and CPU time ---------------------------------------------------------

@dataclass
class Steering:
    """The hub's NAPI thread on `hub_cpu`, everything else on `other_cpus`."""

    topo: Topology
    hub_cpu: Optional[int]
    other_cpus: Tuple[int, ...]
    hub_threads: List[int] = field(default_factory=list)
    coalesce_us: int = 0        # NAPI polls on a timer this long while packets flow

    @classmethod
    def plan(cls, coalesce_us: int = 0) -> "Steering":
        cpus = tuple(sorted(os.sched_getaffinity(0)))
        if len(cpus) < 2:
            return cls(None, None, cpus, coalesce_us=coalesce_us)
        return cls(None, cpus[-1], cpus[:-1], coalesce_us=coalesce_us)

    def pin_self(self):
        """This process, and everything it starts from now on, off the hub's core."""
        os.sched_setaffinity(0, self.other_cpus)

    def apply(self) -> "Steering":
        """Threaded NAPI on both ends of the hub's link; the hub's thread(s)
        on the hub's core, the gateway's on the others.  Again before each
        row: attaching XDP may bring new NAPI instances."""
        ends = ((self.topo.gateway, "hub0"), (self.topo.hub, "eth0"))
        for node, ifname in ends:
            # /sys/class/net is the mounting namespace's: `ip netns exec`
            # mounts the node's own
            d = f"/sys/class/net/{ifname}"
            subprocess.run(["ip", "netns", "exec", node.netns, "sh", "-c",
                            f"echo 1 > {d}/threaded && "
                            f"echo {self.coalesce_us * 1000} > {d}/gro_flush_timeout && "
                            f"echo {COALESCE_POLLS if self.coalesce_us else 0} "
                            f"> {d}/napi_defer_hard_irqs"],
                           check=True, capture_output=True, timeout=30)
        gw_threads = napi_threads(self.topo.gateway, "hub0")
        self.hub_threads = napi_threads(self.topo.hub, "eth0")
        if not self.hub_threads:
            raise RuntimeError("the hub's eth0 has no NAPI thread (GRO off? see "
                               "netlab.topology.single_interface's napi)")
        if self.hub_cpu is not None:
            for pid in self.hub_threads:
                os.sched_setaffinity(pid, {self.hub_cpu})
            for pid in gw_threads:
                os.sched_setaffinity(pid, self.other_cpus)
        # NAPI in softirq preempts every task; in a thread at SCHED_OTHER it
        # would share its CPU with them (the generator, or whatever else runs
        # on the hub's core), so both threads run SCHED_FIFO as softirq would
        for pid in self.hub_threads + gw_threads:
            os.sched_setscheduler(pid, os.SCHED_FIFO, os.sched_param(NAPI_PRIORITY))
        return self

    def hub_process(self, pid: Optional[int]):
        """A process of the hub's (the daemon, the hub's own WireGuard) on
        the hub's core, every thread of it: its CPU is the hub's, not the
        generator's.  Its time is not in the NAPI thread's figure (`core`
        shows it), and the NAPI thread preempts it."""
        if pid is None or self.hub_cpu is None:
            return
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                os.sched_setaffinity(int(tid), {self.hub_cpu})
            except ProcessLookupError:
                pass          # a thread that just ended

    def describe(self) -> str:
        threads = ", ".join(f"{_read(f'/proc/{p}/comm').strip()} (PID {p})"
                            for p in self.hub_threads)
        if self.hub_cpu is None:
            return (f"one CPU: no steering; the hub's NAPI thread {threads} is still "
                    f"measured on its own")
        return (f"hub core CPU {self.hub_cpu}: the hub's NAPI thread {threads}, "
                f"wgmux serve and the hub's WireGuard; CPU "
                f"{','.join(map(str, self.other_cpus))}: everything else")


def _cpu_idle_ticks() -> Dict[int, int]:
    """cpu -> idle + iowait + steal, in USER_HZ ticks (/proc/stat)."""
    out = {}
    for line in _read("/proc/stat").splitlines():
        f = line.split()
        if f and f[0].startswith("cpu") and f[0] != "cpu":
            out[int(f[0][3:])] = int(f[4]) + int(f[5]) + int(f[8])
    return out


def _schedstat(pids: Sequence[int]) -> Tuple[int, int]:
    """(ns on a CPU, times scheduled in) summed over `pids` (/proc/PID/schedstat)."""
    ns = runs = 0
    for pid in pids:
        f = _read(f"/proc/{pid}/schedstat").split()
        ns, runs = ns + int(f[0]), runs + int(f[2])
    return ns, runs


@dataclass
class Usage:
    wall: float                 # seconds measured
    busy: Dict[int, float]      # cpu -> fraction of `wall` not idle (/proc/stat)
    hub_ns: int                 # CPU time of the hub's NAPI thread(s)
    hub_wakeups: int            # times it was scheduled in


class Meter:
    """CPU time from start to stop: per core, and of the hub's NAPI thread."""

    def __init__(self, steering: Steering):
        self.pids = list(steering.hub_threads)
        self.t0 = time.monotonic()
        self.idle0 = _cpu_idle_ticks()
        self.sched0 = _schedstat(self.pids)

    def stop(self) -> Usage:
        wall = time.monotonic() - self.t0
        idle = _cpu_idle_ticks()
        busy = {c: min(1.0, max(0.0, 1 - (idle[c] - self.idle0.get(c, 0)) / USER_HZ / wall))
                for c in idle}
        ns, runs = _schedstat(self.pids)
        return Usage(wall, busy, ns - self.sched0[0], runs - self.sched0[1])


# ---- the lab ---------------------------------------------------------------------

def _endpoint(text: str) -> Tuple[str, int]:
    ip, _, port = text.rpartition(":")
    return ip.strip("[]"), int(port)


def _pair(hub: WgmuxHub) -> Optional[dict]:
    status = hub.show(check=False) or {}
    return next((s for s in status.get("sessions", ())
                 if s["port"] == PORT and s["state"] == "established"), None)


def establish(hub: WgmuxHub, initiator: Host, responder: Host, rekey: bool = False) -> dict:
    """A ping through the hub; the pair it made (`wgmux show`).  `rekey`:
    the initiator forgets its session first, so the ping starts a handshake."""
    if rekey:
        initiator.wg.remove_peer(responder.wg.public_key)
        initiator.wg.set_peer(responder.wg.public_key, endpoint=f"{hub.topo.hub_ip}:{PORT}",
                              allowed_ips=[f"{responder.overlay_ip}/32"])
    wait_for(lambda: ping(initiator.node, responder.overlay_ip), timeout=30,
             what="a ping through the hub")
    return wait_for(lambda: _pair(hub), timeout=10, what="the pair in `wgmux show`")


def build_frames(topo: Topology, pair: dict, sizes: Sequence[int]) -> Dict[int, List[bytes]]:
    """The generator's frames per IP size: transport messages for the pair's
    initiator -> responder direction, from the initiator's public endpoint
    to hub:PORT, on the initiator's NAT router's WAN."""
    router = topo.sites[0].router
    path = l2_path(router, topo.hub_ip)
    src, dst = _endpoint(pair["initiator"]), (topo.hub_ip, PORT)
    return {size: [frame(path, src, dst,
                         forged_transport(pair["responder_index"], counter=i,
                                          size=size - UDP_IP_HEADERS, marker=MARKER))
                   for i in range(FRAMES_PER_SIZE)]
            for size in sizes}


# gw's way to the hub, in XDP: what arrives for the hub's address on gw's
# WAN goes to the hub's link as an XDP frame (MACs set, TTL down as a router
# would), so the hub's veth receives a buffer, as a NIC's driver does, not
# an skb someone else built.
_FEED = r"""
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>

int feed(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    struct iphdr *ip = data + sizeof(*eth);
    unsigned char dmac[ETH_ALEN] = { DMAC }, smac[ETH_ALEN] = { SMAC };

    if ((void *)(ip + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP)
        || ip->daddr != HUB_IP || ip->ttl <= 1)
        return XDP_PASS;
    __u32 check = ip->check + bpf_htons(0x0100);
    ip->check = check + (check >= 0xFFFF);
    ip->ttl--;
    __builtin_memcpy(eth->h_dest, dmac, ETH_ALEN);
    __builtin_memcpy(eth->h_source, smac, ETH_ALEN);
    return bpf_redirect(IFINDEX, 0);
}
"""


def feed_hub_by_xdp(topo: Topology):
    """gw forwards towards the hub with XDP_REDIRECT (_FEED), from its WAN
    to its end of the hub's link: the hub's eth0 then receives XDP frames
    (page buffers), as from a NIC.  Fed skbs instead, a veth running XDP
    first copies each into a page with XDP's headroom, and frees the skb:
    a cost no NIC has, which would be counted against the hub's XDP."""
    from bcc import BPF

    gw = topo.gateway

    def mac(node, ifname):
        (link,) = node.ipr.get_links(node.index(ifname))
        return ",".join(f"0x{b}" for b in link.get_attr("IFLA_ADDRESS").split(":"))

    hub_ip = struct.unpack("=I", socket.inet_aton(topo.hub_ip))[0]
    bpf = BPF(text=_FEED, cflags=[f"-DHUB_IP={hub_ip}u", f"-DIFINDEX={gw.index('hub0')}",
                                  f"-DDMAC={mac(topo.hub, 'eth0')}", f"-DSMAC={mac(gw, 'hub0')}"])
    fn = bpf.load_func("feed", BPF.XDP)
    with gw.entered():
        BPF.attach_xdp("wan", fn, BPF.XDP_FLAGS_DRV_MODE)
    topo.lab.on_close(bpf.cleanup)


class Sink:
    """What reaches the responder's site: counted on its NAT router's WAN
    (prerouting, priority raw: before NAT) and dropped right after."""

    def __init__(self, topo: Topology, pair: dict):
        r_ip, r_port = _endpoint(pair["responder"])
        self.node = topo.sites[1].router
        flow = match_udp(src=topo.hub_ip, sport=topo.hub_port, dst=r_ip, dport=r_port,
                         iifname="wan")
        self.expr = f"{flow} {match_marker(MARKER, 16)}"
        self.observer = Observer(self.node, {"delivered": self.expr}).start()
        self.node.run(["nft", "-f", "-"], input=(
            f"table inet {SINK_TABLE} {{\n  chain pre {{\n"
            f"    type filter hook prerouting priority -299; policy accept;\n"
            f"    {self.expr} drop\n  }}\n}}\n"))

    def count(self) -> int:
        return self.observer["delivered"].packets

    def settled(self, timeout: float = 10.0) -> int:
        """The count once it stops growing (the last packets arrived)."""
        last = [-1]

        def still():
            now = self.count()
            done, last[0] = now == last[0], now
            return done
        wait_for(still, timeout=timeout, interval=0.1, what="the responder's count to settle")
        return last[0]


class Forwarding:
    """The `forward` row: no wgmux on the hub (WHAT says the rest)."""

    WHAT = ("the kernel's IPv4 forwarding with a stateless nftables rewrite, matched like "
            f"the pair's session (initiator endpoint -> hub:{PORT}): prerouting (priority "
            "raw, notrack) rewrites the destination to the responder's endpoint, the "
            "kernel routes it back out eth0 via gw, postrouting rewrites the source to "
            "hub:HubPort; no conntrack, nftables updates the checksums")

    def __init__(self, topo: Topology, pair: dict):
        self.hub = topo.hub
        i_ip, i_port = _endpoint(pair["initiator"])
        r_ip, r_port = _endpoint(pair["responder"])
        flow = f"ip saddr {i_ip} udp sport {i_port}"
        self.ruleset = (
            f"table ip {FORWARD_TABLE} {{\n"
            f"  chain pre {{\n    type filter hook prerouting priority -300; policy accept;\n"
            f'    iifname "eth0" {flow} ip daddr {topo.hub_ip} udp dport {PORT} notrack '
            f"ip daddr set {r_ip} udp dport set {r_port}\n  }}\n"
            f"  chain post {{\n    type filter hook postrouting priority 100; policy accept;\n"
            f'    oifname "eth0" {flow} ip daddr {r_ip} udp dport {r_port} '
            f"ip saddr set {topo.hub_ip} udp sport set {topo.hub_port}\n  }}\n}}\n")

    def start(self):
        self.hub.sysctl("net.ipv4.conf.eth0.forwarding", 1)
        self.hub.sysctl("net.ipv4.conf.all.send_redirects", 0)
        self.hub.sysctl("net.ipv4.conf.eth0.send_redirects", 0)
        self.hub.run(["nft", "-f", "-"], input=self.ruleset)

    def stop(self):
        self.hub.run(["nft", "delete", "table", "ip", FORWARD_TABLE], check=False)


def attached(node, ifname: str = "eth0") -> Tuple[Optional[str], List[str]]:
    """(XDP program on `ifname` and its mode, or None; TC ingress BPF filters)."""
    (link,) = json.loads(node.run(["ip", "-j", "-d", "link", "show", "dev", ifname]).stdout)
    xdp = link.get("xdp")
    xdp_text = None
    if xdp:
        mode = {1: "native", 2: "generic", 3: "offload", 4: "multi"}.get(xdp.get("mode"),
                                                                       str(xdp.get("mode")))
        prog = xdp.get("prog") or {}
        xdp_text = f"XDP {mode} prog {prog.get('name') or prog.get('id', '?')}"
    # (no clsact qdisc: tc says so and fails; nothing attached then)
    filters = json.loads(node.run(["tc", "-j", "filter", "show", "dev", ifname, "ingress"],
                                  check=False).stdout or "[]")
    tc = [f["options"]["bpf_name"] for f in filters
          if f.get("kind") == "bpf" and "bpf_name" in f.get("options", {})]
    return xdp_text, tc


# ---- one measurement -----------------------------------------------------------------

@dataclass
class Run:
    mode: str
    kind: str                   # "open" | "fixed"
    size: int
    asked: float                # frames/s asked of the generator (0: as fast as it goes)
    sent: int
    seconds: float              # the generator's
    delivered: int
    usage: Usage                # while the generator sent
    total: Usage                # from before its start to the last arrival
    hub_cpu: Optional[int]
    other_cpus: Tuple[int, ...]

    @property
    def sent_pps(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0

    @property
    def delivered_pps(self) -> float:
        return self.delivered / self.seconds if self.seconds else 0.0

    @property
    def loss(self) -> float:
        return 1 - self.delivered / self.sent if self.sent else 1.0

    @property
    def hub_ns_per_packet(self) -> Optional[float]:
        return self.total.hub_ns / self.delivered if self.delivered else None

    @property
    def packets_per_wakeup(self) -> Optional[float]:
        """Packets the hub's thread took per time it was woken (its batch)."""
        return self.delivered / self.total.hub_wakeups if self.total.hub_wakeups else None

    @property
    def hub_thread_busy(self) -> float:
        return self.usage.hub_ns / 1e9 / self.usage.wall

    @property
    def hub_core_busy(self) -> Optional[float]:
        return None if self.hub_cpu is None else self.usage.busy[self.hub_cpu]

    @property
    def generator_busy(self) -> float:
        return max(self.usage.busy[c] for c in self.other_cpus)

    @property
    def limit(self) -> str:
        if self.hub_thread_busy >= BUSY:
            return "hub"
        if self.generator_busy >= BUSY:
            return "generator"
        return "-"


def blast(sink: Sink, steering: Steering, node, mode: str, kind: str, frames: List[bytes],
          rate: float, seconds: float) -> Run:
    """`frames` from `node` at `rate` (0: as fast as it goes) for `seconds`;
    what arrived at the sink and the CPU time meanwhile."""
    before = sink.count()
    total = Meter(steering)             # all the hub did for these packets
    flood = Flooder(node, frames, rate=rate, duration=seconds).start()
    window = Meter(steering)            # while the generator sends (not its start-up)
    result = flood.wait()
    usage = window.stop()
    delivered = sink.settled() - before
    return Run(mode, kind, len(frames[0]) - packet.ETH_HLEN, rate, result.sent, result.seconds,
               delivered, usage, total.stop(), steering.hub_cpu, steering.other_cpus)


def check_delivery(topo: Topology, pair: dict, frames: List[bytes]) -> Optional[str]:
    """A few frames through the hub, captured where the sink counts them:
    None if each arrived from hub:HubPort at the responder's endpoint with
    its message intact and both checksums right, else what was wrong."""
    r_ip, r_port = _endpoint(pair["responder"])
    sent = {f[packet.ETH_HLEN + UDP_IP_HEADERS:] for f in frames}
    node = topo.sites[1].router
    flt = f"udp and src host {topo.hub_ip} and dst port {r_port}"
    with Capture(node, "wan", flt) as cap, \
            Flooder(topo.sites[0].router, frames, rate=1000, duration=5, count=len(frames)):
        def arrived():
            got = [p for p in cap.read() if MARKER in p.payload]
            return got if len(got) >= len(frames) else None
        try:
            got = wait_for(arrived, timeout=10, what="the generator's packets")
        except TimeoutError:
            n = len([p for p in cap.read() if MARKER in p.payload])
            return f"{n} of {len(frames)} test packets reached the responder's site"
    for p in got:
        f = packet.parse_ip(p.l3)
        if (str(f.src), f.sport, str(f.dst), f.dport) != (topo.hub_ip, topo.hub_port,
                                                          r_ip, r_port):
            return f"arrived as {f.src}:{f.sport} > {f.dst}:{f.dport}"
        if not (f.ip_checksum_ok() and f.udp_checksum_ok()):
            return "arrived with a wrong IP or UDP checksum"
        if f.payload not in sent:
            return "arrived with its message changed"
    return None


# ---- the run ---------------------------------------------------------------------

@dataclass
class Row:
    mode: str
    what: str = ""                      # what ran, as the kernel shows it
    runs: List[Run] = field(default_factory=list)
    unavailable: Optional[str] = None
    wrong: List[str] = field(default_factory=list)

    def run(self, kind: str, size: int) -> Optional[Run]:
        return next((r for r in self.runs if r.kind == kind and r.size == size), None)

    def split(self, size: int) -> Optional[Tuple[float, float]]:
        """(ns per packet, ns per wakeup) of the hub's thread: the two runs
        of `size` solved for both, taking each as packets x per packet +
        wakeups x per wakeup (a wakeup costs the same whatever the mode).
        None unless the open loop's batches were clearly the larger and
        both come out positive (else the runs were too noisy to tell)."""
        a, b = self.run("open", size), self.run("fixed", size)
        if not (a and b and a.packets_per_wakeup and b.packets_per_wakeup) \
                or a.packets_per_wakeup < 1.5 * b.packets_per_wakeup:
            return None
        per_wakeup = (b.hub_ns_per_packet - a.hub_ns_per_packet) / (
            1 / b.packets_per_wakeup - 1 / a.packets_per_wakeup)
        per_packet = a.hub_ns_per_packet - per_wakeup / a.packets_per_wakeup
        return (per_packet, per_wakeup) if per_packet > 0 and per_wakeup > 0 else None


@dataclass
class Plan:
    sizes: Sequence[int] = SIZES
    seconds: float = 3.0        # open loop, each size
    cpu_seconds: float = 5.0    # fixed rate, each size
    rate: float = 100_000       # fixed rate, frames/s
    coalesce_us: int = 200      # NAPI's poll timer while packets flow (Steering)


def measure(row: Row, plan: Plan, topo: Topology, pair: dict, frames: Dict[int, List[bytes]],
            sink: Sink, steering: Steering, hub: Optional[WgmuxHub] = None) -> Row:
    """Both figures at every size for one mode, whatever carries it now."""
    steering.apply()
    problem = check_delivery(topo, pair, frames[plan.sizes[0]][:16])
    if problem:
        row.wrong.append(problem)
        return row
    counted0 = (_pair(hub) or {}).get("i2r_packets", 0) if hub else 0
    generator = topo.sites[0].router
    for size in plan.sizes:
        row.runs.append(blast(sink, steering, generator, row.mode, "open", frames[size], 0,
                              plan.seconds))
    for size in plan.sizes:
        run = blast(sink, steering, generator, row.mode, "fixed", frames[size], plan.rate,
                    plan.cpu_seconds)
        row.runs.append(run)
        if run.loss > 0.01:
            row.wrong.append(f"{size} B at {plan.rate / 1000:.0f} kpps lost {run.loss:.1%}: "
                             f"the CPU figure needs every packet through (lower --rate)")
    if hub:
        counted = (_pair(hub) or {}).get("i2r_packets", 0) - counted0
        delivered = sum(r.delivered for r in row.runs)
        if counted < delivered:
            row.wrong.append(f"wgmux counted {counted} packets of the pair, the responder's "
                             f"site got {delivered}: something else carried them")
    return row


def _start_wgmux(hub: WgmuxHub, selection: Selection, steering: Steering):
    hub.extra_config = selection.config
    hub.serve_args = list(selection.args)
    hub.start()
    steering.hub_process(hub.process.pid)


def run(plan: Plan, only: str = "", out=sys.stdout) -> List[Row]:
    selections, no_xdp = datapath_selections()
    wanted = [m for m in MODES if only in m]
    steering = Steering.plan(plan.coalesce_us)
    saved_affinity = os.sched_getaffinity(0)
    if steering.hub_cpu is not None:
        steering.pin_self()      # the lab's processes (WireGuard, daemon, generator) too
    rows = {m: Row(m) for m in MODES}
    try:
        with Lab() as lab:
            # full checksums on every packet: an XDP frame has no room for
            # the "checksum partial" an skb carries across veth
            topo = single_interface(lab, wireguard=True, tx_checksum=False)
            feed_hub_by_xdp(topo)
            steering.topo = topo
            initiator, responder = topo.host(1), topo.host(2)
            for host in (initiator, responder):
                topo.hub_wg.wait_handshake(host.wg.public_key)
            if topo.hub_wg.process is not None:       # wireguard-go
                steering.hub_process(topo.hub_wg.process.pid)
            hub = WgmuxHub(topo)
            hub.pair(initiator, responder, PORT)
            _start_wgmux(hub, selections["tc"], steering)
            pair = establish(hub, initiator, responder)
            frames = build_frames(topo, pair, plan.sizes)
            sink = Sink(topo, pair)
            steering.apply()
            _print_header(out, plan, topo, pair, steering, selections, no_xdp)

            if "tc" in wanted:
                rows["tc"].what = _what(topo, "wgmux serve")
                measure(rows["tc"], plan, topo, pair, frames, sink, steering, hub)
            hub.stop()

            if "forward" in wanted:
                xdp, tc = attached(topo.hub)
                if xdp or tc:
                    rows["forward"].wrong.append(f"wgmux still attached: {xdp or tc}")
                else:
                    fwd = Forwarding(topo, pair)
                    fwd.start()
                    rows["forward"].what = "nftables stateless rewrite + IPv4 forwarding"
                    measure(rows["forward"], plan, topo, pair, frames, sink, steering)
                    fwd.stop()

            if "xdp" in wanted:
                if no_xdp:
                    rows["xdp"].unavailable = "no XDP datapath in this checkout (see modes)"
                else:
                    _xdp_row(rows["xdp"], plan, topo, hub, selections["xdp"], pair, frames, sink,
                             steering, initiator, responder, out)
    finally:
        os.sched_setaffinity(0, saved_affinity)
    return [rows[m] for m in MODES if m in wanted]


def _xdp_row(row: Row, plan: Plan, topo: Topology, hub: WgmuxHub, selection: Selection,
             pair: dict, frames, sink: Sink, steering: Steering, initiator: Host,
             responder: Host, out):
    try:
        _start_wgmux(hub, selection, steering)
    except (RuntimeError, TimeoutError) as e:
        row.unavailable = f"wgmux serve refused it: {str(e).strip().splitlines()[-1]}"
        return
    xdp, _ = attached(topo.hub)
    if not xdp:
        row.unavailable = "wgmux serve started, but no XDP program is attached to eth0"
        return
    row.what = _what(topo, "wgmux serve")
    now = _pair(hub)
    if now is None or now["responder_index"] != pair["responder_index"]:
        # the pinned sessions did not survive the restart: a new handshake,
        # the same frames but for the new receiver index
        pair = establish(hub, initiator, responder, rekey=True)
        frames = build_frames(topo, pair, plan.sizes)
        print("note: xdp: the pair did not survive the restart; new handshake, "
              "frames rebuilt for its index", file=out)
    measure(row, plan, topo, pair, frames, sink, steering, hub)


def _what(topo: Topology, who: str) -> str:
    xdp, tc = attached(topo.hub)
    parts = ([xdp] if xdp else []) + [f"TC ingress {name}" for name in tc]
    return f"{who}: {', '.join(parts) or 'nothing attached'}"


# ---- output ------------------------------------------------------------------------

METHOD = """\
how:
  packets   transport messages of one real pair (handshake through the daemon), sent by
            netlab.attack.Flooder from the initiator's NAT router (its WAN, its public
            endpoint) to hub:{port}; sizes are IP packet sizes.  gw forwards them to the
            hub with XDP_REDIRECT, so the hub's veth receives buffers as from a NIC (fed
            skbs, a veth running XDP would first copy each); checksum offload is off
            (full checksums: an XDP frame cannot carry "checksum partial")
  delivered counted on the responder's NAT router as they arrive on its WAN
            (nftables prerouting, before NAT), and dropped there
  open loop the generator as fast as it goes, {seconds:g} s per size.  `limit`: the side
            at >= {busy:.0%} CPU, the hub (its NAPI thread) or the generator (the busiest
            other CPU: the flooder, gw, both NAT routers and the bridge run there)
  hub CPU   at {rate:g} pps for {cpu_seconds:g} s per size: CPU time of the hub's NAPI thread
            (/proc/PID/schedstat, ns) per delivered packet.  Both ends of the hub's veth
            receive through NAPI (GRO on, TSO off), each in a thread of its own (threaded
            NAPI, SCHED_FIFO as softirq would preempt); the hub's thread is pinned to the
            hub core with the hub's processes (wgmux serve, its WireGuard), everything
            else to the other CPU(s).  All the hub does with a packet (receive, program
            or forwarding, transmit) runs in that thread.  While packets flow NAPI polls
            on a {coalesce:g} us timer (gro_flush_timeout, napi_defer_hard_irqs: a NIC's
            interrupt coalescing): the thread is woken per batch (pkt/wakeup), and each
            wakeup's cost is in the figure.  `core`: the hub core's busy time from
            /proc/stat (the thread, the hub's processes, anything else that ran there)
  split     each size's two runs (open loop: big batches; fixed rate: smaller) solved
            as ns = packets x per packet + wakeups x per wakeup: the hub's cost per
            packet with the wakeups taken out, which on this VM cost tens of us each
  forward   {forward}"""


def _print_header(out, plan: Plan, topo: Topology, pair: dict, steering: Steering,
                  selections: Dict[str, Selection], no_xdp: Optional[str]):
    print(f"wgmux side by side on a single-interface hub, "
          f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}, "
          f"Linux {platform.release()}, {os.cpu_count()} CPUs", file=out)
    print(f"topology: netlab.topology.single_interface (hub eth0 {topo.hub_ip} behind gw; "
          f"pair {pair['initiator']} -> hub:{PORT} -> {pair['responder']}, "
          f"receiver index {pair['responder_index']})", file=out)
    print(f"steering: {steering.describe()}", file=out)
    print(f"modes: tc = wgmux serve {_selection_text(selections['tc'])}; xdp = "
          + (f"wgmux serve {_selection_text(selections['xdp'])}" if not no_xdp
             else f"not available ({no_xdp})")
          + "; forward = no wgmux, the hub forwards (below)", file=out)
    print(METHOD.format(port=PORT, seconds=plan.seconds, busy=BUSY, rate=plan.rate,
                        cpu_seconds=plan.cpu_seconds, coalesce=plan.coalesce_us,
                        forward=textwrap.fill(Forwarding.WHAT, 90, initial_indent=" " * 12,
                                              subsequent_indent=" " * 12)[12:]), file=out)


def _selection_text(s: Selection) -> str:
    return " ".join(filter(None, [s.config, " ".join(s.args)])) or "(TC, the only datapath)"


def _ratio(a: Optional[float], b: Optional[float]) -> str:
    return f"{a / b:.2f}" if a and b else "n/a"


def render(rows: List[Row], plan: Plan) -> List[str]:
    by = {r.mode: r for r in rows}
    lines = ["", f"{'ratios (same packets, same run)':57}" + "".join(f"{s:>9} B"
                                                                   for s in plan.sizes)]

    def ratio_lines(label, value):
        for a, b in (("xdp", "tc"), ("tc", "forward")):
            cells = [_ratio(value(by[a], s) if a in by else None,
                            value(by[b], s) if b in by else None) for s in plan.sizes]
            pair = "/".join(m if m == "forward" else m.upper() for m in (a, b))
            lines.append(f"  {pair:10} {label:44}" + "".join(f"{c:>11}" for c in cells))

    def figure(kind, name):
        return lambda row, size: getattr(row.run(kind, size), name, None)

    ratio_lines("delivered pps, open loop", figure("open", "delivered_pps"))
    ratio_lines(f"hub CPU per packet at {plan.rate / 1e3:g} kpps",
                figure("fixed", "hub_ns_per_packet"))
    ratio_lines("hub CPU per packet, wakeups taken out (fit)",
                lambda row, size: (row.split(size) or (None,))[0])

    lines += ["", f"open loop, {plan.seconds:g} s per size",
              f"{'':5} {'mode':8} {'size':>5} {'sent kpps':>10} {'delivered kpps':>15} "
              f"{'loss':>6} {'hub thread':>11} {'hub ns/pkt':>11} {'pkt/wakeup':>11} "
              f"{'gen CPU':>8}  limit"]
    lines += _table(rows, plan, "open", lambda r: (
        f"{r.sent_pps / 1e3:10.1f} {r.delivered_pps / 1e3:15.1f} {r.loss:6.1%} "
        f"{r.hub_thread_busy:11.0%} {r.hub_ns_per_packet or 0:11.0f} "
        f"{r.packets_per_wakeup or 0:11.1f} {r.generator_busy:8.0%}  {r.limit}"))
    lines += ["", f"fixed rate {plan.rate / 1e3:g} kpps, {plan.cpu_seconds:g} s per size: "
              f"hub CPU per packet",
              f"{'':5} {'mode':8} {'size':>5} {'delivered kpps':>15} {'loss':>6} "
              f"{'hub ns/pkt':>11} {'pkt/wakeup':>11} {'hub thread':>11} {'core':>6}"]
    lines += _table(rows, plan, "fixed", lambda r: (
        f"{r.delivered_pps / 1e3:15.1f} {r.loss:6.1%} {r.hub_ns_per_packet or 0:11.0f} "
        f"{r.packets_per_wakeup or 0:11.1f} {r.hub_thread_busy:11.0%} "
        f"{'-' if r.hub_core_busy is None else format(r.hub_core_busy, '.0%'):>6}"))
    lines += ["", "hub CPU split (fit: both runs of a size as packets x per packet + wakeups x "
              "per wakeup)", f"{'':5} {'mode':8} {'size':>5} {'ns/packet':>11} {'us/wakeup':>11}"]
    for row in rows:
        for size in plan.sizes:
            split = row.split(size)
            lines.append(f"split {row.mode:8} {size:5} " + (
                f"{split[0]:11.0f} {split[1] / 1e3:11.1f}" if split
                else _missing(row) if not row.runs
                else "n/a (batches too alike, or too noisy to tell)"))
    lines.append("")
    for row in rows:
        if row.what:
            lines.append(f"{row.mode}: {row.what}")
        for w in row.wrong:
            lines.append(f"{row.mode}: WRONG: {w}")
    lines += _verdicts(rows)
    return lines


def _table(rows: List[Row], plan: Plan, kind: str, cells) -> List[str]:
    """One line per mode and size: `kind`, mode, size, then cells(run), or
    why there is no run."""
    lines = []
    for row in rows:
        for size in plan.sizes:
            r = row.run(kind, size)
            lines.append(f"{kind:5} {row.mode:8} {size:5} "
                         + (cells(r) if r is not None else _missing(row)))
    return lines


def _missing(row: Row) -> str:
    if row.unavailable:
        return f"not available: {row.unavailable}"
    return "not measured" + (f" (WRONG: {row.wrong[0]})" if row.wrong else "")


def _verdicts(rows: List[Row]) -> List[str]:
    """Which side limited the open loop, in words."""
    out = []
    for row in rows:
        runs = [r for r in row.runs if r.kind == "open"]
        limits = {r.limit for r in runs}
        if limits == {"generator"}:
            out.append(f"{row.mode}: open loop limited by the generator side, not the hub "
                       f"(the generator's CPU >= {BUSY:.0%} busy, the hub's thread at most "
                       f"{max(r.hub_thread_busy for r in runs):.0%}): its delivered pps "
                       f"measure the generator; the hub CPU per packet measures the hub")
        elif "hub" in limits:
            out.append(f"{row.mode}: open loop limited by the hub (its NAPI thread at "
                       f">= {BUSY:.0%} of its core)")
    return out


def main(seconds: float = 3.0, cpu_seconds: float = 5.0, rate: float = 100_000,
         sizes: Sequence[int] = SIZES, only: str = "", coalesce_us: int = 200) -> int:
    plan = Plan(tuple(sizes), seconds, cpu_seconds, rate, coalesce_us)
    rows = run(plan, only=only)
    for line in render(rows, plan):
        print(line)
    return 1 if any(r.wrong for r in rows) else 0
