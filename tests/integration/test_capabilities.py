"""The capabilities in packaging/wgmux.service are enough and each is needed.

Enough: the real `wgmux serve` runs on a netlab hub the way the unit runs
it (uid 0, bounding set = the unit's CapabilityBoundingSet, no new
privileges, a read-only system with only /sys/fs/bpf writable, /sys and
/proc/sys read-only, no /home or /root, a minimal /dev), and two NATed peers
ping each other through it, and its ExecStopPost= removes what the stop
left attached. PrivateTmp is not reproduced (the test's config
sits in /tmp, which stays writable as the service's private /tmp would be),
nor are the unit's seccomp-based settings.

Needed: without any one of them (and nothing else changed), what wgmux does
in the kernel fails: compiling and loading the datapath (CAP_BPF,
CAP_PERFMON, CAP_NET_ADMIN), attaching it at TC ingress (CAP_NET_ADMIN), or
opening the slow path's raw socket (CAP_NET_RAW). This probe bypasses
wgmux's own preflight, which would refuse first.
"""

import json
import re
import sys
from pathlib import Path

import pytest

from netlab import wait_for
from netlab.topology import standard
from netlab.traffic import ping
from netlab.wireguard import WireGuard
from harness.hub import WgmuxHub
from wgmux.preflight import CAP_NUMBERS, REQUIRED_CAPS

pytestmark = pytest.mark.netlab

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "packaging" / "wgmux.service"


def unit_caps():
    m = re.search(r"^CapabilityBoundingSet=(.*)$", UNIT.read_text(), re.M)
    return m.group(1).split()


def setpriv_caps(caps):
    """setpriv's spelling: CAP_NET_ADMIN -> +net_admin."""
    return ",".join("+" + c[len("CAP_"):].lower() for c in caps)


# Reproduces the unit's file-system sandbox in a private mount namespace
# (run under `unshare --mount --propagation private`), then drops to the
# given capabilities. Only ever remounts bind mounts of this namespace.
SANDBOX = r"""#!/bin/sh
set -eu
caps=$1; shift
mounts() { awk '{print $5}' /proc/self/mountinfo | sort -u; }
# RuntimeDirectory=wgmux: /run/wgmux, writable (the control socket)
mkdir -p /run/wgmux && chmod 755 /run/wgmux && mount --bind /run/wgmux /run/wgmux
# ProtectSystem=strict: all read-only except /dev, /proc, /sys (and /tmp,
# standing in for PrivateTmp's private, writable one).
mounts | while read -r mp; do
    case "$mp" in /proc|/proc/*|/dev|/dev/*|/sys|/sys/*|/tmp|/tmp/*|/run/wgmux) ;;
        *) mount -o remount,bind,ro "$mp" 2>/dev/null || [ "$mp" != / ] ;; esac
done
# ReadOnlyPaths=/sys /proc/sys, ReadWritePaths=-/sys/fs/bpf
mounts | while read -r mp; do
    case "$mp" in /sys/fs/bpf|/sys/fs/bpf/*) ;;
        /sys|/sys/*) mount -o remount,bind,ro "$mp" 2>/dev/null || true ;; esac
done
mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys
# ProtectHome=yes
for d in /home /root /run/user; do
    [ -d "$d" ] && mount -t tmpfs -o ro,mode=000 tmpfs "$d"
done
# PrivateDevices=yes: a /dev with the pseudo devices only
mount -t tmpfs -o mode=755,nosuid tmpfs /dev
mknod -m 666 /dev/null c 1 3; mknod -m 666 /dev/zero c 1 5; mknod -m 666 /dev/full c 1 7
mknod -m 666 /dev/random c 1 8; mknod -m 666 /dev/urandom c 1 9; mknod -m 666 /dev/tty c 5 0
mkdir /dev/shm /dev/pts && chmod 1777 /dev/shm
ln -s /proc/self/fd /dev/fd
# the sandbox really is read-only
if touch /etc/.wgmux-sandbox-probe 2>/dev/null; then
    rm -f /etc/.wgmux-sandbox-probe; echo "sandbox: / is still writable" >&2; exit 99
fi
exec setpriv --no-new-privs --inh-caps=-all --ambient-caps=-all \
    --bounding-set="-all,$caps" -- "$@"
"""


class SandboxedHub(WgmuxHub):
    """`wgmux serve` runs inside the unit-like sandbox."""

    wrap: list = []

    def cli(self, *args):
        return [*(self.wrap if args[:1] in (("serve",), ("detach",)) else []),
                *super().cli(*args)]


def unit_command(key: str) -> list:
    """The wgmux arguments of the unit's `key`= line (after `wgmux`)."""
    m = re.search(rf"^{key}=\S+/wgmux (.*)$", UNIT.read_text(), re.M)
    return m.group(1).split()


def test_unit_capabilities_are_enough(lab, tmp_path):
    caps = unit_caps()
    sandbox = tmp_path / "sandbox.sh"
    sandbox.write_text(SANDBOX)
    sandbox.chmod(0o755)

    topo = standard(lab, wireguard=True)
    initiator, responder = topo.host(1), topo.host(2)
    for host in (initiator, responder):
        topo.hub_wg.wait_handshake(host.wg.public_key)
    serve = unit_command("ExecStart")
    assert serve[:3] == ["serve", "-c", "/etc/wgmux/config.toml"]
    hub = SandboxedHub(topo, serve_args=serve[3:])      # --keep-attached
    hub.wrap = ["unshare", "--mount", "--propagation", "private", str(sandbox),
                setpriv_caps(caps)]
    hub.pair(initiator, responder, 51821)
    hub.start()

    status = topo.hub.run(["cat", f"/proc/{hub.process.pid}/status"]).stdout
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    wanted = sum(1 << CAP_NUMBERS[c] for c in caps)
    assert int(fields["CapEff"], 16) == wanted, status
    assert int(fields["CapBnd"], 16) == wanted, status
    assert fields["NoNewPrivs"].strip() == "1"

    wait_for(lambda: ping(initiator.node, responder.overlay_ip), timeout=30,
             what="a ping through the sandboxed hub")
    assert ping(responder.node, initiator.overlay_ip, count=3)
    assert hub.show()["sessions"], hub.log()
    assert hub.stop() == 0, hub.log()
    # ExecStopPost= (no systemd here to say "restart": a stop) removes the
    # program, with the same capabilities
    stop_post = unit_command("ExecStopPost")
    assert stop_post[:3] == ["detach", "-c", "/etc/wgmux/config.toml"]
    assert "wgmux_ingress-" in topo.hub.run(["tc", "filter", "show", "dev", "eth0",
                                             "ingress"]).stdout
    out = topo.hub.run(hub.cli("detach", "-c", str(hub.config_path), *stop_post[3:]))
    assert "removed TC filter wgmux_ingress-" in out.stdout, out
    assert "wgmux" not in topo.hub.run(["tc", "filter", "show", "dev", "eth0",
                                        "ingress"]).stdout


PROBE = r"""
import json, socket
out = {}
try:
    from wgmux.datapath import Datapath
    dp = Datapath(hub_port=51820)
    out["load"] = "ok"
    try:
        dp.attach("eth0")
        out["attach"] = "ok"
    except Exception as e:
        out["attach"] = str(e)
    dp.close()
except Exception as e:
    out["load"] = str(e)
try:
    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW).close()
    out["raw"] = "ok"
except OSError as e:
    out["raw"] = str(e)
print(json.dumps(out))
"""


@pytest.fixture
def small_hub(lab):
    node = lab.add_node("hub")
    peer = lab.add_node("peer")
    lab.link(node, "eth0", peer, "eth0", "198.18.0.1/24", "198.18.0.2/24")
    WireGuard.create(node, "cap", 51820, "10.9.0.1/24")
    return node


def probe(node, caps):
    out = node.run(["setpriv", "--no-new-privs", "--inh-caps=-all", "--ambient-caps=-all",
                    f"--bounding-set=-all,{setpriv_caps(caps)}", "--",
                    sys.executable, "-c", PROBE], timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_each_unit_capability_is_needed(small_hub):
    caps = unit_caps()
    assert sorted(caps) == sorted(REQUIRED_CAPS), caps
    assert probe(small_hub, caps) == {"load": "ok", "attach": "ok", "raw": "ok"}
    expect_fail = {"CAP_BPF": "load", "CAP_PERFMON": "load", "CAP_NET_ADMIN": "load",
                   "CAP_NET_RAW": "raw"}
    for cap in caps:
        got = probe(small_hub, [c for c in caps if c != cap])
        assert got[expect_fail[cap]] != "ok", (cap, got)
        if cap != "CAP_NET_RAW":
            assert got["raw"] == "ok", (cap, got)
    assert small_hub.run(["tc", "filter", "show", "dev", "eth0", "ingress"]).stdout.strip() == ""
