"""`make install-venv` / `make uninstall`, and `pip install .` into a clean venv.

- DESTDIR staging: the tree has the documented layout, and nothing in it
  (text or bytecode) names the staging directory: moved to its PREFIX, it
  runs, and its unit passes `systemd-analyze verify`.
- An existing config is never overwritten; reinstalling (upgrading) works.
- A real install into a temporary PREFIX: the launcher works from any
  directory (a `wgmux/` there does not shadow it), `wgmux check` on a
  netlab hub reports all ok, and uninstall leaves only the config.
- `pip install .` into a venv without system site-packages: the CLI works
  and `serve`/`check` say in one line that bcc is a system package.

Every install goes to a temporary directory (SYSCONFDIR too), never to the
real /usr/local or /etc.
"""

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from netlab.topology import standard
from netlab.wireguard import WireGuard
from harness.hub import WgmuxHub

pytestmark = pytest.mark.netlab

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = (ROOT / "examples" / "config.toml").read_text()


def make(target, **variables):
    args = ["make", "-s", "-C", str(ROOT), target] + [f"{k}={v}" for k, v in variables.items()]
    out = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"make {target} failed:\n{out.stdout}\n{out.stderr}"
    return out


def files_under(top: Path):
    """Every file and symlink (not directory) under top, relative."""
    return sorted(str(p.relative_to(top)) for p in top.rglob("*") if p.is_file() or p.is_symlink())


@pytest.fixture
def scratch():
    """A temporary directory outside pytest's tmp_path (which some tests
    must not see inside paths) removed at the end."""
    d = Path(tempfile.mkdtemp(prefix="wgmux-install-test-"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def launcher_runs(wgmux: Path, cwd: Path, *args, node=None):
    argv = [str(wgmux), *args]
    if node is not None:
        return node.run(["sh", "-c", 'cd "$0" && exec "$@"', str(cwd), *argv], check=False,
                        timeout=120)
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120)


def shadowing_dir(d: Path) -> Path:
    """A directory whose wgmux/ would shadow the installed one if the current
    directory were on sys.path."""
    (d / "wgmux").mkdir(parents=True)
    (d / "wgmux" / "__init__.py").write_text("raise SystemExit('shadowed by ./wgmux')\n")
    (d / "wgmux" / "cli.py").write_text("raise SystemExit('shadowed by ./wgmux')\n")
    return d


def test_destdir_staging_layout_and_relocation(scratch):
    dest = scratch / "dest"
    prefix = scratch / "final"          # the tree's final place, after the "package" is installed
    etc = scratch / "etc"
    make("install-venv", DESTDIR=dest, PREFIX=prefix, SYSCONFDIR=etc)

    staged = dest / str(prefix).lstrip("/")
    expected = {
        "bin/wgmux", "lib/wgmux/pyvenv.cfg", "lib/wgmux/bin/python",
        "lib/systemd/system/wgmux.service", "share/doc/wgmux/README.md",
        "share/doc/wgmux/config.toml",
    }
    have = set(files_under(staged))
    assert expected <= have, expected - have
    assert any(re.match(r"lib/wgmux/lib/python3\.\d+/site-packages/wgmux/cli\.py$", f) for f in have)
    assert any(re.match(r"lib/wgmux/lib/python3\.\d+/site-packages/wgmux/bpf/wgmux\.c$", f)
               for f in have), "the datapath's C source ships with the package"
    assert any(re.match(r"lib/wgmux/lib/python3\.\d+/site-packages/pyroute2/", f) for f in have)
    assert not any("__editable__" in f or f.endswith(".egg-link") for f in have), "not editable"
    # the config, outside PREFIX
    assert files_under(dest / str(etc).lstrip("/")) == ["wgmux/config.toml"]
    assert (dest / str(etc).lstrip("/") / "wgmux" / "config.toml").read_text() == EXAMPLE
    # nothing else anywhere in DESTDIR
    assert {str(p.relative_to(dest)).split("/")[0] for p in dest.iterdir()} == \
        {str(scratch).lstrip("/").split("/")[0]}

    cfg = (staged / "lib/wgmux/pyvenv.cfg").read_text()
    assert "include-system-site-packages = true" in cfg
    assert re.search(r"^home = /usr/bin$", cfg, re.M), cfg
    assert os.readlink(staged / "lib/wgmux/bin/python").startswith(("python", "/usr/bin/python"))

    launcher = (staged / "bin/wgmux").read_text()
    assert os.access(staged / "bin/wgmux", os.X_OK)
    assert f'exec "{prefix}/lib/wgmux/bin/python" -I ' in launcher, launcher

    unit = (staged / "lib/systemd/system/wgmux.service").read_text()
    assert f"ExecStart={prefix}/bin/wgmux serve -c {etc}/wgmux/config.toml" in unit
    assert f"ExecStopPost={prefix}/bin/wgmux detach -c {etc}/wgmux/config.toml" in unit
    assert f"file:{prefix}/share/doc/wgmux/README.md" in unit
    assert "/usr/local/" not in unit

    # No file, text or bytecode, remembers the staging directory.
    out = subprocess.run(["grep", "-rlaF", "--", str(dest), str(dest)], capture_output=True,
                         text=True)
    assert out.stdout == "", "files naming DESTDIR:\n" + out.stdout

    # Moved to its final place it works, from anywhere.
    shutil.move(str(staged), str(prefix))
    elsewhere = shadowing_dir(scratch / "elsewhere")
    out = launcher_runs(prefix / "bin/wgmux", elsewhere, "--help")
    assert out.returncode == 0, out.stderr
    assert "check" in out.stdout and "serve" in out.stdout
    out = launcher_runs(prefix / "lib/wgmux/bin/wgmux", elsewhere, "--help")
    assert out.returncode == 0, out.stderr      # the venv's own entry point too

    if shutil.which("systemd-analyze"):
        out = subprocess.run(["systemd-analyze", "verify",
                              str(prefix / "lib/systemd/system/wgmux.service")],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and out.stderr.strip() == "", out.stderr


def test_existing_config_is_kept_and_reinstall_upgrades(scratch):
    dest = scratch / "dest"
    etc = dest / "etc" / "wgmux"
    etc.mkdir(parents=True)
    mine = '[Interface]\nDevice = "wg7"\nHubPort = 4242\nInterface = "ens3"\n'
    (etc / "config.toml").write_text(mine)
    out = make("install-venv", DESTDIR=dest, PREFIX="/usr/local")
    assert "kept the existing /etc/wgmux/config.toml" in out.stdout
    assert (etc / "config.toml").read_text() == mine
    venv_cfg = dest / "usr/local/lib/wgmux/pyvenv.cfg"
    marker = venv_cfg.parent / "stale-file"
    marker.write_text("from an older version")
    make("install-venv", DESTDIR=dest, PREFIX="/usr/local")
    assert (etc / "config.toml").read_text() == mine
    assert venv_cfg.exists() and not marker.exists(), "an upgrade replaces the venv whole"
    make("uninstall", DESTDIR=dest, PREFIX="/usr/local")
    assert files_under(dest) == ["etc/wgmux/config.toml"]


def test_real_install_check_on_netlab_hub_then_uninstall(lab, scratch):
    prefix, etc = scratch / "prefix", scratch / "etc"
    make("install-venv", PREFIX=prefix, SYSCONFDIR=etc)
    wgmux = prefix / "bin" / "wgmux"
    elsewhere = shadowing_dir(scratch / "elsewhere")
    out = launcher_runs(wgmux, elsewhere, "--help")
    assert out.returncode == 0, out.stderr

    topo = standard(lab, wireguard=True)
    initiator, responder = topo.host(1), topo.host(2)
    for host in (initiator, responder):
        topo.hub_wg.wait_handshake(host.wg.public_key)
    hub = WgmuxHub(topo)
    hub.pair(initiator, responder, 51821)
    out = launcher_runs(wgmux, elsewhere, "check", "-c", str(hub.config_path), node=topo.hub)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = [l for l in out.stdout.splitlines() if l.startswith("[")]
    assert lines and all(l.startswith("[ ok ]") for l in lines), out.stdout
    assert any("datapath compiles and the kernel loads it" in l for l in lines)
    assert any("responder on port 51821" in l and " is at " in l for l in lines), out.stdout

    make("uninstall", PREFIX=prefix, SYSCONFDIR=etc)
    assert not wgmux.exists()
    assert files_under(scratch) == ["elsewhere/wgmux/__init__.py", "elsewhere/wgmux/cli.py",
                                    "etc/wgmux/config.toml"]
    assert (etc / "wgmux" / "config.toml").read_text() == EXAMPLE


# -- pip install . without the system's site-packages -------------------------
@pytest.fixture
def hub_node(lab, scratch):
    node = lab.add_node("hub")
    peer = lab.add_node("peer")
    lab.link(node, "eth0", peer, "eth0", "198.18.0.1/24", "198.18.0.2/24")
    wg = WireGuard.create(node, "pip", 51820, "10.9.0.1/24")
    path = scratch / "config.toml"
    path.write_text(f'[Interface]\nDevice = "{wg.name}"\nHubPort = 51820\nInterface = "eth0"\n')
    return node, path


def test_pip_install_in_clean_venv_says_bcc_is_a_system_package(hub_node, scratch):
    node, config = hub_node
    src = scratch / "src"
    src.mkdir()
    # a copy, so that pip's in-tree build leaves the checkout alone
    subprocess.run(f"tar --exclude=./.venv --exclude=./.git --exclude=./build "
                   f"--exclude='*.egg-info' --exclude=__pycache__ -cf - . | tar -xf - -C {src}",
                   shell=True, check=True, cwd=ROOT)
    venv = scratch / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True, timeout=120)
    assert "include-system-site-packages = false" in (venv / "pyvenv.cfg").read_text()
    out = subprocess.run([str(venv / "bin/pip"), "install", "-q", str(src)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert subprocess.run([str(venv / "bin/python"), "-c", "import bcc"],
                          capture_output=True).returncode != 0, "bcc must not be visible here"

    wgmux = venv / "bin" / "wgmux"
    out = subprocess.run([str(wgmux), "--help"], capture_output=True, text=True, cwd=scratch)
    assert out.returncode == 0, out.stderr

    out = node.run([str(wgmux), "serve", "-c", str(config)], check=False, timeout=120)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        "wgmux: bcc is not importable: install the Debian package python3-bpfcc and run wgmux "
        "with a Python that sees it (make setup does this)"], out.stderr

    out = node.run([str(wgmux), "check", "-c", str(config)], check=False, timeout=120)
    assert out.returncode == 1
    text = out.stdout
    assert "[fail] bcc is not importable: install the Debian package python3-bpfcc" in text, text
    assert "hint: bcc is a system package, not on PyPI" in text, text
    assert "[skip] kernel headers usable by bcc (needs bcc)" in text, text
    assert "[ ok ] Interface 'eth0' exists" in text, text
