#!/usr/bin/python3
"""`make build`: bin/wgmux, one executable file to copy to a hub.

A Python zip application (PEP 441: `#!/usr/bin/python3 -I`, then a zip
with __main__.py at its root) holding wgmux, its datapath sources
(wgmux/bpf/*.c, *.h, read through importlib.resources) and the pure-Python
wheels of packaging/zipapp-requirements.txt (pyroute2), pinned by hash.
bcc and PyNaCl stay the target's Debian packages (python3-bpfcc,
python3-nacl): the file says so in one line when one is missing.

Reproducible: the same tree builds the same bytes.  Entries are sorted,
every one dated 1980-01-01 00:00 with mode 0644, compressed at a fixed
level; no .pyc, no directory entries, no path of the build machine.  The
version comes from pyproject.toml, the commit from git (with
"+uncommitted changes" when the files packed differ from it; "built from a
tree without git" without one; $WGMUX_BUILD_COMMIT when set, for builds
from an export of a known commit), both written into wgmux/_build.py in
the zip, which `wgmux --version` prints.

    scripts/build.py [-o bin/wgmux] [--wheels build/wheels] [--fetch-only]

Wheels missing from --wheels are fetched with pip (PyPI, hashes required);
--fetch-only stops there (`make setup` does that, so later builds and
`make test` need no network).  Only the standard library is used.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import re
import stat
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "packaging" / "zipapp-requirements.txt"
SHEBANG = b"#!/usr/bin/python3 -I\n"
DATE = (1980, 1, 1, 0, 0, 0)
LEVEL = 9
# what the file takes from the tree, as (zip directory, tree directory, patterns)
TREE = (("wgmux", "wgmux", ("*.py",)),
        ("wgmux/bpf", "bpf", ("*.py", "*.c", "*.h")))
# what `git status` must find unchanged for the commit to describe the file
TRACKED = ("wgmux", "bpf", "pyproject.toml", "packaging/zipapp-requirements.txt",
           "scripts/build.py")

# The file's entry point.  Checks what the target's Python must bring
# itself (one line naming the Debian packages), then runs the CLI.
MAIN = '''\
"""bin/wgmux, made by `make build` (scripts/build.py): wgmux and pyroute2
in one zip run by the target's /usr/bin/python3, whose Debian packages
provide bcc and PyNaCl."""
import importlib.util
import sys

# module, Debian package: what wgmux imports from the system's Python
SYSTEM = [("bcc", "python3-bpfcc"), ("nacl", "python3-nacl")]
if sys.version_info < (3, 11):
    SYSTEM.append(("tomli", "python3-tomli"))


def missing():
    return [(m, p) for m, p in SYSTEM if importlib.util.find_spec(m) is None]


if __name__ == "__main__":
    if not {"--version", "-h", "--help"} & set(sys.argv[1:]):
        lack = missing()
        if lack:
            print(f"wgmux: {sys.executable} cannot import "
                  f"{', '.join(m for m, _ in lack)}: apt install "
                  f"{' '.join(p for _, p in lack)}", file=sys.stderr)
            sys.exit(1)
    from wgmux.cli import main
    sys.exit(main())
'''


class BuildError(Exception):
    pass


def requirements() -> List[Tuple[str, str, str]]:
    """(name, version, sha256) of each pinned wheel."""
    out = []
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)\s+--hash=sha256:([0-9a-f]{64})", line)
        if not m:
            raise BuildError(f"{REQUIREMENTS}: cannot read {line!r} (name==version --hash=sha256:...)")
        out.append(m.groups())
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _find_wheel(wheels: Path, name: str, version: str, digest: str) -> Optional[Path]:
    prefix = f"{name.replace('-', '_')}-{version}-".lower()
    for w in sorted(wheels.glob("*.whl")) if wheels.is_dir() else ():
        if w.name.lower().startswith(prefix) and _sha256(w) == digest:
            return w
    return None


def fetch(wheels: Path) -> List[Path]:
    """The pinned wheels, fetched into `wheels` with pip if missing."""
    found = []
    for name, version, digest in requirements():
        w = _find_wheel(wheels, name, version, digest)
        if w is None:
            wheels.mkdir(parents=True, exist_ok=True)
            pip = [sys.executable, "-m", "pip"]
            if subprocess.run(pip + ["--version"], capture_output=True).returncode != 0:
                raise BuildError(f"{name} {version} is not in {wheels} and {sys.executable} has "
                                 f"no pip to fetch it (apt install python3-pip)")
            print(f"build: fetching {name}=={version} into {wheels}", file=sys.stderr)
            with tempfile.NamedTemporaryFile("w", suffix=".txt") as req:
                req.write(f"{name}=={version} --hash=sha256:{digest}\n")
                req.flush()
                run = subprocess.run(
                    pip + ["download", "--quiet", "--disable-pip-version-check", "--no-deps",
                           "--only-binary=:all:", "--require-hashes", "--dest", str(wheels),
                           "-r", req.name], capture_output=True, text=True)
            w = _find_wheel(wheels, name, version, digest)
            if run.returncode != 0 or w is None:
                raise BuildError(f"cannot fetch {name}=={version} with the pinned hash: "
                                 f"{(run.stderr or run.stdout).strip()}")
        if not w.name.endswith("-none-any.whl"):
            raise BuildError(f"{w.name}: not a pure-Python wheel; a zip cannot import it")
        found.append(w)
    return found


def _git(*args: str) -> Optional[str]:
    try:
        run = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
    except OSError:
        return None
    return run.stdout.strip() if run.returncode == 0 else None


def version_text() -> str:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    given = os.environ.get("WGMUX_BUILD_COMMIT")
    if given:
        # a build from an export of a known commit (a tarball, a package)
        return f"wgmux {version} (git commit {given}, as the build was told)"
    commit = _git("rev-parse", "--verify", "HEAD") if (ROOT / ".git").exists() else None
    if commit is None:
        return f"wgmux {version} (built from a tree without git: commit unknown)"
    changes = _git("status", "--porcelain", "--untracked-files=all", "--", *TRACKED)
    if changes:
        return f"wgmux {version} (git commit {commit} + uncommitted changes)"
    return f"wgmux {version} (git commit {commit})"


def contents(wheels: List[Path]) -> Dict[str, bytes]:
    """zip name -> bytes of everything the file holds."""
    files: Dict[str, bytes] = {}
    for zdir, tdir, patterns in TREE:
        for pattern in patterns:
            for path in (ROOT / tdir).glob(pattern):
                if path.is_file():
                    files[f"{zdir}/{path.name}"] = path.read_bytes()
    files["wgmux/_build.py"] = (
        '"""Written by `make build` (scripts/build.py); `wgmux --version` prints it."""\n'
        f"VERSION_TEXT = {version_text()!r}\n").encode()
    files["__main__.py"] = MAIN.encode()
    for w in wheels:
        with zipfile.ZipFile(w) as z:
            for info in z.infolist():
                if info.is_dir() or info.filename.endswith((".pyc", "/RECORD")):
                    continue
                if info.filename in files:
                    raise BuildError(f"{w.name}: {info.filename} clashes with another file")
                files[info.filename] = z.read(info)
    return files


def archive(files: Dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    buf.write(SHEBANG)
    with zipfile.ZipFile(buf, "w") as z:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=DATE)
            info.create_system = 3                       # unix: the mode below counts
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, files[name], compress_type=zipfile.ZIP_DEFLATED,
                       compresslevel=LEVEL)
    return buf.getvalue()


def build(out: Path, wheels_dir: Path) -> bytes:
    data = archive(contents(fetch(wheels_dir)))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o755)
    os.replace(tmp, out)
    return data


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="build.py", description="make bin/wgmux (make build)")
    ap.add_argument("-o", "--output", type=Path, default=ROOT / "bin" / "wgmux")
    ap.add_argument("--wheels", type=Path, default=ROOT / "build" / "wheels",
                    help="where the pinned wheels are cached (fetched with pip if missing)")
    ap.add_argument("--fetch-only", action="store_true", help="fetch the wheels, build nothing")
    args = ap.parse_args(argv)
    try:
        if args.fetch_only:
            for w in fetch(args.wheels):
                print(f"build: {w} (hash checked)")
            return 0
        data = build(args.output, args.wheels)
    except BuildError as e:
        print(f"build: {e}", file=sys.stderr)
        return 1
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        n = len(z.namelist())
    print(f"build: {args.output}: {len(data):,} bytes, {n} files, sha256 "
          f"{hashlib.sha256(data).hexdigest()[:16]}; {version_text()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
