#!/usr/bin/python3
"""`make deb`: wgmux_<version>_all.deb, the Debian package of wgmux.

Stages the package's tree and its DEBIAN/ control area, then hands it to
`dpkg-deb --build --root-owner-group` (docs/build.md says why dpkg-deb and
not debhelper, and what each file is).  What the package holds:

    /usr/lib/python3/dist-packages/wgmux/       the product (wgmux/*.py, and
                                                wgmux/bpf: the C datapath)
    /usr/lib/python3/dist-packages/wgmux-V.dist-info/   its metadata
    /usr/sbin/wgmux                             the entry point
    /lib/systemd/system/wgmux.service           packaging/wgmux.service, paths
                                                made the package's
    /etc/wgmux/config.toml                      examples/config.toml, a conffile
    /usr/share/man/man8/wgmux.8.gz              from the CLI's argparse help
    /usr/share/doc/wgmux/                       README, copyright, changelog

The maintainer scripts are what debhelper writes for such a package
(dh_python3: py3compile/py3clean; dh_installsystemd --no-start:
deb-systemd-helper enables the unit, an upgrade try-restarts it, remove
stops and masks it, purge forgets it).

Reproducible: every date is SOURCE_DATE_EPOCH (default: the last commit's
time), files are 0644/0755 root:root, gzip members carry no name or time,
and dpkg-deb takes the ar/tar dates from SOURCE_DATE_EPOCH.

    scripts/deb.py [-o build/deb] [--man-only FILE]

Only the standard library and dpkg-deb are used; the tree's wgmux/cli.py
is imported (not run) to format the man page.
"""

from __future__ import annotations

import argparse
import email.utils
import gzip
import hashlib
import importlib.util
import io
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Dict, List, Tuple

ROOT = Path(__file__).resolve().parent.parent
NAME = "wgmux"
PYDIR = "usr/lib/python3/dist-packages"
UNITDIR = "lib/systemd/system"      # bookworm's debhelper and lintian: /lib, not /usr/lib
MAINTAINER = os.environ.get("DEB_MAINTAINER", "wgmux developers <wgmux@example.org>")
# Debian packages only.  python3-pyroute2 is bookworm's 0.7.2: docs/build.md
# says what of wgmux it covers.  The headers are what bcc compiles against;
# an arch-all package can only name the usual flavours' metapackages.
# procps: /bin/kill, the unit's ExecReload (not in a minbase root).
DEPENDS = ("python3:any (>= 3.11~), python3-bpfcc, python3-pyroute2 (>= 0.7.2), "
           "python3-nacl, wireguard-tools, procps")
RECOMMENDS = "linux-headers-amd64 | linux-headers-arm64 | linux-headers-cloud-amd64"
SECTION = "net"

DESCRIPTION = """\
eBPF hub reflector for WireGuard
 Two unmodified WireGuard (or AmneziaWG) peers, both behind NAT, talk end
 to end encrypted through a hub that never decrypts: an eBPF program on
 the hub's network interface rewrites the addresses and ports of WireGuard
 packets and reflects them, steered by the UDP port they arrive on and by
 WireGuard's session indices. The hub's own WireGuard keeps running on its
 main port.
 .
 This package provides the wgmux daemon and command line tool, its systemd
 unit and an example configuration in /etc/wgmux/config.toml. The eBPF
 datapath is compiled at start by bcc against the running kernel's headers.
"""

COPYRIGHT = """\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: wgmux

Files: *
Copyright: 2025-2026 the wgmux authors
License: MIT
 Permission is hereby granted, free of charge, to any person obtaining a
 copy of this software and associated documentation files (the "Software"),
 to deal in the Software without restriction, including without limitation
 the rights to use, copy, modify, merge, publish, distribute, sublicense,
 and/or sell copies of the Software, and to permit persons to whom the
 Software is furnished to do so, subject to the following conditions:
 .
 The above copyright notice and this permission notice shall be included
 in all copies or substantial portions of the Software.
 .
 THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS
 OR IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF
 MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT.
 IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY
 CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT,
 TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE
 SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
"""

ENTRY = """\
#!/usr/bin/python3 -I
# wgmux, installed by the Debian package (scripts/deb.py).
import sys

from wgmux.cli import main

sys.exit(main())
"""

UNIT = "wgmux.service"

# -- maintainer scripts: debhelper's snippets (compat 13), as it writes them --
PY3COMPILE = f"""\
# Automatically added by dh_python3
if command -v py3compile >/dev/null 2>&1; then
\tpy3compile -p {NAME}
fi
if command -v pypy3compile >/dev/null 2>&1; then
\tpypy3compile -p {NAME}  || true
fi

# End automatically added section
"""
# dh_installsystemd --no-start: enable on install, try-restart on upgrade
# (a restart keeps every session: serve --keep-attached).  Not started on a
# fresh install: the example config's eth0/wg0 are placeholders.
SYSTEMD_POSTINST = f"""\
# Automatically added by dh_installsystemd/13.11.4
if [ "$1" = "configure" ] || [ "$1" = "abort-upgrade" ] || [ "$1" = "abort-deconfigure" ] || [ "$1" = "abort-remove" ] ; then
\t# The following line should be removed in trixie or trixie+1
\tdeb-systemd-helper unmask '{UNIT}' >/dev/null || true

\t# was-enabled defaults to true, so new installations run enable.
\tif deb-systemd-helper --quiet was-enabled '{UNIT}'; then
\t\t# Enables the unit on first installation, creates new
\t\t# symlinks on upgrades if the unit file has changed.
\t\tdeb-systemd-helper enable '{UNIT}' >/dev/null || true
\telse
\t\t# Update the statefile to add new symlinks (if any), which need to be
\t\t# cleaned up on purge. Also remove old symlinks.
\t\tdeb-systemd-helper update-state '{UNIT}' >/dev/null || true
\tfi
fi
# End automatically added section
# Automatically added by dh_installsystemd/13.11.4
if [ "$1" = "configure" ] || [ "$1" = "abort-upgrade" ] || [ "$1" = "abort-deconfigure" ] || [ "$1" = "abort-remove" ] ; then
\tif [ -d /run/systemd/system ]; then
\t\tsystemctl --system daemon-reload >/dev/null || true
\t\tif [ -n "$2" ]; then
\t\t\tdeb-systemd-invoke try-restart '{UNIT}' >/dev/null || true
\t\tfi
\tfi
fi
# End automatically added section
"""
SYSTEMD_PRERM = f"""\
# Automatically added by dh_installsystemd/13.11.4
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
\tdeb-systemd-invoke stop '{UNIT}' >/dev/null || true
fi
# End automatically added section
"""
PY3CLEAN = f"""\
# Automatically added by dh_python3
if command -v py3clean >/dev/null 2>&1; then
\tpy3clean -p {NAME}
else
\tdpkg -L {NAME} | sed -En -e '/^(.*)\\/(.+)\\.py$/s,,rm "\\1/__pycache__/\\2".*,e'
\tfind /usr/lib/python3/dist-packages/ -type d -name __pycache__ -empty -print0 | xargs --null --no-run-if-empty rmdir
fi

# End automatically added section
"""
SYSTEMD_POSTRM = f"""\
# Automatically added by dh_installsystemd/13.11.4
if [ "$1" = remove ] && [ -d /run/systemd/system ] ; then
\tsystemctl --system daemon-reload >/dev/null || true
fi
# End automatically added section
# Automatically added by dh_installsystemd/13.11.4
if [ "$1" = "remove" ]; then
\tif [ -x "/usr/bin/deb-systemd-helper" ]; then
\t\tdeb-systemd-helper mask '{UNIT}' >/dev/null || true
\tfi
fi

if [ "$1" = "purge" ]; then
\tif [ -x "/usr/bin/deb-systemd-helper" ]; then
\t\tdeb-systemd-helper purge '{UNIT}' >/dev/null || true
\t\tdeb-systemd-helper unmask '{UNIT}' >/dev/null || true
\tfi
fi
# End automatically added section
# wgmux's own: the compiled datapath kept between starts (the unit's
# CacheDirectory=, wgmux/bytecode.py)
if [ "$1" = "purge" ]; then
\trm -rf /var/cache/wgmux
fi
"""


def script(*parts: str) -> str:
    return "#!/bin/sh\nset -e\n\n" + "".join(parts)


def version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def source_date_epoch() -> int:
    given = os.environ.get("SOURCE_DATE_EPOCH")
    if given:
        return int(given)
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%ct"],
                             capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip():
            return int(out.stdout.strip())
    except OSError:
        pass
    return 1700000000    # a tree without git: fixed, still reproducible


def _load_build():
    """scripts/build.py, for the version line (commit) it writes."""
    spec = importlib.util.spec_from_file_location("wgmux_build_script", ROOT / "scripts" / "build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def gz(data: bytes) -> bytes:
    """gzip -9n: no name, no time."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as f:
        f.write(data)
    return buf.getvalue()


# -- the man page ------------------------------------------------------------
def _roff_escape(line: str) -> str:
    line = line.replace("\\", "\\e").replace("-", "\\-")
    if line.startswith((".", "'")):
        line = "\\&" + line
    return line


def _pre(text: str) -> List[str]:
    """Preformatted lines (argparse already laid them out)."""
    out = [".nf"]
    out += [_roff_escape(x) if x.strip() else "" for x in text.rstrip("\n").splitlines()]
    out.append(".fi")
    # roff: an empty line is a blank line; keep them but never two in a row
    return out


def man_page(ver: str, date: str) -> str:
    """wgmux(8) from the tree's argparse parser: the top-level help, then
    each command's, as `wgmux COMMAND --help` prints them."""
    os.environ["COLUMNS"] = "78"        # argparse wraps to it: fits an 80-column man
    sys.path.insert(0, str(ROOT))
    try:
        from wgmux import cli
    finally:
        sys.path.pop(0)
    ap = cli.build_parser()
    subs = next(a for a in ap._actions if isinstance(a, argparse._SubParsersAction))
    helps = {c.dest: c.help for c in subs._choices_actions}
    desc = " ".join(cli.DESCRIPTION.split())
    lines = [
        f'.TH WGMUX 8 "{date}" "wgmux {ver}" "System Administration"',
        ".SH NAME",
        "wgmux \\- eBPF hub reflector for WireGuard",
        ".SH SYNOPSIS",
        ".B wgmux",
        "[\\fB\\-\\-version\\fR] [\\fB\\-v\\fR] \\fICOMMAND\\fR [\\fIoptions\\fR]",
        ".SH DESCRIPTION",
        _roff_escape(desc),
        ".PP",
        "The configuration is TOML, by default",
        ".IR /etc/wgmux/config.toml ;",
        "the commented example installed there describes every key.",
        "The systemd unit",
        ".B wgmux.service",
        "runs",
        ".BR \"wgmux serve \\-\\-keep\\-attached\" ;",
        ".B systemctl reload wgmux",
        "rereads the configuration without dropping sessions.",
        ".SH OPTIONS",
    ]
    lines += _pre(ap.format_help())
    lines.append(".SH COMMANDS")
    for name, sub in subs.choices.items():
        lines.append(f".SS {_roff_escape(name)}")
        if helps.get(name):
            lines.append(_roff_escape(helps[name]))
            lines.append(".PP")
        lines += _pre(sub.format_help())
    lines += [
        ".SH EXIT STATUS",
        "0 on success; 1 when wgmux cannot serve (or",
        ".B wgmux check",
        "finds that it could not); 2 for an invalid configuration;",
        "3 when no daemon is running.",
        ".SH FILES",
        ".TP",
        ".I /etc/wgmux/config.toml",
        "the configuration (a conffile)",
        ".TP",
        ".I /run/wgmux/",
        "the daemon's control sockets (made by the systemd unit)",
        ".TP",
        ".I /sys/fs/bpf/wgmux/",
        "pinned maps that carry sessions over a restart",
        ".SH SEE ALSO",
        ".BR wg (8),",
        ".BR systemctl (1),",
        ".I /usr/share/doc/wgmux/README.md.gz",
    ]
    out = "\n".join(lines) + "\n"
    return re.sub(r"\n\n+", "\n.PP\n", out)


# -- the tree ----------------------------------------------------------------
def unit_text() -> str:
    text = (ROOT / "packaging" / "wgmux.service").read_text()
    text = text.replace("/usr/local/bin/wgmux", "/usr/sbin/wgmux")
    text = text.replace("Documentation=file:/usr/local/share/doc/wgmux/README.md",
                        "Documentation=man:wgmux(8) file:/usr/share/doc/wgmux/README.md.gz")
    text = text.replace(
        "# `make install` installs this unit with the paths of its PREFIX and\n"
        "# SYSCONFDIR; as written here they are the defaults (/usr/local, /etc).\n",
        "# Installed by the Debian package wgmux (scripts/deb.py): /usr/sbin/wgmux.\n")
    assert "/usr/local" not in text, "packaging/wgmux.service: a /usr/local path left"
    return text


def dist_info(ver: str) -> Dict[str, bytes]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    d = f"{PYDIR}/{NAME}-{ver}.dist-info"
    metadata = (f"Metadata-Version: 2.1\nName: {NAME}\nVersion: {ver}\n"
                f"Summary: {meta['description']}\nLicense: MIT\n"
                f"Requires-Python: {meta['requires-python']}\n")
    return {f"{d}/METADATA": metadata.encode(),
            f"{d}/entry_points.txt": b"[console_scripts]\nwgmux = wgmux.cli:main\n",
            f"{d}/INSTALLER": b"debian\n"}


def changelog(ver: str, epoch: int, commit_line: str) -> str:
    date = email.utils.formatdate(epoch, usegmt=False).replace("-0000", "+0000")
    return (f"{NAME} ({ver}) unstable; urgency=medium\n\n"
            f"  * Built by make deb (scripts/deb.py) from the wgmux tree:\n"
            f"    {commit_line}.\n\n"
            f" -- {MAINTAINER}  {date}\n")


def tree(ver: str, epoch: int) -> Dict[str, Tuple[bytes, int]]:
    """path in the package -> (bytes, mode)."""
    files: Dict[str, Tuple[bytes, int]] = {}
    pkg = f"{PYDIR}/{NAME}"
    for p in sorted((ROOT / "wgmux").glob("*.py")):
        if p.name == "_build.py":
            continue
        files[f"{pkg}/{p.name}"] = (p.read_bytes(), 0o644)
    for pattern in ("*.py", "*.c", "*.h"):
        for p in sorted((ROOT / "bpf").glob(pattern)):
            files[f"{pkg}/bpf/{p.name}"] = (p.read_bytes(), 0o644)
    version_text = _load_build().version_text()
    files[f"{pkg}/_build.py"] = (
        f'"""Written by scripts/deb.py: what `wgmux --version` prints."""\n'
        f"VERSION_TEXT = {version_text + ' [Debian package]'!r}\n".encode(), 0o644)
    for name, data in dist_info(ver).items():
        files[name] = (data, 0o644)
    files["usr/sbin/wgmux"] = (ENTRY.encode(), 0o755)
    files[f"{UNITDIR}/{UNIT}"] = (unit_text().encode(), 0o644)
    files["etc/wgmux/config.toml"] = ((ROOT / "examples" / "config.toml").read_bytes(), 0o644)
    date = __import__("time").strftime("%Y-%m-%d", __import__("time").gmtime(epoch))
    files["usr/share/man/man8/wgmux.8.gz"] = (gz(man_page(ver, date).encode()), 0o644)
    doc = f"usr/share/doc/{NAME}"
    files[f"{doc}/README.md.gz"] = (gz((ROOT / "README.md").read_bytes()), 0o644)
    files[f"{doc}/copyright"] = (COPYRIGHT.encode(), 0o644)
    commit = version_text.split("(", 1)[1].rstrip(")") if "(" in version_text else version_text
    files[f"{doc}/changelog.gz"] = (gz(changelog(ver, epoch, commit).encode()), 0o644)
    return files


def control(ver: str, installed_kib: int) -> str:
    return (f"Package: {NAME}\nVersion: {ver}\nArchitecture: all\n"
            f"Maintainer: {MAINTAINER}\nInstalled-Size: {installed_kib}\n"
            f"Depends: {DEPENDS}\nRecommends: {RECOMMENDS}\n"
            f"Section: {SECTION}\nPriority: optional\n"
            f"Description: {DESCRIPTION}")


def stage(out_dir: Path, ver: str, epoch: int) -> Path:
    root = out_dir / f"{NAME}_{ver}_all"
    if root.exists():
        shutil.rmtree(root)
    files = tree(ver, epoch)
    dirs = set()
    for rel, (data, mode) in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(mode)
        parent = Path(rel).parent
        while str(parent) != ".":
            dirs.add(parent)
            parent = parent.parent
    debian = root / "DEBIAN"
    debian.mkdir()
    # Installed-Size: as dpkg-gencontrol counts it (KiB per file, rounded up,
    # plus one per directory)
    kib = sum((len(d) + 1023) // 1024 for d, _ in files.values()) + len(dirs)
    meta = {
        "control": (control(ver, kib), 0o644),
        "conffiles": ("/etc/wgmux/config.toml\n", 0o644),
        "md5sums": ("".join(f"{hashlib.md5(files[r][0]).hexdigest()}  {r}\n"
                            for r in sorted(files) if not r.startswith("etc/")), 0o644),
        "postinst": (script(PY3COMPILE, SYSTEMD_POSTINST), 0o755),
        "prerm": (script(SYSTEMD_PRERM, PY3CLEAN), 0o755),
        "postrm": (script(SYSTEMD_POSTRM), 0o755),
    }
    for name, (text, mode) in meta.items():
        (debian / name).write_text(text)
        (debian / name).chmod(mode)
    for d in [root, *[root / x for x in dirs], debian]:
        d.chmod(0o755)
    for path in [root, *root.rglob("*")]:
        os.utime(path, (epoch, epoch), follow_symlinks=False)
    return root


def build(out_dir: Path) -> Path:
    ver = version()
    epoch = source_date_epoch()
    out_dir.mkdir(parents=True, exist_ok=True)
    root = stage(out_dir, ver, epoch)
    deb = out_dir / f"{NAME}_{ver}_all.deb"
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(epoch))
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zxz", "-z9", "--build",
                    str(root), str(deb)], check=True, env=env, stdout=subprocess.DEVNULL)
    return deb


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--out", default=str(ROOT / "build" / "deb"),
                    help="directory for the staged tree and the .deb (default build/deb)")
    ap.add_argument("--man-only", metavar="FILE", help="only write the (uncompressed) man page")
    args = ap.parse_args(argv)
    if args.man_only:
        Path(args.man_only).write_text(man_page(version(), "1970-01-01"))
        return 0
    if not shutil.which("dpkg-deb"):
        print("deb: dpkg-deb is missing (apt-get install dpkg)", file=sys.stderr)
        return 1
    deb = build(Path(args.out))
    print(f"{deb} ({deb.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
