"""`wgmux serve`: attach the datapath and keep its maps true.

The kernel program does all per-packet work.  This loop only:
- learns each responder's public endpoint from the hub's WireGuard device
  and writes it into the `ports` map (at most SYNC_INTERVAL behind);
- collects sessions idle longer than SESSION_IDLE_TIMEOUT;
- answers `wgmux show` on the control socket;
- reloads the config on SIGHUP;
- detaches everything on SIGTERM/SIGINT.

Restart without loss: the maps are pinned under bpffs (wgmux.pinning), one
directory per Interface and network namespace; the next start finds them,
checks they fit its build (else starts fresh and logs why), and carries on
with the same sessions, responders and counters.  SIGTERM/SIGINT detach the
program but leave the pinned maps: established sessions stop for as long as
the next start takes to compile (1-3 s).  With `keep_attached` (serve
--keep-attached, what the systemd unit runs) they leave the program attached
instead, forwarding established sessions on the pinned maps with no daemon,
exactly as after a SIGKILL; the next start replaces it atomically (same TC
priority and handle), so a restart loses no packet of them.  Whoever stops
wgmux for good removes it with `wgmux detach` (the unit's ExecStopPost does,
unless systemd is restarting the unit).  `wgmux purge` (or `serve --fresh`)
removes the pinned state too.

Datapath (docs/spec.md §4a): TC ingress always; "xdp", or "auto" where the
driver has native XDP (not on veth), puts the XDP program in front of it.
A predecessor's XDP program is replaced atomically, or removed when this
start keeps to TC.

Reload (SIGHUP): the file is read and validated again; an invalid file, or
one that changes the first Interface, HubPort, Datapath or MaxSessions, is
rejected with one log line and the running config stays.  The first
Interface names the pin directory and the control socket; HubPort keys
every session; Datapath says what is attached: changing any of them means
a restart (which keeps the sessions, except for HubPort).  Interfaces
after the first may come and go: an added one is attached (after its
checks), a removed one detached, the sessions untouched.  A new Device/WgUtil is taken if it passes the
start checks (it exists, its listen port is HubPort).  AmneziaWG parameters
are applied to the datapath.  Peers: a new port starts working, a removed
port stops (its sessions are deleted), a port whose PublicKey changed is
removed and added; the others and their sessions are untouched.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Optional

from . import control, discovery, memory, pinning, preflight
from .config import Config, ConfigError, load_bounded
from .datapath import MAX_HUB_ADDRS
from .slowpath import can_be_peer
from .model import monotonic_ns
from .status import MODE_TEXT, Clock, endpoint_text, session_pairs, session_summary

log = logging.getLogger("wgmux")

SYNC_INTERVAL = 0.5
# WireGuard drops a session 180 s after its last handshake (REJECT_AFTER_TIME
# is 180 s, keys are never used past 3 x that); 3 x 180 s of silence means
# both sides have given the indices up.
SESSION_IDLE_TIMEOUT = 3 * 180
# A half-open entry (initiation reflected, no response yet) is answered in
# milliseconds or never: WireGuard retries an unanswered initiation after
# REKEY_TIMEOUT (5 s) with a new sender index.  So they go sooner (never
# later than SESSION_IDLE_TIMEOUT), which keeps a flood of initiations from
# filling the table for long.
HALF_OPEN_TIMEOUT = 30
GC_INTERVAL = 5.0
# A big table is scanned less often: one more GC_INTERVAL per this many
# entries (a million: every 30 s, ~0.5 s of CPU each, docs/performance.md).
# Timeouts are 30 s and more, and the slow path bounds the half-open space.
GC_ENTRIES_PER_INTERVAL = 200_000
# Above this many established pairs the session log stops saying each one
# that comes or goes (one line says so; `show --summary` counts them).
SESSION_LOG_MAX = 10_000
# `show` lists sessions up to this many table entries (the default
# MaxSessions); above it, decoding each would take the daemon seconds and
# hundreds of MB, so it counts them instead (show --port lists one port's).
SHOW_LIST_MAX = 65_536
# How long after a summary was asked for the collection ticks keep counting
# a big table for the next one (a scrape interval or two).
SUMMARY_WANTED_S = 300.0
# Drops are logged as one summary line per interval, whatever their rate.
DROP_SUMMARY_INTERVAL = 60.0
# WireGuard refuses a keypair REJECT_AFTER_TIME after the handshake that made
# it; `show` does not list a session whose handshake is older than that
# (plus a margin for the hub seeing the initiation before the peers derive
# the keys): a rekey has replaced it, it only awaits collection.
REJECT_AFTER_TIME = 180
EXPIRY_MARGIN = 10
# Tests shorten the idle timeout with `serve --session-idle-timeout` (hidden)
# or this variable; the flag wins.
IDLE_TIMEOUT_ENV = "WGMUX_SESSION_IDLE_TIMEOUT"


class ServeError(RuntimeError):
    """A reason `serve` cannot start; its message is the one line users see."""


class EarlySignals:
    """SIGTERM/SIGINT/SIGHUP noted from the first instant of `wgmux serve`
    (compiling the datapath takes seconds), for Daemon.run to act on: a
    reload before the daemon is ready is deferred, never fatal.

    A SIGTERM/SIGINT before the daemon touches the interface (commit())
    ends the process at once, from a thread woken by the signal itself:
    Python runs handlers only between bytecodes, and the compile is one
    long C call.  Nothing is attached yet by then; what an interrupted
    compile may have pinned is what a SIGKILL would leave, and the next
    start checks it like any pinned state."""

    def __init__(self):
        self.stop = False
        self.reload = False
        self.on_abort = None           # cleanup before an abort (the control socket)
        self._abortable = True
        self._lock = threading.Lock()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._note)
        read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        os.set_blocking(read_end, True)
        signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        threading.Thread(target=self._watch, args=(read_end,), name="wgmux-early-signals",
                         daemon=True).start()

    def _note(self, signum, _frame):
        if signum == signal.SIGHUP:
            self.reload = True
        else:
            self.stop = True

    def _watch(self, fd: int):
        while True:
            try:
                got = os.read(fd, 64)
            except OSError:
                return
            if not got:
                return
            if any(b in (signal.SIGTERM, signal.SIGINT) for b in got):
                with self._lock:
                    if not self._abortable:
                        return          # run() acts on it
                    name = "SIGTERM" if signal.SIGTERM in got else "SIGINT"
                    log.info("%s while starting: stopped before attaching anything", name)
                    try:
                        if self.on_abort is not None:
                            self.on_abort()
                    finally:
                        for h in logging.getLogger().handlers:
                            h.flush()
                        os._exit(0)

    def commit(self):
        """From here on the daemon changes the interface: a stop waits for
        Daemon.run, which undoes it."""
        with self._lock:
            self._abortable = True


def interface_addresses(ifname: str) -> list:
    """The IPv4 and IPv6 addresses on `ifname` (in this network namespace),
    as ipaddress objects, sorted.  OSError when it cannot be read."""
    import ipaddress

    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        with IPRoute() as ipr:
            links = ipr.link_lookup(ifname=ifname)
            if not links:
                raise OSError(f"no interface {ifname}")
            out = {ipaddress.ip_address(a.get_attr("IFA_ADDRESS"))
                   for a in ipr.get_addr(index=links[0])}
    except NetlinkError as e:
        raise OSError(e.code, str(e)) from None
    return sorted(out, key=lambda a: (a.version, a.packed))


def idle_timeouts(idle_timeout: Optional[float] = None):
    """(idle, half-open) timeouts in seconds: the argument, else the
    environment's WGMUX_SESSION_IDLE_TIMEOUT, else SESSION_IDLE_TIMEOUT."""
    if idle_timeout is None:
        raw = os.environ.get(IDLE_TIMEOUT_ENV)
        idle_timeout = float(raw) if raw else SESSION_IDLE_TIMEOUT
    idle_timeout = float(idle_timeout)
    if idle_timeout <= 0:
        raise ValueError(f"session idle timeout must be positive, not {idle_timeout}")
    return idle_timeout, min(HALF_OPEN_TIMEOUT, idle_timeout)


def live_pairs(pairs, now_ns: int, idle_s: float, half_open_s: float,
               expire_s: float = REJECT_AFTER_TIME + EXPIRY_MARGIN):
    """Split status.session_pairs(..., wall_clock=False) into (live, stale):
    stale ones are idle past their timeout or older than a keypair lives."""
    live, stale = [], []
    for p in pairs:
        # as collect_idle(): a pair not yet confirmed by transport both ways
        # keeps the half-open timeout
        limit = idle_s if p.get("confirmed", p["state"] == "established") else half_open_s
        dead = (now_ns - p["last_seen"] > limit * 1e9
                or now_ns - p["created"] > expire_s * 1e9)
        (stale if dead else live).append(p)
    return live, stale


class Daemon:
    slowpath = None                    # wgmux.slowpath.SlowPath while serving
    metrics = None                     # wgmux.metrics.MetricsServer with MetricsListen
    _session_log_off = False           # above SESSION_LOG_MAX pairs
    _summary = None                    # (wall, monotonic, summary): a big table's last tick
    _summary_wanted_until = 0.0        # monotonic: the ticks count while someone asks

    def __init__(self, config: Config, idle_timeout: Optional[float] = None,
                 fresh: bool = False, pin: bool = True, keep_attached: bool = False):
        self.config = config
        self.datapath = None
        self.control: Optional[control.ControlServer] = None
        self.endpoints: dict = {}      # port -> (ip, port) currently in the map
        # Interface's addresses as last given to the datapath (None: the last read failed)
        self.addresses: Optional[list] = []
        self._martian_warned: dict = {}   # port -> the martian endpoint warned about
        # ports whose endpoint the device lost: self.endpoints keeps the last known
        self.last_known: set = set()
        self.device = None
        self.started = time.time()
        self.idle_timeout, self.half_open_timeout = idle_timeouts(idle_timeout)
        self.gc_interval = min(GC_INTERVAL, max(0.5, self.idle_timeout / 4))
        self.fresh = fresh             # drop pinned state at start
        self.pin = pin                 # pin the maps (restart without loss)
        # a stop after serving leaves the program attached (see the module doc)
        self.keep_attached = keep_attached
        self.pin_dir = None
        self.mode: Optional[str] = None    # what runs: "xdp" (in front of TC), "tc", "mixed"
        self.modes: dict = {}              # interface -> "xdp" or "tc"
        self.ifindexes: dict = {}          # interface -> ifindex, as attached
        self.reloads = 0
        self._logged_sessions: dict = {}
        self._drops_logged: dict = {}
        self._reload_requested = False
        self._stop = threading.Event()
        self._lock = threading.Lock()

    # -- lifecycle ----------------------------------------------------------
    def start(self, early: Optional["EarlySignals"] = None):
        """`early`: a stop before the attach ends the process at once
        (EarlySignals)."""
        try:
            self.device = preflight.before_serve(self.config)
        except preflight.Failed as e:
            raise ServeError(str(e)) from None
        self.control = control.ControlServer(self.config.interface, self.handle_request)
        if early is not None:
            early.on_abort = self.control.close
        try:
            from .datapath import Datapath
            from .model import DatapathError

            self.pin_dir = self._pin_dir()
            if self.pin_dir is not None and self.fresh and self.pin_dir.exists():
                pinning.purge(self.pin_dir)
                log.info("--fresh: removed the pinned state in %s", self.pin_dir)
            try:
                self.datapath = Datapath(hub_port=self.config.hub_port,
                                         amnezia=self.config.amnezia, pin_dir=self.pin_dir,
                                         max_sessions=self.config.max_sessions)
            except DatapathError as e:
                raise ServeError(str(e)) from None
            self.datapath.set_slow_rate(self.config.handshake_rate, self.config.handshake_burst)
            self.datapath.set_port_budget(self.config.initiation_rate,
                                          self.config.initiation_burst)
            self.sync_addresses()
            if early is not None:
                early.commit()
            self._adopt_pinned_state()
            for ifname in self.config.interfaces[1:]:
                if control.serving(ifname):
                    raise ServeError(self._taken(ifname))
            for ifname in self.config.interfaces:
                try:
                    # replace: a killed predecessor's program is swapped out
                    # atomically (the control socket proves none is running)
                    self.ifindexes[ifname] = self.datapath.attach(ifname, replace=True)
                except DatapathError as e:
                    raise ServeError(str(e)) from None
                if self.datapath.replaced_filter:
                    log.info("took over from the datapath a previous wgmux left attached to "
                             "%s (%s)", ifname, self.datapath.replaced_filter)
                self.modes[ifname] = self._attach_xdp(ifname)
            self.datapath.set_interfaces(list(self.ifindexes.values()))
            self._leave_unlisted_interfaces()
            modes = set(self.modes.values())
            self.mode = modes.pop() if len(modes) == 1 else "mixed"
            log.info("attached to %s, hub port %d, %d responder port(s): %s",
                     ", ".join(f"{i} ({MODE_TEXT[m]})" for i, m in self.modes.items()),
                     self.config.hub_port, len(self.config.peers),
                     " ".join(str(p.port) for p in self.config.peers) or "-")
            self._warn_routing(self.config)
            self._record_peers()
            self.sync_endpoints(self.device)
            self._start_slowpath()
            self._start_metrics()
            memory.release_after_load()
        except BaseException:
            self.stop()
            raise
        self.control.start()

    def _leave_unlisted_interfaces(self):
        """A predecessor (kept attached, or killed) may have served an
        interface this config no longer lists: its program there would
        keep running on the shared maps.  Removed, and the interfaces
        served now recorded for the next start."""
        from . import tc, xdp
        from .model import DatapathError

        pin_dir = self.datapath.pin_dir
        if pin_dir is None:
            return
        before = (pinning.read_state(pin_dir) or {}).get("interfaces") or {}
        for ifname, ifindex in before.items():
            if ifname in self.ifindexes:
                continue
            try:
                removed = xdp.remove_leftovers(ifname)
                removed += tc.remove_leftovers(ifname, pin_dir, keep_pins=True)
            except (DatapathError, OSError) as e:
                log.warning("cannot remove what a previous wgmux left on %s, which Interface "
                            "no longer lists: %s", ifname, e)
                continue
            for what in removed:
                log.info("removed the %s (Interface no longer lists %s)", what, ifname)
        try:
            pinning.update_state(pin_dir, interfaces=self.ifindexes)
        except (OSError, pinning.PinError) as e:
            log.warning("cannot record the interfaces in %s: %s", pin_dir, e)

    def _attach_xdp(self, iface: str) -> str:
        """XDP in front of TC on `iface` as Datapath says (TC is attached
        there already, so whatever XDP passes has somewhere to go).
        Returns what runs there: "xdp" or "tc"."""
        from . import xdp
        from .model import DatapathError

        want = self.config.datapath
        why_not = None
        if want == "auto":
            try:
                why_not = xdp.auto_refusal(iface)
            except DatapathError as e:
                why_not = str(e)
        if want != "tc" and why_not is None:
            try:
                self.datapath.attach_xdp(iface, replace=True)
            except DatapathError as e:
                if want == "xdp":
                    raise ServeError(f'Datapath = "xdp" (from {self.config.path}): {e}; '
                                     f'"auto" falls back to TC ingress') from None
                why_not = str(e)
            else:
                old = self.datapath.replaced_xdp
                if old is not None:
                    log.info("took over from the XDP program a previous wgmux left attached "
                             "to %s (id %d)", iface, old.prog_id)
                return "xdp"
        # TC only: a predecessor's XDP program (another Datapath then) goes
        for what in xdp.remove_leftovers(iface):
            log.info("removed the %s a previous wgmux left (Datapath = %r now)", what, want)
        if why_not:
            log.info('Datapath "auto": TC ingress only on %s: %s', iface, why_not)
        return "tc"

    def _start_metrics(self):
        if not self.config.metrics_listen:
            return
        from .metrics import MetricsServer

        try:
            self.metrics = MetricsServer(self.config.metrics_listen,
                                         lambda: self.status(summary=True))
        except OSError as e:
            host, port = self.config.metrics_listen
            raise ServeError(f"MetricsListen {host}:{port} (from {self.config.path}): "
                             f"{e.strerror or e}") from None
        self.metrics.start()
        log.info("metrics on http://%s:%d/metrics", *self.metrics.address)

    def _pin_dir(self):
        if not self.pin:
            log.warning("maps not pinned (--no-pin): a restart drops every session")
            return None
        bpffs = preflight.check_bpffs()
        if bpffs.status != preflight.OK:
            log.warning("%s; %s", bpffs.text, bpffs.hint)
            return None
        # named after the first Interface: adding another keeps the state
        return pinning.pin_dir_for(self.config.interface)

    def _adopt_pinned_state(self):
        """Fill the ports map for the config, keeping what a previous
        instance left pinned where it still applies."""
        dp = self.datapath
        log.info("datapath: %s", dp.program.bytecode)
        for why in dp.fresh_reasons:
            log.warning("pinned state in %s not reused (%s): starting with no sessions",
                        dp.pin_dir, why)
        resized = dp.program.resized_sessions
        if resized:
            kept, left = resized
            log.info("MaxSessions is %d now: the session table was resized, %d session "
                     "entries carried over%s", dp.max_sessions, kept,
                     f", {left} (the least recently used) left out for lack of room"
                     if left else "")
        if not dp.reused:
            if dp.pin_dir is not None:
                log.info("maps pinned in %s", dp.pin_dir)
            for peer in self.config.peers:
                dp.set_responder(peer.port)
            return
        if dp.previous_hub_port and dp.previous_hub_port != self.config.hub_port:
            n = len(dp.sessions())
            dp.flush_sessions()
            log.warning("HubPort changed from %d to %d since the pinned state was written: "
                        "dropped its %d session entries (they are keyed by the old one)",
                        dp.previous_hub_port, self.config.hub_port, n)
        dp.invalidate_next_hops()    # the interface may have been recreated
        recorded = (pinning.read_state(dp.pin_dir) or {}).get("peers") or {}
        current = dp.responders()
        for port in sorted(current):
            peer = self.config.peer_by_port(port)
            old_key = recorded.get(str(port))
            if peer is None or (old_key is not None and old_key != peer.public_key):
                n = self._drop_port(port)
                log.info("port %d is %s since the pinned state was written: removed with its "
                         "%d session entries", port,
                         "no longer in the config" if peer is None else "another responder's",
                         n)
                current.pop(port)
        for peer in self.config.peers:
            if peer.port in current:
                ep = current[peer.port].endpoint
                self.endpoints[peer.port] = (str(ep.ip), ep.port) if ep else None
            else:
                dp.set_responder(peer.port)
        log.info("reusing the pinned state in %s: %d session entries, %d responder port(s)",
                 dp.pin_dir, len(dp.sessions()), len(current))

    def _record_peers(self):
        if self.datapath is not None and self.datapath.pin_dir is not None:
            try:
                pinning.update_state(self.datapath.pin_dir, peers={
                    str(p.port): p.public_key for p in self.config.peers})
            except (OSError, pinning.PinError) as e:
                log.warning("cannot record the peers in %s: %s", self.datapath.pin_dir, e)

    def _drop_port(self, port: int) -> int:
        """Stop reflecting for `port`: end its sessions (both directions,
        and half-open ones that would be answered from it) and forget the
        initiators learned on it.  Returns the session entries deleted."""
        dp = self.datapath
        before = len(dp.sessions())
        dp.remove_responder(port, flush_sessions=True)
        for s in dp.sessions():
            if s.src_port == port:
                dp.delete_session(s.port, s.index, reverse=True)
        # The initiators learned on the port talked to its old responder: a
        # new one there must not start handshakes towards them.
        if self.slowpath is not None:
            self.slowpath.forget_port(port)
        else:
            for li in dp.initiators():
                if li.port == port:
                    dp.forget_initiator(port, li.public_key)
        self.endpoints.pop(port, None)
        return before - len(dp.sessions())

    def _start_slowpath(self):
        """Handshakes by mac1 (wgmux.slowpath): reads the config and the hub
        device's peers as they are when each message comes."""
        from .slowpath import SlowPath, SlowPathError

        self.slowpath = SlowPath(self.datapath, lambda: self.config, lambda: self.device)
        try:
            self.slowpath.start()
        except SlowPathError as e:
            self.slowpath = None
            raise ServeError(str(e)) from None

    def stop(self, keep_attached: bool = False):
        """Stop serving.  `keep_attached`: leave the program attached (only
        with pinned maps: without them no successor could take its
        sessions over, so it is detached anyway)."""
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None
        if self.slowpath is not None:
            self.slowpath.stop()      # before the maps and ring buffer go
            self.slowpath = None
        if self.datapath is not None:
            dp = self.datapath
            keep = keep_attached and dp.pin_dir is not None and bool(dp.attachments)
            try:
                dp.close(keep_attached=keep)
                names = ", ".join(self.config.interfaces)
                if keep:
                    log.info("left attached to %s on the maps pinned in %s: established "
                             "sessions keep flowing until the next start takes over (new "
                             "handshakes wait for it); `wgmux detach` removes it",
                             names, dp.pin_dir)
                else:
                    log.info("detached from %s", names)
                    if dp.pin_dir is not None:
                        log.info("pinned state kept in %s for the next start (wgmux purge "
                                 "removes it)", dp.pin_dir)
            finally:
                self.datapath = None
        if self.control is not None:
            self.control.close()
            self.control = None

    def request_stop(self, *_):
        self._stop.set()

    def request_reload(self, *_):
        self._reload_requested = True   # done by the loop, not in the handler

    def run(self, early: Optional["EarlySignals"] = None):
        """Serve until SIGTERM/SIGINT; returns after detaching.  `early`:
        the signals that arrived before (while starting), acted on now."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGHUP, self.request_reload)
        signal.set_wakeup_fd(-1)    # EarlySignals' watcher: no longer needed
        if early is not None:       # read after our handlers are in place
            if early.stop:
                log.info("a stop was requested while starting: stopping")
                self._stop.set()
            if early.reload:
                log.info("a reload was requested while starting: reloading now")
                self._reload_requested = True
        next_gc = time.monotonic() + self.gc_interval
        next_drop_summary = time.monotonic() + DROP_SUMMARY_INTERVAL
        try:
            while not self._stop.wait(SYNC_INTERVAL):
                if self._reload_requested:
                    self._reload_requested = False
                    self.reload_guarded()
                try:
                    self.sync_endpoints()
                except discovery.DiscoveryError as e:
                    log.warning("cannot read %s: %s", self.config.device, e)
                self.sync_addresses()
                if time.monotonic() >= next_gc:
                    entries = self.collect_and_log()
                    memory.trim_heap()     # RSS back down after a burst of work
                    next_gc = time.monotonic() + self.gc_interval * (
                        1 + entries // GC_ENTRIES_PER_INTERVAL)
                if time.monotonic() >= next_drop_summary:
                    self.log_drops()
                    next_drop_summary = time.monotonic() + DROP_SUMMARY_INTERVAL
        finally:
            self.log_drops()
            self.stop(keep_attached=self.keep_attached)

    def collect_and_log(self) -> int:
        """One read of the table's columns for collection, the session log
        and, for a table too big to count on demand, the summary `show
        --summary` and the metrics answer with until the next tick; returns
        how many entries it had."""
        with self._lock:
            columns = self.datapath.session_columns()
        if len(columns) > SHOW_LIST_MAX and time.monotonic() < self._summary_wanted_until:
            self._summary = (time.time(), time.monotonic(), self._sessions_summary(columns))
        else:
            self._summary = None
        self.collect_idle(columns=columns)
        self.log_sessions(columns)
        return len(columns)

    def log_sessions(self, columns=None):
        """One line when a session comes up (a response went through) or
        goes (collected, or its port removed).  Only the pairs that came up
        are read in full: a full map costs one lean scan.  Above
        SESSION_LOG_MAX pairs, one line says the log stops saying each."""
        dp = self.datapath
        with self._lock:
            pairs = dp.established_pairs(columns)
        logged = self._logged_sessions
        if len(pairs) > SESSION_LOG_MAX:
            if not self._session_log_off:
                log.info("%d sessions: the log no longer says each one that comes or goes "
                         "(more than %d; `wgmux show --summary` counts them)",
                         len(pairs), SESSION_LOG_MAX)
            self._session_log_off = True
            logged.clear()
            return
        self._session_log_off = False
        for key in pairs.keys() - logged.keys():
            i2r, r2i = (dp.session(*link.key) for link in pairs[key])
            if i2r is None or r2i is None:
                continue        # gone since the scan: never up for the log
            logged[key] = {"port": key[0], "initiator": str(r2i.dst) if r2i.dst else None,
                           "responder": str(i2r.dst) if i2r.dst else None}
            log.info("session up: port %d, initiator %s <-> responder %s", key[0],
                     logged[key]["initiator"], logged[key]["responder"])
        for key in list(logged):
            if key in pairs:
                i2r, r2i = pairs[key]
                logged[key]["packets"] = (i2r.packets, r2i.packets)
                continue
            p = logged.pop(key)
            i2r_packets, r2i_packets = p.get("packets", (0, 0))
            log.info("session down: port %d, initiator %s <-> responder %s (%d+%d packets)",
                     p["port"], p["initiator"], p["responder"], i2r_packets, r2i_packets)

    def log_drops(self):
        """Drops summarised per interval, never a line per packet."""
        if self.datapath is None:
            return
        counters = self.datapath.counters()
        drops = {k: v - self._drops_logged.get(k, 0) for k, v in counters.items()
                 if "drop_" in k and v > self._drops_logged.get(k, 0)}
        self._drops_logged = {k: v for k, v in counters.items() if "drop_" in k}
        if drops:
            log.warning("dropped since the last summary: %s",
                        ", ".join(f"{k}={v}" for k, v in sorted(drops.items())))

    def reload_guarded(self) -> bool:
        """reload(), but nothing it raises ends the daemon: whatever went
        wrong, the running config stays and serving goes on."""
        try:
            return self.reload()
        except Exception as e:
            log.exception("reload rejected, the running config stays: %s: %s",
                          type(e).__name__, e)
            return False

    def reload(self) -> bool:
        """Apply the config file again (SIGHUP); see the module doc."""
        old = self.config
        path = old.path
        try:
            new = load_bounded(path)
        except (ConfigError, OSError) as e:
            log.error("reload rejected, the running config stays: %s",
                      " / ".join(str(e).splitlines()))
            return False
        problems, device = [], None
        if new.interface != old.interface:
            was, now = (i[0] if len(i) == 1 else list(i) for i in (old.interfaces,
                                                                   new.interfaces))
            problems.append(f"Interface changed from {was!r} to {now!r} (from {path}): the "
                            f"first one names the instance (pin directory, control socket) "
                            f"and cannot change on reload; restart wgmux serve")
        elif new.interfaces != old.interfaces:
            present = preflight.check_interface(new)
            if present.status == preflight.FAIL:
                problems.append(present.text)
        if new.datapath != old.datapath:
            problems.append(f"Datapath changed from {old.datapath!r} to {new.datapath!r} (from "
                            f"{path}): it cannot change on reload; restart wgmux serve "
                            f"(sessions are kept)")
        if new.max_sessions != old.max_sessions:
            problems.append(f"MaxSessions changed from {old.max_sessions} to "
                            f"{new.max_sessions} (from {path}): the kernel sized the session "
                            f"table at start; restart wgmux serve (sessions are carried over "
                            f"while they fit)")
        if new.hub_port != old.hub_port:
            problems.append(f"HubPort changed from {old.hub_port} to {new.hub_port} (from "
                            f"{path}): every session is keyed by it; restart wgmux serve "
                            f"(sessions are dropped)")
        if not problems and (new.device != old.device or new.wg_util != old.wg_util):
            try:
                device = preflight.hub_device(new)
            except preflight.Failed as e:
                problems.append(str(e))
        if not problems and new.interfaces != old.interfaces:
            try:
                self._change_interfaces(new.interfaces)
            except ServeError as e:
                problems.append(str(e))
        if problems:
            for problem in problems:
                log.error("reload rejected, the running config stays: %s", problem)
            return False
        old_peers = {p.port: p for p in old.peers}
        new_peers = {p.port: p for p in new.peers}
        removed = sorted(port for port, p in old_peers.items()
                         if port not in new_peers or new_peers[port].public_key != p.public_key)
        added = sorted(port for port, p in new_peers.items()
                       if port not in old_peers or old_peers[port].public_key != p.public_key)
        with self._lock:
            for port in removed:
                n = self._drop_port(port)
                log.info("reload: port %d (%s…) removed, %d session entries ended", port,
                         old_peers[port].public_key[:8], n)
            for port in added:
                self.datapath.set_responder(port)
                log.info("reload: port %d (%s…) added", port, new_peers[port].public_key[:8])
            limit = (new.handshake_rate, new.handshake_burst)
            budget = (new.initiation_rate, new.initiation_burst)
            if new.amnezia != old.amnezia:
                # configure() rewrites the whole config entry, limits included
                self.datapath.configure(new.hub_port, new.amnezia, slow_rate=limit[0],
                                        slow_burst=limit[1], port_rate=budget[0],
                                        port_burst=budget[1])
                log.info("reload: AmneziaWG parameters changed, applied to the datapath")
            if limit != (old.handshake_rate, old.handshake_burst):
                self.datapath.set_slow_rate(*limit)
                log.info("reload: handshake rate limit per source now %s",
                         f"{limit[0]:g}/s, burst {limit[1]}" if limit[0] else "off")
            if budget != (old.initiation_rate, old.initiation_burst):
                self.datapath.set_port_budget(*budget)
                log.info("reload: initiation budget per port now %s",
                         f"{budget[0]:g}/s, burst {budget[1]}" if budget[0] else "off")
            if device is not None:
                log.info("reload: Device is now %s (%s)", new.device, new.wg_util)
                self.device = device
            self.config = new
            self.reloads += 1
        if new.interfaces != old.interfaces:
            self.sync_addresses()            # the new list's addresses, at once
            self._warn_routing(new)
        self._record_peers()
        try:
            self.sync_endpoints(device)
        except discovery.DiscoveryError as e:
            log.warning("cannot read %s: %s", new.device, e)
        log.info("reloaded %s: %d port(s) added, %d removed, %d unchanged", path, len(added),
                 len(removed), len(set(new_peers) - set(added)))
        return True

    @staticmethod
    def _warn_routing(config):
        """What makes reflected packets slow or lost but does not stop
        serving: forwarding off, an address routed out by another
        interface (preflight)."""
        for result in (preflight.check_forwarding(config), preflight.check_source_routes(config)):
            if result.status == preflight.WARN:
                log.warning("%s; %s", result.text, result.hint)

    def _taken(self, ifname: str) -> str:
        return (f"Interface {ifname!r} (from {self.config.path}) is served by another wgmux "
                f"(the one whose first Interface it is, {control.address(ifname)}): one "
                f"program per interface; stop that one or take {ifname!r} out of this list")

    def _change_interfaces(self, interfaces):
        """Serve `interfaces` (the first unchanged) from now on: attach to
        the added ones as a start would, then detach from the removed ones.
        ServeError, with whatever this attached removed again, when an
        added one cannot be served.  `ifindexes` and `modes` are replaced,
        not changed in place: `status` reads them from the control thread."""
        from pyroute2.netlink.exceptions import NetlinkError

        from .model import DatapathError

        ifindexes, modes = dict(self.ifindexes), dict(self.modes)
        added = [i for i in interfaces if i not in ifindexes]
        removed = [i for i in ifindexes if i not in interfaces]
        for ifname in added:
            if control.serving(ifname):
                raise ServeError(self._taken(ifname))
        done = []
        try:
            for ifname in added:
                ifindexes[ifname] = self.datapath.attach(ifname, replace=True)
                done.append(ifname)
                modes[ifname] = self._attach_xdp(ifname)
        except (DatapathError, ServeError, NetlinkError, OSError) as e:
            for attached in done:
                self.datapath.detach_interface(ifindexes[attached])
            raise ServeError(f"cannot serve Interface {ifname!r}: {e}") from None
        stuck = {}      # still recorded, for the next start or `wgmux detach` to remove
        for ifname in removed:
            try:
                self.datapath.detach_interface(ifindexes[ifname])
            except (NetlinkError, OSError) as e:
                stuck[ifname] = ifindexes[ifname]
                log.warning("reload: cannot remove the program from %s, which Interface no "
                            "longer lists (the next start, or wgmux detach after a stop, "
                            "removes it): %s", ifname, e)
        self.ifindexes = {i: ifindexes[i] for i in interfaces}
        self.modes = {i: modes[i] for i in interfaces}
        # an interface whose slot changes starts its counts again
        self.datapath.set_interfaces(list(self.ifindexes.values()))
        kinds = set(self.modes.values())
        self.mode = kinds.pop() if len(kinds) == 1 else "mixed"
        if self.datapath.pin_dir is not None:
            try:
                pinning.update_state(self.datapath.pin_dir,
                                     interfaces={**self.ifindexes, **stuck})
            except (OSError, pinning.PinError) as e:
                log.warning("cannot record the interfaces in %s: %s", self.datapath.pin_dir, e)
        log.info("reload: Interface now %s%s%s", ", ".join(
            f"{i} ({MODE_TEXT[self.modes[i]]})" for i in interfaces),
            f"; attached to {', '.join(added)}" if added else "",
            f"; removed from {', '.join(removed)}" if removed else "")

    # -- control plane ------------------------------------------------------
    def sync_addresses(self):
        """Give the datapath the hub's current addresses on its Interfaces:
        it reflects only packets addressed to one of them."""
        current = []
        try:
            for ifname in self.config.interfaces:
                current.append((ifname, interface_addresses(ifname)))
        except OSError as e:
            if self.addresses is not None:    # once per failure, not every 0.5 s
                log.warning("cannot read the addresses of %s: %s (the datapath keeps the "
                            "last ones)", ifname, e)
                self.addresses = None
            return
        if current == self.addresses:
            return
        where = {a: ifname for ifname, addrs in reversed(current) for a in addrs}
        left_out = self.datapath.set_hub_addresses(where)
        served = self.datapath.hub_addresses()
        names = ", ".join(self.config.interfaces)
        if not served:
            log.warning("%s %s no address wgmux can serve: nothing is reflected until %s one",
                        names, "has" if len(current) == 1 else "have",
                        "it has" if len(current) == 1 else "they have")
        else:
            log.info("serving on %s", "; ".join(
                f"{ifname}: {' '.join(str(a) for a in served if where.get(a) == ifname) or '-'}"
                for ifname, _ in current))
        if left_out:
            log.warning("%s %s more than %d addresses of a family; packets to these are not "
                        "reflected: %s", names, "has" if len(current) == 1 else "have",
                        MAX_HUB_ADDRS, " ".join(str(a) for a in left_out))
        self.addresses = current

    def sync_endpoints(self, device=None):
        device = device or discovery.read_device(self.config.device, self.config.wg_util)
        with self._lock:
            self.device = device
            for peer in self.config.peers:
                info = device.peers.get(peer.public_key)
                endpoint = info.endpoint if info else None
                if endpoint is not None and not can_be_peer(endpoint[0]):
                    # the datapath's rule: never reflect towards a martian
                    if self._martian_warned.get(peer.port) != endpoint:
                        log.warning("responder on port %d (%s…): %s reports endpoint %s, "
                                    "which no peer can have; ignored", peer.port,
                                    peer.public_key[:8], self.config.device,
                                    endpoint_text(endpoint))
                        self._martian_warned[peer.port] = endpoint
                    endpoint = None
                old = self.endpoints.get(peer.port)
                # A device not listening on HubPort is not configured (yet):
                # wg-quick and wireguard-go create it empty, then `wg
                # setconf` gives it its port and peers.  Not being its peer
                # then says nothing about the responder.
                configured = device.listen_port == self.config.hub_port
                if endpoint is None and old is not None and (info is not None
                                                             or not configured):
                    # The device lost it (its WireGuard restarted, same key
                    # and port): the responder is most likely still there,
                    # and keeps its NAT mapping open with keepalives.  Keep
                    # the last known endpoint until the device reports one.
                    if peer.port not in self.last_known:
                        log.warning("responder on port %d (%s…): %s has no endpoint for it "
                                    "now; keeping the last known %s", peer.port,
                                    peer.public_key[:8], self.config.device, endpoint_text(old))
                        self.last_known.add(peer.port)
                    continue
                self.last_known.discard(peer.port)
                if peer.port in self.endpoints and endpoint == self.endpoints[peer.port]:
                    continue
                if endpoint is None:
                    # The port stays a peer port (initiations to it are
                    # dropped, not passed to the stack); only its target goes.
                    self.datapath.set_responder(peer.port)
                    self.endpoints[peer.port] = None
                    why = "not a peer of" if info is None else "has no endpoint on"
                    log.warning("responder on port %d (%s…) %s %s: initiations to it are dropped",
                                peer.port, peer.public_key[:8], why, self.config.device)
                else:
                    self.datapath.set_responder(peer.port, endpoint[0], endpoint[1])
                    log.info("responder on port %d (%s…) is at %s", peer.port,
                             peer.public_key[:8], endpoint_text(endpoint))
                    self.endpoints[peer.port] = endpoint
                    if old and old != endpoint:
                        # The responder moved (NAT rebinding, new address):
                        # its established sessions follow at once, instead
                        # of waiting for it to send first (a receiving
                        # responder may not, until WireGuard re-handshakes).
                        # Those the datapath already followed to a mapping
                        # that went since (a second rebinding) come too.
                        n = self.datapath.retarget(old, endpoint, self.config.hub_port,
                                                   peer_port=peer.port)
                        if n:
                            log.info("responder on port %d moved from %s: %d session entr%s "
                                     "follow", peer.port, endpoint_text(old), n,
                                     "y" if n == 1 else "ies")

    def collect_idle(self, now_ns: Optional[int] = None, columns=None):
        """`now_ns`: the monotonic clock's reading to judge by (tests);
        `columns`: the table as the caller read it."""
        with self._lock:
            removed = self.datapath.collect_idle(self.idle_timeout, self.half_open_timeout,
                                                 now_ns=now_ns, columns=columns)
        if removed:
            log.info("collected %d idle session entr%s", removed, "y" if removed == 1 else "ies")

    def status(self, summary: bool = False, port: Optional[int] = None) -> dict:
        """What `show` prints.  `summary`: the sessions counted (and summed
        per port) from the table's columns instead of listed
        (`sessions_summary`, no `sessions`): what a big table and the
        metrics want.  `port`: only that peer port's sessions are read and
        listed."""
        with self._lock:
            device = self.device
            peers = []
            for peer in self.config.peers:
                info = device.peers.get(peer.public_key) if device else None
                peers.append({
                    "port": peer.port,
                    "public_key": peer.public_key,
                    "endpoint": endpoint_text(self.endpoints.get(peer.port)),
                    "endpoint_last_known": peer.port in self.last_known,
                    "latest_handshake": info.latest_handshake if info else 0,
                    "known_to_device": info is not None,
                })
            return {
                "interface": self.config.interface,
                "interfaces": self._interfaces_status(),
                "device": self.config.device,
                "hub_port": self.config.hub_port,
                "datapath": self.mode,
                "datapath_setting": self.config.datapath,
                "config": str(self.config.path),
                "pid": os.getpid(),
                "started": self.started,
                "now": time.time(),
                "peers": peers,
                **(self._summary_now() if summary else self._sessions_status(port)),
                "counters": self.datapath.counters(),
                "slow_path": self.slowpath.status() if self.slowpath else None,
                "pin_dir": str(self.datapath.pin_dir) if self.datapath.pin_dir else None,
                "reused_pinned_state": self.datapath.reused,
                "reloads": self.reloads,
                "session_idle_timeout": self.idle_timeout,
                "max_sessions": self.datapath.max_sessions,
            }

    def _interfaces_status(self) -> list:
        """Per interface served: its ifindex, what runs there, and (with
        several) what arrived on it and was reflected or dropped, and what
        was reflected out of it (spec §4c)."""
        counts = self.datapath.interface_counters() if len(self.ifindexes) > 1 else {}
        return [{"name": name, "ifindex": ifindex, "datapath": self.modes.get(name),
                 **counts.get(ifindex, {})}
                for name, ifindex in self.ifindexes.items()]

    def _summary_now(self) -> dict:
        """The summary.  Counting a big table takes seconds (a million
        entries: ~3 s), so for one while someone asks (the metrics are
        scraped, `show --summary` runs) the collection tick, which reads the
        table anyway, counts it too and this answers with that at once
        (`summary_as_of` says when); nobody asking for SUMMARY_WANTED_S, the
        ticks stop counting.  Else, and for a small table, counted now."""
        self._summary_wanted_until = time.monotonic() + SUMMARY_WANTED_S
        cached = self._summary
        if cached is not None and time.monotonic() - cached[1] < 2 * self.gc_interval * (
                1 + cached[2]["sessions_summary"]["entries"] // GC_ENTRIES_PER_INTERVAL):
            return {**cached[2], "summary_as_of": cached[0]}
        return self._sessions_summary()

    def _sessions_summary(self, columns=None) -> dict:
        s = session_summary(columns or self.datapath.session_columns(), self.datapath.hub_port,
                            monotonic_ns(), self.idle_timeout, self.half_open_timeout,
                            REJECT_AFTER_TIME + EXPIRY_MARGIN)
        return {"sessions_summary": s, "stale_sessions": s["stale"]}

    def _sessions_status(self, port: Optional[int] = None) -> dict:
        """Live sessions for `show` (of one peer port: only its entries are
        read); entries only awaiting collection are counted, not listed.
        A table of more than SHOW_LIST_MAX entries is counted, not listed
        (`sessions_listed` false)."""
        if port is None:
            columns = self.datapath.session_columns()
            if len(columns) > SHOW_LIST_MAX:
                return {**self._sessions_summary(columns), "sessions_listed": False}
        entries = (self.datapath.sessions() if port is None
                   else self.datapath.sessions_of_port(port))
        pairs = session_pairs(entries, self.datapath.hub_port, wall_clock=False)
        if port is not None:
            pairs = [p for p in pairs if p["port"] == port]
        clock = Clock.now()
        live, stale = live_pairs(pairs, clock.mono, self.idle_timeout, self.half_open_timeout)
        names = {i: n for n, i in self.ifindexes.items()} if len(self.ifindexes) > 1 else {}
        for p in live:
            for k in ("created", "last_seen"):
                p[k] = clock.wall_time(p[k])
            if names:       # which uplink each side is on (spec §4c)
                for side in ("initiator", "responder"):
                    p[f"{side}_interface"] = names.get(p[f"{side}_ifindex"])
        return {"sessions": live, "stale_sessions": len(stale)}

    def handle_request(self, req: dict) -> dict:
        if req.get("cmd") == "status":
            port = req.get("port")
            if port is not None and (not isinstance(port, int) or isinstance(port, bool)
                                     or not 1 <= port <= 65535):
                return {"error": f"port must be 1-65535, not {port!r}"}
            return self.status(summary=bool(req.get("summary")), port=port)
        return {"error": f"unknown command {req.get('cmd')!r}"}
