#!/bin/sh
# `make install`, `make install-venv`, `make uninstall` (see the Makefile
# for the variables and README.md, "Install on a real hub").
#
#   install.sh install-file  the one file `make build` made ($FILE, default
#                            bin/wgmux) as $BINDIR/wgmux, the unit, the docs,
#                            and the example config unless one exists
#   install.sh install       (make install-venv) wgmux into its own venv, the
#                            launcher, the unit, the docs, the example config
#   install.sh uninstall     remove what either put, except the config
#
# Layout (defaults; every directory can be overridden):
#   $VENVDIR      /usr/local/lib/wgmux               venv: wgmux + pyroute2 (install only)
#   $BINDIR       /usr/local/bin/wgmux               the file, or the venv's launcher
#   $UNITDIR      /usr/local/lib/systemd/system/wgmux.service
#   $DOCDIR       /usr/local/share/doc/wgmux         README.md, config.toml
#   $SYSCONFDIR   /etc/wgmux/config.toml             never overwritten
#
# DESTDIR stages the whole tree under another root (for packaging). The
# venv is built inside $DESTDIR but every path in it is its final one: the
# few files where a venv records its own location (pyvenv.cfg, script
# shebangs, activate scripts, compiled .pyc) are written or rewritten for
# $VENVDIR, so the staged tree works once it sits at its final place.
set -eu

cmd=${1:?usage: install.sh install|install-file|uninstall}
SRCDIR=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=${PREFIX:-/usr/local}
BINDIR=${BINDIR:-$PREFIX/bin}
VENVDIR=${VENVDIR:-$PREFIX/lib/wgmux}
UNITDIR=${UNITDIR:-$PREFIX/lib/systemd/system}
DOCDIR=${DOCDIR:-$PREFIX/share/doc/wgmux}
SYSCONFDIR=${SYSCONFDIR:-/etc}
SYSTEM_PYTHON=${SYSTEM_PYTHON:-/usr/bin/python3}
DESTDIR=${DESTDIR:-}
FILE=${FILE:-$SRCDIR/bin/wgmux}
# Extra pip arguments, e.g. PIP_ARGS="--no-index --find-links=/srv/wheels".
PIP_ARGS=${PIP_ARGS:-}

say() { printf 'install: %s\n' "$*"; }
die() { printf 'install: %s\n' "$*" >&2; exit 1; }

for d in "$PREFIX" "$BINDIR" "$VENVDIR" "$UNITDIR" "$DOCDIR" "$SYSCONFDIR"; do
    case "$d" in /*) ;; *) die "$d: directories must be absolute paths" ;; esac
done
case "$DESTDIR" in ''|/*) ;; *) DESTDIR=$PWD/$DESTDIR ;; esac
# No trailing slashes: these strings are matched and substituted below.
strip() { printf '%s' "$1" | sed -e 's|//*|/|g' -e 's|\(.\)/$|\1|'; }
DESTDIR=$(strip "$DESTDIR"); [ "$DESTDIR" = / ] && DESTDIR=
BINDIR=$(strip "$BINDIR"); VENVDIR=$(strip "$VENVDIR"); UNITDIR=$(strip "$UNITDIR")
DOCDIR=$(strip "$DOCDIR"); SYSCONFDIR=$(strip "$SYSCONFDIR")

# systemd acts only on a real install into the running system.
systemd_running() { [ -z "$DESTDIR" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; }

do_install() {
    venv=$DESTDIR$VENVDIR
    [ -x "$SYSTEM_PYTHON" ] || die "$SYSTEM_PYTHON not found (apt install python3)"
    "$SYSTEM_PYTHON" -c 'import venv' 2>/dev/null \
        || die "$SYSTEM_PYTHON has no venv module (apt install python3-venv)"
    "$SYSTEM_PYTHON" -m pip --version >/dev/null 2>&1 \
        || die "$SYSTEM_PYTHON has no pip (apt install python3-pip)"
    "$SYSTEM_PYTHON" -c 'import bcc' 2>/dev/null \
        || say "warning: bcc does not import in $SYSTEM_PYTHON: apt install python3-bpfcc before running wgmux (wgmux check tells)"

    # A fresh venv each time: an upgrade replaces the old one whole. It
    # sees the system's site-packages (Debian's bcc) and has no pip of its
    # own: the system's pip installs into it.
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    "$SYSTEM_PYTHON" -m venv --system-site-packages --without-pip "$venv"

    # Build from a copy of the sources: the checkout stays untouched (no
    # build/ or egg-info), and two installs at once do not share a build dir.
    build=$(mktemp -d "${TMPDIR:-/tmp}/wgmux-install.XXXXXX")
    trap 'rm -rf "$build"' EXIT
    (cd "$SRCDIR" && tar --exclude=./.venv --exclude=./.git --exclude=./build \
        --exclude='*.egg-info' --exclude=__pycache__ --exclude=./tests --exclude=./vagrant \
        -cf - .) | tar -xf - -C "$build"
    # Debian's setuptools and wheel build it offline when present (the venv
    # sees them); otherwise pip fetches a build backend.
    isolation=--no-build-isolation
    "$venv/bin/python" -c 'import setuptools, wheel, sys
v = tuple(int(x) for x in setuptools.__version__.split(".")[:2])
sys.exit(v < (61, 0))' 2>/dev/null || isolation=
    say "installing wgmux into $VENVDIR"
    # shellcheck disable=SC2086
    "$SYSTEM_PYTHON" -m pip --python "$venv/bin/python" install --quiet \
        --disable-pip-version-check --no-compile --no-warn-script-location \
        $isolation $PIP_ARGS "$build"

    if [ -n "$DESTDIR" ]; then
        # Where the venv records its own path, make it the final one.
        grep -rlIF -- "$venv" "$venv" 2>/dev/null | while IFS= read -r f; do
            sed -i "s|$venv|$VENVDIR|g" "$f"
        done
    fi
    # Byte-compile with the final paths in the .pyc files (tracebacks).
    if [ -n "$DESTDIR" ]; then
        "$venv/bin/python" -m compileall -q -j 0 -s "$DESTDIR" -p / "$venv/lib" >/dev/null
    else
        "$venv/bin/python" -m compileall -q -j 0 "$venv/lib" >/dev/null
    fi
    "$venv/bin/python" -I -c 'import wgmux.cli, pyroute2' \
        || die "the new venv cannot import wgmux and pyroute2"

    mkdir -p "$DESTDIR$BINDIR"
    # -I: no PYTHON* variables, no user site, and not the current directory
    # on sys.path (a checkout's wgmux/ must not shadow the installed one).
    cat >"$DESTDIR$BINDIR/wgmux.new" <<EOF
#!/bin/sh
# wgmux launcher (make install): wgmux lives in its own venv, $VENVDIR.
exec "$VENVDIR/bin/python" -I -c 'import sys; from wgmux.cli import main; sys.exit(main())' "\$@"
EOF
    chmod 0755 "$DESTDIR$BINDIR/wgmux.new"
    mv -f "$DESTDIR$BINDIR/wgmux.new" "$DESTDIR$BINDIR/wgmux"
    install_rest
}

# `make build`'s file: nothing to build, no pip, no venv. It runs with
# /usr/bin/python3 (its first line), which brings bcc and PyNaCl.
do_install_file() {
    [ -f "$FILE" ] || die "$FILE: no such file: run 'make build' first (or 'make install-venv')"
    head -c 64 "$FILE" | grep -q '^#!/usr/bin/python3' || die "$FILE: not a file 'make build' made"
    if [ -x /usr/bin/python3 ]; then
        /usr/bin/python3 -c 'import bcc' 2>/dev/null \
            || say "warning: bcc does not import in /usr/bin/python3: apt install python3-bpfcc before running wgmux"
        /usr/bin/python3 -c 'import nacl' 2>/dev/null \
            || say "warning: nacl does not import in /usr/bin/python3: apt install python3-nacl before running wgmux"
    else
        say "warning: no /usr/bin/python3 here: the file needs it (apt install python3-bpfcc python3-nacl)"
    fi
    if [ -d "$DESTDIR$VENVDIR" ]; then
        # a venv install before this one: the file replaces its launcher
        rm -rf "$DESTDIR$VENVDIR"
        say "removed the venv of an earlier install-venv ($VENVDIR)"
    fi
    mkdir -p "$DESTDIR$BINDIR"
    install -m 0755 "$FILE" "$DESTDIR$BINDIR/wgmux.new"
    mv -f "$DESTDIR$BINDIR/wgmux.new" "$DESTDIR$BINDIR/wgmux"
    say "installed $FILE as $BINDIR/wgmux ($("$DESTDIR$BINDIR/wgmux" --version 2>/dev/null || echo 'version: needs /usr/bin/python3'))"
    install_rest
}

# The unit, the docs, the example config: both installs.
install_rest() {
    mkdir -p "$DESTDIR$UNITDIR"
    sed -e "s|/usr/local/bin/wgmux|$BINDIR/wgmux|g" \
        -e "s|/usr/local/share/doc/wgmux|$DOCDIR|g" \
        -e "s|/etc/wgmux/|$SYSCONFDIR/wgmux/|g" \
        "$SRCDIR/packaging/wgmux.service" >"$DESTDIR$UNITDIR/wgmux.service"
    chmod 0644 "$DESTDIR$UNITDIR/wgmux.service"

    mkdir -p "$DESTDIR$DOCDIR"
    install -m 0644 "$SRCDIR/README.md" "$DESTDIR$DOCDIR/README.md"
    install -m 0644 "$SRCDIR/examples/config.toml" "$DESTDIR$DOCDIR/config.toml"

    conf=$DESTDIR$SYSCONFDIR/wgmux/config.toml
    if [ -e "$conf" ] || [ -L "$conf" ]; then
        say "kept the existing $SYSCONFDIR/wgmux/config.toml (the example is $DOCDIR/config.toml)"
    else
        mkdir -p "$(dirname "$conf")"
        install -m 0644 "$SRCDIR/examples/config.toml" "$conf"
        say "installed the example config as $SYSCONFDIR/wgmux/config.toml: edit it"
    fi

    if systemd_running; then
        systemctl daemon-reload || true
    fi
    say "done: $BINDIR/wgmux, unit $UNITDIR/wgmux.service"
    say "next: edit $SYSCONFDIR/wgmux/config.toml, run 'wgmux check', then 'systemctl enable --now wgmux'"
}

do_uninstall() {
    unit=$DESTDIR$UNITDIR/wgmux.service
    # Stop and disable the service only when it is this unit systemd runs.
    if systemd_running && [ -e "$unit" ] \
        && [ "$(systemctl show -P FragmentPath wgmux.service 2>/dev/null)" = "$unit" ]; then
        systemctl disable --now wgmux.service || true
    fi
    rm -f "$DESTDIR$BINDIR/wgmux" "$unit"
    rm -rf "$DESTDIR$VENVDIR" "$DESTDIR$DOCDIR"
    if systemd_running; then
        systemctl daemon-reload || true
    fi
    say "removed wgmux; kept $SYSCONFDIR/wgmux/config.toml"
}

case "$cmd" in
    install) do_install ;;
    install-file) do_install_file ;;
    uninstall) do_uninstall ;;
    *) die "usage: install.sh install|install-file|uninstall" ;;
esac
