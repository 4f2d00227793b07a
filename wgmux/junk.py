"""The hub's own AmneziaWG junk, sent toward a responder before a reflected
initiation (docs/spec.md §12).

An AmneziaWG initiator sends Jc junk datagrams (random bytes, sizes in
[Jmin, Jmax)) just before each initiation.  The hub never reflects junk (it
would be a free garbage reflector), so without help the second leg, hub ->
responder, carries a bare initiation: a profile a DPI box can tell from the
first leg.  The slow path (wgmux.slowpath), which re-sends every verified
initiation from userspace anyway, restores it: just before the initiation
it sends `send_junk(...)` datagrams through the same raw sender, from the
same hub address and port the initiation will come from (so they pass the
receiving peer's NAT for the same reason).  Nothing here touches the fast
path.

Junk is drawn so that the hub's own classifier (wgmux.wire.Classifier from
the same AmneziaWG values) never takes it for a message: a junk datagram
can then never be mistaken for a handshake or transport packet by a
responder's AmneziaWG either.
"""

from __future__ import annotations

import os
import random
from typing import Callable, List, Optional

from . import wire



def junk_datagrams(params, rng: Optional[random.Random] = None) -> List[bytes]:
    """Jc random datagrams of sizes in [Jmin, Jmax) (Jmin when equal), none
    of which the classifier of `params` (s1..s4/h1..h4) takes for a message
    (redrawn up to 64 times; only H ranges covering nearly all 2**32 values
    could exhaust that).
    `params`: anything with jc/jmin/jmax (wgmux.config.AmneziaParams)."""
    rng = rng or random.Random(os.urandom(16))
    jc, jmin, jmax = (int(getattr(params, k, 0) or 0) for k in ("jc", "jmin", "jmax"))
    classifier = wire.Classifier.from_params(params)
    out = []
    for _ in range(jc):
        size = jmin + (rng.randrange(jmax - jmin) if jmax > jmin else 0)
        for _ in range(64):   # bounded: a header range may cover (almost) every value
            junk = rng.randbytes(size)
            if classifier.classify(junk)[0] is None:
                break
        out.append(junk)
    return out


def send_junk(send: Callable[[bytes], object], params,
              rng: Optional[random.Random] = None) -> int:
    """Hook form for a slow path that already has a sender for the
    initiation's (h:HubPort -> E_R): call it with each junk datagram first.
    Returns how many were sent (0 for plain WireGuard, Jc = 0)."""
    junk = junk_datagrams(params, rng)
    for datagram in junk:
        send(datagram)
    return len(junk)
