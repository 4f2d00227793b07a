"""The copy-to-a-server promise (issue 17): `make build`'s bin/wgmux, copied
alone into a fresh Debian 12 root, works there.

The root (scripts/chroot.sh) is a debootstrap'ed minbase bookworm with only
python3-bpfcc, python3-nacl and wireguard-tools installed: no pip, no
pyroute2, no wgmux; each run gets a fresh overlay of the cached root, with
/proc, /sys (bpffs), /dev and the host's kernel headers mounted for bcc.
The file is copied in as /usr/local/bin/wgmux and run there (chroot), by
the root's /usr/bin/python3:

- `wgmux --version` names the same version and commit as on the build host;
- `wgmux check` against the example config, in a network namespace of its
  own (no network): config, bcc, kernel headers, the datapath compiled and
  loaded by the kernel all ok; only the interface and device it names are
  missing there;
- `wgmux serve` on a netlab hub (port-restricted NAT on both sides, TC):
  the reflect test itself (tests/integration/test_reflect.py), with the
  harness's every `wgmux` command (serve, show, purge) being the chroot's
  file; the hub's WireGuard (wireguard-go's control socket) and the hub's
  scratch directory are bind-mounted in, as they would be on a real hub.

Slow and root-only: `make build-test` runs it (WGMUX_BUILD_TEST names the
file); `make test` skips it.
"""

import importlib.util
import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from netlab.nat import NatKind
from netlab.topology import standard
from harness.hub import WgmuxHub

ROOT = Path(__file__).resolve().parents[2]
FILE = os.environ.get("WGMUX_BUILD_TEST")
PACKAGES = ("python3-bpfcc", "python3-nacl", "wireguard-tools")
INSIDE = "/usr/local/bin/wgmux"

pytestmark = [pytest.mark.netlab,
              pytest.mark.skipif(not FILE, reason="make build-test runs it (WGMUX_BUILD_TEST)")]


def chroot_sh(*args) -> str:
    out = subprocess.run(["bash", str(ROOT / "scripts" / "chroot.sh"), *args],
                         capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, f"chroot.sh {' '.join(args)}:\n{out.stderr}"
    return out.stdout.strip()


def bind(source: Path, root: Path):
    """`source` at the same path inside `root` (chroot.sh down unmounts it)."""
    target = root / str(source).lstrip("/")
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "--bind", str(source), str(target)], check=True)


@pytest.fixture(scope="module")
def root():
    base = Path(chroot_sh("base", *PACKAGES))
    work = Path(tempfile.mkdtemp(prefix="wgmux-chroot-"))
    try:
        root = Path(chroot_sh("up", str(base), str(work)))
        data = Path(FILE).read_bytes()
        (root / INSIDE.lstrip("/")).write_bytes(data)
        os.chmod(root / INSIDE.lstrip("/"), 0o755)
        # the hub's wireguard-go control sockets (netlab's userspace WireGuard)
        Path("/run/wireguard").mkdir(parents=True, exist_ok=True)
        bind(Path("/run/wireguard"), root)
        yield root
    finally:
        chroot_sh("down", str(work))


def inside(root: Path, *args, net: bool = False, check: bool = False):
    """Run in the root; without `net`, in a network namespace of its own."""
    argv = ["chroot", str(root), *args]
    if not net:
        argv = ["unshare", "--net", *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=check)


def test_the_root_is_bare(root):
    assert (root / "usr/bin/python3").exists()
    for absent in ("pip", "pyroute2", "wgmux"):
        out = inside(root, "/usr/bin/python3", "-c", f"import {absent}")
        assert out.returncode != 0 and "ModuleNotFoundError" in out.stderr, absent
    dpkg = inside(root, "dpkg-query", "-W", "-f", "${Package}\n").stdout.split()
    assert set(PACKAGES) <= set(dpkg)
    assert not [p for p in dpkg if "pip" in p or "pyroute2" in p or p.endswith("-dev")], dpkg


def test_version(root):
    here = subprocess.run([FILE, "--version"], capture_output=True, text=True, check=True).stdout
    there = inside(root, INSIDE, "--version")
    assert there.returncode == 0, there.stderr
    assert there.stdout == here, (there.stdout, here)
    assert " (git commit " in here or "without git" in here, here


def test_check_sample_config(root):
    conf = root / "etc/wgmux/config.toml"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text((ROOT / "examples" / "config.toml").read_text())
    out = inside(root, INSIDE, "check", "-c", "/etc/wgmux/config.toml")
    lines = out.stdout.splitlines()
    print(out.stdout, out.stderr)
    assert out.returncode == 1, out.stdout + out.stderr   # no eth0 / wg0 in its namespace
    for ok in ("[ ok ] config /etc/wgmux/config.toml:", "[ ok ] bcc importable",
               "[ ok ] kernel headers usable by bcc", "[ ok ] datapath compiles and the kernel "
               "loads it"):
        assert [line for line in lines if line.startswith(ok)], (ok, out.stdout)
    fails = [line for line in lines if line.startswith("[fail]")]
    assert len(fails) == 2 and "Interface 'eth0'" in fails[0] and "Device 'wg0'" in fails[1], \
        out.stdout
    assert not list((root / "tmp").glob("wgmux-bpf-*")), "the sources' copy outlives check"


def _reflect_test():
    """tests/integration/test_reflect.py, loaded as a module of its own."""
    spec = importlib.util.spec_from_file_location(
        "wgmux_zipapp_reflect", ROOT / "tests" / "integration" / "test_reflect.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_serve_reflects_end_to_end(root, lab):
    class ChrootHub(WgmuxHub):
        """The harness's hub with every `wgmux` the chroot's file."""

        def __post_init__(self):
            super().__post_init__()
            bind(self.dir, root)          # config and log, at the same path

        def cli(self, *args):
            return ["chroot", str(root), INSIDE, *args]

    reflect = _reflect_test()
    kind = NatKind.PORT_RESTRICTED
    topo = standard(lab, [kind, kind], wireguard=True, tx_checksum=False)
    initiator, responder = topo.host(1), topo.host(2)
    for host in (initiator, responder):
        topo.hub_wg.wait_handshake(host.wg.public_key)
    hub = ChrootHub(topo, extra_config='Datapath = "tc"')
    hub.pair(initiator, responder, reflect.PORT)

    check = topo.hub.run(hub.cli("check", "-c", str(hub.config_path)), check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "wgmux serve would work" in check.stdout

    reflect.test_reflects_end_to_end_without_decrypting((topo, hub, initiator, responder), "tc")
    # it was the chroot's file that served
    pid = hub.process.pid
    assert os.readlink(f"/proc/{pid}/root") == str(root)
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert cmdline[:3] == [b"/usr/bin/python3", b"-I", INSIDE.encode()], cmdline
    assert hub.stop() == 0
