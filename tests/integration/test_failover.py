"""Hub failover: a floating address moves from hub A to a standby hub B,
and a reflected pair's traffic comes back by WireGuard's own timers
(issue 15 item 4; docs/scaling.md says what an operator sets up).

The topology is the standard one with both peers behind port-restricted
NATs, the initiator I pointing at A's floating address 198.18.0.254:PORT,
plus a standby hub B beside A (netlab.failover): B's own address
198.18.0.253, a WireGuard with A's private key, listen port and peers, and
`wgmux serve` with A's config.  Traffic runs through the pair (UdpSeq, 50
datagrams/s, both ways unless said otherwise).  Then A fails (its link goes down) and
B takes the floating address (added on eth0, gratuitous ARP).  Nothing
changes on the peers.

What WireGuard does then (wireguard-go's timers, as the kernel's): I's
session with R goes on being used; an initiator that has sent data and
heard nothing authenticated back for KEEPALIVE_TIMEOUT + REKEY_TIMEOUT =
15 s (plus up to 334 ms of jitter) starts a new handshake, and retries
every REKEY_TIMEOUT (5 s, + jitter) while unanswered.  With traffic both
ways I heard from R up to the failover, so its new handshake leaves ~15 s
after it: the interruption is that long, not shorter, whatever the hubs
do (nothing tells a WireGuard peer early that its session's path is gone).

For the new handshake to get through B, B must know R's endpoint (E_R):
wgmux forwards an initiation on PORT to E_R, which it reads from the hub's
own WireGuard device, and B's device learns it only from a handshake with
R.  R does not handshake with B soon: its keepalives belong to its session
with A, which B cannot decrypt, and only *data* that goes unanswered (or
its 120 s rekey) makes R start a new one.  So:

- `test_failover_standby_with_endpoints[both-ways]`: the operator syncs
  the hub's endpoints to the standby (netlab.failover.copy_endpoints, as a
  periodic `wg show endpoints` / `wg set` would); the pair resumes with
  I's first new handshake: the interruption is measured, printed and
  bounded to [14 s, 18.3 s] (below: faster than WireGuard's timer, which
  nothing here can be; above: I's first try was lost).
- `[one-way]`: the same with traffic from I to R only.  R then sends I a
  passive keepalive every 10 s (a receiver's answer to data) and nothing
  else, and I's 15 s count starts at its first datagram after one: the
  failover comes 5 s (250 datagrams) after I heard one, so the pair is
  back ~10 s after it (asserted: 15 s after the keepalive, -1 s / +3.3 s).
- `test_failover_responder_heartbeat`: no state copied; R pings the hub's
  overlay address every 0.5 s (data, so R's own 15 s timer re-handshakes
  it with B, which then knows E_R).  R's count starts at its first ping
  after the failover, I's at its first datagram, up to 0.5 s earlier: I's
  first try usually reaches B before E_R does and is dropped, and the pair
  resumes with I's first retry (~20.3 s measured), bounded to
  15.3 + 5.3 s + slack.
- `test_failover_negative[no-wgmux]`: B runs its WireGuard with the
  endpoints synced but no wgmux: the pair stays down past the positive's
  bound (18.3 s); once `wgmux serve` runs on B it resumes at I's next
  retry (<= 5.3 s + slack after serve is up).
- `test_failover_negative[no-endpoint]`: B runs wgmux but its device
  never learned E_R (no sync, no heartbeat): the pair stays down past
  18.3 s, B's wgmux dropping I's initiations for want of E_R
  (sp_drop_no_responder); once the endpoints are copied to B, it resumes
  at I's next retry.

- `test_failover_nothing_synced_waits_for_the_responders_rekey` (slow,
  ~2 min): no sync, no heartbeat: B's device learns E_R at R's rekey of
  its hub session, 120 s after its last handshake with A; the pair is
  back at I's next try after that (asserted: -1 s / +9.8 s around it).

Every wait is a deadline (wait_for / UdpSeq.wait_flowing); the bounds are
WireGuard's timers plus a slack for a loaded 2-core machine.
"""

import subprocess
import time

import pytest

from harness.hub import WgmuxHub, serving_pair
from netlab import wait_for
from netlab.failover import add_standby_hub, copy_endpoints, fail_over
from netlab.topology import HUB_OVERLAY_IP
from netlab.traffic import UdpSeq, ping

pytestmark = pytest.mark.netlab

PORT = 51821
# WireGuard's timers (wireguard-go device/constants.go; the kernel's are the same)
KEEPALIVE_TIMEOUT = 10.0
REKEY_TIMEOUT = 5.0
JITTER = 0.334
FIRST_TRY = KEEPALIVE_TIMEOUT + REKEY_TIMEOUT        # after the last packet heard
SLACK = 3.0                                          # a loaded 2-core machine
# the negatives wait as long as the positive's bound: past I's first try
STAYS_DOWN = FIRST_TRY + JITTER + SLACK
OFFSET = 5.0           # one-way traffic: the failover this long after I last heard R


class Failover:
    """Hub A (the lab's hub, serving), the standby B, flows both ways."""

    def __init__(self, lab, standby_wgmux: bool = True, sync: bool = True,
                 both_ways: bool = True):
        self.lab = lab
        self.topo, self.hub, self.initiator, self.responder = serving_pair(lab, port=PORT)
        self.standby = add_standby_hub(self.topo)
        self.hub_b = WgmuxHub(self.standby.topo)
        self.hub_b.pairs = list(self.hub.pairs)     # the same config, peers untouched
        self.hub_b.write_config()
        # A's config but for Device's name (userspace WireGuard names are
        # unique on the machine: the two hubs share /var/run/wireguard)
        assert self.hub_b.config_text().replace(self.standby.wg.name, "DEV") \
            == self.hub.config_text().replace(self.topo.hub_wg.name, "DEV")
        if sync:
            copied = copy_endpoints(self.topo.hub_wg, self.standby.wg)
            assert self.responder.wg.public_key in copied, copied
        if standby_wgmux:
            self.hub_b.start()
            self.wait_port_endpoint(known=sync)
        i, r = self.initiator, self.responder
        self.flows = [UdpSeq(i.node, r.node, r.overlay_ip, 7001)]
        if both_ways:
            self.flows.append(UdpSeq(r.node, i.node, i.overlay_ip, 7002))
        for f in self.flows:
            f.start()
            lab.on_close(f.stop)
        for f in self.flows:
            f.wait_flowing(n=25)
        if standby_wgmux:        # B carried nothing yet: the floating address is A's
            assert not self.hub_b.show()["sessions"], self.hub_b.show_text()
        self.handshake = self.initiator.wg.peer(self.responder.wg.public_key).latest_handshake

    def wait_port_endpoint(self, known: bool):
        """B's wgmux has read its device: PORT's endpoint is E_R (or none)."""
        want = self.topo.hub_wg.peer(self.responder.wg.public_key).endpoint if known else None

        def read():
            (p,) = [p for p in self.hub_b.show()["peers"] if p["port"] == PORT]
            return p["known_to_device"] and p["endpoint"] == want
        wait_for(read, timeout=10, what=f"B's wgmux to read PORT's endpoint ({want})")

    def passive_keepalive(self) -> float:
        """With traffic from I to R only, R answers with a passive keepalive
        10 s after it starts receiving data, and every 10 s while it does:
        wait for the next one to reach I; the moment I had it."""
        key = self.responder.wg.public_key
        before = self.initiator.wg.peer(key).rx_bytes
        wait_for(lambda: self.initiator.wg.peer(key).rx_bytes > before, timeout=15,
                 interval=0.02, what="R's passive keepalive to reach I")
        return time.monotonic()

    def fail(self) -> float:
        """A fails, B takes the floating address; the moment A went."""
        t = time.monotonic()
        fail_over(self.topo.hub, self.standby.node,
                  watchers=[s.router for s in self.topo.sites])
        return t

    def resumed(self, after: float, timeout: float) -> float:
        """Wait until both flows deliver again after `after`; the moment
        the later of the two did (its first arrival).  (What A's link still
        delivered in its last milliseconds counts: wait from a moment
        after the failover, and take the gap from `interruption`.)"""
        return max(f.wait_flowing(n=10, after=after, timeout=timeout,
                                  what=f"flow {f.port} to resume") for f in self.flows)

    def interruption(self, failed: float):
        """(gap, back): the longest silence of either flow around the
        failover, and the moment it ended."""
        gap, at = max(f.largest_gap(failed - 1.0) for f in self.flows)
        return gap, at + gap

    def silent_since(self, failed: float) -> bool:
        """Neither flow delivered anything later than 0.1 s after `failed`
        (what was already in flight when A's link went down aside)."""
        return all(f.count_after(failed + 0.1) == 0 for f in self.flows)

    def counter(self, hub, *names) -> int:
        counters = hub.show()["counters"]
        return sum(counters[n] for n in names)

    def b_carries_the_pair(self):
        sessions = [s for s in self.hub_b.show()["sessions"] if s["port"] == PORT]
        assert sessions, self.hub_b.show_text()
        assert self.counter(self.hub_b, "sp_reflect_initiation") >= 1


@pytest.mark.parametrize("traffic", ["both-ways", "one-way"])
def test_failover_standby_with_endpoints(lab, traffic):
    t0 = time.monotonic()
    f = Failover(lab, both_ways=(traffic == "both-ways"))
    if traffic == "one-way":
        heard = f.passive_keepalive()
        # fail over 5 s (250 datagrams) after I last heard R
        f.flows[0].wait_flowing(n=int(OFFSET / f.flows[0].interval), after=heard)
    failed = f.fail()
    f.resumed(failed + 1.0, timeout=FIRST_TRY + 2 * REKEY_TIMEOUT + SLACK)
    gap, back = f.interruption(failed)
    print(f"\nfailover with the endpoints synced, traffic {traffic}: traffic back "
          f"{back - failed:.2f}s after hub A went; longest silence {gap:.2f}s "
          f"(test {time.monotonic() - t0:.0f}s)")
    f.b_carries_the_pair()
    # A's sessions reached B and B could not carry them (I's transport on PORT)
    assert f.counter(f.hub_b, "drop_unknown_index") >= 1
    # I's timer started at its first datagram after it last heard R: until
    # the failover (both ways), or at R's last passive keepalive (one way);
    # the pair is back with I's first new handshake, not a retry (5 s later)
    due = FIRST_TRY if traffic == "both-ways" else FIRST_TRY - (failed - heard)
    print(f"I's new handshake due {due:.2f}s after hub A went")
    assert due - 1.0 <= gap <= due + JITTER + SLACK, (gap, due)
    for flow in f.flows:      # and it goes on
        flow.wait_flowing(n=50, after=back)


def test_failover_responder_heartbeat(lab):
    t0 = time.monotonic()
    f = Failover(lab, sync=False)
    r = f.responder
    assert ping(r.node, HUB_OVERLAY_IP)       # the hub answers R's data
    r.node.popen(["ping", "-n", "-q", "-i", "0.5", HUB_OVERLAY_IP],
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    hub_peer = f.topo.hub_wg.peer(r.wg.public_key)
    failed = f.fail()
    bound = FIRST_TRY + JITTER + REKEY_TIMEOUT + JITTER + SLACK
    f.resumed(failed + 1.0, timeout=bound + REKEY_TIMEOUT)
    gap, back = f.interruption(failed)
    learned = f.standby.wg.peer(r.wg.public_key)
    dropped = f.counter(f.hub_b, "sp_drop_no_responder", "drop_no_responder")
    print(f"\nfailover with the responder's heartbeat, nothing synced: traffic back "
          f"{back - failed:.2f}s after hub A went; longest silence {gap:.2f}s; "
          f"{dropped} initiation(s) of I dropped by B for want of E_R "
          f"(test {time.monotonic() - t0:.0f}s)")
    # B learned E_R from R's own handshake with it: the same endpoint as A's
    assert learned.latest_handshake and learned.endpoint == hub_peer.endpoint, learned
    f.b_carries_the_pair()
    assert FIRST_TRY - 1.0 <= gap <= bound, gap


@pytest.mark.parametrize("missing", ["no-wgmux", "no-endpoint"])
def test_failover_negative(lab, missing):
    t0 = time.monotonic()
    f = Failover(lab, standby_wgmux=(missing != "no-wgmux"), sync=(missing != "no-endpoint"))
    failed = f.fail()
    with pytest.raises(TimeoutError):
        f.resumed(failed + 0.1, timeout=STAYS_DOWN)
    assert f.silent_since(failed)
    # no new handshake completed for I (its tries went nowhere)
    assert f.initiator.wg.peer(f.responder.wg.public_key).latest_handshake == f.handshake
    if missing == "no-wgmux":
        f.hub_b.start()
    else:
        # B's wgmux saw I's initiations and had nowhere to send them
        assert f.counter(f.hub_b, "sp_drop_no_responder", "drop_no_responder") >= 1
        assert f.standby.wg.peer(f.responder.wg.public_key).endpoint is None
        assert f.silent_since(failed)
        copy_endpoints(f.topo.hub_wg, f.standby.wg)
        f.wait_port_endpoint(known=True)
    fixed = time.monotonic()
    back = f.resumed(fixed, timeout=REKEY_TIMEOUT + JITTER + SLACK)
    print(f"\n{missing}: down {fixed - failed:.1f}s after hub A went, until fixed; "
          f"back {back - fixed:.2f}s after the fix (test {time.monotonic() - t0:.0f}s)")
    f.b_carries_the_pair()


REKEY_AFTER_TIME = 120.0
KEEPALIVE = 1                  # the lab's PersistentKeepalive toward the hub (s)


@pytest.mark.slow
def test_failover_nothing_synced_waits_for_the_responders_rekey(lab):
    """Doing nothing (no sync, no heartbeat): B learns E_R only when R
    rekeys its session with the hub, REKEY_AFTER_TIME (120 s) after its
    last handshake with A (R initiated it: the hub never sends R data),
    at R's first keepalive past that; the pair is back at I's next try
    after it (I goes on trying every 5 s while it sends data)."""
    t0 = time.monotonic()
    f = Failover(lab, sync=False)
    r = f.responder
    hub_key = f.topo.hub_wg.public_key
    last = r.wg.peer(hub_key).latest_handshake          # unix seconds
    failed = f.fail()
    age = time.time() - last                            # R's hub session at the failover
    due = REKEY_AFTER_TIME - age
    f.resumed(failed + 1.0, timeout=due + KEEPALIVE + 1.0 + REKEY_TIMEOUT + JITTER + SLACK)
    gap, back = f.interruption(failed)
    learned = f.standby.wg.peer(r.wg.public_key)
    print(f"\nfailover, nothing synced: R's hub session {age:.1f}s old at the failover, "
          f"its rekey due {due:.1f}s after it; traffic back {back - failed:.2f}s after hub A "
          f"went (test {time.monotonic() - t0:.0f}s)")
    assert learned.endpoint and learned.latest_handshake >= last + REKEY_AFTER_TIME - 1, learned
    # from R's new handshake with the hub, now B (whole seconds on each side)
    assert abs(r.wg.peer(hub_key).latest_handshake - learned.latest_handshake) <= 1
    f.b_carries_the_pair()
    # latest_handshake has whole seconds: -1 s on that side
    assert due - 1.0 <= gap <= due + KEEPALIVE + 0.5 + REKEY_TIMEOUT + JITTER + SLACK, (gap, due)
