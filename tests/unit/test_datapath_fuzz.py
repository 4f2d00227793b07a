"""A fuzzer for the datapath (bpf/wgmux.c): generated frames through the
real compiled program with BPF_PROG_TEST_RUN, every one of them checked.

What it sends (tests/unit/datapath_fuzz.py): map states like the golden
table's (harness.golden's with_* setups: responders on peer ports with known
and unknown endpoints, half-open entries both ways, established pairs over
IPv4 and IPv6, entries towards odd next hops; plain WireGuard and the
AmneziaWG classifiers AWG1-3; roaming on and off), set up afresh every
256 frames or, one time in four, left as the frames before made them.
Frames are mostly structure-aware: golden's builders (initiations,
responses, cookies, transport to live and dead indices, to HubPort, peer
ports and other ports, IPv4 and IPv6; counters at 0, max, random and
around the last one sent; AmneziaWG prefixes and headers at and around
their range edges; martian and odd source and destination addresses, the
hub's own among them), then mutated: truncated, extended, bits flipped,
header fields (Ethernet type, IP version/IHL/lengths/checksum/TTL/protocol/
fragment bits, IPv6 payload length/next header/hop limit, UDP ports/length/
checksum) set to edge values, the message resized to the wrong size for its
type; some frames are random bytes.

The invariants, checked for every frame (the check's name in brackets):

1. [verdict] The run does not fail and the program returns a TC verdict
   it may give: TC_ACT_OK, TC_ACT_SHOT or TC_ACT_REDIRECT.
2. [length] The output frame is never longer than the input, but for an
   IPv4 frame reflected to an IPv6 target (20 bytes more, docs/spec.md §4b).
3. [unchanged] A frame that is not redirected leaves byte for byte as it
   came ([unchanged_dropped] for one the program drops).
4. A redirected frame is a reflection:
   [reflect] a well-formed IPv4 (20-byte header, not a fragment) or IPv6
   UDP frame: total/payload and UDP lengths consistent with each other and
   the frame, the IPv4 header checksum valid, the UDP checksum in the state
   it came in (valid stays valid, zero stays zero, a partial sum stays a
   partial sum for the new addresses, a wrong one stays wrong); its UDP
   payload byte for byte the input's, classified by the state's
   wire.Classifier as a response, cookie or transport message of that
   kind's size (transport: at least the minimum), counted as that kind's
   reflect_ reason; the input's (destination port, receiver index) was a
   session before the frame; it goes to that session's dst (as the maps
   held it before the frame) from its src_port and from the address the
   input was sent to, with TTL / hop limit one less, every other IP field
   unchanged; to a target of the other family (§4b) from the hub address
   of that family the session's via names, the new header's fields as the
   spec says (TOS <-> traffic class, no DF, flow label 0).
   [bad_ip] The input was one the stack would take: IPv4 header checksum
   right, IP version that of the ethertype.
   [udp_checksum] The UDP checksum is valid, or zero over IPv4 (a frame
   that came in with a wrong one is reflected with it still wrong);
   [udp_zero_v6] not zero over IPv6.
   [hub_address] The input was addressed to one of the hub's addresses
   (golden.HUB4/HUB6, and NOFWD4, the address of golden's nofwd0).
   [martian] It is not sent to an address no peer can have (docs/spec.md
   §3: IPv4 0/8, 127/8, 224/4, 240/4; IPv6 ::/64, fe80::/10, ff00::/8; the
   hub's own).
5. [counters] Exactly one verdict counter (not ev_/sp_) goes up, by one,
   and it agrees with the verdict (reflect_ <-> REDIRECT, pass_ -> OK,
   drop_ -> SHOT); no counter goes down, no sp_ counter moves.

With the XDP program in front of TC (test_datapath_fuzz[xdp], as a hub with
Datapath = "xdp" runs, docs/spec.md §4a) every frame goes through XDP first:
[xdp_verdict] it returns XDP_PASS or XDP_TX and nothing else; [xdp_pass] a
frame it passes leaves it byte for byte, with no counter moved and the
sessions map as it was, and then goes through TC, checked as above; a frame
it finishes (XDP_TX) is checked as TC's redirect (1-5, the counters
included).

A violated check fails the test with the seed, the frame's number, the
state, how the frame was made and a minimized reproducer (the state, the
fewest earlier frames needed, the frame, as hex).  Violations of the
checks in REPORT_ONLY (known and accepted for now, see there) are reported
as warnings with the same detail instead; WGMUX_FUZZ_STRICT=1 fails on
them too.

Run longer or elsewhere (no make target needed):

    WGMUX_FUZZ_FRAMES=1000000 .venv/bin/python -m pytest tests/unit/test_datapath_fuzz.py
    WGMUX_FUZZ_SEED=0x1234 ...       another seed ("random": a fresh one, printed)
    WGMUX_FUZZ_SOURCE=/path/wgmux.c  fuzz another copy of the program (next to a
                                     wire.h; with the same counters as bpf/wgmux.c,
                                     which harness.golden's reset zeroes)
    WGMUX_FUZZ_STRICT=1              fail on the REPORT_ONLY checks too
    -s                               print the summary: frames/s, verdicts reached

The session table is compiled with 128 entries (FUZZ_MAX_SESSIONS): it
reads in one syscall per frame, and one state fills it up.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import random
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness import golden as g
from wgmux import packet as pk
from wgmux import wire
from harness.testrun import TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, TestRunResult


def _load_helper():
    path = Path(__file__).with_name("datapath_fuzz.py")
    spec = importlib.util.spec_from_file_location("wgmux_datapath_fuzz", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod      # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


fz = _load_helper()

FRAMES = int(os.environ.get("WGMUX_FUZZ_FRAMES", "100000"))
_seed = os.environ.get("WGMUX_FUZZ_SEED", "0x77667a7a")
SEED = random.SystemRandom().getrandbits(32) if _seed == "random" else int(_seed, 0)
STRICT = os.environ.get("WGMUX_FUZZ_STRICT") == "1"
SOURCE = os.environ.get("WGMUX_FUZZ_SOURCE")
FUZZ_MAX_SESSIONS = 128

# Checks the datapath is known to violate, reported (a warning each, with a
# reproducer) but not failed: accepted for now.  Delete a line here to make
# its check fail the test.
REPORT_ONLY = {
    # not verified on purpose (docs/spec.md §4: only updated, the fast path
    # never sums a whole packet); the peer's stack drops what came in broken
    "udp_checksum": "reflects UDP packets whose checksum is wrong (still wrong)",
    # the rewrite comes before the FIB lookup; a dropped skb is freed unseen
    "unchanged_dropped": "drop_no_route drops a frame it has already rewritten",
}


@pytest.fixture(scope="module")
def fuzz_env():
    pytest.importorskip("bcc", reason="bcc (python3-bpfcc) is not installed")
    if os.geteuid() != 0:
        pytest.skip("needs root (eBPF, namespaces)")
    from wgmux.datapath import Datapath

    kw = {"source": Path(SOURCE)} if SOURCE else {}
    started = time.monotonic()
    with g.GoldenNet() as net, Datapath(g.HUB_PORT, max_sessions=FUZZ_MAX_SESSIONS, **kw) as dp:
        yield g.Env(dp, net), time.monotonic() - started


@pytest.mark.parametrize("hook", ["tc", "xdp"])
def test_datapath_fuzz(fuzz_env, hook):
    from wgmux.datapath import counter_names
    from wgmux.program import SOURCE as DEFAULT_SOURCE

    env, setup_seconds = fuzz_env
    names = counter_names(Path(SOURCE) if SOURCE else DEFAULT_SOURCE)
    result = fz.Fuzzer(env, SEED, names, xdp=hook == "xdp").run(FRAMES)
    summary = (result.summary() + f"\n  (compile and namespace: {setup_seconds:.1f} s;"
               f" replay: WGMUX_FUZZ_SEED={SEED:#x} WGMUX_FUZZ_FRAMES={FRAMES})")
    print(summary)

    report_only = set() if STRICT else set(REPORT_ONLY)
    for check in sorted(set(result.violations) & report_only):
        warnings.warn(f"datapath fuzz, report-only check [{check}] ({REPORT_ONLY[check]}): "
                      f"{result.violations[check]} of {result.frames} frames, seed {SEED:#x}\n"
                      + result.first[check].describe(), stacklevel=1)
    failed = sorted(set(result.violations) - report_only)
    assert not failed, f"datapath fuzz: checks {failed} violated\n{summary}"

    # A fuzzer that never gets a frame reflected checks little: every kind
    # of reflection, and the main verdicts, must have been reached.
    assert result.frames == FRAMES
    for reason in ("reflect_response", "reflect_cookie", "reflect_transport"):
        assert result.verdicts[reason] >= FRAMES // 500, f"{reason} too rare\n{summary}"
    for reason in ("pass_hub", "pass_other_port", "drop_unclassified", "drop_unknown_index",
                   "drop_malformed", "drop_sessions_full", "slow_initiation"):
        assert result.verdicts[reason], f"{reason} never reached\n{summary}"
    if hook == "xdp":
        assert result.xdp_tx >= FRAMES // 1000, f"XDP finished too few\n{summary}"


# ---- the oracle itself ------------------------------------------------------

def _session(dst, src_port):
    from wgmux.model import Endpoint
    return SimpleNamespace(dst=Endpoint(ipaddress.ip_address(dst[0]), dst[1]), src_port=src_port,
                           via=0)


def _judge(frame, out, retval=TC_ACT_REDIRECT, delta=None, sessions=None):
    sessions = {(g.P, g.R_IDX): _session(g.E_R, g.HUB_PORT)} if sessions is None else sessions
    delta = {"reflect_transport": 1} if delta is None else delta
    problems = fz.check_frame(frame, TestRunResult(retval, out, 0), None, delta,
                              wire.WIREGUARD, sessions.get)
    return {check for check, _ in problems}


def test_oracle_accepts_golden_reflection():
    m = g.transport(g.R_IDX)
    good = g.reflected(g.hub(g.HUB_PORT), g.E_R, m)
    assert _judge(g.inbound(g.E_I, g.hub(g.P), m), good) == set()
    m6 = g.transport(g.R_IDX)
    assert _judge(g.inbound(g.E_I6, g.hub(g.P, True), m6),
                  g.reflected(g.hub(g.HUB_PORT, True), g.E_R6, m6),
                  sessions={(g.P, g.R_IDX): _session(g.E_R6, g.HUB_PORT)}) == set()
    f = g.inbound(g.E_I, g.hub(g.P), m)
    assert _judge(f, f, TC_ACT_SHOT, {"drop_unknown_index": 1}) == set()


def test_oracle_rejects_broken_reflections():
    """Every check can fail: each broken output below is caught by the
    check it breaks."""
    m = g.transport(g.R_IDX)
    f = g.inbound(g.E_I, g.hub(g.P), m)
    good = g.reflected(g.hub(g.HUB_PORT), g.E_R, m)
    stale_udp = good[:40] + f[40:42] + good[42:]
    assert "reflect" in _judge(f, stale_udp)
    assert "reflect" in _judge(f, g.reflected(g.hub(g.HUB_PORT), g.E_R, m, ttl=64))
    assert "reflect" in _judge(f, g.reflected(g.hub(g.HUB_PORT), g.E_I_MOVED, m))
    assert "reflect" in _judge(f, g.reflected(g.hub(g.P), g.E_R, m))          # source port
    assert "reflect" in _judge(f, g.reflected(g.hub(g.HUB_PORT), g.E_R, m[:-1] + b"x"))
    assert "reflect" in _judge(f, good, delta={"reflect_cookie": 1})
    assert "reflect" in _judge(f, good, sessions={})                          # no session
    assert "counters" in _judge(f, good, delta={"reflect_transport": 1, "pass_hub": 1})
    assert "counters" in _judge(f, good, delta={})
    assert "counters" in _judge(f, f, TC_ACT_OK, {"drop_unknown_index": 1})
    assert "unchanged" in _judge(f, good, TC_ACT_OK, {"pass_hub": 1})
    assert "unchanged_dropped" in _judge(f, good, TC_ACT_SHOT, {"drop_no_route": 1})
    assert "length" in _judge(f, f + b"\0", TC_ACT_OK, {"pass_hub": 1})
    assert "verdict" in _judge(f, f, 3, {"pass_hub": 1})
    broken = bytearray(good)
    broken[22] += 1                       # TTL changed without the header checksum
    assert "reflect" in _judge(f, bytes(broken))
    bad_in, bad_out = bytearray(f), bytearray(good)
    bad_in[24] ^= 1                       # the input's header checksum was wrong already
    bad_out[24] ^= 1
    assert _judge(bytes(bad_in), bytes(bad_out)) == {"bad_ip"}
    bad_in[14] = bad_out[14] = 0x65       # IPv6 version under the IPv4 ethertype
    assert "bad_ip" in _judge(_fixed_ip_checksum(bad_in), _fixed_ip_checksum(bad_out))

    to_other = g.inbound(g.E_I, (g.E_R[0], g.P), m)
    assert "hub_address" in _judge(to_other, g.reflected((g.E_R[0], g.HUB_PORT), g.E_R, m))
    to_lo = {(g.P, g.R_IDX): _session(("127.0.0.1", 9), g.HUB_PORT)}
    assert "martian" in _judge(f, g.reflected(g.hub(g.HUB_PORT), ("127.0.0.1", 9), m),
                               sessions=to_lo)
    assert "udp_checksum" in _judge(g.inbound(g.E_I, g.hub(g.P), m, udp_csum=0x1234),
                                    g.reflected(g.hub(g.HUB_PORT), g.E_R, m, udp_csum=0x1234))
    six = {(g.P, g.R_IDX): _session(g.E_R6, g.HUB_PORT)}
    assert _judge(g.inbound(g.E_I6, g.hub(g.P, True), m, udp_csum=False),
                  g.reflected(g.hub(g.HUB_PORT, True), g.E_R6, m, udp_csum=False),
                  sessions=six) == {"udp_zero_v6"}


def _fixed_ip_checksum(frame: bytearray) -> bytes:
    frame[24:26] = b"\0\0"
    frame[24:26] = pk.checksum(bytes(frame[14:34])).to_bytes(2, "big")
    return bytes(frame)


def test_martians_are_the_spec_s():
    for a in ("0.0.0.0", "0.1.2.3", "127.0.0.1", "169.254.1.1", "224.0.0.1", "240.0.0.1",
              "255.255.255.255",
              "::", "::1", "::ffff:198.51.100.10", "::198.51.100.10", "fe80::1", "ff02::1",
              g.HUB4, g.HUB6):
        assert fz.is_martian(a), a
    for a in (g.E_I[0], g.E_R6[0], "169.255.1.1", "100.64.0.2", "2001:db8::2"):
        assert not fz.is_martian(a), a


def test_oracle_partial_checksum_stays_partial():
    m = g.transport(g.R_IDX)
    f = g.inbound(g.E_I, g.hub(g.P), m, udp_csum=g.partial_csum(g.E_I, g.hub(g.P), m))
    out = g.reflected(g.hub(g.HUB_PORT), g.E_R, m,
                      udp_csum=g.partial_csum(g.hub(g.HUB_PORT), g.E_R, m))
    assert _judge(f, out) == set()
    assert "reflect" in _judge(f, g.reflected(g.hub(g.HUB_PORT), g.E_R, m))


def test_generator_is_deterministic():
    def frames(seed):
        gen = fz.FrameGen(random.Random(seed))
        g.reseed(seed)
        live = [(g.P, g.R_IDX), (g.HUB_PORT, g.I_IDX)]
        return [gen.frame(g.AWG2, live)[0] for _ in range(300)]

    assert frames(5) == frames(5)
    assert frames(5) != frames(6)
    assert all(len(f) >= pk.ETH_HLEN for f in frames(7))
