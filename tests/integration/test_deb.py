"""The Debian package (issue 16): `make deb`'s wgmux_<version>_all.deb,
installed with apt into a fresh Debian 12 root, works there and leaves
nothing behind.

The root (scripts/chroot.sh) is a debootstrap'ed minbase bookworm with only
systemd added (for systemd-analyze; not a dependency of the package).  Each
run gets a fresh overlay of the cached root, with /proc, /sys (bpffs), /dev
and the host's kernel headers mounted for bcc; apt's downloads are cached
in /var/cache/wgmux-chroot/apt-archives between runs.

- `apt-get install ./wgmux_*.deb` resolves every dependency from Debian's
  bookworm archive (python3-bpfcc, python3-pyroute2 0.7.2, python3-nacl,
  wireguard-tools) and the Recommends (kernel headers) are installable;
- the unit is enabled the Debian way (deb-systemd-helper's symlink) and
  `systemd-analyze verify` accepts it as installed;
- `wgmux --version`, the man page, and `wgmux check` on the example config
  (the conffile) in a network namespace of its own: config, bcc, headers,
  datapath ok; only the example's eth0 and wg0 missing;
- `wgmux serve` from the package (so with Debian's pyroute2 0.7.2) on a
  netlab hub: the reflect test (tests/integration/test_reflect.py) with
  TC and with XDP (0.7.2's 2-byte IFLA_XDP_FLAGS: wgmux/xdp.py fixes it);
- a reinstall (the upgrade path) keeps an edited conffile and the enable;
- `apt-get purge wgmux`: no path with "wgmux" in its name left anywhere in
  the root (files, conffile, bytecode, enable symlinks, deb-systemd-helper
  state), and dpkg knows none of the package's files.

Slow, root-only, needs the Debian mirror: `make deb-test` runs it
(WGMUX_DEB_TEST names the .deb); `make test` skips it.
"""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from chroots import assert_checks_out, bind, chroot_sh, inside, serve_reflect

DEB = os.environ.get("WGMUX_DEB_TEST")
BASE_PACKAGES = ("systemd",)
INSIDE = "/usr/sbin/wgmux"
CACHE = Path(os.environ.get("WGMUX_CHROOT_CACHE", "/var/cache/wgmux-chroot"))
DEPENDS = ("python3-bpfcc", "python3-pyroute2", "python3-nacl", "wireguard-tools", "procps")

pytestmark = [pytest.mark.netlab,
              pytest.mark.skipif(not DEB, reason="make deb-test runs it (WGMUX_DEB_TEST)")]


STATE = {}


@pytest.fixture(scope="module")
def root():
    base = Path(chroot_sh("base", *BASE_PACKAGES))
    work = Path(tempfile.mkdtemp(prefix="wgmux-deb-"))
    try:
        root = Path(chroot_sh("up", str(base), str(work)))
        archives = CACHE / "apt-archives"
        (archives / "partial").mkdir(parents=True, exist_ok=True)
        bind(archives, root, "/var/cache/apt/archives")
        shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
        deb = Path(DEB)
        shutil.copy(deb, root / "tmp" / deb.name)
        STATE["deb"] = f"/tmp/{deb.name}"
        Path("/run/wireguard").mkdir(parents=True, exist_ok=True)
        bind(Path("/run/wireguard"), root)
        inside(root, "apt-get", "update", "-q", net=True, check=True, timeout=600)
        yield root
    finally:
        chroot_sh("down", str(work))


def test_apt_installs_it_with_debian_dependencies_only(root):
    before = set(inside(root, "dpkg-query", "-W", "-f", "${Package}\n").stdout.split())
    assert not set(DEPENDS) & before, "the base root already has a dependency"
    out = inside(root, "apt-get", "install", "-y", "-q", "--no-install-recommends",
                 STATE["deb"], net=True, timeout=1200)
    print(out.stdout[-3000:])
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr
    after = set(inside(root, "dpkg-query", "-W", "-f", "${Package} ${Status}\n").stdout
                .replace(" install ok installed", "").split("\n"))
    assert {"wgmux", *DEPENDS} <= after
    version = inside(root, "dpkg-query", "-W", "-f", "${Version}", "python3-pyroute2").stdout
    print("python3-pyroute2", version)
    # the Recommends resolve too (not installed: the host's headers are mounted)
    rec = inside(root, "apt-get", "install", "-s", "-q", "linux-headers-amd64", net=True)
    assert rec.returncode == 0, rec.stdout + rec.stderr
    STATE["files"] = inside(root, "dpkg", "-L", "wgmux", check=True).stdout.split("\n")


def test_the_unit_is_enabled_and_verifies(root):
    link = root / "etc/systemd/system/multi-user.target.wants/wgmux.service"
    assert link.is_symlink() and os.readlink(link) == "/lib/systemd/system/wgmux.service"
    # --man=no: the root has no man-db (the man page is checked below)
    out = inside(root, "systemd-analyze", "verify", "--man=no", "/lib/systemd/system/wgmux.service")
    print(out.stdout, out.stderr)
    assert out.returncode == 0, out.stderr
    assert "wgmux" not in out.stderr, out.stderr
    unit = (root / "lib/systemd/system/wgmux.service").read_text()
    assert "ExecStart=/usr/sbin/wgmux serve -c /etc/wgmux/config.toml" in unit
    assert "RuntimeDirectory=wgmux" in unit


def test_version_and_man_page(root):
    out = inside(root, INSIDE, "--version", check=True)
    assert out.stdout.startswith("wgmux 0.1.0 (") and "[Debian package]" in out.stdout, out.stdout
    man = root / "usr/share/man/man8/wgmux.8.gz"
    assert man.exists()
    conf = inside(root, "dpkg-query", "-W", "-f", "${Conffiles}", "wgmux", check=True).stdout
    assert "/etc/wgmux/config.toml" in conf


def test_check_sample_config(root):
    out = inside(root, INSIDE, "check")       # the conffile, the default path
    print(out.stdout, out.stderr)
    assert_checks_out(out)


# (bookworm's pyroute2 0.7.2 encodes IFLA_XDP_FLAGS in 2 bytes, which the
# kernel refuses: wgmux/xdp.py gives it 4, and "xdp" works with the package)
@pytest.mark.parametrize("mode", ["tc", "xdp"])
def test_serve_reflects_end_to_end_with_debians_pyroute2(root, lab, mode):
    serve_reflect(root, lab, INSIDE, mode)


def test_reinstall_keeps_an_edited_conffile(root):
    """An upgrade (here the same version again: postinst's upgrade path)
    never overwrites the admin's config, and keeps the unit enabled."""
    conf = root / "etc/wgmux/config.toml"
    edited = conf.read_text().replace('Interface = "eth0"', 'Interface = "ens3"')
    assert edited != conf.read_text()
    conf.write_text(edited)
    out = inside(root, "dpkg", "-i", "--force-confold", STATE["deb"], check=True)
    print(out.stdout)
    assert conf.read_text() == edited
    assert (root / "etc/systemd/system/multi-user.target.wants/wgmux.service").is_symlink()
    # py3compile compiled it for the system Python at configure
    assert list((root / "usr/lib/python3/dist-packages/wgmux/__pycache__").glob("cli.*.pyc"))


def _wgmux_paths(root: Path):
    skip = {"proc", "sys", "dev", "tmp", "run"}
    found = []
    for top in root.iterdir():
        if top.name in skip:
            continue
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = [d for d in dirnames
                           if not (dirpath == str(root / "var/cache/apt") and d == "archives")]
            for name in dirnames + filenames:
                if "wgmux" in name:
                    found.append(os.path.join(dirpath, name)[len(str(root)):])
    return sorted(found)


def test_purge_leaves_nothing(root):
    assert STATE.get("files"), "not installed"
    inside(root, "apt-get", "remove", "-y", "-q", "wgmux", check=True)
    assert (root / "etc/wgmux/config.toml").exists(), "remove keeps the conffile"
    inside(root, "apt-get", "purge", "-y", "-q", "wgmux", check=True)
    status = inside(root, "dpkg-query", "-W", "-f", "${Status}", "wgmux").stdout
    assert "installed" not in status or "not-installed" in status, status
    left = _wgmux_paths(root)
    assert not left, left
    owned = [f for f in STATE["files"] if f and "wgmux" in f
             and inside(root, "dpkg", "-S", f).returncode == 0]
    assert not owned, owned
