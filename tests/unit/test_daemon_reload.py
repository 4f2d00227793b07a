"""Daemon.reload() (SIGHUP) decisions, on a loaded (not attached) datapath
and a fake hub device: what is applied, what is refused, which sessions
end.  tests/integration/test_reload.py shows the same end to end."""

from __future__ import annotations

import logging
import os
import threading

import pytest

from wgmux import config as cmod
from wgmux import daemon as dmod
from wgmux.config import load
from wgmux.discovery import DeviceInfo, PeerInfo

pytest.importorskip("bcc", reason="bcc (python3-bpfcc) is not installed")
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (eBPF)")

from wgmux.datapath import Datapath  # noqa: E402

HUB = 51820
K1, K2, K3 = ("A" * 42 + "E=", "B" * 42 + "E=", "C" * 42 + "E=")
E = {K1: ("203.0.113.1", 51820), K2: ("203.0.113.2", 51820), K3: ("203.0.113.3", 51820)}


def text(peers, device="wg0", hub_port=HUB, interface="eth0", extra=""):
    out = [f'[Interface]\nDevice = "{device}"\nHubPort = {hub_port}\nInterface = "{interface}"',
           extra]
    out += [f'[[Peer]]\nPort = {port}\nPublicKey = "{key}"' for port, key in peers]
    return "\n".join(out) + "\n"


@pytest.fixture
def daemon(tmp_path, monkeypatch):
    devices = {"wg0": HUB, "wg1": HUB, "wgbad": 12345}

    def read_device(name, wg_util="wg"):
        if name not in devices:
            raise dmod.discovery.DiscoveryError(f"no device {name}")
        return DeviceInfo(name, devices[name], None,
                          {k: PeerInfo(k, e, 1, 0, 0) for k, e in E.items()}, "test")

    monkeypatch.setattr(dmod.discovery, "read_device", read_device)
    path = tmp_path / "config.toml"
    path.write_text(text([(40001, K1), (40002, K2)]))
    d = dmod.Daemon(load(path))
    d.datapath = Datapath(HUB)
    try:
        for peer in d.config.peers:
            d.datapath.set_responder(peer.port)
        d.sync_endpoints()
        dp = d.datapath
        # an established pair on each port, and a half-open one for 40002
        for n, port in ((1, 40001), (2, 40002)):
            dp.set_session(HUB, n, ("198.51.100.9", 1000 + n), port, reverse=(port, 10 + n))
            dp.set_session(port, 10 + n, E[K1 if n == 1 else K2], HUB, reverse=(HUB, n))
        dp.set_session(HUB, 99, ("198.51.100.9", 1099), 40002)
        yield d, path
    finally:
        d.datapath.close()


def keys(dp):
    return sorted(s.key for s in dp.sessions())


def test_adds_and_removes_ports(daemon, caplog):
    d, path = daemon
    path.write_text(text([(40001, K1), (40003, K3)]))
    with caplog.at_level(logging.INFO, logger="wgmux"):
        assert d.reload()
    assert sorted(d.datapath.responders()) == [40001, 40003]
    assert str(d.datapath.responders()[40003].endpoint) == "203.0.113.3:51820"
    # 40002's pair and its half-open entry are gone, 40001's untouched
    assert keys(d.datapath) == [(40001, 11), (HUB, 1)]
    assert "reload: port 40002 (BBBBBBBB…) removed, 3 session entries ended" in caplog.text
    assert d.reloads == 1


def test_new_key_on_a_port_ends_its_sessions(daemon):
    d, path = daemon
    path.write_text(text([(40001, K1), (40002, K3)]))
    assert d.reload()
    assert keys(d.datapath) == [(40001, 11), (HUB, 1)]
    assert str(d.datapath.responders()[40002].endpoint) == "203.0.113.3:51820"


@pytest.mark.parametrize("peers", [[(40001, K1)], [(40001, K1), (40002, K3)]],
                         ids=["port_removed", "port_reassigned"])
def test_initiators_learned_on_a_dropped_port_are_forgotten(daemon, peers):
    """R's initiations reach initiators it learned on its port (slow path);
    a port removed or given to another responder must not keep them."""
    import base64
    d, path = daemon
    i1, i2 = (base64.b64decode(k) for k in (K3, K1))
    d.datapath.learn_initiator(40001, i1, ("198.51.100.9", 1001), 1)
    d.datapath.learn_initiator(40002, i2, ("198.51.100.9", 1002), 2)
    path.write_text(text(peers))
    assert d.reload()
    assert [(li.port, li.public_key) for li in d.datapath.initiators()] == [(40001, i1)]


@pytest.mark.parametrize("change, expected", [
    (dict(interface="eth1"), "Interface changed from 'eth0' to 'eth1'"),
    (dict(hub_port=51999), "HubPort changed from 51820 to 51999"),
    (dict(extra="MaxSessions = 131072"), "MaxSessions changed from 65536 to 131072"),
    (dict(device="nosuch"), "Device 'nosuch'"),
    (dict(device="wgbad"), "does not match wgbad's listen port 12345"),
])
def test_refused_changes_keep_everything(daemon, caplog, change, expected):
    d, path = daemon
    before = (keys(d.datapath), d.config)
    path.write_text(text([(40001, K1)], **change))
    with caplog.at_level(logging.INFO, logger="wgmux"):
        assert not d.reload()
    assert "reload rejected, the running config stays: " in caplog.text
    assert expected in caplog.text, caplog.text
    assert (keys(d.datapath), d.config) == before
    assert d.reloads == 0


def test_invalid_file_is_refused(daemon, caplog):
    d, path = daemon
    before = keys(d.datapath)
    path.write_text(text([(40001, K1), (40001, K2)]))
    with caplog.at_level(logging.INFO, logger="wgmux"):
        assert not d.reload()
    assert "reload rejected, the running config stays" in caplog.text
    assert "40001" in caplog.text
    assert keys(d.datapath) == before


def test_device_and_amnezia_changes_apply(daemon):
    d, path = daemon
    before = keys(d.datapath)
    amnezia = "S1 = 10\nS2 = 20\nS3 = 0\nS4 = 0\nH1 = 1111\nH2 = 2222\nH3 = 3333\nH4 = 4444"
    path.write_text(text([(40001, K1), (40002, K2)], device="wg1", extra=amnezia))
    assert d.reload()
    assert d.config.device == "wg1" and d.device.name == "wg1"
    assert d.datapath.classifier.specs()[0].prefix == 10
    assert keys(d.datapath) == before


def test_sighup_only_flags_the_loop():
    d = dmod.Daemon.__new__(dmod.Daemon)
    d._reload_requested = False
    d._lock = threading.Lock()
    d.request_reload()
    assert d._reload_requested


def test_handshake_rate_limit_follows_the_config(daemon, caplog):
    d, path = daemon
    peers = [(40001, K1), (40002, K2)]
    path.write_text(text(peers, extra="HandshakeRate = 20\nHandshakeBurst = 5"))
    with caplog.at_level(logging.INFO, logger="wgmux"):
        assert d.reload()
    rate, burst = d.datapath.slow_rate()
    assert (round(rate), burst) == (20, 5)
    assert "handshake rate limit per source now 20/s, burst 5" in caplog.text
    # AmneziaWG values rewrite the datapath's config entry: the limit stays
    path.write_text(text(peers, extra="HandshakeRate = 20\nHandshakeBurst = 5\nS1 = 10\nS2 = 20"))
    assert d.reload()
    rate, burst = d.datapath.slow_rate()
    assert (round(rate), burst) == (20, 5)
    path.write_text(text(peers, extra="HandshakeRate = 0"))
    assert d.reload()
    assert d.datapath.slow_rate() == (0.0, 0)
    assert keys(d.datapath) == [(40001, 11), (40002, 12), (HUB, 1), (HUB, 2), (HUB, 99)]


def test_a_reload_that_raises_anything_is_rejected(daemon, caplog, monkeypatch):
    """Whatever goes wrong in a reload (here: the datapath raises midway),
    the daemon keeps serving the running config and says so."""
    d, path = daemon
    path.write_text(text([(40001, K1), (40003, K2)]))

    def boom(*_a, **_k):
        raise RuntimeError("map update failed")

    monkeypatch.setattr(d.datapath, "set_responder", boom)
    with caplog.at_level(logging.INFO, logger="wgmux"):
        assert d.reload_guarded() is False
    assert "reload rejected, the running config stays: RuntimeError: map update failed" \
        in caplog.text
    assert d.config.ports == (40001, 40002)


def test_config_read_that_hangs_times_out(tmp_path):
    """A FIFO nobody writes (a hung filesystem would do the same) is an
    error, not a hang; a read that hangs past the timeout too."""
    import os
    import time as _time
    fifo = tmp_path / "config.toml"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"):
        cmod.load_bounded(str(fifo))
    real = tmp_path / "real.toml"
    real.write_text(text([(40001, K1)]))
    original = cmod.load
    try:
        cmod.load = lambda p: (_time.sleep(3), original(p))[1]      # a hung read, mocked
        t0 = _time.monotonic()
        with pytest.raises(OSError, match="took more than"):
            cmod.load_bounded(str(real), timeout=0.5)
        assert _time.monotonic() - t0 < 2
    finally:
        cmod.load = original
    assert cmod.load_bounded(str(real)).ports == (40001,)
