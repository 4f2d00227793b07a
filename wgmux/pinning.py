"""Pinned datapath state under bpffs: what lets `wgmux serve` restart
without dropping sessions.

Every map of bpf/wgmux.c is declared through WGMUX_TABLE, which pins it
(bcc BPF_TABLE_PINNED) at `<pin dir>/<map name>` when the program is
compiled with WGMUX_PIN_DIR.  bcc then reuses a map already pinned there
instead of creating one, so a new daemon finds the sessions, responders and
counters of the one before it.

One pin directory per hub instance: an instance is one Interface in one
network namespace, and bpffs is shared by all namespaces, so the directory
is named after both:

    /sys/fs/bpf/wgmux/<netns inode>-<Interface>/
        config  ports  sessions  counters  ...   the pinned maps
        wgmux_state                              what created them (below)

bcc reuses a pinned map without checking that it matches the program's
declaration (a layout change would be read with the wrong struct, or make
the verifier refuse the program), so a record is kept beside the maps
(bpffs holds only BPF objects, so the record is JSON in a one-entry array
map pinned as `wgmux_state`).  It holds, for each map,
its kernel type, key/value sizes, max entries, flags and bcc's key/leaf
layout description.  A map whose record disagrees with what the new build
declares, or with what the kernel reports, makes the whole directory start
fresh (logged).  The record also holds the namespace's cookie: namespace
inodes are reused after a namespace is gone, cookies never are within a boot.

Nothing here needs bcc except `table_specs`; stdlib and libbpf via ctypes.
"""

from __future__ import annotations

import ctypes as ct
import ctypes.util
import json
import os
import socket
from pathlib import Path
from typing import Dict, List, Optional

BPFFS = Path("/sys/fs/bpf")
PIN_ROOT = BPFFS / "wgmux"
STATE_FILE = "wgmux_state"     # the record's pin name (bpffs refuses dots in names)
STATE_VALUE_SIZE = 1 << 16
STATE_FORMAT = 1

SO_NETNS_COOKIE = 71   # linux/socket.h, kernels >= 5.14


class PinError(RuntimeError):
    pass


# ---- where -------------------------------------------------------------------

def netns_inode(pid: str = "self") -> int:
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def netns_cookie() -> Optional[int]:
    """This process's network namespace cookie (unique per boot), or None on
    kernels without SO_NETNS_COOKIE."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            raw = s.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8)
    except OSError:
        return None
    return int.from_bytes(raw, "little")


def pin_dir_for(interface: str, netns_ino: Optional[int] = None,
                root: Path = PIN_ROOT) -> Path:
    """The pin directory of the hub instance on `interface` in the network
    namespace with inode `netns_ino` (default: this process's)."""
    if not interface or "/" in interface or interface in (".", ".."):
        raise ValueError(f"bad interface name {interface!r}")
    ino = netns_inode() if netns_ino is None else int(netns_ino)
    return Path(root) / f"{ino}-{interface}"


def bpffs_mounted(path: Path = BPFFS) -> bool:
    """True if `path` is (on) a mounted bpf filesystem."""
    path = str(Path(path))
    try:
        with open("/proc/self/mounts") as f:
            mounts = [line.split() for line in f]
    except OSError:
        return False
    best = ("", "")
    for fields in mounts:
        if len(fields) < 3:
            continue
        mnt = fields[1]
        if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best[0]):
            best = (mnt, fields[2])
    return best[1] == "bpf"


def netns_name(ino: Optional[int] = None) -> Optional[str]:
    """The `ip netns` name of the namespace with inode `ino`, if it has one."""
    ino = netns_inode() if ino is None else ino
    run = Path("/var/run/netns")
    try:
        for entry in run.iterdir():
            try:
                if entry.stat().st_ino == ino:
                    return entry.name
            except OSError:
                continue
    except OSError:
        pass
    return None


# ---- kernel map info (libbpf through ctypes) ---------------------------------

class _MapInfo(ct.Structure):
    # struct bpf_map_info, the stable prefix of it
    _fields_ = [("type", ct.c_uint32), ("id", ct.c_uint32), ("key_size", ct.c_uint32),
                ("value_size", ct.c_uint32), ("max_entries", ct.c_uint32),
                ("map_flags", ct.c_uint32), ("name", ct.c_char * 16),
                ("_rest", ct.c_uint8 * 128)]


_libbpf = None


def libbpf():
    """The system's libbpf, with the prototypes wgmux calls (one loader for
    pinning and wgmux.xdp)."""
    global _libbpf
    if _libbpf is None:
        name = ctypes.util.find_library("bpf") or "libbpf.so.1"
        lib = ct.CDLL(name, use_errno=True)
        lib.bpf_obj_get.argtypes = [ct.c_char_p]
        lib.bpf_obj_get.restype = ct.c_int
        lib.bpf_obj_get_info_by_fd.argtypes = [ct.c_int, ct.c_void_p, ct.POINTER(ct.c_uint32)]
        lib.bpf_obj_get_info_by_fd.restype = ct.c_int
        lib.bpf_obj_pin.argtypes = [ct.c_int, ct.c_char_p]
        lib.bpf_obj_pin.restype = ct.c_int
        lib.bpf_map_create.argtypes = [ct.c_int, ct.c_char_p, ct.c_uint32, ct.c_uint32,
                                       ct.c_uint32, ct.c_void_p]
        lib.bpf_map_create.restype = ct.c_int
        lib.bpf_map_update_elem.argtypes = [ct.c_int, ct.c_void_p, ct.c_void_p, ct.c_uint64]
        lib.bpf_map_update_elem.restype = ct.c_int
        lib.bpf_map_lookup_elem.argtypes = [ct.c_int, ct.c_void_p, ct.c_void_p]
        lib.bpf_map_lookup_elem.restype = ct.c_int
        lib.bpf_prog_get_fd_by_id.argtypes = [ct.c_uint32]      # wgmux.xdp
        lib.bpf_prog_get_fd_by_id.restype = ct.c_int
        _libbpf = lib
    return _libbpf


def map_info_fd(fd: int) -> dict:
    info = _MapInfo()
    size = ct.c_uint32(ct.sizeof(info))
    rc = libbpf().bpf_obj_get_info_by_fd(fd, ct.byref(info), ct.byref(size))
    if rc != 0:
        err = ct.get_errno() or -rc
        raise PinError(f"cannot read map info of fd {fd}: {os.strerror(err)}")
    return {"type": info.type, "key_size": info.key_size, "value_size": info.value_size,
            "max_entries": info.max_entries, "flags": info.map_flags}


def map_info_path(path: Path) -> dict:
    fd = libbpf().bpf_obj_get(str(path).encode())
    if fd < 0:
        err = ct.get_errno() or -fd
        raise PinError(f"cannot open pinned map {path}: {os.strerror(err)}")
    try:
        return map_info_fd(fd)
    finally:
        os.close(fd)


# ---- what a build declares (bcc) -----------------------------------------------

def bcc_lib():
    """bcc's libbcc, with the prototypes of the module functions wgmux calls
    that bcc's own Python does not declare (here and wgmux.bytecode)."""
    from bcc.libbcc import lib

    size_id = [ct.c_void_p, ct.c_size_t]
    for name, restype in (("bpf_table_name", ct.c_char_p),
                          ("bpf_table_key_size_id", ct.c_size_t),
                          ("bpf_table_leaf_size_id", ct.c_size_t),
                          ("bpf_table_key_desc_id", ct.c_char_p),
                          ("bpf_table_leaf_desc_id", ct.c_char_p),
                          ("bpf_table_fd_id", ct.c_int)):
        getattr(lib, name).argtypes = size_id
        getattr(lib, name).restype = restype
    lib.bpf_num_tables.argtypes = [ct.c_void_p]
    lib.bpf_num_tables.restype = ct.c_size_t
    lib.bpf_module_license.argtypes = [ct.c_void_p]
    lib.bpf_module_license.restype = ct.c_char_p
    # bcc's libbpf.h: prog_len in bytes; with no log buffer it retries
    # with one on failure and prints the verifier's log, as load_func does
    lib.bcc_prog_load.argtypes = [ct.c_int, ct.c_char_p, ct.c_void_p, ct.c_int, ct.c_char_p,
                                  ct.c_uint, ct.c_int, ct.c_char_p, ct.c_uint]
    lib.bcc_prog_load.restype = ct.c_int
    return lib


def table_specs(bpf, pin_dir: Path) -> Dict[str, dict]:
    """For each map of the compiled module `bpf` that is pinned in `pin_dir`:
    what the build declares ("declared": type/key/value/max/flags/layout)
    and what the kernel map bcc actually uses reports ("kernel")."""
    lib = bcc_lib()
    mod = bpf.module
    out = {}
    for i in range(lib.bpf_num_tables(mod)):
        name = lib.bpf_table_name(mod, i).decode()
        if not (Path(pin_dir) / name).exists():
            continue      # not pinned (declared with another macro)
        declared = {
            "type": lib.bpf_table_type_id(mod, i),
            "key_size": lib.bpf_table_key_size_id(mod, i),
            "value_size": lib.bpf_table_leaf_size_id(mod, i),
            "max_entries": int(lib.bpf_table_max_entries_id(mod, i)),
            "flags": lib.bpf_table_flags_id(mod, i),
            "layout": [(lib.bpf_table_key_desc_id(mod, i) or b"").decode(),
                       (lib.bpf_table_leaf_desc_id(mod, i) or b"").decode()],
        }
        fd = lib.bpf_table_fd_id(mod, i)
        out[name] = {"declared": declared, "kernel": map_info_fd(fd) if fd >= 0 else None}
    return out


_KERNEL_KEYS = ("type", "key_size", "value_size", "max_entries", "flags")


def spec_problems(specs: Dict[str, dict], record: Optional[dict]) -> List[str]:
    """Why the pinned maps cannot be reused by this build ([] if they can).

    A per-CPU map's kernel value_size is the declared one; everything the
    build declares must equal what the kernel map has and what the
    recorded build declared."""
    problems = []
    recorded = (record or {}).get("maps", {})
    for name, spec in sorted(specs.items()):
        d, k = spec["declared"], spec["kernel"]
        if k is None:
            problems.append(f"map {name}: bcc has no fd for it")
            continue
        for key in _KERNEL_KEYS:
            if d[key] != k[key]:
                problems.append(f"map {name}: {key} is {k[key]} in the pinned map, "
                                f"{d[key]} in this build")
        old = recorded.get(name)
        if old is None:
            continue      # a map new in this build: created empty, nothing to compare
        for key in _KERNEL_KEYS:
            if old.get(key) != d[key]:
                problems.append(f"map {name}: {key} was {old.get(key)}, is {d[key]} now")
        if [str(x) for x in old.get("layout", [])] != d["layout"]:
            problems.append(f"map {name}: key/value layout changed")
    return problems


# ---- the record ------------------------------------------------------------------

BPF_MAP_TYPE_ARRAY = 2


def _check(rc: int, what: str) -> int:
    if rc < 0:
        err = ct.get_errno() or -rc
        raise PinError(f"{what}: {os.strerror(err)}")
    return rc


def read_state(pin_dir: Path) -> Optional[dict]:
    path = Path(pin_dir) / STATE_FILE
    if not path.exists():
        return None
    lib = libbpf()
    fd = lib.bpf_obj_get(str(path).encode())
    if fd < 0:
        return None
    try:
        buf = ct.create_string_buffer(STATE_VALUE_SIZE)
        key = ct.c_uint32(0)
        if lib.bpf_map_lookup_elem(fd, ct.byref(key), buf) != 0:
            return None
        data = json.loads(buf.value.decode() or "null")
    except (ValueError, UnicodeDecodeError):
        return None
    finally:
        os.close(fd)
    return data if isinstance(data, dict) else None


def write_state(pin_dir: Path, state: dict):
    raw = json.dumps(state, sort_keys=True).encode()
    if len(raw) >= STATE_VALUE_SIZE:
        raise PinError(f"state record too large ({len(raw)} bytes)")
    path = Path(pin_dir) / STATE_FILE
    lib = libbpf()
    fd = lib.bpf_obj_get(str(path).encode())
    if fd < 0:
        fd = _check(lib.bpf_map_create(BPF_MAP_TYPE_ARRAY, b"wgmux_state", 4, STATE_VALUE_SIZE,
                                       1, None), "cannot create the state record map")
        try:
            _check(lib.bpf_obj_pin(fd, str(path).encode()), f"cannot pin {path}")
        except PinError:
            os.close(fd)
            raise
    try:
        buf = ct.create_string_buffer(raw, STATE_VALUE_SIZE)
        key = ct.c_uint32(0)
        _check(lib.bpf_map_update_elem(fd, ct.byref(key), buf, 0), f"cannot write {path}")
    finally:
        os.close(fd)


def update_state(pin_dir: Path, **fields):
    state = read_state(pin_dir) or {}
    state.update(fields)
    write_state(pin_dir, state)


def build_state(specs: Dict[str, dict], previous: Optional[dict] = None, **extra) -> dict:
    state = {k: v for k, v in (previous or {}).items() if k not in ("maps",)}
    state.update({
        "format": STATE_FORMAT,
        "netns_cookie": netns_cookie(),
        "netns_inode": netns_inode(),
        "netns": netns_name(),
        "pid": os.getpid(),
        "maps": {name: dict(spec["declared"]) for name, spec in specs.items()},
    })
    state.update(extra)
    return state


def precheck(pin_dir: Path) -> Optional[str]:
    """Before compiling: a reason the pin directory's content must not be
    reused, or None (nothing there, or a consistent record)."""
    pin_dir = Path(pin_dir)
    if not pin_dir.exists():
        return None
    pins = [p for p in pin_dir.iterdir() if p.name != STATE_FILE and not p.name.startswith(".")]
    if not pins:
        return None
    state = read_state(pin_dir)
    if state is None:
        return f"{STATE_FILE} is missing or unreadable"
    if state.get("format") != STATE_FORMAT:
        return f"{STATE_FILE} has format {state.get('format')!r}, not {STATE_FORMAT}"
    cookie = netns_cookie()
    if cookie is not None and state.get("netns_cookie") not in (None, cookie):
        return ("it was left by another network namespace that had the same inode "
                "(that namespace is gone)")
    maps = state.get("maps", {})
    for pin in pins:
        rec = maps.get(pin.name)
        if rec is None:
            return f"pinned map {pin.name} is not in {STATE_FILE}"
        try:
            info = map_info_path(pin)
        except PinError as e:
            return str(e)
        for key in _KERNEL_KEYS:
            if info[key] != rec.get(key):
                return f"pinned map {pin.name}: {key} {info[key]} differs from its record"
    return None


def purge(pin_dir: Path) -> List[str]:
    """Unpin every map in `pin_dir` and remove it; returns what was removed.
    A map stays alive while a program still uses it; it just is no longer
    found by the next start."""
    pin_dir = Path(pin_dir)
    removed = []
    if not pin_dir.exists():
        return removed
    for entry in sorted(pin_dir.iterdir()):
        try:
            entry.unlink()
            removed.append(entry.name)
        except IsADirectoryError:
            purge(entry)
        except FileNotFoundError:
            pass
    try:
        pin_dir.rmdir()
    except FileNotFoundError:
        pass
    # The wgmux/ root stays: removing it would race with another instance
    # creating its directory there.
    return removed


def ensure_dir(pin_dir: Path):
    """Create the pin directory (bcc only creates the last level)."""
    pin_dir = Path(pin_dir)
    if not bpffs_mounted(pin_dir):
        raise PinError(f"{pin_dir} is not on a bpf filesystem (mount -t bpf bpf {BPFFS})")
    pin_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
