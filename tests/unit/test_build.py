"""`make build` (scripts/build.py): bin/wgmux, one file for a hub.

- Two builds of the same tree are byte-identical; a copy of the tree at
  another path, without git, builds the same entries but for the version
  record, which says there was no git (no build path, no time inside).
- The zip holds __main__.py, every wgmux module, the datapath sources as
  the tree has them, pyroute2 with its licence; no bytecode; entries
  sorted, dated 1980-01-01, mode 0644; `#!/usr/bin/python3 -I`, mode 0755.
- `--version` names pyproject's version and the commit (HEAD).
- From inside the zip: wgmux hands bcc files with the tree's sources,
  reads its counters, imports the zip's pyroute2; a Python without bcc and
  PyNaCl gets one line naming the Debian packages.
- `make install` (DESTDIR) puts that very file at PREFIX/bin/wgmux with
  the unit, the docs and the example config.

The slow proof (the file alone in a fresh Debian 12 root, serving on a
netlab hub) is tests/integration/test_zipapp.py, `make build-test`.
"""

import hashlib
import io
import os
import shutil
import stat
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def head() -> str:
    return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout.strip()


def build(out: Path, root: Path = ROOT, commit: str = "") -> bytes:
    """scripts/build.py into `out`; with `commit`, the build records it
    instead of asking git (others commit meanwhile: the same tree, a new
    HEAD)."""
    env = {k: v for k, v in os.environ.items() if k != "WGMUX_BUILD_COMMIT"}
    if commit:
        env["WGMUX_BUILD_COMMIT"] = commit
    run = subprocess.run([SYSTEM_PYTHON, str(root / "scripts" / "build.py"), "-o", str(out),
                          "--wheels", str(ROOT / "build" / "wheels")],
                         capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr + run.stdout
    return out.read_bytes()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    d = tmp_path_factory.mktemp("build")
    before = head()
    data = build(d / "wgmux")
    return d / "wgmux", data, {before, head()}


def entries(data: bytes) -> dict:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {i.filename: (i, z.read(i)) for i in z.infolist()}


def test_two_builds_are_byte_identical(tmp_path):
    commit = "0" * 40
    first = build(tmp_path / "one", commit=commit)
    second = build(tmp_path / "two", commit=commit)
    assert hashlib.sha256(first).hexdigest() == hashlib.sha256(second).hexdigest()
    assert f"(git commit {commit}, as the build was told)".encode() in \
        entries(first)["wgmux/_build.py"][1]


def test_a_tree_elsewhere_without_git_builds_the_same_entries(built, tmp_path):
    _, first, _ = built
    copy = tmp_path / "some" / "other" / "place"
    for part in ("wgmux", "bpf", "scripts", "packaging"):
        shutil.copytree(ROOT / part, copy / part,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    other = build(copy / "bin" / "wgmux", root=copy)
    a, b = entries(first), entries(other)
    assert sorted(a) == sorted(b)
    differ = [n for n in a if a[n][1] != b[n][1]]
    assert differ == ["wgmux/_build.py"], differ
    assert b"built from a tree without git" in b["wgmux/_build.py"][1]
    for data in (first, other):
        for where in (str(ROOT), str(copy), "/root/", "/work/", "/tmp/"):
            assert where.encode() not in data, f"{where} inside the file"


def test_the_file_holds_what_it_must(built):
    path, data, _ = built
    assert data.startswith(b"#!/usr/bin/python3 -I\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    found = entries(data)
    names = list(found)
    assert names == sorted(names), "entries in sorted order"
    assert "__main__.py" in found
    for module in (ROOT / "wgmux").glob("*.py"):
        assert found[f"wgmux/{module.name}"][1] == module.read_bytes(), module.name
    for source in ("__init__.py", "wgmux.c", "wire.h"):
        assert found[f"wgmux/bpf/{source}"][1] == (ROOT / "bpf" / source).read_bytes()
    assert "wgmux/_build.py" in found
    assert "pyroute2/__init__.py" in found
    licences = [n for n in names if n.startswith("pyroute2-") and "LICENSE" in n]
    assert licences, "pyroute2's licence travels with it"
    assert not [n for n in names if n.endswith((".pyc", ".so")) or "__pycache__" in n]
    assert not [n for n in names if n.startswith(("tests/", "netlab/", "harness/"))]
    assert not [n for n in names if n.endswith("/")], "no directory entries"
    for info, _ in found.values():
        assert info.date_time == (1980, 1, 1, 0, 0, 0), info.filename
        assert info.external_attr >> 16 == stat.S_IFREG | 0o644, info.filename
        assert info.compress_type == zipfile.ZIP_DEFLATED


def test_version_names_the_commit(built):
    path, _, heads = built
    out = subprocess.run([str(path), "--version"], capture_output=True, text=True, check=True)
    assert any(out.stdout.startswith(f"wgmux {VERSION} (git commit {h}") for h in heads), \
        (out.stdout, heads)
    assert out.stdout.count("\n") == 1


def test_inside_the_zip_bcc_gets_files_with_the_sources(built):
    path, _, _ = built
    probe = f"""
import sys
sys.path.insert(0, {str(path)!r})
from pathlib import Path
from wgmux import program, datapath
import pyroute2
assert pyroute2.__file__.startswith({str(path)!r}), pyroute2.__file__
assert not isinstance(program.SOURCE, Path), program.SOURCE   # a zip member
src = program._on_disk(program.SOURCE)
assert src.is_file() and src.name == "wgmux.c"
print(src.parent)
print(len(datapath.counter_names()))
"""
    out = subprocess.run([SYSTEM_PYTHON, "-I", "-c", probe], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split()
    # the copy was removed at exit
    assert not Path(lines[0]).exists()
    from wgmux.datapath import counter_names
    assert int(lines[1]) == len(counter_names())
    # and it held the tree's bytes: check in a process that keeps it
    probe2 = probe.replace("print(src.parent)", "print(src.read_bytes() == "
                           f"Path({str(ROOT / 'bpf' / 'wgmux.c')!r}).read_bytes() and "
                           f"(src.parent / 'wire.h').read_bytes() == "
                           f"Path({str(ROOT / 'bpf' / 'wire.h')!r}).read_bytes())")
    out = subprocess.run([SYSTEM_PYTHON, "-I", "-c", probe2], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.split()[0] == "True", out.stderr + out.stdout


def test_missing_system_modules_said_in_one_line(built):
    path, _, _ = built
    # -S: no site-packages, so neither Debian's bcc nor PyNaCl
    out = subprocess.run([SYSTEM_PYTHON, "-I", "-S", str(path), "check"], capture_output=True,
                         text=True)
    assert out.returncode == 1
    assert out.stdout == ""
    assert out.stderr.count("\n") == 1, out.stderr
    assert "cannot import bcc, nacl: apt install python3-bpfcc python3-nacl" in out.stderr
    # --version needs neither
    out = subprocess.run([SYSTEM_PYTHON, "-I", "-S", str(path), "--version"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith(f"wgmux {VERSION} ")


def test_make_install_puts_the_file_in_place(built, tmp_path):
    path, data, _ = built
    dest = tmp_path / "dest"
    out = subprocess.run(["make", "-s", "-C", str(ROOT), "install", f"FILE={path}",
                          f"DESTDIR={dest}", "PREFIX=/usr/local"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert files == ["etc/wgmux/config.toml", "usr/local/bin/wgmux",
                     "usr/local/lib/systemd/system/wgmux.service",
                     "usr/local/share/doc/wgmux/README.md",
                     "usr/local/share/doc/wgmux/config.toml"], files
    installed = dest / "usr/local/bin/wgmux"
    assert installed.read_bytes() == data
    assert stat.S_IMODE(installed.stat().st_mode) == 0o755
    assert "ExecStart=/usr/local/bin/wgmux serve" in \
        (dest / "usr/local/lib/systemd/system/wgmux.service").read_text()


def test_make_install_without_a_build_says_so(tmp_path):
    out = subprocess.run(["make", "-s", "-C", str(ROOT), "install",
                          f"FILE={tmp_path / 'nothing'}", f"DESTDIR={tmp_path / 'dest'}"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "run 'make build' first (or 'make install-venv')" in out.stderr
    assert not (tmp_path / "dest").exists()
