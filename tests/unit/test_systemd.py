"""wgmux.systemd reads `systemctl list-jobs` as the unit's ExecStopPost=
needs it.  No systemd runs here (PID 1 is not systemd): each case plays
systemctl with a script printing what systemd prints."""

import pytest

from wgmux import systemd


def fake(tmp_path, monkeypatch, body: str):
    script = tmp_path / "systemctl"
    script.write_text("#!/bin/sh\n" + body + "\n")
    script.chmod(0o755)
    monkeypatch.setattr(systemd, "SYSTEMCTL", str(script))


@pytest.mark.parametrize("out,job", [
    ("1234 wgmux.service restart running", "restart"),
    ("1234 wgmux.service stop running", "stop"),
    ("7 other.service restart waiting\n1234 wgmux.service start waiting", "start"),
    ("7 wgmux.service.d restart running", None),      # only the exact unit counts
    ("", None),
    ("No jobs running.", None),
])
def test_unit_job(tmp_path, monkeypatch, out, job):
    fake(tmp_path, monkeypatch, f"printf '%s\\n' '{out}'")
    assert systemd.unit_job("wgmux.service") == job
    assert systemd.restarting("wgmux.service") is (job == "restart")


def test_systemctl_failing_is_an_error_that_says_why(tmp_path, monkeypatch):
    fake(tmp_path, monkeypatch,
         "echo 'System has not been booted with systemd as init system (PID 1).' >&2; exit 1")
    with pytest.raises(systemd.SystemdError, match="exited 1: System has not been booted"):
        systemd.unit_job("wgmux.service")


def test_no_systemctl(monkeypatch):
    monkeypatch.setattr(systemd, "SYSTEMCTL", "/nonexistent/systemctl")
    with pytest.raises(systemd.SystemdError, match="not found"):
        systemd.unit_job("wgmux.service")
