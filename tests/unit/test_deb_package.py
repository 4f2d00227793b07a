"""`make deb` (scripts/deb.py), the fast checks: the package's file list,
control fields, maintainer scripts, man page, lintian, reproducibility.

The install itself (apt in a Debian 12 root, purge) is `make deb-test`
(tests/integration/test_deb.py), not part of `make test`.
"""

import gzip
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PY = "usr/lib/python3/dist-packages"

pytestmark = pytest.mark.skipif(not shutil.which("dpkg-deb"),
                                reason="dpkg-deb missing (Debian's dpkg): no package to check")


def build(out: Path, **env) -> Path:
    run = subprocess.run(["/usr/bin/python3", str(ROOT / "scripts" / "deb.py"), "-o", str(out)],
                         capture_output=True, text=True, timeout=120, env={**os.environ, **env})
    assert run.returncode == 0, run.stderr
    debs = list(out.glob("wgmux_*_all.deb"))
    assert len(debs) == 1, debs
    return debs[0]


@pytest.fixture(scope="module")
def deb(tmp_path_factory):
    return build(tmp_path_factory.mktemp("deb"))


def field(deb: Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True,
                          check=True).stdout.strip()


def contents(deb: Path) -> dict:
    """path -> (mode string, owner) of every entry."""
    out = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True,
                         check=True).stdout
    entries = {}
    for line in out.splitlines():
        parts = line.split(None, 5)
        entries[parts[5].lstrip(".")] = (parts[0], parts[1])
    return entries


def test_name_and_control_fields(deb):
    assert deb.name == "wgmux_0.1.0_all.deb"
    assert field(deb, "Package") == "wgmux"
    assert field(deb, "Architecture") == "all"
    depends = [d.strip().split()[0] for d in field(deb, "Depends").split(",")]
    assert set(depends) == {"python3:any", "python3-bpfcc", "python3-pyroute2", "python3-nacl",
                            "wireguard-tools", "procps"}
    assert "linux-headers-amd64" in field(deb, "Recommends")
    assert int(field(deb, "Installed-Size")) > 100


def test_file_list(deb):
    files = contents(deb)
    for path in ("/usr/sbin/wgmux", "/lib/systemd/system/wgmux.service",
                 "/etc/wgmux/config.toml", "/usr/share/man/man8/wgmux.8.gz",
                 "/usr/share/doc/wgmux/copyright", "/usr/share/doc/wgmux/changelog.gz",
                 f"/{PY}/wgmux/cli.py", f"/{PY}/wgmux/bpf/wgmux.c", f"/{PY}/wgmux/bpf/wire.h",
                 f"/{PY}/wgmux/_build.py", f"/{PY}/wgmux-0.1.0.dist-info/METADATA"):
        assert path in files, path
    # every module of the product, nothing of the checkout's labs or tests
    modules = {p.name for p in (ROOT / "wgmux").glob("*.py")} | {"_build.py"}
    packed = {Path(p).name for p in files if p.startswith(f"/{PY}/wgmux/") and p.endswith(".py")
              and "/bpf/" not in p}
    assert packed == modules
    assert not [p for p in files if any(x in p for x in ("netlab", "harness", "tests/",
                                                          "__pycache__", ".pyc", "/usr/local"))]
    assert all(owner == "root/root" for _, owner in files.values())
    assert files["/usr/sbin/wgmux"][0] == "-rwxr-xr-x"
    assert files["/etc/wgmux/config.toml"][0] == "-rw-r--r--"


def test_conffile_and_maintainer_scripts(deb, tmp_path):
    subprocess.run(["dpkg-deb", "-e", str(deb), str(tmp_path / "DEBIAN")], check=True)
    d = tmp_path / "DEBIAN"
    assert (d / "conffiles").read_text() == "/etc/wgmux/config.toml\n"
    postinst, prerm, postrm = ((d / n).read_text() for n in ("postinst", "prerm", "postrm"))
    assert "deb-systemd-helper enable 'wgmux.service'" in postinst
    assert "deb-systemd-invoke try-restart 'wgmux.service'" in postinst
    assert "py3compile -p wgmux" in postinst and "py3clean -p wgmux" in prerm
    assert "deb-systemd-invoke stop 'wgmux.service'" in prerm
    assert "deb-systemd-helper purge 'wgmux.service'" in postrm
    for script in ("postinst", "prerm", "postrm"):
        assert os.access(d / script, os.X_OK)
        run = subprocess.run(["sh", "-n", str(d / script)], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr


def test_unit_and_entry_point(deb, tmp_path):
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp_path)], check=True)
    unit = (tmp_path / "lib/systemd/system/wgmux.service").read_text()
    assert "ExecStart=/usr/sbin/wgmux serve -c /etc/wgmux/config.toml --keep-attached" in unit
    assert "RuntimeDirectory=wgmux" in unit and "/usr/local" not in unit
    assert (tmp_path / "etc/wgmux/config.toml").read_bytes() == \
        (ROOT / "examples/config.toml").read_bytes()
    # the package's wgmux, from its tree (the entry point's -I would ignore
    # PYTHONPATH): --version names the package
    assert (tmp_path / "usr/sbin/wgmux").read_text().startswith("#!/usr/bin/python3 -I\n")
    run = subprocess.run(["/usr/bin/python3", "-c",
                          "import sys; sys.argv=['wgmux','--version']; "
                          f"sys.path.insert(0, {str(tmp_path / PY)!r}); "
                          "from wgmux.cli import main; main()"],
                         capture_output=True, text=True, timeout=30)
    assert run.stdout.startswith("wgmux 0.1.0 (") and "[Debian package]" in run.stdout, \
        run.stdout + run.stderr


def test_man_page_has_every_command(deb, tmp_path):
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp_path)], check=True)
    text = gzip.decompress((tmp_path / "usr/share/man/man8/wgmux.8.gz").read_bytes()).decode()
    assert text.startswith(".TH WGMUX 8 ")
    for cmd in ("serve", "show", "check", "detach", "purge"):
        assert f".SS {cmd}\n" in text, cmd
        assert f"usage: wgmux {cmd} " in text, cmd
    assert "\\-\\-keep\\-attached" in text
    if shutil.which("man"):
        run = subprocess.run(["man", "--warnings", "-l", "-Tutf8", "-Z",
                              str(tmp_path / "usr/share/man/man8/wgmux.8.gz")],
                             capture_output=True, text=True, timeout=60,
                             env={**os.environ, "MANROFFSEQ": "", "MANWIDTH": "80"})
        warnings = [x for x in run.stderr.splitlines() if "root privileges" not in x]
        assert run.returncode == 0 and not warnings, run.stderr


def test_reproducible(deb, tmp_path):
    again = build(tmp_path)
    assert again.read_bytes() == deb.read_bytes()


@pytest.mark.skipif(not shutil.which("lintian"), reason="lintian missing (make setup installs it)")
def test_lintian_clean(deb):
    run = subprocess.run(["lintian", "-I", "--pedantic", "--fail-on", "error,warning", str(deb)],
                         capture_output=True, text=True, timeout=120)
    tags = [x for x in run.stdout.splitlines() if x[:2] in ("E:", "W:", "I:", "P:")]
    # the one tag left, explained in docs/build.md
    assert tags == ["I: wgmux: package-supports-alternative-init-but-no-init.d-script "
                    "[lib/systemd/system/wgmux.service]"], run.stdout + run.stderr
    assert run.returncode == 0, run.stdout + run.stderr
