"""A veth end that takes what its peer's XDP program sends.

A veth transmits an XDP_TX'd (or redirected) frame into its peer's queue,
and the kernel schedules the peer to read that queue only when the peer
has an XDP program of its own: with none, the frames wait there until an
ordinary packet happens to wake the peer, which looks like loss (GRO on the
peer gives it the queue, not the wake-up).  A hub running wgmux with XDP on
a veth (docs/spec.md §4a) therefore needs a program on the other end; this
one passes every frame and does nothing else: two instructions, loaded
through bpf(2) directly, so netlab needs no compiler for it.
"""

from __future__ import annotations

import ctypes
import os

from .bpfsys import bpf
from .netns import inside

BPF_PROG_LOAD = 5
BPF_PROG_TYPE_XDP = 6
XDP_PASS = 2
XDP_FLAGS_DRV_MODE = 4
# r0 = XDP_PASS; exit
PASS_INSNS = bytes([0xB7, 0x00, 0, 0]) + XDP_PASS.to_bytes(4, "little") + \
    bytes([0x95, 0, 0, 0, 0, 0, 0, 0])


class _LoadAttr(ctypes.Structure):
    # union bpf_attr, BPF_PROG_LOAD's leading fields (the rest zero)
    _fields_ = [("prog_type", ctypes.c_uint32), ("insn_cnt", ctypes.c_uint32),
                ("insns", ctypes.c_uint64), ("license", ctypes.c_uint64),
                ("log_level", ctypes.c_uint32), ("log_size", ctypes.c_uint32),
                ("log_buf", ctypes.c_uint64), ("kern_version", ctypes.c_uint32),
                ("prog_flags", ctypes.c_uint32), ("prog_name", ctypes.c_char * 16),
                ("_rest", ctypes.c_uint8 * 64)]


def load_pass_program() -> int:
    """fd of a loaded XDP program that returns XDP_PASS."""
    insns = ctypes.create_string_buffer(PASS_INSNS, len(PASS_INSNS))
    license = ctypes.create_string_buffer(b"GPL")
    attr = _LoadAttr(prog_type=BPF_PROG_TYPE_XDP, insn_cnt=len(PASS_INSNS) // 8,
                     insns=ctypes.addressof(insns), license=ctypes.addressof(license),
                     prog_name=b"netlab_xdp_pass")
    return bpf(BPF_PROG_LOAD, attr, "cannot load the XDP pass program")


def take_xdp_frames(netns: str, ifname: str):
    """Make veth `ifname` in `netns` take the XDP frames of its peer: a
    pass-everything XDP program in its driver (it stays attached, kept by
    the interface, until the interface or the namespace goes)."""
    from pyroute2 import IPRoute

    fd = load_pass_program()
    try:
        with inside(netns), IPRoute() as ipr:
            index = ipr.link_lookup(ifname=ifname)[0]
            ipr.link("set", index=index, xdp={"attrs": [("IFLA_XDP_FD", fd),
                                                        ("IFLA_XDP_FLAGS", XDP_FLAGS_DRV_MODE)]})
    finally:
        os.close(fd)
