"""The compile cache (wgmux/bytecode.py, docs/spec.md §10): a start with
bytecode kept for its build loads it instead of compiling, and the kernel
gets the same program; what could have been written by someone else, or
what the kernel refuses, is not used.  The bcc tests need root and bcc;
each keeps its cache in a temporary directory of its own.
"""

from __future__ import annotations

import base64
import json
import os
import stat

import pytest

from wgmux import bytecode
from wgmux.bytecode import Entry

LD_MAP_FD_7 = bytes([0x18, 0x11, 0, 0]) + (7).to_bytes(4, "little") + bytes(8)  # r1 = map fd 7
LD_MAP_VALUE = bytes([0x18, 0x21, 0, 0]) + (7).to_bytes(4, "little") + bytes(8)
CALL_SUBPROGRAM = bytes([0x85, 0x10, 0, 0]) + (1).to_bytes(4, "little")
EXIT = bytes([0x95, 0, 0, 0, 0, 0, 0, 0])


def test_map_references_become_names_and_back():
    insns, refs = bytecode.unlink(LD_MAP_FD_7 + EXIT, {7: "sessions"})
    assert refs == [(0, "sessions")]
    assert insns == bytes([0x18, 0x11, 0, 0]) + bytes(12) + EXIT
    entry = Entry.loads(Entry({"p": (insns, refs)}, "GPL").dumps())
    assert entry.maps() == ["sessions"]
    assert entry.link("p", {"sessions": 9}) == \
        bytes([0x18, 0x11, 0, 0]) + (9).to_bytes(4, "little") + bytes(8) + EXIT


@pytest.mark.parametrize("insns,fds,why", [
    (LD_MAP_FD_7 + EXIT, {}, "fd 7 is none of the module's maps"),
    (LD_MAP_VALUE + EXIT, {7: "config"}, "a 64-bit load of kind 2"),
    (CALL_SUBPROGRAM + EXIT, {}, "a call to a subprogram"),
    (EXIT[:5], {}, "5 bytes of instructions"),
])
def test_what_a_stub_compile_cannot_stand_in_for_is_not_kept(insns, fds, why):
    with pytest.raises(ValueError, match=why):
        bytecode.unlink(insns, fds)


@pytest.mark.parametrize("raw", [
    b"", b"{}", b"[1]",
    json.dumps({"format": 99, "license": "GPL", "functions": {}}).encode(),
    json.dumps({"format": bytecode.FORMAT, "license": "GPL", "functions": {
        "p": {"insns": base64.b64encode(EXIT).decode(), "maps": [[1, "config"]]}}}).encode(),
    json.dumps({"format": bytecode.FORMAT, "license": "GPL", "functions": {
        "p": {"insns": "not base64!", "maps": []}}}).encode(),
], ids=["empty", "no-keys", "a-list", "other-format", "map-past-the-end", "bad-base64"])
def test_an_entry_that_does_not_parse_is_refused(raw):
    with pytest.raises(ValueError):
        Entry.loads(raw)


def test_the_key_follows_the_code_not_the_pin_directory(tmp_path):
    c, h = tmp_path / "wgmux.c", tmp_path / "wire.h"
    c.write_text("int x;\n")
    h.write_text("#define Y 1\n")
    flags = ["-DWGMUX_MAX_SESSIONS=64", '-DWGMUX_PIN_DIR="/sys/fs/bpf/wgmux/1-eth0"']
    k = bytecode.key([c, h], flags, "0.26.0")
    assert k == bytecode.key([h, c], flags[:1] + ['-DWGMUX_PIN_DIR="/elsewhere"'], "0.26.0")
    assert k != bytecode.key([c, h], ["-DWGMUX_MAX_SESSIONS=65"] + flags[1:], "0.26.0")
    assert k != bytecode.key([c, h], flags, "0.27.0")
    h.write_text("#define Y 2\n")
    assert k != bytecode.key([c, h], flags, "0.26.0")


def test_off_means_no_cache(monkeypatch):
    for off in ("off", "OFF", "", " "):
        monkeypatch.setenv(bytecode.ENV, off)
        assert bytecode.directory() is None
    monkeypatch.delenv(bytecode.ENV)
    assert str(bytecode.directory()) == bytecode.DEFAULT_DIR


# ---- with bcc and the kernel --------------------------------------------------



@pytest.fixture
def cache(tmp_path, monkeypatch):
    pytest.importorskip("bcc", reason="bcc (python3-bpfcc) is not installed")
    if os.geteuid() != 0:
        pytest.skip("needs root (eBPF)")
    d = tmp_path / "cache"
    monkeypatch.setenv(bytecode.ENV, str(d))
    return d


def _program(**kw):
    from wgmux.program import Program
    return Program(max_sessions=64, max_ports=8, **kw)


def _tag(fd: int) -> bytes:
    # the kernel's hash of the instructions, map fds zeroed (bpf_prog_calc_tag)
    from wgmux.xdp import _info
    return bytes(_info(fd).tag)


def _entry(cache):
    entries = list(cache.glob("*.json"))
    assert len(entries) == 1, entries
    return entries[0]


def test_the_next_start_loads_the_kept_bytecode_and_the_kernel_gets_the_same_program(cache):
    first = _program()
    try:
        assert first.bytecode == f"compiled ({cache} does not exist yet); kept in {cache}"
        tags = _tag(first.fd), _tag(first.xdp_fd)
    finally:
        first.close()
    entry = _entry(cache)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600

    again = _program()
    try:
        assert again.bytecode == f"reused the bytecode kept in {cache}"
        assert (_tag(again.fd), _tag(again.xdp_fd)) == tags
    finally:
        again.close()

    other = _program(sessions_lru=True)        # another build: its own entry
    try:
        assert other.bytecode.startswith("compiled (no entry for this build)")
    finally:
        other.close()
    assert len(list(cache.glob("*.json"))) == 2


def test_kept_bytecode_runs_on_the_pinned_maps(cache, tmp_path):
    from wgmux import pinning
    from wgmux.datapath import Datapath

    pin_dir = pinning.BPFFS / f"wgmux-unit-{os.getpid()}-{tmp_path.name}" / "1-eth0"
    try:
        with Datapath(51820, pin_dir=pin_dir, max_sessions=64) as dp:
            assert dp.program.bytecode.startswith("compiled")
            dp.set_responder(40001, "203.0.113.20", 51820)
        with Datapath(51820, pin_dir=pin_dir, max_sessions=64) as dp:
            assert dp.program.bytecode.startswith("reused")
            assert dp.reused and dp.fresh_reasons == []
            assert str(dp.responders()[40001].endpoint) == "203.0.113.20:51820"
    finally:
        pinning.purge(pin_dir)
        if pin_dir.parent.exists():
            pin_dir.parent.rmdir()


@pytest.mark.parametrize("spoil,why", [
    ("dir-writable-by-the-group", "is writable by others (mode 770)"),
    ("entry-owned-by-nobody", "is owned by uid 65534"),
    ("entry-a-symlink", "Too many levels of symbolic links"),
])
def test_a_cache_someone_else_could_have_written_is_not_used(cache, tmp_path, spoil, why):
    _program().close()
    entry = _entry(cache)
    if spoil == "dir-writable-by-the-group":
        os.chmod(cache, 0o770)
    elif spoil == "entry-owned-by-nobody":
        os.chown(entry, 65534, 65534)
    else:
        elsewhere = tmp_path / "elsewhere.json"
        entry.rename(elsewhere)
        entry.symlink_to(elsewhere)
    p = _program()
    try:
        assert p.bytecode.startswith("compiled (") and why in p.bytecode, p.bytecode
    finally:
        p.close()


def test_kept_bytecode_the_kernel_refuses_is_dropped_and_the_start_compiles(cache):
    first = _program()
    tag = _tag(first.fd)
    first.close()
    entry = _entry(cache)
    doc = json.loads(entry.read_bytes())
    ingress = doc["functions"]["wgmux_ingress"]
    insns = bytearray(base64.b64decode(ingress["insns"]))
    insns[0:8] = EXIT            # returns r0 before anything set it
    ingress["insns"] = base64.b64encode(bytes(insns)).decode()
    entry.write_text(json.dumps(doc))

    p = _program()
    try:
        assert "the kept bytecode did not load" in p.bytecode, p.bytecode
        assert _tag(p.fd) == tag
    finally:
        p.close()
    assert not entry.exists()
    p = _program()                # and the next start keeps a good one again
    try:
        assert p.bytecode.endswith(f"kept in {cache}")
    finally:
        p.close()


def test_no_more_than_keep_entries_the_oldest_go_first(tmp_path):
    cache = tmp_path / "cache"
    entry = Entry({"p": (EXIT, [])}, "GPL")
    for i in range(bytecode.KEEP + 2):
        assert bytecode.write(cache, f"k{i}", entry) == f"kept in {cache}"
        os.utime(cache / f"k{i}.json", (1000 + i, 1000 + i))
    kept = sorted(p.stem for p in cache.glob("*"))
    assert kept == sorted(f"k{i}" for i in range(2, bytecode.KEEP + 2))
    assert bytecode.read(cache, f"k{bytecode.KEEP + 1}")[1] == "reused"
    assert bytecode.read(cache, "k0") == (None, "no entry for this build")
