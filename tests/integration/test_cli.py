"""`wgmux serve` / `wgmux show` as a user meets them: errors are one clear
line with a non-zero exit and nothing attached; SIGTERM detaches and exits 0."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile

import pytest

from netlab.topology import standard
from netlab.wireguard import WireGuard
from harness.hub import WgmuxHub

pytestmark = pytest.mark.netlab

KEY = "trEZwTmrfzqgjztP8XsTWmkg4PD8FYsjKpeYa6eXMlw="


def wgmux(node, *args, **kw):
    return node.run([sys.executable, "-m", "wgmux.cli", *args], check=False, **kw)


def clsact_filters(node, ifname="eth0"):
    return node.run(["tc", "filter", "show", "dev", ifname, "ingress"]).stdout.strip()


@pytest.fixture
def hub(lab, tmp_path):
    node = lab.add_node("hub")
    peer = lab.add_node("peer")
    lab.link(node, "eth0", peer, "eth0", "198.18.0.1/24", "198.18.0.2/24")
    wg = WireGuard.create(node, "cli", 51820, "10.9.0.1/24")
    return node, wg, tmp_path


def write(tmp_path, text):
    path = tmp_path / "config.toml"
    path.write_text(text)
    return str(path)


def config(wg, interface="eth0", hub_port=51820, device=None):
    return (f'[Interface]\nDevice = "{device or wg.name}"\nHubPort = {hub_port}\n'
            f'Interface = "{interface}"\n\n[[Peer]]\nPort = 51821\nPublicKey = "{KEY}"\n')


@pytest.mark.parametrize("case,expected", [
    ("interface", "Interface 'nosuch0' (from {path}) does not exist in this network namespace"),
    ("device", "Device 'nosuchwg' (from {path}): cannot read WireGuard device 'nosuchwg'"),
    ("hubport", "HubPort 51999 (from {path}) does not match {dev}'s listen port 51820"),
])
def test_serve_refuses_with_one_clear_line(hub, case, expected):
    node, wg, tmp = hub
    kw = {"interface": dict(interface="nosuch0"), "device": dict(device="nosuchwg"),
          "hubport": dict(hub_port=51999)}[case]
    path = write(tmp, config(wg, **kw))
    out = wgmux(node, "serve", "-c", path, timeout=60)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("wgmux: " + expected.format(path=path, dev=wg.name)), lines[0]
    assert clsact_filters(node) == ""


def test_serve_rejects_bad_config_before_anything(hub):
    node, wg, tmp = hub
    path = write(tmp, config(wg).replace("HubPort = 51820", "HubPort = 0"))
    out = wgmux(node, "serve", "-c", path)
    assert out.returncode == 2
    assert out.stderr.strip() == f"wgmux: {path}:3: [Interface] HubPort: 0 is out of range 1-65535"
    assert clsact_filters(node) == ""


def test_serve_needs_root(hub):
    node, wg, tmp = hub
    # A config the unprivileged user can read, so only the root check can fail.
    shared = tempfile.mkdtemp(prefix="wgmux-cli-")
    os.chmod(shared, 0o755)
    path = os.path.join(shared, "config.toml")
    with open(path, "w") as f:
        f.write(config(wg))
    os.chmod(path, 0o644)
    lab = node.lab
    lab.on_close(lambda: shutil.rmtree(shared, ignore_errors=True))
    out = node.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                    sys.executable, "-m", "wgmux.cli", "serve", "-c", path], check=False)
    assert out.returncode == 1, out.stderr
    assert out.stderr.strip() == "wgmux: wgmux serve must run as root (it loads eBPF and changes tc)"


def test_show_without_daemon(hub):
    node, wg, tmp = hub
    out = wgmux(node, "show", "-c", write(tmp, config(wg)))
    assert out.returncode == 3
    import re
    assert re.fullmatch(r"wgmux: no wgmux daemon is serving interface 'eth0' in this network "
                        r"namespace \(/run/wgmux/\d+-eth0\.sock does not exist; start one "
                        r"with: wgmux serve\)", out.stderr.strip()), out.stderr


def test_sigterm_detaches_and_exits_zero(lab):
    topo = standard(lab, wireguard=True)
    hub = WgmuxHub(topo)
    hub.pair(topo.host(1), topo.host(2), 51821)
    hub.start()
    assert "wgmux_ingress" in clsact_filters(topo.hub)
    assert hub.show()["hub_port"] == 51820
    assert hub.stop(signal.SIGTERM) == 0
    assert clsact_filters(topo.hub) == ""
    assert "detached from eth0" in hub.log()
    assert hub.show(check=False) is None


def test_second_daemon_on_same_interface_refuses(lab):
    topo = standard(lab, wireguard=True)
    hub = WgmuxHub(topo)
    hub.pair(topo.host(1), topo.host(2), 51821)
    hub.start()
    out = wgmux(topo.hub, "serve", "-c", str(hub.config_path))
    assert out.returncode == 1
    assert "another wgmux is already serving interface 'eth0'" in out.stderr
    assert hub.show()["pid"] == hub.process.pid  # the first one still serves


@pytest.mark.parametrize("args", [["--help"], ["serve", "--help"], ["show", "--help"]])
def test_help(args):
    out = subprocess.run([sys.executable, "-m", "wgmux.cli", *args], capture_output=True, text=True)
    assert out.returncode == 0
    assert "--config" in out.stdout or "COMMAND" in out.stdout


def test_unprivileged_user_cannot_reach_the_real_daemon(lab):
    """The real `wgmux serve`'s control socket, tried by `nobody` in the
    hub's namespace: connecting is refused, and so is binding the name of
    another Interface's socket (squatting); root's `show` still answers."""
    from netlab.lab import NETNS_DIR
    from wgmux import control

    topo = standard(lab, wireguard=True)
    hub = WgmuxHub(topo)
    hub.pair(topo.host(1), topo.host(2), 51821)
    hub.start()
    ino = os.stat(NETNS_DIR / topo.hub.netns).st_ino
    sock = control.address("eth0", ino)
    squat = control.address("eth9", ino)

    def as_nobody(code):
        return topo.hub.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                             sys.executable, "-c", code], check=False)

    out = as_nobody(f"import socket; s = socket.socket(socket.AF_UNIX); s.connect({str(sock)!r})")
    assert out.returncode != 0 and "PermissionError" in out.stderr, out
    out = as_nobody(f"import socket; s = socket.socket(socket.AF_UNIX); s.bind({str(squat)!r})")
    assert out.returncode != 0 and "PermissionError" in out.stderr, out
    assert not squat.exists()
    assert hub.show()["pid"] == hub.process.pid
