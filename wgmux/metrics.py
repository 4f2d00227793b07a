"""Prometheus text exposition of the daemon's status.

One renderer, two outlets: `wgmux show --metrics` prints it, and the
daemon serves it on `MetricsListen` (off by default) at `/metrics`.

    wgmux_packets_total{verdict="reflect",reason="transport"}   per datapath verdict
    wgmux_events_total{event="session_established"}             ev_* / sp_* events
    wgmux_sessions{state="established"|"half-open"}             live sessions
    wgmux_session_entries_stale                                  awaiting collection
    wgmux_responders{state="known"|"unknown"}                   responder endpoints
    wgmux_learned_initiators                                     slow path identities
    wgmux_port_bytes_total{port, direction="i2r"|"r2i"}          per responder port
    wgmux_port_packets_total{port, direction}
    wgmux_start_time_seconds, wgmux_reloads_total
    wgmux_datapath_info{mode="xdp"|"tc",setting="auto"|"xdp"|"tc"} 1   what runs (spec §4a)
"""

from __future__ import annotations

import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Dict, List, Optional, Tuple

VERDICTS = ("pass", "reflect", "drop")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _label(value) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value) -> str:
    """A sample value exactly as the status JSON has it: an integer as its
    digits (never `1.65881e+06` for 1658808), a float as repr() (the
    shortest text that parses back to the same float, as json.dumps
    writes it); NaN and infinities as the exposition format spells them."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


class _Family:
    def __init__(self, name: str, kind: str, help_text: str):
        self.name, self.kind, self.help = name, kind, help_text
        self.samples: List[Tuple[Dict[str, object], float]] = []

    def add(self, value, **labels):
        self.samples.append((labels, value))
        return self

    def render(self) -> str:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        for labels, value in self.samples:
            lbl = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            out.append(f"{self.name}{{{lbl}}} {_number(value)}" if lbl
                       else f"{self.name} {_number(value)}")
        return "\n".join(out)


def render(status: dict) -> str:
    """The status dict of `wgmux serve` (as `show --json` prints it) as metrics."""
    packets = _Family("wgmux_packets_total", "counter",
                      "Packets the datapath decided on, by verdict and reason.")
    events = _Family("wgmux_events_total", "counter",
                     "Datapath and slow-path events (sessions, next hops, roaming, ...).")
    for name, value in sorted(status.get("counters", {}).items()):
        verdict, _, reason = name.partition("_")
        if verdict in VERDICTS:
            packets.add(value, verdict=verdict, reason=reason)
        else:
            events.add(value, event=name[3:] if name.startswith("ev_") else name)

    by_state = {"established": 0, "half-open": 0}
    per_port: Dict[int, Dict[str, int]] = {}
    summary = status.get("sessions_summary")
    if summary is not None:
        # counted from the table's columns (the daemon's scrapes ask for it)
        by_state = {"established": summary["established"], "half-open": summary["half_open"]}
        per_port = {int(p): acc for p, acc in summary["by_port"].items()}
    for s in status.get("sessions", []):
        by_state[s["state"]] = by_state.get(s["state"], 0) + 1
        acc = per_port.setdefault(s["port"], {})
        for key in ("i2r_bytes", "r2i_bytes", "i2r_packets", "r2i_packets"):
            acc[key] = acc.get(key, 0) + s.get(key, 0)
    live = _Family("wgmux_sessions", "gauge", "Live reflected sessions (initiator-responder pairs).")
    for state, n in by_state.items():
        live.add(n, state=state)
    stale = _Family("wgmux_session_entries_stale", "gauge",
                    "Idle session entries awaiting collection.").add(status.get("stale_sessions", 0))

    peers = status.get("peers", [])
    responders = _Family("wgmux_responders", "gauge", "Configured responders, by endpoint state.")
    responders.add(sum(1 for p in peers if p.get("endpoint")), state="known")
    responders.add(sum(1 for p in peers if not p.get("endpoint")), state="unknown")

    port_bytes = _Family("wgmux_port_bytes_total", "counter",
                         "IP bytes reflected through live sessions, by responder port and direction.")
    port_packets = _Family("wgmux_port_packets_total", "counter",
                           "Packets reflected through live sessions, by responder port and direction.")
    for port, acc in sorted(per_port.items()):
        for direction in ("i2r", "r2i"):
            port_bytes.add(acc[f"{direction}_bytes"], port=port, direction=direction)
            port_packets.add(acc[f"{direction}_packets"], port=port, direction=direction)

    slow = status.get("slow_path") or {}
    learned = _Family("wgmux_learned_initiators", "gauge",
                      "Initiator identities the slow path learned from responses.")
    learned.add(len(slow.get("initiators", [])))
    start = _Family("wgmux_start_time_seconds", "gauge",
                    "When the daemon started, in seconds since the epoch.").add(status.get("started", 0))
    reloads = _Family("wgmux_reloads_total", "counter",
                      "Configuration reloads (SIGHUP) applied.").add(status.get("reloads", 0))
    families = [packets, events, live, stale, responders, port_bytes, port_packets, learned,
                start, reloads]
    if status.get("datapath"):
        families.append(_Family(
            "wgmux_datapath_info", "gauge",
            "Where the datapath runs: mode xdp (XDP in the driver, in front of TC ingress) "
            "or tc (TC ingress alone); setting: the config's Datapath.").add(
                1, mode=status["datapath"], setting=status.get("datapath_setting", "")))
    interfaces = status.get("interfaces") or []
    if interfaces:
        info = _Family("wgmux_interface_info", "gauge",
                       "Each interface served (Interface), with what runs there (xdp or tc).")
        for i in interfaces:
            info.add(1, interface=i["name"], mode=i.get("datapath") or "")
        families.append(info)
    counted = [i for i in interfaces if "reflected_in" in i]
    if counted:
        per_iface = _Family(
            "wgmux_interface_packets_total", "counter",
            "With several interfaces: packets that arrived on each and were reflected "
            "(reflected_in) or dropped, and packets reflected out of each (reflected_out).")
        for i in counted:
            for what in ("reflected_in", "reflected_out", "dropped"):
                per_iface.add(i[what], interface=i["name"], what=what)
        families.append(per_iface)
    return "\n".join(f.render() for f in families) + "\n"


class MetricsServer:
    """`GET /metrics` on (host, port), rendered from `status()` per scrape."""

    def __init__(self, address: Tuple[str, int], status: Callable[[], dict]):
        host, port = address

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404, "only /metrics is served here")
                    return
                body = render(status()).encode()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # scrapes are not events worth a log line
                pass

        server_class = ThreadingHTTPServer
        if ":" in host:
            import socket

            class V6(ThreadingHTTPServer):
                address_family = socket.AF_INET6
            server_class = V6
        self.httpd = server_class((host, port), Handler)
        self.httpd.daemon_threads = True
        self._thread: Optional[threading.Thread] = None

    @property
    def address(self) -> Tuple[str, int]:
        return self.httpd.server_address[:2]

    def start(self):
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="wgmux-metrics",
                                        daemon=True)
        self._thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
