"""Whole-map reads for tables too big to decode entry by entry.

bcc's `items_lookup_batch()` turns every entry into two ctypes objects: a
million sessions cost seconds before anything looks at them.  Here the
kernel's BPF_MAP_LOOKUP_BATCH (5.6+) copies keys and values into two flat
buffers, and callers take whole columns out of them at C speed
(`Columns.key/value`: strided slices of a memoryview, into arrays), decoding only
the entries they need (docs/spec.md §8, docs/performance.md).
"""

from __future__ import annotations

import ctypes as ct
import errno
import os
from array import array
from typing import Iterator, Optional

from . import pinning

# entries per syscall: big enough that the syscalls do not matter, small
# enough that one batch's buffers stay a few MB
BATCH = 16384


def _lib():
    lib = pinning.libbpf()
    if not getattr(lib, "_wgmux_batch", False):
        lib.bpf_map_lookup_batch.argtypes = [ct.c_int, ct.c_void_p, ct.c_void_p, ct.c_void_p,
                                             ct.c_void_p, ct.POINTER(ct.c_uint32), ct.c_void_p]
        lib.bpf_map_lookup_batch.restype = ct.c_int
        lib.bpf_map_get_next_key.argtypes = [ct.c_int, ct.c_void_p, ct.c_void_p]
        lib.bpf_map_get_next_key.restype = ct.c_int
        lib.bpf_map_delete_elem.argtypes = [ct.c_int, ct.c_void_p]
        lib.bpf_map_delete_elem.restype = ct.c_int
        lib.bpf_map_update_batch.argtypes = [ct.c_int, ct.c_void_p, ct.c_void_p,
                                             ct.POINTER(ct.c_uint32), ct.c_void_p]
        lib.bpf_map_update_batch.restype = ct.c_int
        lib._wgmux_batch = True
    return lib


class Columns:
    """One batch of a map's entries as two flat buffers, keys and values;
    columns come out as `array`s (a million u64s: 8 MB, not 36)."""

    def __init__(self, keys: bytes, values: bytes, key_size: int, value_size: int):
        self.keys, self.values = keys, values
        self.key_size, self.value_size = key_size, value_size
        self.n = len(keys) // key_size if key_size else 0

    @staticmethod
    def _column(buf: bytes, size: int, offset: int, fmt: str) -> array:
        width = array(fmt).itemsize
        if offset % width or size % width:
            raise ValueError(f"field at {offset} is not {width}-byte aligned in {size}")
        out = array(fmt)
        out.frombytes(memoryview(buf).cast(fmt)[offset // width::size // width].tobytes())
        return out

    def key(self, offset: int, fmt: str) -> array:
        """The key field at `offset` of every entry ("H", "I", "Q": native
        order; a network-order field comes out byte-swapped)."""
        return self._column(self.keys, self.key_size, offset, fmt)

    def value(self, offset: int, fmt: str) -> array:
        if fmt == "B":
            return array("B", self.values[offset::self.value_size])
        return self._column(self.values, self.value_size, offset, fmt)

    def key_bytes(self, i: int) -> bytes:
        return self.keys[i * self.key_size:(i + 1) * self.key_size]

    def value_bytes(self, i: int) -> bytes:
        return self.values[i * self.value_size:(i + 1) * self.value_size]


def batches(map_fd: int, key_size: int, value_size: int) -> Iterator[Columns]:
    """Every entry of the hash map `map_fd`, BATCH at a time; where the
    kernel has no batch lookup, one key at a time (the same batches,
    slower).  An entry added or deleted meanwhile may or may not be seen."""
    lib = _lib()
    kbuf = (ct.c_char * (key_size * BATCH))()
    vbuf = (ct.c_char * (value_size * BATCH))()
    # the batch cursor: opaque (a bucket number for hash maps), sized like a key
    cursor_in = (ct.c_char * max(key_size, 8))()
    cursor_out = (ct.c_char * max(key_size, 8))()
    first = True
    while True:
        count = ct.c_uint32(BATCH)
        rc = lib.bpf_map_lookup_batch(map_fd, None if first else cursor_in, cursor_out,
                                      kbuf, vbuf, ct.byref(count), None)
        err = ct.get_errno() if rc < 0 else 0
        if rc < 0 and err != errno.ENOENT:
            if first and err in (errno.EINVAL, errno.EOPNOTSUPP, 524):   # 524: ENOTSUPP
                yield from _one_by_one(map_fd, key_size, value_size)
                return
            raise OSError(err, f"reading map fd {map_fd} in batches: {os.strerror(err)}")
        n = count.value
        if n:
            yield Columns(kbuf.raw[:n * key_size], vbuf.raw[:n * value_size],
                          key_size, value_size)
        if rc < 0:          # ENOENT: that was the last batch
            return
        ct.memmove(cursor_in, cursor_out, ct.sizeof(cursor_in))
        first = False


def _one_by_one(map_fd: int, key_size: int, value_size: int) -> Iterator[Columns]:
    lib = _lib()
    keys, values = bytearray(), bytearray()
    key = (ct.c_char * key_size)()
    nxt = (ct.c_char * key_size)()
    value = (ct.c_char * value_size)()
    prev: Optional[ct.Array] = None
    while lib.bpf_map_get_next_key(map_fd, prev, nxt) == 0:
        ct.memmove(key, nxt, key_size)
        prev = key
        if lib.bpf_map_lookup_elem(map_fd, key, value) < 0:
            continue        # deleted meanwhile
        keys += key.raw
        values += value.raw
        if len(keys) == key_size * BATCH:
            yield Columns(bytes(keys), bytes(values), key_size, value_size)
            keys, values = bytearray(), bytearray()
    if keys:
        yield Columns(bytes(keys), bytes(values), key_size, value_size)


def delete(map_fd: int, key: bytes) -> bool:
    """Delete one entry by its raw key; False if it was not there."""
    lib = _lib()
    return lib.bpf_map_delete_elem(map_fd, key) == 0


def write(map_fd: int, keys: bytes, values: bytes, key_size: int, value_size: int) -> int:
    """Insert or replace entries (keys and values as flat buffers, as
    batches() gives them), BATCH at a time; where the kernel has no batch
    update, one at a time.  Returns how many were written: fewer than given
    when the map is full."""
    lib = _lib()
    n = len(keys) // key_size
    done = 0
    while done < n:
        m = min(BATCH, n - done)
        kb = keys[done * key_size:(done + m) * key_size]
        vb = values[done * value_size:(done + m) * value_size]
        count = ct.c_uint32(m)
        rc = lib.bpf_map_update_batch(map_fd, kb, vb, ct.byref(count), None)
        if rc < 0:
            err = ct.get_errno()
            if err in (errno.EINVAL, errno.EOPNOTSUPP, 524) and done == 0 and not count.value:
                return _write_one_by_one(map_fd, keys, values, key_size, value_size)
            return done + count.value        # E2BIG / ENOMEM: full
        done += m
    return done


def _write_one_by_one(map_fd: int, keys: bytes, values: bytes, key_size: int,
                      value_size: int) -> int:
    lib = _lib()
    n = len(keys) // key_size
    for i in range(n):
        if lib.bpf_map_update_elem(map_fd, keys[i * key_size:(i + 1) * key_size],
                                   values[i * value_size:(i + 1) * value_size], 0) < 0:
            return i
    return n
