"""Sessions over time, below the daemon's loop: the bounded table under
churn, idle collection with the daemon's timeouts, what `show` calls live,
and the daemon following a responder that moved (Datapath.retarget through
Daemon.sync_endpoints), checked on the program with BPF_PROG_TEST_RUN.
"""

from __future__ import annotations

import logging
import os

import pytest

from wgmux import daemon as dmod
from harness import golden as g
from wgmux import packet as pk
from wgmux.discovery import DeviceInfo, PeerInfo
from harness.testrun import TC_ACT_REDIRECT

NS = 10**9


def test_idle_timeouts(monkeypatch):
    monkeypatch.delenv(dmod.IDLE_TIMEOUT_ENV, raising=False)
    assert dmod.idle_timeouts() == (540, 30)
    assert dmod.idle_timeouts(3) == (3.0, 3.0)
    monkeypatch.setenv(dmod.IDLE_TIMEOUT_ENV, "7.5")
    assert dmod.idle_timeouts() == (7.5, 7.5)
    assert dmod.idle_timeouts(100) == (100.0, 30)
    with pytest.raises(ValueError):
        dmod.idle_timeouts(0)


def test_live_pairs():
    now = 1000 * NS
    pair = lambda state, created, last: {"state": state, "created": now - created * NS,  # noqa
                                         "last_seen": now - last * NS}
    busy = pair("established", 100, 1)
    idle = pair("established", 700, 541)
    replaced = pair("established", 191, 1)      # its keys are past 180 s + margin
    young_half = pair("half-open", 5, 5)
    old_half = pair("half-open", 31, 31)
    live, stale = dmod.live_pairs([busy, idle, replaced, young_half, old_half], now, 540, 30)
    assert live == [busy, young_half]
    assert stale == [idle, replaced, old_half]


# ---- with the program ----------------------------------------------------------

try:
    import bcc  # noqa: F401
    HAVE_BCC = True
except ImportError:
    HAVE_BCC = False
root = pytest.mark.skipif(os.geteuid() != 0 or not HAVE_BCC,
                          reason="needs root and bcc (eBPF, namespaces)")

from wgmux.datapath import Datapath  # noqa: E402  (bcc only at use)
from wgmux.model import monotonic_ns  # noqa: E402
from wgmux.status import session_pairs  # noqa: E402


@root
def test_churn_stays_bounded_and_is_collected():
    """Many half-open sessions (initiations nobody answers): the table
    holds at most max_sessions, refuses the rest without evicting, and
    collection of the idle ones makes room again."""
    n = 512
    with g.GoldenNet() as net, Datapath(g.HUB_PORT, max_sessions=n) as dp:
        g.with_established(dp_env := g.Env(dp, net))
        # timestamps from now on, judged 60 s later: a machine booted less
        # than a minute ago has no monotonic reading 60 s in the past
        past = monotonic_ns()
        for i in range(n - 2):
            dp.set_session(g.HUB_PORT, 0x1000 + i, g.E_I, g.P, expect=g.E_R,
                           created=past, last_seen=past)
        assert len(dp.sessions()) == n
        with pytest.raises(Exception):
            dp.set_session(g.HUB_PORT, 0xFFFF, g.E_I, g.P, expect=g.E_R)
        # a response to one of them needs one more entry: refused, counted
        before = dp.counters()["drop_sessions_full"]
        res = dp_env.run(g.inbound(g.E_R, g.hub(g.HUB_PORT),
                                   g.response(sender=0x5555, receiver=0x1000)))
        assert res.retval != TC_ACT_REDIRECT
        assert dp.counters()["drop_sessions_full"] == before + 1
        # the established pair keeps working at full table
        res = dp_env.run(g.inbound(g.E_I, g.hub(g.P), g.transport(g.R_IDX)))
        assert res.retval == TC_ACT_REDIRECT

        # transport the other way too: the pair is confirmed (540 s timeout)
        res = dp_env.run(g.inbound(g.E_R, g.hub(g.HUB_PORT), g.transport(g.I_IDX)))
        assert res.retval == TC_ACT_REDIRECT
        # the daemon's collection: half-open ones after 30 s of silence
        d = dmod.Daemon.__new__(dmod.Daemon)
        d.datapath, d.idle_timeout, d.half_open_timeout = dp, 540.0, 30.0
        import threading
        d._lock = threading.Lock()
        d.collect_idle(now_ns=past + 60 * NS)
        assert sorted(s.key for s in dp.sessions()) == sorted(
            [(g.HUB_PORT, g.I_IDX), (g.P, g.R_IDX)])
        # and there is room again
        res = dp_env.run(g.inbound(g.E_R, g.hub(g.HUB_PORT), g.transport(g.I_IDX)))
        assert res.retval == TC_ACT_REDIRECT
        dp.set_session(g.HUB_PORT, 0xFFFF, g.E_I, g.P, expect=g.E_R)
        assert len(dp.sessions()) == 3


@root
def test_collect_idle_keeps_a_pair_while_one_direction_is_busy():
    with Datapath(g.HUB_PORT) as dp:
        # "now" is 600 s ahead of the clock: no reading before boot needed
        old = monotonic_ns()
        now = old + 600 * NS
        recent = now - 1 * NS
        dp.set_session(g.HUB_PORT, 1, g.E_I, g.P, reverse=(g.P, 2), created=old, last_seen=old)
        dp.set_session(g.P, 2, g.E_R, g.HUB_PORT, reverse=(g.HUB_PORT, 1), created=old,
                       last_seen=recent)
        assert dp.collect_idle(540, 30, now_ns=now) == 0
        assert dp.collect_idle(540, 30, now_ns=now + 540 * NS) == 2
        assert dp.sessions() == []


def _config(port=g.P, key="A" * 43 + "="):
    from wgmux.config import parse

    return parse(f'[Interface]\nDevice = "wg0"\nHubPort = {g.HUB_PORT}\nInterface = "eth0"\n'
                 f'[[Peer]]\nPort = {port}\nPublicKey = "{key}"\n', "test.toml")


def _device(key, endpoint):
    return DeviceInfo("wg0", g.HUB_PORT, None,
                      {key: PeerInfo(key, endpoint, 1, 0, 0)}, "test")


def _follow(d, key, endpoint, caplog):
    """The device reports R at `endpoint`: the daemon says R's two session
    entries follow from E_R; they are returned (towards R, towards I)."""
    with caplog.at_level(logging.INFO, logger="wgmux"):
        d.sync_endpoints(_device(key, endpoint))
    assert f"responder on port {g.P} moved from {g.E_R[0]}:{g.E_R[1]}: 2 session " \
           f"entries follow" in caplog.text
    return d.datapath.session(g.P, g.R_IDX), d.datapath.session(g.HUB_PORT, g.I_IDX)


@root
def test_daemon_moves_sessions_when_the_responder_moves(caplog):
    """sync_endpoints: the hub's device reports a new endpoint for R; R's
    established sessions follow (sent to R from HubPort, expected from R on
    HubPort), the initiator's side is left alone, and the next packet from
    I goes to R's new endpoint."""
    config = _config()
    key = config.peers[0].public_key
    moved = ("203.0.113.21", 40000)
    with g.GoldenNet() as net, Datapath(g.HUB_PORT) as dp:
        env = g.Env(dp, net)
        g.with_established(env)
        d = dmod.Daemon(config)
        d.datapath = dp
        d.sync_endpoints(_device(key, g.E_R))
        assert dp.responders()[g.P].endpoint.port == g.E_R[1]

        to_r, to_i = _follow(d, key, moved, caplog)
        assert (str(to_r.dst), str(to_r.expect)) == ("203.0.113.21:40000", "198.51.100.10:43210")
        assert (str(to_i.dst), str(to_i.expect)) == ("198.51.100.10:43210", "203.0.113.21:40000")
        assert to_r.next_hop.state == "none"     # resolved again for the new target

        res = env.run(g.inbound(g.E_I, g.hub(g.P), g.transport(g.R_IDX)))
        assert res.retval == TC_ACT_REDIRECT
        out = pk.parse(res.data)
        assert (str(out.src), out.sport, str(out.dst), out.dport) == (g.HUB4, g.HUB_PORT, *moved)
        assert out.udp_checksum_ok() and out.ip_checksum_ok()
        # R's packets from the new endpoint are no roam: nothing left to learn
        before = dp.counters()["ev_roam"]
        res = env.run(g.inbound(moved, g.hub(g.HUB_PORT), g.transport(g.I_IDX)))
        assert res.retval == TC_ACT_REDIRECT
        assert dp.counters()["ev_roam"] == before


@root
def test_daemon_moves_sessions_the_datapath_followed_to_a_mapping_gone_since(caplog):
    """R's NAT rebinds twice between two reads of the device: R's packet
    from the first new mapping roams its sessions there (the datapath),
    then that mapping goes too, and the device reports the second.  The
    sessions follow from the mapping they are at, not only from the one
    the daemon last read; another port's responder behind the same NAT
    address stays where it is."""
    config = _config()
    key = config.peers[0].public_key
    first = (g.E_R[0], 40000)
    second = (g.E_R[0], 40001)
    neighbour = (g.E_R[0], 50000)             # another responder, same NAT
    with g.GoldenNet() as net, Datapath(g.HUB_PORT) as dp:
        env = g.Env(dp, net)
        g.with_established(env)
        dp.set_session(g.P + 1, 9, neighbour, g.HUB_PORT)
        d = dmod.Daemon(config)
        d.datapath = dp
        d.sync_endpoints(_device(key, g.E_R))

        roams = dp.counters()["ev_roam"]
        env.run(g.inbound(first, g.hub(g.HUB_PORT), g.transport(g.I_IDX, counter=1000)))
        assert dp.counters()["ev_roam"] == roams + 1
        assert str(dp.session(g.P, g.R_IDX).dst) == "203.0.113.20:40000"

        to_r, to_i = _follow(d, key, second, caplog)
        assert (str(to_r.dst), str(to_i.expect)) == ("203.0.113.20:40001",) * 2
        assert str(to_i.dst) == "198.51.100.10:43210"
        assert str(dp.session(g.P + 1, 9).dst) == "203.0.113.20:50000"

        res = env.run(g.inbound(g.E_I, g.hub(g.P), g.transport(g.R_IDX, counter=8)))
        assert res.retval == TC_ACT_REDIRECT
        out = pk.parse(res.data)
        assert (str(out.dst), out.dport) == second


@root
def test_retarget_touches_only_sessions_sent_from_that_port():
    with Datapath(g.HUB_PORT) as dp:
        shared = ("198.51.100.50", 51820)     # one socket: R for P, I towards P2
        dp.set_session(g.P, 1, shared, g.HUB_PORT)          # to it as a responder
        dp.set_session(g.HUB_PORT, 2, shared, 40002)        # to it as an initiator
        assert dp.retarget(shared, ("198.51.100.50", 6000), g.HUB_PORT) == 1
        assert str(dp.session(g.P, 1).dst) == "198.51.100.50:6000"
        assert str(dp.session(g.HUB_PORT, 2).dst) == "198.51.100.50:51820"


@root
def test_established_pairs_and_the_session_log(caplog):
    """The daemon's session log reads the map lean (established_pairs) and
    says each pair once when it comes up and once when it goes, with its
    endpoints and its packets both ways."""
    import threading

    with Datapath(g.HUB_PORT) as dp:
        dp.set_session(g.P, g.R_IDX, g.E_R, g.HUB_PORT, expect=g.E_I)       # half-open
        d = dmod.Daemon.__new__(dmod.Daemon)
        d.datapath, d._lock, d._logged_sessions = dp, threading.Lock(), {}
        with caplog.at_level(logging.INFO, logger="wgmux"):
            d.log_sessions()
            assert "session up" not in caplog.text
            assert dp.established_pairs() == {}
            # the response went through: both directions, linked
            dp.set_session(g.P, g.R_IDX, g.E_R, g.HUB_PORT, expect=g.E_I,
                           reverse=(g.HUB_PORT, g.I_IDX))
            dp.set_session(g.HUB_PORT, g.I_IDX, g.E_I, g.P, expect=g.E_R,
                           reverse=(g.P, g.R_IDX))
            pairs = dp.established_pairs()
            assert list(pairs) == [(g.P, g.I_IDX, g.R_IDX)]
            (full,) = [p for p in session_pairs(dp.sessions(), dp.hub_port)
                       if p["state"] == "established"]
            assert (full["port"], full["initiator_index"], full["responder_index"]) == \
                (g.P, g.I_IDX, g.R_IDX)
            d.log_sessions()
            d.log_sessions()
            ups = [r.message for r in caplog.records if "session up" in r.message]
            assert ups == [f"session up: port {g.P}, initiator {full['initiator']} <-> "
                           f"responder {full['responder']}"]
            dp.delete_session(g.P, g.R_IDX, reverse=True)
            d.log_sessions()
            downs = [r.message for r in caplog.records if "session down" in r.message]
            assert downs == [f"session down: port {g.P}, initiator {full['initiator']} <-> "
                             f"responder {full['responder']} (0+0 packets)"]


@root
def test_session_log_stops_above_its_limit(caplog, monkeypatch):
    """A big hub's log does not say each session: above SESSION_LOG_MAX
    pairs one line says so, once, and nothing per pair."""
    import threading

    monkeypatch.setattr(dmod, "SESSION_LOG_MAX", 1)
    with Datapath(g.HUB_PORT) as dp:
        for i in (1, 2):
            dp.set_session(g.P, 0x100 + i, g.E_R, g.HUB_PORT, expect=g.E_I,
                           reverse=(g.HUB_PORT, 0x200 + i))
            dp.set_session(g.HUB_PORT, 0x200 + i, g.E_I, g.P, expect=g.E_R,
                           reverse=(g.P, 0x100 + i))
        d = dmod.Daemon.__new__(dmod.Daemon)
        d.datapath, d._lock, d._logged_sessions = dp, threading.Lock(), {}
        d.idle_timeout, d.half_open_timeout = 540.0, 30.0
        with caplog.at_level(logging.INFO, logger="wgmux"):
            assert d.collect_and_log() == 4
            d.log_sessions()
        said = [r.message for r in caplog.records]
        assert said == ["2 sessions: the log no longer says each one that comes or goes "
                        "(more than 1; `wgmux show --summary` counts them)"], said


@root
def test_show_counts_a_table_too_big_to_list(monkeypatch):
    """Above SHOW_LIST_MAX entries `show` counts instead of listing (what
    decoding a million entries would cost the daemon); one port's
    sessions are still listed."""
    import threading

    with Datapath(g.HUB_PORT) as dp:
        dp.set_session(g.P, g.R_IDX, g.E_R, g.HUB_PORT, expect=g.E_I,
                       reverse=(g.HUB_PORT, g.I_IDX))
        dp.set_session(g.HUB_PORT, g.I_IDX, g.E_I, g.P, expect=g.E_R, reverse=(g.P, g.R_IDX))
        d = dmod.Daemon.__new__(dmod.Daemon)
        d.datapath, d._lock, d.ifindexes = dp, threading.Lock(), {"pub0": 2}
        d.idle_timeout, d.half_open_timeout = 540.0, 30.0
        listed = d._sessions_status()
        assert [p["port"] for p in listed["sessions"]] == [g.P]
        assert "sessions_listed" not in listed
        monkeypatch.setattr(dmod, "SHOW_LIST_MAX", 1)
        counted = d._sessions_status()
        assert "sessions" not in counted and counted["sessions_listed"] is False
        assert counted["sessions_summary"]["established"] == 1
        assert [p["port"] for p in d._sessions_status(g.P)["sessions"]] == [g.P]
        # the summary of a big table: the last collection tick's, dated, once
        # someone asked for one
        d._logged_sessions, d.gc_interval = {}, 5.0
        assert d.collect_and_log() == 2 and d._summary is None     # nobody asked yet
        assert d._summary_now()["sessions_summary"]["established"] == 1
        assert "summary_as_of" not in d._summary_now()
        assert d.collect_and_log() == 2
        dp.delete_session(g.P, g.R_IDX, reverse=True)
        cached = d._summary_now()
        assert cached["sessions_summary"]["established"] == 1 and cached["summary_as_of"] > 0


def test_live_pairs_unconfirmed_keep_the_half_open_timeout():
    """A pair whose responder direction never carried transport (a forged
    response makes one) is stale after the half-open timeout, as
    collect_idle() deletes it; a confirmed one lives the full timeout."""
    now = 1000 * NS
    confirmed = {"state": "established", "confirmed": True, "created": now - 40 * NS,
                 "last_seen": now - 31 * NS}
    unconfirmed = dict(confirmed, confirmed=False)
    live, stale = dmod.live_pairs([confirmed, unconfirmed], now, 540, 30)
    assert live == [confirmed] and stale == [unconfirmed]


@root
def test_device_losing_an_endpoint_keeps_the_last_known(caplog):
    """The hub's WireGuard restarts (same key and port): it knows the
    responder again but has no endpoint until the responder sends.  The
    port keeps its last known endpoint, so handshakes through it go on; a
    new endpoint from the device replaces it; a peer gone from the device
    loses it."""
    config = _config()
    key = config.peers[0].public_key
    with g.GoldenNet() as net, Datapath(g.HUB_PORT) as dp:
        g.Env(dp, net)
        d = dmod.Daemon(config)
        d.datapath = dp
        d.sync_endpoints(_device(key, g.E_R))
        with caplog.at_level(logging.INFO, logger="wgmux"):
            d.sync_endpoints(_device(key, None))          # the device restarted
        assert "keeping the last known 203.0.113.20:51820" in caplog.text
        assert dp.responders()[g.P].endpoint.port == g.E_R[1]
        d.device = _device(key, None)
        peer = next(p for p in d.status()["peers"] if p["port"] == g.P)
        assert peer["endpoint"] == "203.0.113.20:51820" and peer["endpoint_last_known"]
        moved = ("203.0.113.21", 40000)
        d.sync_endpoints(_device(key, moved))             # it reports one again
        assert dp.responders()[g.P].endpoint.port == 40000
        assert not d.status()["peers"][0]["endpoint_last_known"]
        d.sync_endpoints(DeviceInfo("wg0", g.HUB_PORT, None, {}, "test"))   # peer removed
        assert dp.responders()[g.P].endpoint is None
