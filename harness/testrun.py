"""BPF_PROG_TEST_RUN through the bpf(2) syscall (bcc 0.26 has no wrapper).

The kernel runs a loaded program on a packet we hand it and returns the
program's return value, the packet as the program left it, and the average
run time.  For a TC (sched_cls) program:

- a redirect is not performed: the helper only records it, and the return
  value is TC_ACT_REDIRECT (7);
- the skb's device is the loopback of the *calling thread's* network
  namespace, or the device `ifindex` names in that namespace; helpers such
  as bpf_fib_lookup() therefore see that namespace's routes and neighbours;
- with repeat > 1 the program runs again on the same, already rewritten,
  skb (see harness.bench for how the benchmark copes).

For an XDP program (xdp=True) likewise: XDP_TX and XDP_REDIRECT are
returned, not performed; `ifindex` is the ingress device (its first receive
queue) in the calling thread's namespace, 0 loopback's; there is no skb, so
nothing says "GRO batch" or "partial checksum"; repeat > 1 reruns on the
rewritten frame.
"""

from __future__ import annotations

import ctypes
from typing import NamedTuple, Optional

from netlab.bpfsys import bpf

BPF_PROG_TEST_RUN = 10

TC_ACT_OK = 0
TC_ACT_SHOT = 2
TC_ACT_REDIRECT = 7

BPF_PROG_TYPE_XDP = 6
XDP_ABORTED = 0
XDP_DROP = 1
XDP_PASS = 2
XDP_TX = 3
XDP_REDIRECT = 4


class _TestAttr(ctypes.Structure):
    # union bpf_attr, the anonymous "test" struct of BPF_PROG_TEST_RUN
    _fields_ = [
        ("prog_fd", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("data_in", ctypes.c_uint64),
        ("data_out", ctypes.c_uint64),
        ("repeat", ctypes.c_uint32),
        ("duration", ctypes.c_uint32),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_uint64),
        ("ctx_out", ctypes.c_uint64),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
    ]


class SkbCtx(ctypes.Structure):
    """struct __sk_buff up to gso_size (uapi/linux/bpf.h).

    Test-run rejects non-zero values in the fields it does not let callers
    set; of these we use ingress_ifindex, ifindex, gso_segs and gso_size.
    """
    _fields_ = [
        ("len", ctypes.c_uint32),
        ("pkt_type", ctypes.c_uint32),
        ("mark", ctypes.c_uint32),
        ("queue_mapping", ctypes.c_uint32),
        ("protocol", ctypes.c_uint32),
        ("vlan_present", ctypes.c_uint32),
        ("vlan_tci", ctypes.c_uint32),
        ("vlan_proto", ctypes.c_uint32),
        ("priority", ctypes.c_uint32),
        ("ingress_ifindex", ctypes.c_uint32),
        ("ifindex", ctypes.c_uint32),
        ("tc_index", ctypes.c_uint32),
        ("cb", ctypes.c_uint32 * 5),
        ("hash", ctypes.c_uint32),
        ("tc_classid", ctypes.c_uint32),
        ("data", ctypes.c_uint32),
        ("data_end", ctypes.c_uint32),
        ("napi_id", ctypes.c_uint32),
        ("family", ctypes.c_uint32),
        ("remote_ip4", ctypes.c_uint32),
        ("local_ip4", ctypes.c_uint32),
        ("remote_ip6", ctypes.c_uint32 * 4),
        ("local_ip6", ctypes.c_uint32 * 4),
        ("remote_port", ctypes.c_uint32),
        ("local_port", ctypes.c_uint32),
        ("data_meta", ctypes.c_uint32),
        ("flow_keys", ctypes.c_uint64),
        ("tstamp", ctypes.c_uint64),
        ("wire_len", ctypes.c_uint32),
        ("gso_segs", ctypes.c_uint32),
        ("sk", ctypes.c_uint64),
        ("gso_size", ctypes.c_uint32),
    ]


class XdpCtx(ctypes.Structure):
    """struct xdp_md (uapi/linux/bpf.h).  Test-run wants data 0 (no
    metadata), data_end the frame's length, egress_ifindex 0."""
    _fields_ = [
        ("data", ctypes.c_uint32),
        ("data_end", ctypes.c_uint32),
        ("data_meta", ctypes.c_uint32),
        ("ingress_ifindex", ctypes.c_uint32),
        ("rx_queue_index", ctypes.c_uint32),
        ("egress_ifindex", ctypes.c_uint32),
    ]


class TestRunResult(NamedTuple):
    retval: int
    data: bytes
    duration_ns: int


TestRunResult.__test__ = False  # not a pytest test class

def test_run(prog_fd: int, packet: bytes, repeat: int = 1, ifindex: int = 0,
             gso_size: int = 0, gso_segs: int = 0,
             out_size: Optional[int] = None, xdp: bool = False) -> TestRunResult:
    """Run `prog_fd` on `packet` (an Ethernet frame) `repeat` times.

    `ifindex` (in the calling thread's netns) becomes both the skb's device
    and its ingress_ifindex, as on real TC ingress; 0 means loopback.
    gso_size/gso_segs make the skb look like a GRO batch to the program.
    `xdp`: `prog_fd` is an XDP program, `ifindex` its ingress device (no
    GRO batches there).
    Returns (retval, output frame, average ns per run).
    """
    if repeat < 1:
        raise ValueError("repeat must be >= 1")
    data_in = ctypes.create_string_buffer(bytes(packet), len(packet))
    size_out = out_size if out_size is not None else len(packet) + 512
    data_out = ctypes.create_string_buffer(size_out)

    attr = _TestAttr()
    attr.prog_fd = prog_fd
    attr.data_size_in = len(packet)
    attr.data_size_out = size_out
    attr.data_in = ctypes.addressof(data_in)
    attr.data_out = ctypes.addressof(data_out)
    attr.repeat = repeat
    ctx = None
    if xdp:
        if gso_size or gso_segs:
            raise ValueError("XDP sees no GRO batches")
        ctx = XdpCtx(data=0, data_end=len(packet), ingress_ifindex=ifindex)
        attr.ctx_size_in = ctypes.sizeof(ctx)
        attr.ctx_in = ctypes.addressof(ctx)
    elif ifindex or gso_size or gso_segs:
        ctx = SkbCtx(ingress_ifindex=ifindex, ifindex=ifindex, gso_size=gso_size,
                     gso_segs=gso_segs)
        attr.ctx_size_in = ctypes.sizeof(ctx)
        attr.ctx_in = ctypes.addressof(ctx)

    bpf(BPF_PROG_TEST_RUN, attr, "BPF_PROG_TEST_RUN")
    return TestRunResult(attr.retval, data_out.raw[:attr.data_size_out], attr.duration)


test_run.__test__ = False  # keep pytest from collecting it where imported


def set_bench_header(dp, frame: bytes):
    """The benchmark build (WGMUX_BENCH) restores a frame's first 64 bytes
    before every run: tell it which frame."""
    table = dp.bpf[b"bench_hdr"]
    leaf = table.Leaf()
    head = frame[:64]
    ctypes.memmove(ctypes.addressof(leaf), head, len(head))
    table[table.Key(0)] = leaf
