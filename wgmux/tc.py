"""The datapath at TC ingress, over netlink (pyroute2).

wgmux's filter sits on a clsact qdisc at a priority and handle of its own,
named after the program and the process that attached it, so that detach
removes exactly its own filter, a restarted daemon can replace a
predecessor's atomically (docs/spec.md §10), and `tc filter show` tells
whose it is.  Whether wgmux added the clsact qdisc is recorded in the pin
directory, so that whoever stops last removes what the first one added.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import List, NamedTuple, Optional, Tuple, Union

from wgmux import pinning
from wgmux.model import DatapathError
from wgmux.program import PROGRAM

# A distinctive TC filter priority and handle, so that detach() deletes
# exactly our filter and `tc filter show` tells whose it is.
TC_PRIO = 0x5747        # "WG"
TC_HANDLE = 0x1
TC_INGRESS_PARENT = 0xFFFFFFF2   # ffff:fff2, clsact ingress
TC_EGRESS_PARENT = 0xFFFFFFF3
ETH_P_ALL = 0x0003

NETNS_RUN_DIR = Path("/var/run/netns")


class Attachment(NamedTuple):
    netns: Optional[str]
    ifindex: int
    made: bool          # wgmux added the clsact qdisc (and removes it last)


def _iproute(netns: Optional[str]):
    """IPRoute in `netns`; FileNotFoundError if that namespace does not
    exist (pyroute2 would silently create it)."""
    from pyroute2 import IPRoute

    if not netns:
        return IPRoute()
    if "/" in netns or not (NETNS_RUN_DIR / netns).exists():
        raise FileNotFoundError(f"no network namespace {netns!r}")
    return IPRoute(netns=netns, flags=0)


def ifindex_of(ipr, dev: Union[str, int]) -> int:
    if isinstance(dev, int):
        return dev
    found = ipr.link_lookup(ifname=dev)
    if not found:
        raise DatapathError(f"no interface named {dev!r}")
    return found[0]


def filter_name(prog_fd: int) -> str:
    """The TC filter's name: the program's, plus who attached it, so
    detach() can tell its own filter from a successor's."""
    return f"{PROGRAM}-{os.getpid()}-{prog_fd}"


def wgmux_filter(ipr, ifindex: int) -> Optional[str]:
    """Name of the bpf filter at wgmux's TC ingress priority on `ifindex`
    (an open IPRoute `ipr`), if any ("" if it has none).  The dump lists
    the priority's chain head first, without options, then the filter
    itself."""
    found = None
    for msg in ipr.get_filters(index=ifindex, parent=TC_INGRESS_PARENT):
        if msg.get_attr("TCA_KIND") == "bpf" and msg["info"] >> 16 == TC_PRIO:
            opts = msg.get_attr("TCA_OPTIONS")
            name = opts.get_attr("TCA_BPF_NAME") if opts is not None else None
            if name:
                return name
            found = ""
    return found


def _ours(ipr, ifindex: int, name: str) -> bool:
    for msg in ipr.get_filters(index=ifindex, parent=TC_INGRESS_PARENT):
        opts = msg.get_attr("TCA_OPTIONS")
        if (msg.get_attr("TCA_KIND") == "bpf" and msg["info"] >> 16 == TC_PRIO
                and opts is not None and opts.get_attr("TCA_BPF_NAME") == name):
            return True
    return False


def _other_filters(ipr, ifindex: int) -> bool:
    for parent in (TC_INGRESS_PARENT, TC_EGRESS_PARENT):
        for msg in ipr.get_filters(index=ifindex, parent=parent):
            if msg.get_attr("TCA_KIND"):
                return True
    return False


def _clsact_record(pin_dir: Optional[Path]) -> dict:
    """ifindex (str) -> whether wgmux added that interface's clsact qdisc.
    A record of before several Interfaces ({"ifindex", "made"}) reads as
    the same for its one interface."""
    record = (pinning.read_state(pin_dir) or {}).get("clsact") or {} if pin_dir else {}
    if "ifindex" in record:
        return {str(record["ifindex"]): bool(record.get("made"))}
    return record


def _made_here(pin_dir: Optional[Path], ifindex: int) -> bool:
    return bool(_clsact_record(pin_dir).get(str(ifindex)))


def attach(prog_fd: int, name: str, dev: Union[str, int], netns: Optional[str] = None,
           replace: bool = False, pin_dir: Optional[Path] = None
           ) -> Tuple[Attachment, Optional[str]]:
    """Attach program `prog_fd` as filter `name` at TC ingress of `dev`
    (name or ifindex), in `netns` if given; adds the clsact qdisc if
    missing.  Returns the attachment and the name of the filter that was
    there (None if none).

    replace=True swaps the program in atomically where another wgmux
    datapath is attached (no packet sees neither); it refuses to replace a
    filter that is not wgmux's.  A `pin_dir` whose record says a killed
    predecessor added the clsact qdisc passes that on (record_clsact())."""
    from pyroute2.netlink.exceptions import NetlinkError

    where = f"{dev}" + (f" in netns {netns}" if netns else "")
    try:
        ipr_cm = _iproute(netns)
    except FileNotFoundError as e:
        raise DatapathError(f"cannot attach to {where}: {e}") from None
    with ipr_cm as ipr:
        ifindex = ifindex_of(ipr, dev)
        made = False
        try:
            ipr.tc("add", "clsact", ifindex)
            made = True
        except NetlinkError as e:
            if e.code != errno.EEXIST:
                raise DatapathError(f"cannot add a clsact qdisc to {where}: "
                                    f"{os.strerror(e.code)}") from e
        current = None if made else wgmux_filter(ipr, ifindex)
        if replace and current is not None and not current.startswith(PROGRAM):
            raise DatapathError(f"cannot attach to {where}: TC ingress pref {TC_PRIO} "
                                f"holds a filter that is not wgmux's ({current!r})")
        if pin_dir is not None:
            if not made and replace and current is not None and _made_here(pin_dir, ifindex):
                made = True     # a killed predecessor added it
        try:
            ipr.tc("replace-filter" if replace else "add-filter", "bpf", ifindex,
                   TC_HANDLE, fd=prog_fd, name=name,
                   parent=TC_INGRESS_PARENT, prio=TC_PRIO, protocol=ETH_P_ALL,
                   classid=1, direct_action=True)
        except BaseException as e:
            if made:
                ipr.tc("del", "clsact", ifindex)
            if isinstance(e, NetlinkError):
                hint = (" (already attached? `tc filter show dev "
                        f"{dev} ingress` shows pref {TC_PRIO})"
                        if e.code == errno.EEXIST else "")
                raise DatapathError(f"cannot attach to {where}: "
                                    f"{os.strerror(e.code)}{hint}") from e
            raise
    return Attachment(netns, ifindex, made), current


def record_clsact(pin_dir: Path, attachment: Attachment):
    """Whether this instance added the clsact qdisc, for a successor that
    takes over after a SIGKILL to inherit (attach())."""
    try:
        record = _clsact_record(pin_dir)
        record[str(attachment.ifindex)] = attachment.made
        pinning.update_state(pin_dir, clsact=record)
    except OSError:
        pass


def detach(attachment: Attachment, name: str):
    """Remove filter `name` (not one that replaced it meanwhile), and the
    clsact qdisc if wgmux added it and nothing else is attached to it."""
    from pyroute2.netlink.exceptions import NetlinkError

    netns, ifindex, made = attachment
    try:
        with _iproute(netns) as ipr:
            if _ours(ipr, ifindex, name):
                try:
                    ipr.tc("del-filter", "bpf", ifindex, TC_HANDLE,
                           parent=TC_INGRESS_PARENT, prio=TC_PRIO,
                           protocol=ETH_P_ALL)
                except NetlinkError as e:
                    if e.code not in (errno.ENOENT, errno.ENODEV, errno.EINVAL):
                        raise
            if made and not _other_filters(ipr, ifindex):
                try:
                    ipr.tc("del", "clsact", ifindex)
                except NetlinkError as e:
                    if e.code not in (errno.ENOENT, errno.ENODEV, errno.EINVAL):
                        raise
    except FileNotFoundError:
        pass   # the namespace is gone, and our filter with it


def attached_filter(dev: Union[str, int], netns: Optional[str] = None) -> Optional[str]:
    """The name of the wgmux filter at TC ingress of `dev` (None if none):
    `wgmux_ingress-<pid>-<fd>` of the process that attached it."""
    with _iproute(netns) as ipr:
        name = wgmux_filter(ipr, ifindex_of(ipr, dev))
    return name if name is not None and name.startswith(PROGRAM) else None


def remove_leftovers(dev: Union[str, int], pin_dir: Optional[Path] = None,
                     netns: Optional[str] = None, keep_pins: bool = False) -> List[str]:
    """Remove what a killed (or kept-attached) daemon left on `dev`: its TC
    filter, the clsact qdisc if the pin directory's record says wgmux added
    it and nothing else uses it, and the pinned maps unless `keep_pins`.
    Returns what was removed, for humans.  Only for when no daemon serves
    `dev` (the caller checks)."""
    from pyroute2.netlink.exceptions import NetlinkError

    removed = []
    with _iproute(netns) as ipr:
        try:
            ifindex = ifindex_of(ipr, dev)
        except DatapathError:
            ifindex = None       # the interface is gone, and whatever was on it
        name = wgmux_filter(ipr, ifindex) if ifindex is not None else None
        if name is not None and name.startswith(PROGRAM):
            try:
                ipr.tc("del-filter", "bpf", ifindex, TC_HANDLE, parent=TC_INGRESS_PARENT,
                       prio=TC_PRIO, protocol=ETH_P_ALL)
                removed.append(f"TC filter {name} on {dev}")
            except NetlinkError as e:
                if e.code not in (errno.ENOENT, errno.EINVAL):
                    raise
        if (ifindex is not None and _made_here(pin_dir, ifindex)
                and not _other_filters(ipr, ifindex)):
            try:
                ipr.tc("del", "clsact", ifindex)
                removed.append(f"clsact qdisc on {dev}")
            except NetlinkError as e:
                if e.code not in (errno.ENOENT, errno.EINVAL):
                    raise
    if pin_dir is not None and not keep_pins and Path(pin_dir).exists():
        pinning.purge(pin_dir)
        removed.append(f"pinned state {pin_dir}")
    return removed
