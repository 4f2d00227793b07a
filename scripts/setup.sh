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

# systemd: systemd-analyze, which the tests use to verify the unit;
# python3-setuptools/-wheel: `make install` builds wgmux with them, offline.
# python3-nacl: libsodium's XChaCha20-Poly1305 for the hub's cookie replies
# (wgmux/cookie.py), for the system Python like bcc.
# debootstrap: `make build-test` runs bin/wgmux in a fresh Debian 12 root
# (scripts/chroot.sh), and `make deb-test` the Debian package in one.
# lintian: `make deb` and its test in `make test` check the package with it.
PKGS=(iproute2 nftables conntrack wireguard-tools wireguard-go python3-bpfcc python3-nacl
      python3-venv python3-pip python3-setuptools python3-wheel tcpdump iperf3
      iputils-ping ethtool procps util-linux kmod systemd debootstrap lintian)
kver=$(uname -r)
kdir=/lib/modules/$kver
have_headers() {
    [ -e "$kdir/build/include/linux/kconfig.h" ] || [ -e "$kdir/source/include/linux/kconfig.h" ]
}

missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if ! have_headers; then
    # The running kernel's own headers if Debian has them; otherwise the
    # distribution's default headers, linked into place below.
    missing+=("headers")
fi
if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    pkgs=("${missing[@]/headers/}")
    if ! have_headers; then
        if apt-cache show "linux-headers-$kver" >/dev/null 2>&1; then
            pkgs+=("linux-headers-$kver")
        else
            case "$(dpkg --print-architecture)" in
                arm64) pkgs+=(linux-headers-arm64) ;;
                *) pkgs+=(linux-headers-amd64) ;;
            esac
        fi
    fi
    say "installing Debian packages: ${pkgs[*]}"
    apt-get install -y -q --no-install-recommends ${pkgs[@]}
else
    say "Debian packages present"
fi

# bcc compiles against /lib/modules/$(uname -r)/{build,source}. A kernel that
# ships no headers (cloud/microVM kernels) gets Debian's 6.1 headers there
# (the ones Debian's bcc 0.26 compiles against); a system with real
# headers for its kernel is left alone.
if have_headers; then
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

# `make build` packs the pinned pyroute2 wheel (packaging/zipapp-requirements.txt):
# fetched once into build/wheels, hash checked, so builds and tests need no network.
/usr/bin/python3 scripts/build.py --fetch-only | sed 's/^/setup: /'

.venv/bin/python -c 'import bcc, pyroute2' \
    || { echo "setup: bcc or pyroute2 does not import in .venv" >&2; exit 1; }
say "done: .venv/bin/wgmux is the CLI; make test runs the tests"
