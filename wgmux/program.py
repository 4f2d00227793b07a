"""bpf/wgmux.c as a loaded program: compiled with bcc, its maps pinned.

`Program` compiles the source, creates its maps or takes over the ones a
previous instance pinned (wgmux.pinning; docs/spec.md §10) when they fit
this build, and loads the TC ingress function; the XDP one (the same walk
in the driver, docs/spec.md §4a) when first asked for.  With bytecode kept
from an earlier compile of the same build (wgmux.bytecode), it compiles
only the maps and loads the programs from that; kept bytecode the kernel
refuses is dropped and the build compiles in full.  Pinned maps that do
not fit, or that the verifier rejects the program with, are unpinned and the
build starts over on fresh ones, once; `fresh_reasons` says why.
"""

from __future__ import annotations

import atexit
import ctypes as ct
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

from wgmux import bulk, bytecode, pinning
from wgmux.config import MAX_INTERFACES
from wgmux.model import DatapathError

try:
    from wgmux.bpf import SOURCE_DIR
except ImportError:  # running from a checkout without the editable install
    SOURCE_DIR = Path(__file__).resolve().parent.parent / "bpf"

SOURCE = Path(SOURCE_DIR) / "wgmux.c"
if not SOURCE.is_file():
    # Inside bin/wgmux (`make build`, a zip): the sources are zip members,
    # readable (counter_names), but bcc compiles files: _on_disk copies them.
    SOURCE = resources.files("wgmux.bpf") / "wgmux.c"
_extracted: Optional[Path] = None
PROGRAM = "wgmux_ingress"
XDP_PROGRAM = "wgmux_xdp"


def _on_disk(source) -> Path:
    """`source` as a file bcc can compile: itself when it is one, else (a
    zip member) a copy of its directory's *.c and *.h in a private temporary
    directory, made once per process and removed at exit."""
    global _extracted
    if isinstance(source, Path):
        return source
    if _extracted is None:
        tmp = Path(tempfile.mkdtemp(prefix="wgmux-bpf-"))
        atexit.register(shutil.rmtree, tmp, True)
        for member in source.parent.iterdir():
            if member.name.endswith((".c", ".h")):
                (tmp / member.name).write_bytes(member.read_bytes())
        _extracted = tmp / source.name
    return _extracted


class _KeptBytecodeRefused(Exception):
    """The kernel did not load a program from kept bytecode."""


def _bcc_version() -> str:
    try:
        from bcc.version import __version__
    except ImportError:
        return "unknown"
    return __version__


class Program:
    """One compiled and loaded wgmux.c.

    `bpf` is bcc's object (maps by name), `fd` the ingress program's.
    With a `pin_dir`, `reused` says whether the maps a previous instance
    pinned were taken over (`reused_maps`, `created_maps` name them);
    otherwise the directory started fresh and `fresh_reasons` says why
    (empty when there was nothing to reuse).  close() leaves pinned maps in
    place; pinning.purge() removes them."""

    def __init__(self, *, max_sessions: int, max_ports: int, sessions_lru: bool = False,
                 cflags: Sequence[str] = (), bench: bool = False,
                 source: Optional[Path] = None, pin_dir: Optional[Union[str, Path]] = None):
        try:
            from bcc import BPF  # late: the rest of wgmux works without bcc
        except ImportError:
            raise DatapathError("bcc is not importable: install python3-bpfcc and use a "
                                "Python that sees it (make setup)") from None

        self._BPF = BPF
        self._xdp_fd: Optional[int] = None
        self.source = Path(source) if source is not None else _on_disk(SOURCE)
        flags = [f"-I{self.source.parent}",
                 f"-DWGMUX_MAX_SESSIONS={int(max_sessions)}",
                 f"-DWGMUX_MAX_PORTS={int(max_ports)}",
                 f"-DWGMUX_MAX_IFACES={MAX_INTERFACES}",
                 # kernel headers vs bcc's compat headers: harmless noise
                 "-Wno-macro-redefined"]
        if sessions_lru:
            flags.append('-DWGMUX_SESSIONS_MAP_TYPE="lru_hash"')
        if bench:
            flags.append("-DWGMUX_BENCH")
        flags.extend(cflags)
        self.pin_dir = Path(pin_dir) if pin_dir is not None else None
        self.reused = False
        self.reused_maps: List[str] = []
        self.created_maps: List[str] = []
        self.fresh_reasons: List[str] = []
        # MaxSessions changed: sessions carried over into the resized table,
        # and those left out for lack of room (the oldest)
        self.resized_sessions: Optional[Tuple[int, int]] = None
        self._cache = bytecode.directory() if source is None and not bench else None
        self._entry: Optional[bytecode.Entry] = None
        self._loaded: List[int] = []       # fds of programs loaded from kept bytecode
        # what became of the compile (docs/spec.md §10, compile cache), for the log
        self.bytecode = "compiled"
        try:
            try:
                self._build(flags)
            except _KeptBytecodeRefused as e:
                # cannot be the kernel's verdict on this build (it is the
                # same code), so the entry is not trusted again
                bytecode.forget(self._cache, self._key)
                self.close()
                self._cache, self._entry = None, None
                self._build(flags)
                self.bytecode = f"compiled: the kept bytecode did not load ({e})"
        except DatapathError:
            raise
        except Exception as e:
            # bcc prints the compiler's / verifier's log to stderr itself
            raise DatapathError(f"cannot compile or load {self.source}: {e} (kernel headers "
                                f"for bcc under /lib/modules/{os.uname().release}/build?)"
                                ) from e

    def _build(self, flags: List[str]):
        if self.pin_dir is not None:
            self._prepare_pins(flags)
        self._compile(flags)
        if (self.pin_dir is not None and not self._adopt_pins()
                and not self._resize_sessions(flags)):
            self._start_over(flags)
        try:
            self._fd = self._load(PROGRAM, self._BPF.SCHED_CLS)
        except _KeptBytecodeRefused:
            raise
        except Exception as e:
            if not self.reused:
                raise
            # the checks passed but the verifier disagrees: do not keep
            # failing on the same pinned maps
            self.fresh_reasons.append(f"the program does not load with them: {e}")
            self._start_over(flags)
            self._fd = self._load(PROGRAM, self._BPF.SCHED_CLS)

    @property
    def fd(self) -> int:
        return self._fd

    @property
    def xdp_fd(self) -> int:
        """The XDP program's fd, loaded on first use: a TC-only hub never
        asks the verifier for it."""
        if self._xdp_fd is None:
            try:
                self._xdp_fd = self.load_func(XDP_PROGRAM, xdp=True)
            except Exception as e:
                raise DatapathError(f"the kernel does not load {XDP_PROGRAM} from "
                                    f"{self.source}: {e}") from e
        return self._xdp_fd

    def load_func(self, name: str, xdp: bool = False) -> int:
        """fd of another program in the same object (XDP ones with `xdp`;
        the benchmark ones)."""
        return self._load(name, self._BPF.XDP if xdp else self._BPF.SCHED_CLS)

    def _load(self, name: str, kind: int) -> int:
        if self._entry is None or name not in self._entry.functions:
            return self.bpf.load_func(name.encode(), kind).fd
        try:
            fd = bytecode.load(self._entry, name, kind, bytecode.map_fds(self.bpf))
        except OSError as e:
            raise _KeptBytecodeRefused(str(e)) from None
        self._loaded.append(fd)
        return fd

    def close(self):
        for fd in self._loaded:
            os.close(fd)
        self._loaded = []
        self.bpf.cleanup()

    def _compile(self, flags: List[str]):
        """A full compile, or with kept bytecode for this build only the
        maps (the programs are loaded from it, _load)."""
        source = str(self.source).encode()
        if self._cache is None:
            self.bpf = self._BPF(src_file=source, cflags=flags)
            return
        self._key = bytecode.key(self._sources(), flags, _bcc_version())
        entry, why = bytecode.read(self._cache, self._key)
        if entry is not None:
            self.bpf = self._BPF(src_file=source, cflags=flags + [bytecode.MAPS_ONLY])
            missing = sorted(set(entry.maps()) - set(bytecode.map_fds(self.bpf)))
            if not missing:
                self._entry = entry
                self.bytecode = f"reused the bytecode kept in {self._cache}"
                return
            self.bpf.cleanup()
            why = f"the kept bytecode names maps this build lacks ({', '.join(missing)})"
        self._entry = None
        self.bpf = self._BPF(src_file=source, cflags=flags)
        try:
            kept = bytecode.write(self._cache, self._key, bytecode.capture(self.bpf))
        except ValueError as e:
            kept = f"not kept: {e}"
        self.bytecode = f"compiled ({why}); {kept}"

    def _sources(self) -> List[Path]:
        return sorted(p for p in self.source.parent.iterdir() if p.suffix in (".c", ".h"))

    def _resize_sessions(self, flags: List[str]) -> bool:
        """The pinned maps fit this build but for the session table's size
        (MaxSessions changed, spec §10): a new table of the new size takes
        the sessions over, the most recently used first while they fit;
        every other map is kept.  False if anything else does not fit."""
        problems = self.fresh_reasons
        if not problems or not all(p.startswith("map sessions: max_entries ")
                                   for p in problems):
            return False
        old = self.bpf[b"sessions"]
        key_size, value_size = ct.sizeof(old.Key), ct.sizeof(old.Leaf)
        last_seen = old.Leaf.last_seen.offset
        saved = [(b.key_bytes(i), b.value_bytes(i))
                 for b in bulk.batches(old.map_fd, key_size, value_size) for i in range(b.n)]
        self.bpf.cleanup()
        (self.pin_dir / "sessions").unlink()
        self._prepare_pins(flags, check=False)
        self._compile(flags)
        self.fresh_reasons = []
        if not self._adopt_pins():
            return False
        new = self.bpf[b"sessions"]
        room = new.max_entries
        saved.sort(key=lambda kv: int.from_bytes(kv[1][last_seen:last_seen + 8], "little"),
                   reverse=True)
        kept = saved[:room]
        written = bulk.write(new.map_fd, b"".join(k for k, _ in kept),
                             b"".join(v for _, v in kept), key_size, value_size)
        self.resized_sessions = (written, len(saved) - written)
        return True

    def _start_over(self, flags: List[str]):
        """The pinned maps do not fit this build: unpin them and build
        again on fresh ones."""
        self.reused = False
        self.bpf.cleanup()
        pinning.purge(self.pin_dir)
        self._prepare_pins(flags, check=False)
        self._compile(flags)
        self._adopt_pins()

    def _prepare_pins(self, flags: List[str], check: bool = True):
        """Before compiling: drop pinned state that cannot be reused, make
        the directory, point the build at it."""
        if check:
            problem = pinning.precheck(self.pin_dir)
            if problem:
                self.fresh_reasons.append(problem)
                pinning.purge(self.pin_dir)
        try:
            pinning.ensure_dir(self.pin_dir)
        except (OSError, pinning.PinError) as e:
            raise DatapathError(f"cannot pin maps in {self.pin_dir}: {e}") from None
        self._pins_before = {p.name for p in self.pin_dir.iterdir()
                             if p.name != pinning.STATE_FILE}
        literal = str(self.pin_dir).replace("\\", "\\\\").replace('"', '\\"')
        define = f'-DWGMUX_PIN_DIR="{literal}"'
        flags[:] = [f for f in flags if not f.startswith("-DWGMUX_PIN_DIR=")] + [define]

    def _adopt_pins(self) -> bool:
        """After compiling (maps created or reused, no program loaded yet):
        False if a reused map does not fit this build."""
        specs = pinning.table_specs(self.bpf, self.pin_dir)
        record = pinning.read_state(self.pin_dir)
        reused = sorted(n for n in specs if n in self._pins_before)
        problems = pinning.spec_problems({n: specs[n] for n in reused}, record)
        if problems:
            self.fresh_reasons.extend(problems)
            return False
        # pins of maps this build no longer has
        for stale in sorted(self._pins_before - set(specs)):
            try:
                (self.pin_dir / stale).unlink()
            except OSError:
                pass
        self.reused = bool(reused)
        self.reused_maps = reused
        self.created_maps = sorted(n for n in specs if n not in self._pins_before)
        pinning.write_state(self.pin_dir, pinning.build_state(specs, record))
        return True
