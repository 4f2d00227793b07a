"""The slow-path ring buffer: handshakes the datapath queued for wgmux.slowpath.

bpf/wgmux.c never reflects an initiation itself (docs/spec.md §9): it
queues it on the ring `slow_ring` as a `struct slow_buf` (addresses, TTL,
TOS, IP id and DF, ingress ifindex, arrival time, the whole UDP payload),
and `SlowRing` hands each to a handler as a model.SlowMessage.  The
layout comes from bcc, built from the C declaration: nothing here repeats
it.
"""

from __future__ import annotations

import ctypes as ct
import logging
import socket
from typing import List, Union

from wgmux.model import SlowMessage, read_endpoint


class SlowRing:
    """The ring of one loaded program (`bpf`: bcc's object), opened on
    first use.  One consumer at a time."""

    def __init__(self, bpf):
        self._bpf = bpf
        self._type = None
        self._payload_off = 0
        self._handler = None

    def _open(self):
        if self._type is None:
            self._type = self._bpf[b"slow_buf"].sLeaf
            self._payload_off = self._type.payload.offset
            self._bpf[b"slow_ring"].open_ring_buffer(self._on_message)

    def _on_message(self, _ctx, data, size) -> int:
        try:
            msg = self._parse(ct.string_at(data, size))
        except Exception as e:   # never let an exception into libbpf's loop
            msg = e
        handler = self._handler
        if handler is not None:
            try:
                handler(msg)
            except Exception:
                logging.getLogger("wgmux").exception("slow path handler failed")
        return 0

    def _parse(self, raw: bytes) -> SlowMessage:
        t = self._type
        off = self._payload_off
        if len(raw) < off:
            raise ValueError(f"slow-path message of {len(raw)} bytes, header is {off}")
        h = t.from_buffer_copy(raw[:off].ljust(ct.sizeof(t), b"\0"))
        if off + h.len > len(raw):
            raise ValueError(f"slow-path message claims {h.len} payload bytes, has "
                             f"{len(raw) - off}")
        src, dst = read_endpoint(h.src), read_endpoint(h.dst)
        if src is None or dst is None:
            raise ValueError("slow-path message without addresses")
        return SlowMessage(ktime=h.ktime, ifindex=h.ifindex, kind=h.cls, src=src, dst=dst,
                           ttl=h.ttl, tos=h.tos, ip_id=socket.ntohs(h.ip_id),
                           df=bool(socket.ntohs(h.frag_off) & 0x4000),
                           payload=raw[off:off + h.len], load=h.load)

    def poll(self, handler, timeout_ms: int = 100):
        """Wait up to timeout_ms for messages and call handler(msg) for
        each, in this thread; msg is a SlowMessage, or the exception that
        kept one from parsing."""
        self._open()
        self._handler = handler
        self._bpf.ring_buffer_poll(int(timeout_ms))

    def drain(self) -> List[Union[SlowMessage, Exception]]:
        """Every message queued now."""
        self._open()
        out: list = []
        self._handler = out.append
        self._bpf.ring_buffer_consume()
        self._handler = None
        return out
