"""packaging/wgmux.service, the capability logic it shares with `serve`, and
the pieces of `wgmux check` that need no hub."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from wgmux import check, preflight

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "packaging" / "wgmux.service"


def unit_settings(text):
    """{(section, key): [values]} of a unit file (comments and blanks skipped)."""
    out, section = {}, None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault((section, key), []).append(value)
    return out


@pytest.fixture(scope="module")
def unit():
    return unit_settings(UNIT.read_text())


def installed_unit(tmp_path, bindir="/opt/wgmux/bin", sysconfdir="/srv/etc"):
    """The unit as install.sh writes it, with a launcher that exists."""
    launcher = Path(str(tmp_path) + bindir) / "wgmux"
    launcher.parent.mkdir(parents=True)
    launcher.write_text("#!/bin/sh\nexit 0\n")
    launcher.chmod(0o755)
    text = UNIT.read_text()
    text = text.replace("/usr/local/bin/wgmux", str(launcher))
    text = text.replace("/etc/wgmux/", f"{sysconfdir}/wgmux/")
    path = tmp_path / "wgmux.service"
    path.write_text(text)
    return path


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_systemd_analyze_verify_passes_without_a_warning(tmp_path):
    path = installed_unit(tmp_path)
    out = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    # verify exits 0 on unknown keys and unparsable values: they are warnings
    assert out.stderr.strip() == "", out.stderr


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_systemd_analyze_verify_catches_a_broken_unit(tmp_path):
    """The check above can fail: a typo'd key is reported."""
    path = installed_unit(tmp_path)
    path.write_text(path.read_text().replace("NoNewPrivileges=yes", "NoNewPrivilege=yes"))
    out = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True,
                         timeout=60)
    assert "Unknown key" in out.stderr


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_exposure_stays_low(tmp_path):
    out = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager",
                          str(installed_unit(tmp_path))], capture_output=True, text=True,
                         timeout=60)
    m = re.search(r"Overall exposure level for \S+: ([\d.]+)", out.stdout)
    if not m:
        pytest.skip(f"systemd-analyze security --offline not supported: {out.stderr.strip()}")
    assert float(m.group(1)) <= 4.5, out.stdout


def test_unit_runs_serve_and_reloads_with_sighup(unit):
    assert unit[("Service", "ExecStart")] == [
        "/usr/local/bin/wgmux serve -c /etc/wgmux/config.toml --keep-attached"]
    # a restart keeps the program attached for the next start; a stop removes it
    assert unit[("Service", "ExecStopPost")] == [
        "/usr/local/bin/wgmux detach -c /etc/wgmux/config.toml --unless-restarting %n"]
    assert unit[("Service", "ExecReload")] == ["/bin/kill -HUP $MAINPID"]
    assert unit[("Service", "Restart")] == ["on-failure"]
    assert unit[("Service", "Type")] == ["simple"]
    assert "network-online.target" in unit[("Unit", "After")][0].split()
    assert "network-online.target" in unit[("Unit", "Wants")][0].split()
    assert unit[("Install", "WantedBy")] == ["multi-user.target"]


def test_unit_is_hardened(unit):
    caps = unit[("Service", "CapabilityBoundingSet")][0].split()
    assert sorted(caps) == sorted(preflight.REQUIRED_CAPS), "unit and preflight must agree"
    assert "CAP_SYS_ADMIN" not in caps
    assert unit[("Service", "AmbientCapabilities")][0].split() == caps
    for key, value in [("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                       ("ProtectHome", "yes"), ("PrivateTmp", "yes"), ("PrivateDevices", "yes")]:
        assert unit[("Service", key)] == [value], key
    # bpffs stays writable (pinned maps); nothing hides /lib/modules (headers
    # for bcc) or makes bpffs read-only behind ReadWritePaths' back.
    assert unit[("Service", "ReadWritePaths")] == ["-/sys/fs/bpf"]
    assert ("Service", "ProtectKernelModules") not in unit
    assert ("Service", "ProtectKernelTunables") not in unit
    assert ("Service", "MemoryDenyWriteExecute") not in unit   # ctypes callbacks, LLVM


@pytest.mark.parametrize("mask,missing", [
    (0, ["CAP_BPF", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_PERFMON"]),
    ((1 << 39) | (1 << 38) | (1 << 12) | (1 << 13), []),
    ((1 << 21) | (1 << 12) | (1 << 13), []),                    # CAP_SYS_ADMIN stands in
    ((1 << 39) | (1 << 12) | (1 << 13), ["CAP_PERFMON"]),
    ((1 << 39) | (1 << 38) | (1 << 12), ["CAP_NET_RAW"]),
    ((1 << 41) - 1, []),                                        # root
])
def test_missing_caps(mask, missing):
    assert preflight.missing_caps(mask) == missing


def test_check_lines():
    Result = preflight.Result
    assert check.line(Result(preflight.OK, "bpffs mounted at /sys/fs/bpf")) == \
        "[ ok ] bpffs mounted at /sys/fs/bpf"
    assert check.line(Result(preflight.FAIL, "x", "do y")) == "[fail] x\n       hint: do y"
    assert check.line(Result(preflight.WARN, "w")).startswith("[warn] ")
    assert check.line(Result(check.SKIP, "s")).startswith("[skip] ")


def test_bpffs_check(monkeypatch):
    from wgmux import pinning

    monkeypatch.setattr(pinning, "bpffs_mounted", lambda path=None: True)
    assert preflight.check_bpffs() == preflight.Result(preflight.OK,
                                                       "bpffs mounted at /sys/fs/bpf")
    monkeypatch.setattr(pinning, "bpffs_mounted", lambda path=None: False)
    r = preflight.check_bpffs()
    assert r.status == preflight.WARN, "serve runs without bpffs (unpinned)"
    assert "mount -t bpf bpf /sys/fs/bpf" in r.hint


def test_make_install_variables_reach_the_script():
    out = subprocess.run(["make", "-n", "-C", str(ROOT), "install", "PREFIX=/opt/w",
                          "DESTDIR=/stage", "SYSCONFDIR=/srv/etc"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    cmd = out.stdout
    for expected in ['PREFIX="/opt/w"', 'BINDIR="/opt/w/bin"', 'VENVDIR="/opt/w/lib/wgmux"',
                     'UNITDIR="/opt/w/lib/systemd/system"', 'SYSCONFDIR="/srv/etc"',
                     'DESTDIR="/stage"', "packaging/install.sh install"]:
        assert expected in cmd, (expected, cmd)
