"""`python -m netlab up|ls|down`: the standard topology by hand, and its teardown."""

import subprocess
import sys

import pytest

from netlab import leftovers, wait_for

pytestmark = pytest.mark.netlab


def netlab(*args, **kw):
    return subprocess.run([sys.executable, "-m", "netlab", *args], capture_output=True,
                          text=True, timeout=60, **kw)


def test_up_ls_down():
    up = subprocess.Popen([sys.executable, "-m", "netlab", "up", "--nat", "symmetric", "full_cone"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        wait_for(lambda: lines.append(up.stdout.readline()) or "is up" in lines[-1]
                 or up.poll() is not None, timeout=60, what="netlab up")
        assert up.poll() is None, "".join(lines) + up.stderr.read()
        prefix = lines[-1].split()[1]
        text = "".join(lines)
        assert "symmetric NAT" in text and "full-cone NAT" in text and "WireGuard" in text
        assert any(x == f"netns {prefix}-hub" for x in leftovers(prefix))
        assert prefix in netlab("ls").stdout
        down = netlab("down", "--prefix", prefix)
        assert down.returncode == 0, down.stderr
        up.wait(30)
        assert leftovers(prefix) == []
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
