"""Scale benchmark: `python -m harness.bench --scale` (issue 15).

For each table size (sessions: 1k, 10k, 100k, 1M by default) a datapath
is compiled with MaxSessions to fit, the session table is filled with
established pairs in batches (one peer port P holds them all; a second
port Q holds one pair, for `show --port`), and measured:

- datapath ns/packet (BPF_PROG_TEST_RUN, the benchmark build): *hot*, the
  same session every run; *cold*, each run the next of all the table's
  I->R sessions (the benchmark build writes the receiver index, so the runs
  walk the whole table: nothing of it stays in the caches at 1M);
- the control plane on that table: one column read (what collection, the
  session log and the summary share), collection with nothing to collect
  (a tick's work; per minute at the daemon's interval for that size),
  `show --summary` (columns + counting), `show --port Q`, the full listing
  (`show --json`: every entry decoded and paired) and the Prometheus
  rendering of the summary;
- memory: the session map's as the kernel charges it (fdinfo memlock) and
  per entry; this process's peak RSS over the control-plane work above
  (VmHWM reset before it): what a `wgmux serve` answering `show` adds.

Then responders (10, 1k, 10k): parse a config with that many [[Peer]]s,
write every responder with an endpoint (what the daemon's start and first
endpoint sync do), and what a SIGHUP adding one more costs (parse again,
write the one).  Everything runs in one process, like the daemon; the
figures and a plot (`--plot FILE`, matplotlib) go to docs/performance.md.
"""

from __future__ import annotations

import ctypes as ct
import socket
import statistics
import struct
import time
from typing import Dict, List, Optional

from harness import golden as g
from harness.testrun import set_bench_header
from wgmux import bulk
from wgmux.config import parse
from wgmux.datapath import Datapath
from wgmux.model import SF_TRANSPORT, monotonic_ns
from wgmux.status import session_pairs, session_summary

SIZES = (1_000, 10_000, 100_000, 1_000_000)
RESPONDERS = (10, 1_000, 10_000)
Q = 40_999                    # the port with one pair (show --port)
BASE = 0x10000000             # the I->R entries' indices: BASE + i
# byte offset of a transport message's receiver index in golden's IPv4 frame
RECEIVER_OFF = 14 + 20 + 8 + 4


def _timed(fn, rounds: int = 3):
    """(median seconds, the last result)."""
    times, out = [], None
    for _ in range(rounds):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def _memlock(map_fd: int) -> int:
    with open(f"/proc/self/fdinfo/{map_fd}") as f:
        for line in f:
            if line.startswith("memlock:"):
                return int(line.split()[1])
    return 0


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak_rss():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _fill(dp: Datapath, env: g.Env, n_entries: int) -> int:
    """n_entries / 2 established pairs on P (I->R keyed (P, BASE+i), R->I
    (HubPort, BASE+i)), every I->R entry with the next hop a warm run
    cached; plus one pair on Q.  Returns the pairs on P."""
    pairs = max(1, n_entries // 2 - 1)
    # a template I->R entry with its next hop resolved, from one real packet
    g.with_established(env)
    env.run(g.inbound(g.E_I, g.hub(g.P), g.transport(g.R_IDX)))
    t = dp._sessions
    ks, vs = ct.sizeof(t.Key), ct.sizeof(t.Leaf)
    i2r = bytes(t[dp._session_key(g.P, g.R_IDX)])
    r2i = bytes(t[dp._session_key(g.HUB_PORT, g.I_IDX)])
    dp.flush_sessions()
    rev = t.Leaf.reverse.offset
    p_be, hub_be = socket.htons(g.P), socket.htons(g.HUB_PORT)
    now = monotonic_ns()
    seen, flags = t.Leaf.last_seen.offset, t.Leaf.flags.offset
    created = t.Leaf.created.offset

    def entry(template: bytes, back_port: int, index: int) -> bytes:
        v = bytearray(template)
        struct.pack_into("<HHI", v, rev, back_port, 0, index)
        struct.pack_into("<Q", v, seen, now)
        struct.pack_into("<Q", v, created, now)
        v[flags] |= SF_TRANSPORT
        return bytes(v)

    src_port = t.Leaf.src_port.offset
    for port_be, count in ((p_be, pairs), (socket.htons(Q), 1)):
        keys, values = bytearray(), bytearray()
        base = BASE if port_be == p_be else BASE - 16
        back = bytearray(r2i)
        struct.pack_into("<H", back, src_port, port_be)    # sent from this pair's port
        for i in range(count):
            keys += struct.pack("<HHI", port_be, 0, base + i)
            values += entry(i2r, hub_be, base + i)
            keys += struct.pack("<HHI", hub_be, 0, base + i)
            values += entry(bytes(back), port_be, base + i)
        written = bulk.write(t.map_fd, bytes(keys), bytes(values), ks, vs)
        if written != 2 * count:
            raise RuntimeError(f"the table took {written} of {2 * count} entries")
    return pairs


def _spread(dp: Datapath, n: int):
    table = dp.bpf[b"bench_spread"]
    leaf = table.Leaf()
    leaf.n, leaf.base, leaf.next, leaf.off = n, BASE, 0, RECEIVER_OFF
    table[table.Key(0)] = leaf


def measure_table(net: g.GoldenNet, size: int, repeat: int) -> Dict[str, float]:
    out: Dict[str, float] = {"sessions": size}
    with Datapath(g.HUB_PORT, bench=True, max_sessions=max(size + 64, 1024)) as dp:
        env = g.Env(dp, net)
        env.reset()
        t0 = time.perf_counter()
        pairs = _fill(dp, env, size)
        out["fill_s"] = time.perf_counter() - t0
        frame = g.inbound(g.E_I, g.hub(g.P), g.transport(BASE))
        set_bench_header(dp, frame)
        run_fd = dp.load_program("wgmux_bench")
        base_fd = dp.load_program("wgmux_bench_base")
        for name, spread in (("hot", 0), ("cold", pairs)):
            _spread(dp, spread)
            r = net.run(run_fd, frame, repeat=repeat)
            if r.retval != 7:
                raise RuntimeError(f"{size} {name}: verdict {r.retval}, want a redirect")
            runs = [net.run(run_fd, frame, repeat=repeat).duration_ns for _ in range(3)]
            bases = [net.run(base_fd, frame, repeat=repeat).duration_ns for _ in range(3)]
            out[f"{name}_ns"] = statistics.median(runs)
            out[f"{name}_walk_ns"] = statistics.median(runs) - statistics.median(bases)
        _spread(dp, 0)
        c = dp.counters()
        if c["reflect_transport"] < 6 * repeat or c["drop_unknown_index"]:
            raise RuntimeError(f"{size}: the runs did not all reflect: {c}")

        fd = dp._sessions.map_fd
        out["map_bytes"] = _memlock(fd)
        out["map_bytes_per_entry"] = out["map_bytes"] / dp.max_sessions
        _reset_peak_rss()
        rss0 = _status_kb("VmRSS")
        out["columns_s"], cols = _timed(dp.session_columns)
        out["gc_tick_s"], removed = _timed(lambda: dp.collect_idle(540, 30, columns=cols))
        if removed:
            raise RuntimeError(f"{size}: collection removed {removed} live entries")
        args = (540.0, 30.0, 190.0)
        out["summary_s"], summary = _timed(lambda: session_summary(
            dp.session_columns(), dp.hub_port, monotonic_ns(), *args))
        if summary["established"] != pairs + 1:
            raise RuntimeError(f"{size}: summary says {summary['established']} pairs, "
                               f"want {pairs + 1}")
        from wgmux.metrics import render
        out["metrics_s"], _ = _timed(lambda: render({"sessions_summary": session_summary(
            dp.session_columns(), dp.hub_port, monotonic_ns(), *args)}))
        out["show_port_s"], mine = _timed(lambda: session_pairs(dp.sessions_of_port(Q),
                                                                dp.hub_port))
        if [p["port"] for p in mine] != [Q]:
            raise RuntimeError(f"{size}: show --port {Q} found {mine}")
        out["show_json_s"], listed = _timed(
            lambda: len(session_pairs(dp.sessions(), dp.hub_port)), rounds=1)
        out["rss_peak_mb"] = (_status_kb("VmHWM") - rss0) / 1024
        # the daemon's interval for this size (wgmux.daemon), scans per minute
        from wgmux.daemon import GC_ENTRIES_PER_INTERVAL, GC_INTERVAL
        interval = GC_INTERVAL * (1 + len(cols) // GC_ENTRIES_PER_INTERVAL)
        out["gc_cpu_pct"] = 100 * (out["columns_s"] + out["gc_tick_s"]) / interval
    return out


def measure_responders(n: int) -> Dict[str, float]:
    head = '[Interface]\nDevice = "wg0"\nHubPort = 51820\nInterface = "eth0"\n'

    def config(count: int) -> str:
        peers = [f'[[Peer]]\nPort = {20000 + i}\nPublicKey = "'
                 f'{__import__("base64").b64encode(i.to_bytes(32, "big")).decode()}"\n'
                 for i in range(1, count + 1)]
        return head + "\n".join(peers)

    text, more = config(n), config(n + 1)
    out: Dict[str, float] = {"responders": n}
    with Datapath(51820, max_ports=max(4096, n + 1)) as dp:
        out["parse_s"], cfg = _timed(lambda: parse(text), rounds=1)
        t = time.perf_counter()
        for i, peer in enumerate(cfg.peers):
            dp.set_responder(peer.port, f"198.51.{(i >> 8) & 255}.{i & 255}", 51820)
        out["sync_s"] = time.perf_counter() - t
        t = time.perf_counter()
        bigger = parse(more)
        known = {q.port for q in cfg.peers}
        new = [p for p in bigger.peers if p.port not in known]
        for peer in new:
            dp.set_responder(peer.port, "203.0.113.99", 51820)
        out["add_one_s"] = time.perf_counter() - t
        if len(dp.responders()) != n + 1:
            raise RuntimeError(f"{n} responders: {len(dp.responders())} in the map")
    out["load_and_sync_s"] = out["parse_s"] + out["sync_s"]
    return out


def plot(rows: List[Dict[str, float]], path: str) -> Optional[str]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (python3-matplotlib): no plot"
    xs = [r["sessions"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    a.plot(xs, [r["hot_ns"] for r in rows], "o-", label="hot (one session)")
    a.plot(xs, [r["cold_ns"] for r in rows], "s-", label="cold (all sessions in turn)")
    a.set_xscale("log")
    a.set_xlabel("sessions in the table")
    a.set_ylabel("ns per packet (test-run)")
    a.set_ylim(bottom=0)
    a.legend()
    a.grid(alpha=0.3)
    b.plot(xs, [r["map_bytes"] / 2**20 for r in rows], "o-", label="session map")
    b.plot(xs, [r["rss_peak_mb"] for r in rows], "s-", label="RSS added (the full listing most of it)")
    b.set_xscale("log")
    b.set_xlabel("sessions in the table")
    b.set_ylabel("MiB")
    b.legend()
    b.grid(alpha=0.3)
    fig.suptitle("wgmux at scale (2-core VM, transport IPv4, TC)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return None


def main(sizes=SIZES, responders=RESPONDERS, repeat: int = 200_000,
         plot_path: Optional[str] = None) -> int:
    rows = []
    print(f"session table (test-run repeat={repeat}, median of 3; control plane median of 3, "
          f"the full listing once)")
    print(f"{'sessions':>9} {'hot ns':>7} {'cold ns':>8} {'cold/hot':>8} {'map MiB':>8} "
          f"{'B/entry':>8} {'columns s':>9} {'GC tick s':>9} {'GC %cpu':>7} {'summary s':>9} "
          f"{'metrics s':>9} {'--port s':>8} {'--json s':>8} {'RSS+ MiB':>8}", flush=True)
    with g.GoldenNet() as net:
        for size in sizes:
            r = measure_table(net, size, repeat)
            rows.append(r)
            print(f"{size:9d} {r['hot_ns']:7.0f} {r['cold_ns']:8.0f} "
                  f"{r['cold_ns'] / r['hot_ns']:8.2f} {r['map_bytes'] / 2**20:8.1f} "
                  f"{r['map_bytes_per_entry']:8.0f} {r['columns_s']:9.3f} "
                  f"{r['gc_tick_s']:9.3f} {r['gc_cpu_pct']:7.2f} {r['summary_s']:9.3f} "
                  f"{r['metrics_s']:9.3f} {r['show_port_s']:8.3f} {r['show_json_s']:8.2f} "
                  f"{r['rss_peak_mb']:8.1f}", flush=True)
    print(f"\n{'responders':>10} {'parse s':>8} {'sync s':>8} {'load+sync s':>11} "
          f"{'add one s':>9}")
    for n in responders:
        r = measure_responders(n)
        print(f"{n:10d} {r['parse_s']:8.3f} {r['sync_s']:8.3f} {r['load_and_sync_s']:11.3f} "
              f"{r['add_one_s']:9.4f}", flush=True)
    if plot_path:
        why = plot(rows, plot_path)
        print(why or f"\nplot: {plot_path}")
    return 0
