"""What the install tests share (test_zipapp: `make build`'s file alone in
a bare Debian 12 root; test_deb: the .deb apt-installed in one): the roots
(scripts/chroot.sh), running in them, the check every bare root must pass,
and the reflect test with the root's `wgmux` serving on a netlab hub."""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

from netlab.nat import NatKind
from netlab.topology import standard
from harness.hub import WgmuxHub

ROOT = Path(__file__).resolve().parents[2]


def chroot_sh(*args) -> str:
    out = subprocess.run(["bash", str(ROOT / "scripts" / "chroot.sh"), *args],
                         capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, f"chroot.sh {' '.join(args)}:\n{out.stderr}"
    return out.stdout.strip()


def bind(source: Path, root: Path, target: str = None):
    """`source` at the same path (or `target`) inside `root` (chroot.sh
    down unmounts it)."""
    target = root / (target or str(source)).lstrip("/")
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "--bind", str(source), str(target)], check=True)


def inside(root: Path, *args, net: bool = False, check: bool = False, timeout: int = 120):
    """Run in the root; without `net`, in a network namespace of its own."""
    argv = ["chroot", str(root), *args]
    if not net:
        argv = ["unshare", "--net", *argv]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", LC_ALL="C.UTF-8",
               PATH="/usr/sbin:/usr/bin:/sbin:/bin")
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    if check:
        assert out.returncode == 0, f"{' '.join(args)}:\n{out.stdout}\n{out.stderr}"
    return out


def assert_checks_out(out, config: str = "/etc/wgmux/config.toml"):
    """`wgmux check` of the example config in a namespace of its own: config,
    bcc, headers and the datapath ok; only the example's eth0 and wg0 missing."""
    lines = out.stdout.splitlines()
    assert out.returncode == 1, out.stdout + out.stderr   # no eth0 / wg0 in its namespace
    for ok in (f"[ ok ] config {config}:", "[ ok ] bcc importable",
               "[ ok ] kernel headers usable by bcc",
               "[ ok ] datapath compiles and the kernel loads it"):
        assert [line for line in lines if line.startswith(ok)], (ok, out.stdout)
    fails = [line for line in lines if line.startswith("[fail]")]
    assert len(fails) == 2 and "Interface 'eth0'" in fails[0] and "Device 'wg0'" in fails[1], \
        out.stdout


def _reflect_test():
    """tests/integration/test_reflect.py, loaded as a module of its own."""
    spec = importlib.util.spec_from_file_location(
        "wgmux_chroot_reflect", ROOT / "tests" / "integration" / "test_reflect.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def serve_reflect(root: Path, lab, executable: str, mode: str = "tc") -> WgmuxHub:
    """test_reflect's end-to-end test (port-restricted NAT, Datapath `mode`)
    with every `wgmux` the root's `executable`; returns the stopped hub's
    record after checking the root's file was what served."""
    class ChrootHub(WgmuxHub):
        def __post_init__(self):
            super().__post_init__()
            bind(self.dir, root)          # config and log, at the same path

        def cli(self, *args):
            return ["chroot", str(root), executable, *args]

    reflect = _reflect_test()
    kind = NatKind.PORT_RESTRICTED
    topo = standard(lab, [kind, kind], wireguard=True, tx_checksum=False)
    initiator, responder = topo.host(1), topo.host(2)
    for host in (initiator, responder):
        topo.hub_wg.wait_handshake(host.wg.public_key)
    if mode == "xdp":
        topo.inet.take_xdp_frames("hub")      # as test_reflect does (netlab.xdp)
    hub = ChrootHub(topo, extra_config=f'Datapath = "{mode}"')
    hub.pair(initiator, responder, reflect.PORT)
    check = topo.hub.run(hub.cli("check", "-c", str(hub.config_path)), check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    reflect.test_reflects_end_to_end_without_decrypting((topo, hub, initiator, responder), mode)
    pid = hub.process.pid
    assert os.readlink(f"/proc/{pid}/root") == str(root)
    hub.cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert hub.stop() == 0
    return hub
