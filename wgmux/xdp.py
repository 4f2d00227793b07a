"""The datapath in the driver: wgmux_xdp over netlink (pyroute2).

With `Datapath = "xdp"`, or "auto" where it applies, the XDP program sits
in front of the TC one on Interface (docs/spec.md §4a): it finishes the
fast path and passes the rest to TC, which stays attached.  Only driver
(native) mode: generic XDP runs once the skb exists, where TC already is,
and would only add a second walk.

An interface holds one XDP program, named by its id; wgmux's is known by
its program name (`wgmux_xdp`), so a restarted daemon replaces a
predecessor's (atomically: the kernel swaps the program, no packet sees
none), `wgmux detach` / `purge` remove a killed one's, and no wgmux
touches a program that is not its own.
"""

from __future__ import annotations

import ctypes as ct
import errno
import os
from typing import List, NamedTuple, Optional, Tuple, Union

from wgmux.model import DatapathError
from wgmux.pinning import libbpf
from wgmux.program import XDP_PROGRAM
from wgmux.tc import _iproute, ifindex_of

# linux/if_link.h
XDP_FLAGS_UPDATE_IF_NOEXIST = 1
XDP_FLAGS_SKB_MODE = 2
XDP_FLAGS_DRV_MODE = 4
XDP_ATTACHED = {1: "driver", 2: "generic", 3: "offload", 4: "multi"}


class XdpAttachment(NamedTuple):
    netns: Optional[str]
    ifindex: int
    prog_id: int         # ours: detach() removes nothing else


class Attached(NamedTuple):
    """What an interface's XDP slot holds."""
    mode: str            # XDP_ATTACHED's names
    prog_id: int
    name: Optional[str]  # the program's name (None: it could not be read)


# ---- programs by fd and id (libbpf) ---------------------------------------------

class _ProgInfo(ct.Structure):
    # struct bpf_prog_info up to its name (uapi/linux/bpf.h); the rest zero
    _fields_ = [("type", ct.c_uint32), ("id", ct.c_uint32), ("tag", ct.c_uint8 * 8),
                ("jited_prog_len", ct.c_uint32), ("xlated_prog_len", ct.c_uint32),
                ("jited_prog_insns", ct.c_uint64), ("xlated_prog_insns", ct.c_uint64),
                ("load_time", ct.c_uint64), ("created_by_uid", ct.c_uint32),
                ("nr_map_ids", ct.c_uint32), ("map_ids", ct.c_uint64),
                ("name", ct.c_char * 16)]


def _info(fd: int) -> _ProgInfo:
    info = _ProgInfo()
    size = ct.c_uint32(ct.sizeof(info))
    if libbpf().bpf_obj_get_info_by_fd(fd, ct.byref(info), ct.byref(size)) != 0:
        raise OSError(ct.get_errno(), f"cannot read program info: {os.strerror(ct.get_errno())}")
    return info


def prog_id(fd: int) -> int:
    return _info(fd).id


def prog_name(pid: int) -> Optional[str]:
    """The name of loaded program `pid`, None if it cannot be read (gone)."""
    fd = libbpf().bpf_prog_get_fd_by_id(pid)
    if fd < 0:
        return None
    try:
        return _info(fd).name.decode(errors="replace")
    except OSError:
        return None
    finally:
        os.close(fd)


# ---- the interface's XDP slot ------------------------------------------------------

def _attached(ipr, ifindex: int) -> Optional[Attached]:
    (link,) = ipr.get_links(ifindex)
    xdp = link.get_attr("IFLA_XDP")
    if xdp is None:
        return None
    mode = xdp.get_attr("IFLA_XDP_ATTACHED") or 0
    if not mode:
        return None
    pid = (xdp.get_attr("IFLA_XDP_PROG_ID") or xdp.get_attr("IFLA_XDP_DRV_PROG_ID")
           or xdp.get_attr("IFLA_XDP_SKB_PROG_ID") or 0)
    name = XDP_ATTACHED.get(mode if isinstance(mode, int) else 0)
    if isinstance(mode, str):       # pyroute2 maps the mode to a name
        name = {"xdp": "driver", "xdpgeneric": "generic", "xdpoffload": "offload",
                "xdpmulti": "multi"}.get(mode, mode)
    return Attached(name or str(mode), pid, prog_name(pid) if pid else None)


def _set(ipr, ifindex: int, fd: int, flags: int):
    _xdp_flags_as_u32()
    ipr.link("set", index=ifindex,
             xdp={"attrs": [("IFLA_XDP_FD", fd), ("IFLA_XDP_FLAGS", flags)]})


def _xdp_flags_as_u32():
    """pyroute2 0.7.2 (Debian 12's python3-pyroute2) encodes IFLA_XDP_FLAGS
    in two big-endian bytes, and the kernel refuses the attribute (ERANGE):
    give it the u32 later pyroute2 versions and the kernel use."""
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

    flags = ifinfmsg.xdp.xdp_flags
    if [tuple(f) for f in flags.fields] != [("value", "I")]:
        flags.fields = [("value", "I")]


def link_kind(ipr, ifindex: int) -> Optional[str]:
    """The link's kind (veth, bridge, ...; None for a plain device)."""
    (link,) = ipr.get_links(ifindex)
    info = link.get_attr("IFLA_LINKINFO")
    return info.get_attr("IFLA_INFO_KIND") if info is not None else None


def auto_refusal(dev: Union[str, int], netns: Optional[str] = None) -> Optional[str]:
    """Why Datapath = "auto" keeps to TC on `dev` although its driver has
    XDP, or None.  A veth hands what XDP_TX gives it to its peer's queue,
    which the kernel reads only when the peer has an XDP program of its own
    (with GRO alone the frames wait for the next ordinary packet): from the
    hub's side that can be neither seen nor set, and the frames would be
    late or lost without a trace."""
    with _iproute(netns) as ipr:
        kind = link_kind(ipr, ifindex_of(ipr, dev))
    if kind == "veth":
        return ("a veth's XDP_TX reaches its peer only when the peer has an XDP program "
                "of its own, which wgmux cannot see from here")
    return None


def attached(dev: Union[str, int], netns: Optional[str] = None) -> Optional[Attached]:
    """What `dev`'s XDP slot holds (None: nothing)."""
    with _iproute(netns) as ipr:
        return _attached(ipr, ifindex_of(ipr, dev))


def attach(prog_fd: int, dev: Union[str, int], netns: Optional[str] = None,
           replace: bool = False) -> Tuple[XdpAttachment, Optional[Attached]]:
    """Attach XDP program `prog_fd` in `dev`'s driver.  Returns the
    attachment and what it replaced (None: nothing).  replace=True swaps
    out another wgmux's program atomically; a program that is not wgmux's
    is never replaced.  DatapathError when the driver refuses (no native
    XDP, an MTU too large for it, ...)."""
    from pyroute2.netlink.exceptions import NetlinkError

    where = f"{dev}" + (f" in netns {netns}" if netns else "")
    try:
        ipr_cm = _iproute(netns)
    except FileNotFoundError as e:
        raise DatapathError(f"cannot attach XDP to {where}: {e}") from None
    with ipr_cm as ipr:
        ifindex = ifindex_of(ipr, dev)
        current = _attached(ipr, ifindex)
        if current is not None:
            if current.name != XDP_PROGRAM:
                raise DatapathError(
                    f"cannot attach XDP to {where}: it holds an XDP program that is not "
                    f"wgmux's ({current.mode}, id {current.prog_id}, "
                    f"{current.name or 'name unknown'})")
            if not replace:
                raise DatapathError(f"cannot attach XDP to {where}: already attached "
                                    f"(program id {current.prog_id})")
            if current.mode != "driver":
                raise DatapathError(f"cannot attach XDP to {where}: wgmux's program is "
                                    f"attached in {current.mode} mode; `wgmux detach` first")
        flags = XDP_FLAGS_DRV_MODE | (0 if current is not None else XDP_FLAGS_UPDATE_IF_NOEXIST)
        try:
            _set(ipr, ifindex, prog_fd, flags)
        except NetlinkError as e:
            why = os.strerror(e.code)
            if e.code == errno.EOPNOTSUPP:
                why = "its driver has no native XDP"
            detail = f" ({e.extack})" if getattr(e, "extack", None) else ""
            raise DatapathError(f"cannot attach XDP to {where}: {why}{detail}") from None
    return XdpAttachment(netns, ifindex, prog_id(prog_fd)), current


def detach(attachment: XdpAttachment):
    """Remove our program (not one that replaced it meanwhile)."""
    from pyroute2.netlink.exceptions import NetlinkError

    netns, ifindex, pid = attachment
    try:
        with _iproute(netns) as ipr:
            try:
                current = _attached(ipr, ifindex)
            except NetlinkError as e:
                if e.code in (errno.ENODEV, errno.ENOENT):
                    return       # the interface is gone, and our program with it
                raise
            if current is not None and current.prog_id == pid:
                _set(ipr, ifindex, -1, XDP_FLAGS_DRV_MODE)
    except FileNotFoundError:
        pass   # the namespace is gone


def remove_leftovers(dev: Union[str, int], netns: Optional[str] = None) -> List[str]:
    """Remove a wgmux XDP program from `dev` (a killed or kept-attached
    daemon's, or one a predecessor left when Datapath changed to "tc").
    Returns what was removed, for humans.  Only when no daemon serves `dev`,
    or by the daemon that serves it (the caller knows)."""
    from pyroute2.netlink.exceptions import NetlinkError

    with _iproute(netns) as ipr:
        try:
            ifindex = ifindex_of(ipr, dev)
        except DatapathError:
            return []            # the interface is gone, and whatever was on it
        current = _attached(ipr, ifindex)
        if current is None or current.name != XDP_PROGRAM:
            return []
        flag = XDP_FLAGS_SKB_MODE if current.mode == "generic" else XDP_FLAGS_DRV_MODE
        try:
            _set(ipr, ifindex, -1, flag)
        except NetlinkError as e:
            if e.code not in (errno.ENODEV, errno.ENOENT):
                raise
            return []
    return [f"XDP program {XDP_PROGRAM} (id {current.prog_id}) on {dev}"]
