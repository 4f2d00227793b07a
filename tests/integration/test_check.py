"""`wgmux check` on a netlab hub: every check ok (exit 0) on a hub that can
serve; one failing check named, with a hint, and a non-zero exit for each
thing that would stop `wgmux serve` (or make a responder port useless)."""

import os
import re
import shutil
import sys
import tempfile

import pytest

from netlab.wireguard import WireGuard
from wgmux import preflight

pytestmark = pytest.mark.netlab

RESPONDER = "trEZwTmrfzqgjztP8XsTWmkg4PD8FYsjKpeYa6eXMlw="
QUIET = "Lo7Z71yq2evHJChiUoNXYAyEW9B15GPblB6m6JA7A58="     # a peer with no endpoint
UNKNOWN = "eERXxkDvqyVHeox0dbBh7Vm0WWxFSlFYvHUWtyGJ/WU="   # not a peer of the device

LINE = re.compile(r"^\[( ok |fail|warn|skip)\] (.*)$")


def check(node, path, *wrap):
    return node.run([*wrap, sys.executable, "-m", "wgmux.cli", "check", "-c", path],
                    check=False, timeout=120)


def parse(stdout):
    """[(status, text, hint or None)] from check's output."""
    out = []
    for line in stdout.splitlines():
        m = LINE.match(line)
        if m:
            out.append([m.group(1).strip(), m.group(2), None])
        elif line.strip().startswith("hint: ") and out:
            out[-1][2] = line.strip()[len("hint: "):]
    return [tuple(r) for r in out]


@pytest.fixture
def hub(lab, tmp_path):
    node = lab.add_node("hub")
    peer = lab.add_node("peer")
    lab.link(node, "eth0", peer, "eth0", "198.18.0.1/24", "198.18.0.2/24")
    node.sysctl("net.ipv4.conf.eth0.forwarding", 1)
    wg = WireGuard.create(node, "chk", 51820, "10.9.0.1/24")
    wg.set_peer(RESPONDER, endpoint="198.18.0.2:51820", allowed_ips=["10.9.0.2/32"])
    return node, wg, tmp_path


def config(wg, tmp_path, interface="eth0", hub_port=51820, device=None, peers=((51821, RESPONDER),),
           datapath=None):
    text = (f'[Interface]\nDevice = "{device or wg.name}"\nHubPort = {hub_port}\n'
            f'Interface = "{interface}"\n')
    if datapath:
        text += f'Datapath = "{datapath}"\n'
    for port, key in peers:
        text += f'\n[[Peer]]\nPort = {port}\nPublicKey = "{key}"\n'
    path = tmp_path / "config.toml"
    path.write_text(text)
    return str(path)


def test_all_ok_on_a_hub_that_can_serve(hub):
    node, wg, tmp = hub
    out = check(node, config(wg, tmp))
    assert out.returncode == 0, out.stdout + out.stderr
    results = parse(out.stdout)
    assert {s for s, _, _ in results} == {"ok"}, out.stdout
    texts = "\n".join(t for _, t, _ in results)
    for expected in ["config ", "privileges: root with", "bpffs mounted at /sys/fs/bpf",
                     "bcc importable", "kernel headers usable by bcc",
                     "datapath compiles and the kernel loads it",
                     "Interface 'eth0' exists", "forwarding on 'eth0'",
                     # the default on a veth (docs/spec.md §4a)
                     "Datapath \"auto\": TC ingress only on 'eth0' (a veth's XDP_TX",
                     f"Device '{wg.name}' readable",
                     f"HubPort 51820 is {wg.name}'s listen port",
                     f"responder on port 51821 ({RESPONDER[:10]}…) is at 198.18.0.2:51820"]:
        assert expected in texts, (expected, out.stdout)
    assert out.stdout.rstrip().endswith("wgmux check: wgmux serve would work")
    # Nothing attached, nothing left.
    assert node.run(["tc", "filter", "show", "dev", "eth0", "ingress"]).stdout.strip() == ""


@pytest.mark.parametrize("datapath", ["tc", "auto", "xdp"])
def test_datapath_line(hub, datapath):
    """One line says where serve will run the datapath (docs/spec.md §4a):
    on this veth, TC alone for "tc" and "auto"; for "xdp" a warning (what
    XDP sends back is lost unless the veth's peer takes it), not a failure."""
    node, wg, tmp = hub
    out = check(node, config(wg, tmp, datapath=datapath))
    assert out.returncode == 0, out.stdout + out.stderr
    lines = [(s, t, h) for s, t, h in parse(out.stdout) if t.startswith("Datapath ")]
    assert len(lines) == 1, out.stdout
    status, text, hint = lines[0]
    expected = {
        "tc": ("ok", 'Datapath "tc": TC ingress only'),
        "auto": ("ok", "Datapath \"auto\": TC ingress only on 'eth0' (a veth's XDP_TX reaches "
                 "its peer only when the peer has an XDP program of its own"),
        "xdp": ("warn", "Datapath \"xdp\": XDP on 'eth0': a veth's XDP_TX reaches its peer only "
                "when the peer has an XDP program of its own"),
    }[datapath]
    assert status == expected[0] and text.startswith(expected[1]), out.stdout
    if datapath == "xdp":
        assert "lost unless the peer takes it" in text and "XDP program on the veth's peer" in hint
        assert out.stdout.rstrip().endswith("wgmux serve would work (1 warning)")
    # nothing attached by check, in either slot
    assert "xdp" not in node.run(["ip", "link", "show", "eth0"]).stdout


def test_forwarding_off_is_a_warning(hub):
    node, wg, tmp = hub
    node.sysctl("net.ipv4.conf.eth0.forwarding", 0)
    out = check(node, config(wg, tmp))
    assert out.returncode == 0, out.stdout + out.stderr
    warns = [(t, h) for s, t, h in parse(out.stdout) if s == "warn"]
    assert [t.split(":")[0] for t, _ in warns] == ["forwarding is off on 'eth0'"], out.stdout
    assert "sysctl -w net.ipv4.conf.eth0.forwarding=1" in warns[0][1]


def test_ipv6_forwarding_off_is_a_warning_where_ipv6_is_served(hub):
    """IPv6 peers' packets need IPv6 forwarding (bpf_fib_lookup asks each
    family's own): off on an interface with a global IPv6 address, a
    warning; without one, nothing to say."""
    node, wg, tmp = hub
    node.sysctls({"net.ipv4.conf.eth0.forwarding": 1, "net.ipv6.conf.all.forwarding": 0,
                  "net.ipv6.conf.eth0.forwarding": 0})
    out = check(node, config(wg, tmp))
    assert [t for s, t, _ in parse(out.stdout) if s == "warn"] == [], out.stdout
    node.add_address("eth0", "2001:db8:77::1/64")
    out = check(node, config(wg, tmp))
    warns = [(t, h) for s, t, h in parse(out.stdout) if s == "warn"]
    assert [t.split(":")[0] for t, _ in warns] == ["IPv6 forwarding is off on 'eth0'"], out.stdout
    assert "sysctl -w net.ipv6.conf.all.forwarding=1" in warns[0][1]


@pytest.mark.parametrize("case", ["hubport", "interface", "device", "unknown-key"])
def test_reports_what_would_stop_serve(hub, case):
    node, wg, tmp = hub
    kw = {"hubport": dict(hub_port=51999), "interface": dict(interface="nosuch0"),
          "device": dict(device="nosuchwg"),
          "unknown-key": dict(peers=((51821, RESPONDER), (51822, UNKNOWN)))}[case]
    path = config(wg, tmp, **kw)
    out = check(node, path)
    assert out.returncode == 1, out.stdout
    results = parse(out.stdout)
    fails = [(t, h) for s, t, h in results if s == "fail"]
    assert len(fails) == 1, out.stdout
    text, hint = fails[0]
    assert hint, out.stdout
    expected = {
        # the same words `serve` would fail with
        "hubport": f"HubPort 51999 (from {path}) does not match {wg.name}'s listen port 51820",
        "interface": f"Interface 'nosuch0' (from {path}) does not exist in this network namespace",
        "device": f"Device 'nosuchwg' (from {path}): cannot read WireGuard device 'nosuchwg'",
        "unknown-key": f"responder on port 51822 ({UNKNOWN[:10]}…) is not a peer of {wg.name}",
    }[case]
    assert text.startswith(expected), (text, out.stdout)
    if case == "hubport":
        assert "51820" in hint
    assert out.stdout.rstrip().endswith("wgmux check: 1 problem: wgmux serve would not work")
    if case == "device":
        assert any(s == "skip" and "HubPort" in t for s, t, _ in results), out.stdout
    if case == "unknown-key":
        # the known responder is still reported fine
        assert any(s == "ok" and "port 51821" in t for s, t, _ in results), out.stdout


def test_responder_without_endpoint_is_a_warning(hub):
    node, wg, tmp = hub
    wg.set_peer(QUIET, allowed_ips=["10.9.0.3/32"])
    out = check(node, config(wg, tmp, peers=((51821, RESPONDER), (51822, QUIET))))
    assert out.returncode == 0, out.stdout
    warns = [(t, h) for s, t, h in parse(out.stdout) if s == "warn"]
    assert len(warns) == 1, out.stdout
    assert warns[0][0].startswith(f"responder on port 51822 ({QUIET[:10]}…) has no endpoint "
                                  f"on {wg.name} yet")
    assert "PersistentKeepalive" in warns[0][1]
    assert out.stdout.rstrip().endswith("wgmux serve would work (1 warning)")


def test_bad_config_fails_and_environment_is_still_checked(hub):
    node, wg, tmp = hub
    path = config(wg, tmp, hub_port=0)
    out = check(node, path)
    assert out.returncode == 1
    results = parse(out.stdout)
    assert results[0] == ("fail", f"config: {path}:3: [Interface] HubPort: 0 is out of range "
                          f"1-65535", None)
    assert ("ok", "bpffs mounted at /sys/fs/bpf", None) in results
    assert any(s == "skip" and "need a valid config" in t for s, t, _ in results)


def test_missing_config_file(hub):
    node, wg, tmp = hub
    out = check(node, str(tmp / "nosuch.toml"))
    assert out.returncode == 1
    status, text, hint = parse(out.stdout)[0]
    assert status == "fail" and text == f"config: {tmp / 'nosuch.toml'} does not exist"
    assert "/etc/wgmux/config.toml" in hint


def test_privileges_unprivileged_user(hub):
    node, wg, tmp = hub
    shared = tempfile.mkdtemp(prefix="wgmux-check-")
    node.lab.on_close(lambda: shutil.rmtree(shared, ignore_errors=True))
    os.chmod(shared, 0o755)
    path = os.path.join(shared, "config.toml")
    shutil.copy(config(wg, tmp), path)
    os.chmod(path, 0o644)
    out = check(node, path, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
    assert out.returncode == 1
    results = parse(out.stdout)
    assert ("fail", "wgmux serve must run as root (it loads eBPF and changes tc)") in \
        [(s, t) for s, t, _ in results], out.stdout
    assert any(s == "skip" and t.startswith("datapath loads") for s, t, _ in results)


@pytest.mark.parametrize("drop", preflight.REQUIRED_CAPS)
def test_privileges_root_without_a_capability(hub, drop):
    node, wg, tmp = hub
    keep = ",".join("+" + c[4:].lower() for c in preflight.REQUIRED_CAPS if c != drop)
    out = check(node, config(wg, tmp), "setpriv", "--inh-caps=-all",
                f"--bounding-set=-all,{keep}", "--")
    assert out.returncode == 1, out.stdout
    fails = [t for s, t, _ in parse(out.stdout) if s == "fail"]
    assert fails == [f"wgmux serve runs as root but without {drop} (it loads eBPF and changes "
                     f"tc: it needs {', '.join(preflight.REQUIRED_CAPS)})"], out.stdout
