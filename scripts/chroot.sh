#!/usr/bin/env bash
# Fresh Debian 12 roots for install tests (`make build-test`; later the .deb
# install test): a debootstrap'ed minbase bookworm with only the packages
# asked for, cached, and a throwaway copy of it to run things in.
#
#   chroot.sh base PKG...     print the cached root with exactly PKG... (and
#                             what they depend on) installed on top of minbase;
#                             made on first use (debootstrap + apt-get, a few
#                             minutes), then reused: CACHE/bookworm-<hash>
#   chroot.sh up BASE DIR     a fresh root at DIR/root: an overlay of BASE
#                             (a copy where overlayfs is missing) with /proc,
#                             /sys (so /sys/fs/bpf), /dev, and the running
#                             kernel's headers for bcc (/lib/modules/$(uname -r)
#                             and /usr/src from the host, read-only) mounted;
#                             no network configuration, no pip, no apt lists
#   chroot.sh down DIR        unmount all of DIR/root and remove DIR
#
# Run as root. CACHE is $WGMUX_CHROOT_CACHE or /var/cache/wgmux-chroot;
# MIRROR is $WGMUX_CHROOT_MIRROR or http://deb.debian.org/debian.
# The roots have no network of their own to speak of: nothing in them is
# configured to fetch, and the test runs what it must in network namespaces.
set -euo pipefail

CACHE=${WGMUX_CHROOT_CACHE:-/var/cache/wgmux-chroot}
MIRROR=${WGMUX_CHROOT_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm

say() { printf 'chroot: %s\n' "$*" >&2; }
die() { printf 'chroot: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"

mounted() { mountpoint -q "$1" 2>/dev/null; }

base() {
    [ $# -gt 0 ] || die "usage: chroot.sh base PKG..."
    command -v debootstrap >/dev/null || die "debootstrap is missing: apt-get install debootstrap (make setup)"
    local pkgs key root   # tmp: global, for the EXIT trap
    pkgs=$(printf '%s\n' "$@" | sort -u | tr '\n' ' ' | sed 's/ $//')
    key=$(printf '%s %s\n' "$SUITE" "$pkgs" | sha1sum | cut -c1-12)
    root=$CACHE/$SUITE-$key
    if [ -e "$root/.complete" ]; then
        printf '%s\n' "$root"
        return
    fi
    mkdir -p "$CACHE/debs"
    exec 9>"$CACHE/.lock"
    flock 9
    if [ -e "$root/.complete" ]; then printf '%s\n' "$root"; return; fi
    tmp=$root.tmp
    undo() { for m in dev/pts dev proc sys; do mounted "$tmp/$m" && umount -l "$tmp/$m"; done; rm -rf "$tmp"; }
    undo
    trap undo EXIT
    say "debootstrap --variant=minbase $SUITE into $root (once; a few minutes)"
    debootstrap --variant=minbase --cache-dir="$CACHE/debs" "$SUITE" "$tmp" "$MIRROR" >&2 \
        || { tail -n 30 "$tmp/debootstrap/debootstrap.log" >&2 2>/dev/null; die "debootstrap failed"; }
    mount -t proc proc "$tmp/proc"
    mount --bind /dev "$tmp/dev"
    say "installing $pkgs"
    chroot "$tmp" env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
    chroot "$tmp" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "$@" >&2
    chroot "$tmp" apt-get clean
    rm -rf "$tmp"/var/lib/apt/lists/*
    umount "$tmp/dev" "$tmp/proc"
    printf '%s\n' "$pkgs" >"$tmp/.packages"
    touch "$tmp/.complete"
    trap - EXIT
    mv "$tmp" "$root"
    say "cached $root"
    printf '%s\n' "$root"
}

up() {
    [ $# = 2 ] || die "usage: chroot.sh up BASE DIR"
    local base=$1 dir=$2 root kver
    [ -e "$base/.complete" ] || die "$base: not a root made by 'chroot.sh base'"
    mkdir -p "$dir"
    root=$dir/root
    mkdir -p "$root"
    if grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null; then
        mkdir -p "$dir/upper" "$dir/work"
        mount -t overlay overlay -o "lowerdir=$base,upperdir=$dir/upper,workdir=$dir/work" "$root"
    else
        cp -a "$base/." "$root/"
    fi
    mount -t proc proc "$root/proc"
    mount --rbind /sys "$root/sys" && mount --make-rslave "$root/sys"
    mount --rbind /dev "$root/dev" && mount --make-rslave "$root/dev"
    # bcc compiles against /lib/modules/$(uname -r)/build: the host's, with
    # whatever its build/source links point at (Debian's headers in /usr/src).
    kver=$(uname -r)
    if [ -d "/lib/modules/$kver" ]; then
        mkdir -p "$root/lib/modules/$kver"
        mount --bind -o ro "/lib/modules/$kver" "$root/lib/modules/$kver"
        mount -o remount,bind,ro "$root/lib/modules/$kver"
    fi
    mount --bind /usr/src "$root/usr/src"
    mount -o remount,bind,ro "$root/usr/src"
    # headers' scripts link into /usr/lib/linux-kbuild-*
    for k in /usr/lib/linux-kbuild-*; do
        [ -d "$k" ] || continue
        mkdir -p "$root$k"
        mount --bind -o ro "$k" "$root$k"
        mount -o remount,bind,ro "$root$k"
    done
    mkdir -p "$root/run" "$root/tmp"
    chmod 1777 "$root/tmp"
    printf '%s\n' "$root"
}

down() {
    [ $# = 1 ] || die "usage: chroot.sh down DIR"
    local dir=$1 root
    root=$(realpath -m "$dir/root")
    # deepest first
    findmnt -rn -o TARGET | awk -v r="$root" 'index($0, r) == 1' | sort -r | while read -r m; do
        umount "$m" 2>/dev/null || umount -l "$m"
    done
    if findmnt -rn -o TARGET | awk -v r="$root" 'index($0, r) == 1' | grep -q .; then
        die "$root: still mounted, not removing $dir"
    fi
    rm -rf "$dir"
}

cmd=${1:-}
shift || true
case "$cmd" in
    base) base "$@" ;;
    up) up "$@" ;;
    down) down "$@" ;;
    *) die "usage: chroot.sh base PKG... | up BASE DIR | down DIR" ;;
esac
