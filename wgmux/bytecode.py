"""Compiled datapath kept between starts (docs/spec.md §10, compile cache).

A bcc compile of bpf/wgmux.c is most of a `wgmux serve` start: about 4 s
on an ordinary host, 50-100 s in an emulated guest (the kernel matrix),
and three quarters of it is clang on our own code.  bcc 0.26 cannot load
an object it compiled before, so wgmux keeps the bytecode itself: after a
full compile, each program's instructions with every map reference
replaced by the map's name; on the next start with the same key, a stub
compile (the source with WGMUX_MAPS_ONLY: its includes and map
declarations, so bcc still creates, pins and describes every map) and the
kept instructions, the map references set to the stub's map fds, loaded
through the verifier as bcc would have.

The key is a hash of everything the instructions follow from: the sources
(every .c/.h beside wgmux.c), the compiler flags but the pin directory
(it names where maps are pinned, not what the code does), bcc's version
and the running kernel (its headers).  Anything else (a different key, an
entry that does not parse or names a map the stub lacks) is a miss and
compiles in full.

A kept program is code for the kernel: the directory is root's (owned by
the effective user, writable by no one else, neither it nor an entry a
symlink), else it is not used, and entries are written whole (a temporary
file renamed), so a reader never sees half of one.  The verifier checks
whatever is loaded, as it checks a fresh compile.
"""

from __future__ import annotations

import base64
import ctypes as ct
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from wgmux.pinning import bcc_lib

FORMAT = 1
DEFAULT_DIR = "/var/cache/wgmux"
# A directory, or "off": no cache (every start compiles in full).
ENV = "WGMUX_BYTECODE_CACHE"
# Built with this, wgmux.c declares its maps and nothing else.
MAPS_ONLY = "-DWGMUX_MAPS_ONLY"
# Entries kept; the oldest go first (an upgrade leaves the previous one's).
KEEP = 8

# struct bpf_insn (uapi/linux/bpf.h): 8 bytes; a 64-bit immediate load
# takes two, its src_reg says what the immediate is.
INSN = 8
LD_IMM64 = 0x18
CALL = 0x85
PSEUDO_MAP_FD = 1


class Entry:
    """One compile's programs: name -> (instructions with map references
    zeroed, [(instruction index, map name)]), and the module's license."""

    def __init__(self, functions: Dict[str, Tuple[bytes, List[Tuple[int, str]]]],
                 license: str):
        self.functions = functions
        self.license = license

    def maps(self) -> List[str]:
        return sorted({m for _, refs in self.functions.values() for _, m in refs})

    def link(self, name: str, fds: Dict[str, int]) -> bytes:
        """Program `name`'s instructions referring to the maps `fds` names."""
        insns, refs = self.functions[name]
        out = bytearray(insns)
        for index, map_name in refs:
            off = index * INSN + 4
            out[off:off + 4] = fds[map_name].to_bytes(4, "little", signed=True)
        return bytes(out)

    def dumps(self) -> bytes:
        return json.dumps({
            "format": FORMAT, "license": self.license,
            "functions": {n: {"insns": base64.b64encode(i).decode(), "maps": refs}
                          for n, (i, refs) in sorted(self.functions.items())},
        }).encode()

    @classmethod
    def loads(cls, raw: bytes) -> "Entry":
        """ValueError when `raw` is not an entry of this FORMAT."""
        try:
            doc = json.loads(raw)
            if doc["format"] != FORMAT:
                raise ValueError(f"format {doc['format']!r}, not {FORMAT}")
            functions = {}
            for name, f in doc["functions"].items():
                insns = base64.b64decode(f["insns"], validate=True)
                refs = [(int(i), str(m)) for i, m in f["maps"]]
                if len(insns) % INSN or any(not 0 <= i < len(insns) // INSN for i, _ in refs):
                    raise ValueError(f"{name}: instructions or map references out of shape")
                functions[str(name)] = (insns, refs)
            return cls(functions, str(doc["license"]))
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError,
                base64.binascii.Error) as e:
            raise ValueError(f"not a bytecode entry: {e!r}") from None


def unlink(insns: bytes, names_by_fd: Dict[int, str]) -> Tuple[bytes, List[Tuple[int, str]]]:
    """`insns` as compiled (map fds in the immediates) -> zeroed immediates
    and the map each referred to.  ValueError for anything a stub compile
    could not stand in for: a reference to something but a map by fd (a
    map value, BTF), a call to a subprogram, a fd that is no map of the
    module."""
    if len(insns) % INSN:
        raise ValueError(f"{len(insns)} bytes of instructions")
    out = bytearray(insns)
    refs = []
    i = 0
    while i < len(insns) // INSN:
        code, regs = insns[i * INSN], insns[i * INSN + 1]
        src = regs >> 4
        if code == CALL and src != 0:
            raise ValueError(f"instruction {i}: a call to a subprogram (src_reg {src})")
        if code == LD_IMM64:
            if src == PSEUDO_MAP_FD:
                fd = int.from_bytes(insns[i * INSN + 4:i * INSN + 8], "little", signed=True)
                if fd not in names_by_fd:
                    raise ValueError(f"instruction {i}: fd {fd} is none of the module's maps")
                refs.append((i, names_by_fd[fd]))
                out[i * INSN + 4:i * INSN + 8] = bytes(4)
            elif src != 0:
                raise ValueError(f"instruction {i}: a 64-bit load of kind {src}")
            i += 2
            continue
        i += 1
    return bytes(out), refs


# ---- bcc's module ---------------------------------------------------------------

def map_fds(bpf) -> Dict[str, int]:
    """The maps of bcc module `bpf` by name, their fds."""
    lib = bcc_lib()
    mod = bpf.module
    return {lib.bpf_table_name(mod, i).decode(): lib.bpf_table_fd_id(mod, i)
            for i in range(lib.bpf_num_tables(mod))}


def capture(bpf) -> Entry:
    """Every program of a full compile, ready to keep.  ValueError if one
    cannot be kept (unlink())."""
    lib = bcc_lib()
    names_by_fd = {fd: name for name, fd in map_fds(bpf).items() if fd >= 0}
    functions = {}
    for i in range(lib.bpf_num_functions(bpf.module)):
        name = lib.bpf_function_name(bpf.module, i)
        try:
            functions[name.decode()] = unlink(bpf.dump_func(name), names_by_fd)
        except ValueError as e:
            raise ValueError(f"{name.decode()}: {e}") from None
    return Entry(functions, (lib.bpf_module_license(bpf.module) or b"GPL").decode())


def load(entry: Entry, name: str, prog_type: int, fds: Dict[str, int]) -> int:
    """Load program `name` of `entry` against the maps `fds`: its fd.
    OSError as the kernel refuses it."""
    insns = entry.link(name, fds)
    buf = ct.create_string_buffer(insns, len(insns))
    fd = bcc_lib().bcc_prog_load(prog_type, name.encode(), buf, len(insns),
                              entry.license.encode(), 0, 0, None, 0)
    if fd < 0:
        err = ct.get_errno() or -fd
        raise OSError(err, f"the kernel does not load {name}: {os.strerror(err)}")
    return fd


# ---- the directory -------------------------------------------------------------

def directory() -> Optional[Path]:
    """Where entries are kept (ENV, else DEFAULT_DIR); None: off."""
    raw = os.environ.get(ENV, DEFAULT_DIR).strip()
    if not raw or raw.lower() == "off":
        return None
    return Path(raw)


def key(sources: Iterable[Path], flags: Sequence[str], bcc_version: str) -> str:
    """The hash entries are kept under (see the module's docstring)."""
    h = hashlib.sha256()
    uname = os.uname()
    for part in (f"wgmux bytecode {FORMAT}", bcc_version, uname.release, uname.version,
                 uname.machine):
        h.update(part.encode() + b"\0")
    for flag in flags:
        if not flag.startswith("-DWGMUX_PIN_DIR="):
            h.update(flag.encode() + b"\0")
    for path in sorted(sources, key=lambda p: p.name):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def _unsafe(st: os.stat_result, what: str) -> Optional[str]:
    if stat.S_ISLNK(st.st_mode):
        return f"{what} is a symlink"
    if st.st_uid != os.geteuid():
        return f"{what} is owned by uid {st.st_uid}, not {os.geteuid()}"
    if st.st_mode & 0o022:
        return f"{what} is writable by others (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def read(cache: Path, k: str) -> Tuple[Optional[Entry], str]:
    """(the entry kept under `k`, or None; why not, for the log)."""
    try:
        st = os.lstat(cache)
    except FileNotFoundError:
        return None, f"{cache} does not exist yet"
    except OSError as e:
        return None, f"cannot read {cache}: {e.strerror}"
    problem = _unsafe(st, str(cache))
    if problem or not stat.S_ISDIR(st.st_mode):
        return None, f"not used: {problem or f'{cache} is not a directory'}"
    path = cache / f"{k}.json"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None, "no entry for this build"
    except OSError as e:
        return None, f"cannot read {path}: {e.strerror}"
    try:
        problem = _unsafe(os.fstat(fd), str(path))
        if problem:
            return None, f"not used: {problem}"
        with os.fdopen(fd, "rb") as f:
            fd = -1
            raw = f.read()
    finally:
        if fd >= 0:
            os.close(fd)
    try:
        return Entry.loads(raw), "reused"
    except ValueError as e:
        return None, f"{path}: {e}"


def write(cache: Path, k: str, entry: Entry) -> str:
    """Keep `entry` under `k` (and no more than KEEP entries): what was
    done, for the log.  Never raises for the directory's sake: a start does
    not fail because its compile could not be kept."""
    try:
        cache.mkdir(mode=0o700, parents=True, exist_ok=True)
        problem = _unsafe(os.lstat(cache), str(cache))
        if problem:
            return f"not kept: {problem}"
        tmp = cache / f".{k}.{os.getpid()}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(entry.dumps())
            os.replace(tmp, cache / f"{k}.json")
        finally:
            tmp.unlink(missing_ok=True)      # a write that failed half-way
    except OSError as e:
        return f"not kept in {cache}: {e.strerror or e}"
    _evict(cache)
    return f"kept in {cache}"


def _evict(cache: Path):
    """Down to KEEP entries, the least recently written first (another
    start may be doing the same: whatever it removed first is gone)."""
    entries = []
    for path in cache.glob("*.json"):
        try:
            entries.append((path.stat().st_mtime, path))
        except OSError:
            pass
    for _, old in sorted(entries, reverse=True)[KEEP:]:
        old.unlink(missing_ok=True)


def forget(cache: Path, k: str):
    """Drop the entry under `k` (one the kernel refused)."""
    try:
        (cache / f"{k}.json").unlink()
    except OSError:
        pass
