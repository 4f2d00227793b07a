"""The one way into a network namespace from Python: this thread, for the
duration of a `with`.

Commands go in with nsenter (netlab.lab.Node.run); code that must open a
socket or a device inside a namespace uses `inside()`.  Not pyroute2's
pushns: that would recreate a namespace deleted meanwhile, and saves the
process's namespace rather than the thread's.  Sockets and devices opened
inside stay in that namespace after the thread returns.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from pathlib import Path
from typing import Union

NETNS_DIR = Path("/var/run/netns")
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int):
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def inside(netns: Union[str, Path]):
    """This thread in network namespace `netns` (a name under
    /var/run/netns, or a path) until the block ends."""
    path = Path(netns) if "/" in str(netns) else NETNS_DIR / str(netns)
    saved = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(path, os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(saved)
    finally:
        os.close(saved)
