"""NETLAB_SLOWNESS: one factor stretches every netlab deadline (wait_for,
Node.run's subprocess timeout, stop_process) on a slow machine - the
kernel matrix's emulated guests (docs/kernel-matrix.md).

No sleeping and no waiting out real deadlines: wait_for is driven by a fake
clock, so each test takes milliseconds and asserts the exact deadline."""

import pytest

from netlab import lab
from netlab.lab import SLOWNESS_ENV, scaled, slowness, wait_for


class FakeClock:
    """time.monotonic / time.sleep for netlab.lab: sleeping advances it."""

    def __init__(self):
        self.now = 1000.0

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    c = FakeClock()
    monkeypatch.setattr(lab.time, "monotonic", c.monotonic)
    monkeypatch.setattr(lab.time, "sleep", c.sleep)
    return c


def waited_until_timeout(clock, timeout):
    """How long (fake) wait_for polled a never-true predicate."""
    start = clock.now
    with pytest.raises(TimeoutError) as e:
        wait_for(lambda: False, timeout=timeout, interval=0.5, what="nothing")
    return clock.now - start, str(e.value)


def test_default_is_one(monkeypatch, clock):
    monkeypatch.delenv(SLOWNESS_ENV, raising=False)
    assert slowness() == 1.0
    assert scaled(7) == 7
    waited, message = waited_until_timeout(clock, 10)
    assert 10 <= waited <= 10.5
    assert message == "timed out after 10.0s waiting for nothing"


def test_factor_scales_wait_for_deadline(monkeypatch, clock):
    monkeypatch.setenv(SLOWNESS_ENV, "4")
    assert scaled(7) == 28
    waited, message = waited_until_timeout(clock, 10)
    assert 40 <= waited <= 40.5
    assert "after 40.0s (10s x NETLAB_SLOWNESS 4)" in message


def test_success_before_the_scaled_deadline(monkeypatch, clock):
    # True at host-deadline + 5 s: a timeout without the factor, a value with it.
    monkeypatch.setenv(SLOWNESS_ENV, "2")
    start = clock.now
    assert wait_for(lambda: clock.now - start >= 15 and "ok", timeout=10, interval=1) == "ok"
    monkeypatch.setenv(SLOWNESS_ENV, "1")
    start = clock.now
    with pytest.raises(TimeoutError):
        wait_for(lambda: clock.now - start >= 15 and "ok", timeout=10, interval=1)


@pytest.mark.parametrize("raw, factor", [("", 1.0), ("  ", 1.0), ("0.2", 1.0), ("-3", 1.0),
                                         ("1", 1.0), ("2.5", 2.5), (" 12 ", 12.0)])
def test_clamped_at_least_one(monkeypatch, raw, factor):
    monkeypatch.setenv(SLOWNESS_ENV, raw)
    assert slowness() == factor


@pytest.mark.parametrize("raw", ["fast", "nan", "inf", "3x"])
def test_garbage_is_refused(monkeypatch, raw):
    monkeypatch.setenv(SLOWNESS_ENV, raw)
    with pytest.raises(ValueError, match=SLOWNESS_ENV):
        slowness()


def test_node_run_and_stop_process_scale_their_timeouts(monkeypatch):
    """Node.run hands subprocess.run the scaled timeout; stop_process waits
    the scaled time (both seen through fakes, nothing is run)."""
    monkeypatch.setenv(SLOWNESS_ENV, "3")
    seen = {}

    def fake_run(argv, **kwargs):
        seen["run"] = kwargs["timeout"]
        return lab.subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(lab.subprocess, "run", fake_run)
    node = lab.Node.__new__(lab.Node)
    node.name, node.netns = "n", "nlfake-n"
    node.run(["true"], timeout=20)
    assert seen["run"] == 60

    class Proc:
        pid, stdout, stderr, stdin, returncode = 0, None, None, None, None

        def poll(self):
            return None if "wait" not in seen else 0

        def wait(self, timeout):
            seen["wait"] = timeout

    monkeypatch.setattr(lab.os, "killpg", lambda pid, sig: None)
    lab.stop_process(Proc(), timeout=5)
    assert seen["wait"] == 15
