"""The bpf(2) system call without a library: its number on this machine's
architecture and one call.  netlab.xdp loads its pass program through it;
harness.testrun runs BPF_PROG_TEST_RUN through it (bcc 0.26 wraps
neither)."""

from __future__ import annotations

import ctypes
import errno
import os
import platform

# __NR_bpf per architecture (the kernel's syscall tables)
SYS_BPF = {"x86_64": 321, "aarch64": 280, "armv7l": 386, "ppc64le": 361,
           "s390x": 351, "riscv64": 280}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def sys_bpf_nr() -> int:
    """bpf(2)'s number here; OSError(ENOSYS) on an architecture not listed."""
    try:
        return SYS_BPF[platform.machine()]
    except KeyError:
        raise OSError(errno.ENOSYS, f"bpf(2) syscall number unknown for {platform.machine()}")


def bpf(cmd: int, attr: ctypes.Structure, what: str) -> int:
    """bpf(`cmd`, &`attr`, sizeof(attr)): its non-negative result, else
    OSError with errno and "`what`: strerror"."""
    rc = _libc.syscall(sys_bpf_nr(), cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return rc
