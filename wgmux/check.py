"""`wgmux check`: would `wgmux serve` work here, with this config?

Runs every check of wgmux.preflight without attaching anything: the ones
`serve` makes before it attaches (the same functions, so the same messages)
and the ones it only finds out the hard way (bpffs, kernel headers, the
verifier, responders the hub's device does not know).  What each check
tests, and its words, live there; this module loads the config, decides
which checks can run (skipping what an earlier failure makes meaningless)
and prints one line per check, with a hint when it is not ok:

    [ ok ] bpffs mounted at /sys/fs/bpf
    [fail] HubPort 51999 (from /etc/wgmux/config.toml) does not match wg0's listen port 51820
           hint: set HubPort to wg0's ListenPort (wg show wg0 listen-port)

Exit status: 0 when serving would work, 1 when it would not.  Warnings do
not change it: `serve` starts despite each of them (a responder with no
endpoint yet, a missing bpffs, forwarding off on Interface, no [[Peer]]).
"""

from __future__ import annotations

import os
from typing import Callable, List

from . import preflight
from .config import ConfigError
from .preflight import FAIL, OK, WARN, Result

# Not a check's outcome: a check that did not run because one it needs failed.
SKIP = "skip"
TAGS = {OK: "[ ok ]", WARN: "[warn]", FAIL: "[fail]", SKIP: "[skip]"}


def line(r: Result) -> str:
    out = f"{TAGS[r.status]} {r.text}"
    if r.hint:
        out += f"\n       hint: {r.hint}"
    return out


def _load_config(path, add):
    from .config import load_bounded   # a FIFO or a hung filesystem: an error, not a hang

    try:
        return load_bounded(path)
    except ConfigError as e:
        for problem in e.problems:
            add(Result(FAIL, f"config: {problem}"))
    except OSError as e:
        add(Result(FAIL, f"config: cannot read {path}: {e.strerror or e}"))
    return None


def run_checks(path, emit: Callable[[Result], None] = lambda r: None) -> List[Result]:
    """Every check, in order; `emit` sees each result as soon as it is known."""
    results: List[Result] = []

    def add(r: Result) -> Result:
        results.append(r)
        emit(r)
        return r

    config = None
    if not os.path.exists(path):
        add(Result(FAIL, f"config: {path} does not exist",
                   "make install puts an example at /etc/wgmux/config.toml; -c PATH "
                   "names another file"))
    else:
        config = _load_config(path, add)
    if config is not None:
        n = len(config.peers)
        add(Result(OK, f"config {config.path}: {n} responder{'s' if n != 1 else ''}"))

    privileged = add(preflight.check_privileges()).status == OK
    add(preflight.check_bpffs())
    bcc_ok = add(preflight.check_bcc()).status == OK
    headers_ok = False
    if bcc_ok:
        headers_ok = add(preflight.check_headers()).status == OK
    else:
        add(Result(SKIP, "kernel headers usable by bcc (needs bcc)"))

    if config is None:
        add(Result(SKIP, "datapath, Interface, Device, HubPort, responders (need a valid config)"))
        return results
    if not (headers_ok and privileged):
        add(Result(SKIP, "datapath loads (needs bcc, headers and privileges)"))
    else:
        add(preflight.check_datapath(config))
    if add(preflight.check_interface(config)).status == OK:
        add(preflight.check_forwarding(config))
        add(preflight.check_source_routes(config))
        add(preflight.check_xdp(config))
    device, r = preflight.check_device(config)
    add(r)
    if device is None:
        add(Result(SKIP, f"HubPort and responders (need {config.device!r})"))
        return results
    add(preflight.check_hub_port(config, device))
    for r in preflight.check_responders(config, device):
        add(r)
    return results


def main(path) -> int:
    """`wgmux check`: print every check; 0 if serving would work, else 1."""
    results = run_checks(path, lambda r: print(line(r), flush=True))
    fails = sum(r.status == FAIL for r in results)
    warns = sum(r.status == WARN for r in results)
    notes = f" ({warns} warning{'s' if warns != 1 else ''})" if warns else ""
    if fails:
        print(f"wgmux check: {fails} problem{'s' if fails != 1 else ''}: "
              f"wgmux serve would not work{notes}")
        return 1
    print(f"wgmux check: wgmux serve would work{notes}")
    return 0
