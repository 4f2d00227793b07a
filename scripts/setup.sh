#!/usr/bin/env bash
# One-command set-up for a Debian 12 machine (run as root, idempotent):
# system packages, kernel headers bcc can use, bpffs, and the project venv.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'setup: %s\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
    echo "setup: must run as root (it installs Debian packages): sudo make setup" >&2
    exit 1
fi

PKGS=(iproute2 nftables conntrack wireguard-tools wireguard-go python3-bpfcc
      python3-venv python3-pip tcpdump iperf3 iputils-ping ethtool procps
      util-linux kmod)
HEADERS_PKG=linux-headers-amd64
case "$(dpkg --print-architecture)" in
    arm64) HEADERS_PKG=linux-headers-arm64 ;;
esac

missing=()
for p in "${PKGS[@]}" "$HEADERS_PKG"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
else
    say "Debian packages present"
fi

# bcc compiles against /lib/modules/$(uname -r)/{build,source}. A kernel that
# ships no headers (cloud/microVM kernels) gets Debian's 6.1 headers there;
# a system with real headers for its kernel is left alone.
kver=$(uname -r)
kdir=/lib/modules/$kver
if [ -e "$kdir/build/include/linux/kconfig.h" ] || [ -e "$kdir/source/include/linux/kconfig.h" ]; then
    say "kernel headers for $kver present"
else
    arch_dir=$(ls -d /usr/src/linux-headers-6.1.*-amd64 /usr/src/linux-headers-6.1.*-arm64 2>/dev/null | sort -V | tail -n 1 || true)
    common_dir=$(ls -d /usr/src/linux-headers-6.1.*-common 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -z "$arch_dir" ] || [ -z "$common_dir" ]; then
        echo "setup: no headers for kernel $kver and no Debian 6.1 headers to fall back on" >&2
        exit 1
    fi
    mkdir -p "$kdir"
    ln -sfn "$arch_dir" "$kdir/build"
    ln -sfn "$common_dir" "$kdir/source"
    say "kernel $kver has no headers: linked $kdir/build -> $arch_dir and $kdir/source -> $common_dir for bcc"
fi

if ! mountpoint -q /sys/fs/bpf; then
    mount -t bpf bpf /sys/fs/bpf
    say "mounted bpffs on /sys/fs/bpf"
fi

if [ ! -x .venv/bin/python ]; then
    say "creating .venv from /usr/bin/python3 (sees the system's bcc)"
    /usr/bin/python3 -m venv --system-site-packages .venv
fi
stamp=.venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)
if [ ! -e "$stamp" ]; then
    say "installing wgmux (editable) with its test extra into .venv"
    .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
    rm -f .venv/.installed-*
    touch "$stamp"
else
    say ".venv up to date"
fi

.venv/bin/python -c 'import bcc, pyroute2' \
    || { echo "setup: bcc or pyroute2 does not import in .venv" >&2; exit 1; }
say "done: .venv/bin/wgmux is the CLI; make test runs the tests"
