"""The control socket (wgmux.control) against hostile local users: only
root can use it, nobody can squat it, a slow client blocks nobody, and
replies of any size arrive whole.  Real sockets and real uids (root runs
the tests; `nobody` is the unprivileged user); RUN_DIR points at a test
directory so the host's /run/wgmux is left alone."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from wgmux import control

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown, other uids)")
NOBODY = 65534


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    d = tmp_path / "run-wgmux"
    monkeypatch.setattr(control, "RUN_DIR", d)
    os.chmod(tmp_path, 0o755)
    return d


@pytest.fixture
def server(run_dir):
    srv = control.ControlServer("eth9", lambda req: {"echo": req, "big": "x" * 20_000_000})
    srv.start()
    yield srv
    srv.close()


def as_nobody(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                           "--clear-groups", sys.executable, "-c", code],
                          capture_output=True, text=True, timeout=30)


def test_socket_is_roots_alone(server, run_dir):
    st = os.lstat(server.path)
    assert (st.st_uid, st.st_mode & 0o777) == (0, 0o600)
    assert os.lstat(run_dir).st_mode & 0o022 == 0
    out = as_nobody(f"import socket; s = socket.socket(socket.AF_UNIX); "
                    f"s.connect({str(server.path)!r})")
    assert out.returncode != 0 and "PermissionError" in out.stderr, out
    # and root's request works (the negative's control)
    assert control.request("eth9")["echo"] == {"cmd": "status"}


def test_nobody_cannot_squat_the_name(run_dir):
    control._private_dir(run_dir)
    path = control.address("eth9")
    out = as_nobody(f"import socket; s = socket.socket(socket.AF_UNIX); s.bind({str(path)!r})")
    assert out.returncode != 0 and "PermissionError" in out.stderr, out
    assert not path.exists()


def test_serve_refuses_a_directory_someone_else_made(run_dir):
    run_dir.mkdir()
    os.chown(run_dir, NOBODY, NOBODY)
    with pytest.raises(control.ControlError, match="not a directory only root may write"):
        control.ControlServer("eth9", lambda req: {})


def test_show_refuses_a_socket_root_does_not_own(run_dir):
    control._private_dir(run_dir)
    path = control.address("eth9")
    squatter = socket.socket(socket.AF_UNIX)
    squatter.bind(str(path))
    squatter.listen(1)
    os.chown(path, NOBODY, NOBODY)
    try:
        with pytest.raises(control.ControlError, match="not root: not wgmux's"):
            control.request("eth9")
    finally:
        squatter.close()


def test_a_trickling_client_blocks_nobody(server):
    slow = socket.socket(socket.AF_UNIX)
    slow.connect(str(server.path))
    slow.sendall(b"{")                     # and nothing more
    try:
        t0 = time.monotonic()
        reply = control.request("eth9")
        assert time.monotonic() - t0 < 1.5, "show waited for the slow client"
        assert reply["echo"] == {"cmd": "status"}
        # the slow one is cut off at its deadline, with an error
        slow.settimeout(control.REQUEST_DEADLINE + 3)
        data = b""
        while not data.endswith(b"\n"):
            chunk = slow.recv(65536)
            if not chunk:
                break
            data += chunk
        assert "no whole request" in json.loads(data)["error"]
    finally:
        slow.close()


def test_oversized_request_refused(server):
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(server.path))
    try:
        s.sendall(b"x" * (control.REQUEST_MAX + 10))
    except OSError:
        pass                                # the daemon may hang up first
    s.settimeout(5)
    data = b""
    while True:
        try:
            chunk = s.recv(65536)
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    s.close()
    assert b"request over" in data


def test_big_reply_arrives_whole(server):
    """A status of tens of MB (a full session table) came back truncated and
    the CLI died with a JSONDecodeError; now it is read to the end."""
    reply = control.request("eth9")
    assert len(reply["big"]) == 20_000_000


def test_stale_socket_is_replaced_and_a_live_one_is_not(run_dir):
    control._private_dir(run_dir)
    path = control.address("eth9")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()                            # a killed daemon's leftover
    srv = control.ControlServer("eth9", lambda req: {"ok": 1})
    srv.start()
    try:
        assert control.request("eth9")["ok"] == 1
        with pytest.raises(control.AlreadyServing):
            control.ControlServer("eth9", lambda req: {})
    finally:
        srv.close()
    assert not path.exists()                 # closing removes it


def test_not_running_says_so(run_dir):
    with pytest.raises(control.NotRunning, match="does not exist"):
        control.request("eth9")
