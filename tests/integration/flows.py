"""Watching the wgmux TC filter on the hub while a test acts.

The flows these tests observe (numbered UDP, paced TCP with checksums)
are netlab's (`netlab.traffic.UdpSeq`, `netlab.traffic.TcpFlow`); what
is wgmux-specific lives here: when a daemon attached, detached or took
over the datapath, with the same CLOCK_MONOTONIC the flows report.
"""

from __future__ import annotations

import threading
import time
from typing import List, Optional, Tuple

from netlab import wait_for
from netlab.lab import Node


class FilterWatch:
    """Watches the wgmux TC filter on `ifname` in `node` from a thread and
    records each change of its name (None: no filter) with the time: when
    a daemon attached, detached or took over."""

    def __init__(self, node: Node, ifname: str = "eth0", interval: float = 0.01):
        self.node, self.ifname, self.interval = node, ifname, interval
        self.changes: List[Tuple[float, Optional[str]]] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        from pyroute2 import IPRoute

        from wgmux.tc import wgmux_filter

        try:
            with IPRoute(netns=self.node.netns) as ipr:
                index = ipr.link_lookup(ifname=self.ifname)[0]
                last = object()
                while not self._stop.is_set():
                    name = wgmux_filter(ipr, index)
                    now = time.monotonic()
                    if name != last:
                        self.changes.append((now, name))
                        last = name
                    self._ready.set()
                    self._stop.wait(self.interval)
        except BaseException as e:  # surfaced by wait_change
            self._error = e
            self._ready.set()

    def start(self) -> "FilterWatch":
        self._thread.start()
        self._ready.wait(10)
        return self

    @property
    def current(self) -> Optional[str]:
        return self.changes[-1][1] if self.changes else None

    def wait_change(self, since: float, predicate=lambda name: name is not None,
                    timeout: float = 60.0) -> Tuple[float, Optional[str]]:
        """The first change after `since` whose name satisfies `predicate`."""
        def found():
            if self._error:
                raise self._error
            return next(((t, n) for t, n in list(self.changes) if t > since and predicate(n)),
                        None)
        return wait_for(found, timeout=timeout, what=f"the wgmux filter on {self.ifname}")

    def stop(self):
        self._stop.set()
        self._thread.join(5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False
