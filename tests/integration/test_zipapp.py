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

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from chroots import ROOT, assert_checks_out, bind, chroot_sh, inside, serve_reflect

FILE = os.environ.get("WGMUX_BUILD_TEST")
PACKAGES = ("python3-bpfcc", "python3-nacl", "wireguard-tools")
INSIDE = "/usr/local/bin/wgmux"

pytestmark = [pytest.mark.netlab,
              pytest.mark.skipif(not FILE, reason="make build-test runs it (WGMUX_BUILD_TEST)")]


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
    print(out.stdout, out.stderr)
    assert_checks_out(out)
    assert not list((root / "tmp").glob("wgmux-bpf-*")), "the sources' copy outlives check"


def test_serve_reflects_end_to_end(root, lab):
    hub = serve_reflect(root, lab, INSIDE, "tc")
    # it was the chroot's file that served, run by the root's own Python
    assert hub.cmdline[:3] == [b"/usr/bin/python3", b"-I", INSIDE.encode()], hub.cmdline
