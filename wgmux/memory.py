"""Give back what the daemon no longer needs once the datapath is loaded.

Measured on Debian 12 (bcc 0.26, LLVM 14), `wgmux serve` idle: 167-191 MB
RSS, of which ~85 MB are pages of libLLVM and libclang-cpp (bcc links the
whole compiler; its static initialisers and the compile touch them) and
~35 MB malloc heap the compile freed but glibc kept.  Neither is used again
after the compile: the daemon never compiles twice (a reload writes maps).
So after the attach:

- malloc_trim(0) returns the free heap to the kernel (also after every
  collection cycle, so that a burst of work - a flood's slow-path messages,
  a 17 MB `show --json` of a full table - does not leave RSS at its peak);
- madvise(MADV_PAGEOUT) on the compiler's mappings asks the kernel to
  reclaim their pages.  Unlike MADV_DONTNEED it never discards data: a
  page written since it was mapped (relocations) is kept, and anything
  touched again is faulted back in from the file.

docs/performance.md ("Daemon memory") has the figures.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from typing import Optional, Tuple

log = logging.getLogger("wgmux")

MADV_PAGEOUT = 21                     # Linux 5.4
# mappings of the compiler bcc carries, never used after the compile
COMPILER_LIBRARIES = ("libLLVM", "libclang")


def _libc():
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.madvise.restype = ctypes.c_int
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    libc.malloc_trim.restype = ctypes.c_int
    return libc


_LIBC = None


def libc():
    global _LIBC
    if _LIBC is None:
        _LIBC = _libc()
    return _LIBC


def rss_kib(pid: str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def trim_heap():
    """Return the malloc heap's free memory to the kernel."""
    try:
        libc().malloc_trim(0)
    except (OSError, AttributeError):    # not glibc
        pass


def page_out_compiler() -> Tuple[int, Optional[str]]:
    """Ask the kernel to reclaim the compiler libraries' pages.  Returns
    (mappings advised, the first error or None)."""
    advised, error = 0, None
    with open("/proc/self/maps") as f:
        lines = f.readlines()
    for line in lines:
        parts = line.split()
        if len(parts) < 6 or not any(lib in parts[5] for lib in COMPILER_LIBRARIES):
            continue
        start, end = (int(x, 16) for x in parts[0].split("-"))
        if libc().madvise(start, end - start, MADV_PAGEOUT) == 0:
            advised += 1
        elif error is None:
            import os

            error = os.strerror(ctypes.get_errno())
    return advised, error


def release_after_load():
    """Once the datapath is loaded: the heap trimmed, the compiler paged
    out; one log line with RSS before and after."""
    before = rss_kib()
    trim_heap()
    advised, error = page_out_compiler()
    after = rss_kib()
    if error is not None and not advised:
        log.debug("cannot page out the compiler's mappings (%s): kernel older than 5.4?", error)
    log.info("memory: RSS %.0f MiB after the compile, %.0f MiB once it was released",
             before / 1024, after / 1024)
