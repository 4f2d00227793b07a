#!/usr/bin/env bash
# Kernel matrix: run a chosen part of the test suite inside virtme-ng guests
# that boot Debian's own kernels, so that the kernel-WireGuard code paths
# (netlab's `kind wireguard` links, endpoint discovery over generic netlink)
# run for real. Optional; not part of `make test`. See docs/kernel-matrix.md.
#
#   sudo scripts/kernel-matrix.sh                      # kernels 6.1 and 6.12
#   sudo scripts/kernel-matrix.sh -k 6.1               # one kernel
#   sudo scripts/kernel-matrix.sh -k 6.1 -- tests/integration/test_discovery.py
#
# Run as root. Idempotent: installs (--no-install-recommends) qemu-system-x86,
# busybox-static, virtme-ng in its own venv ($KM_VNG_DIR), and each kernel's
# Debian image with the exactly matching headers (6.12 from bookworm-backports,
# whose apt source it adds when missing), then boots each kernel with the
# host's filesystem (virtme-ng's default: read-only root, writable overlays)
# and runs pytest there from this repository with its .venv. Exits non-zero
# when any kernel failed.
#
# Kernels (-k, or KM_KERNELS, space separated): a series such as "6.1" (the
# release's linux-headers-amd64) or "6.12" (linux-headers-6.12-amd64, from
# backports), or an exact ABI such as "6.1.0-56-amd64".
#
# Environment: KM_KERNELS ("6.1 6.12"), KM_MEMORY (3G: two workers, each may compile at once),
# KM_PARALLEL (1: every kernel's guest at once, each with one vCPU; 0: one
# after the other, each with two), KM_CPUS (vCPUs per guest: 1 in parallel, else 2),
# KM_WORKERS (pytest-xdist workers in the guest, 1: none),
# KM_TIMEOUT (seconds per kernel, 5400; 7200 with KM_PARALLEL=1), KM_VNG_DIR (/opt/wgmux-vng),
# KM_LOGDIR (/tmp/wgmux-kernel-matrix), KM_NO_INSTALL=1 (install nothing),
# KM_UNAVAILABLE_OK=1 (what the machine cannot provide - packages, a guest
# that boots - is a skip, not a failure; `make verifier-test` in CI).
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SELF="$REPO/scripts/kernel-matrix.sh"
# The kernel-WireGuard paths, the datapath's golden table on this kernel's
# verifier and helpers (the mutation test compiles a dozen programs: left
# to the host), the slow path, and wgmux end to end. Not the negatives
# test_without_wgmux_the_handshake_fails*: each waits out a window of 6 s
# times the guest's slowness factor (about 5 minutes at 49, eight of them),
# and they check the lab's topology (nothing gets through without wgmux),
# which the host's `make test` does. Nor
# test_restart_changes_the_datapath_and_keeps_the_session: it asserts that
# four restarts of `wgmux serve` after the pair's handshake (four bcc
# compiles, 60-90 s each in a guest) fit before WireGuard's own rekey, 120 s
# of wall clock that no factor stretches (docs/kernel-matrix.md).
# One NAT kind per family for the end-to-end reflect: port-restricted vs
# symmetric (and NAT66 vs the IPv6 firewall) differ in the lab's routers,
# not in what the hub's kernel runs (the same datapath paths, TC and XDP,
# IPv4 and IPv6); `make test` runs every kind on the host. Each end-to-end
# test is a bcc compile, minutes in a guest: these four would be a quarter
# of a kernel's time. The two-uplink test over VLANs (TC; XDP refused
# there: no XDP in a VLAN's driver) runs here only: the host kernel has no
# 802.1Q.
DEFAULT_SELECTION=(tests/unit/test_datapath.py
                   tests/integration/test_discovery.py
                   "tests/integration/test_multi_interface.py::test_reflects_between_two_uplinks[vlans-tc]"
                   tests/integration/test_multi_interface.py::test_xdp_on_vlans_is_refused_and_nothing_stays
                   tests/integration/test_baseline_hub_and_spoke.py
                   tests/integration/test_reflect.py
                   tests/integration/test_slowpath.py
                   -k "not mutants and not without_wgmux_the_handshake_fails and not test_restart_changes_the_datapath_and_keeps_the_session and not (test_reflects_end_to_end_without_decrypting and symmetric) and not (test_reflects_end_to_end_without_decrypting_ipv6 and firewall)")

say() { printf 'kernel-matrix: %s\n' "$*"; }
die() { printf 'kernel-matrix: %s\n' "$*" >&2; exit 2; }
# What this machine cannot provide (packages, a booting guest): an error,
# or with KM_UNAVAILABLE_OK=1 (CI) a loud skip, so that only a kernel that
# ran and failed fails the run.
UNAVAILABLE_OK=${KM_UNAVAILABLE_OK:-0}
unavailable() {
    if [ "$UNAVAILABLE_OK" = 1 ]; then
        say "SKIPPED, this machine cannot run it: $*"; exit 0
    fi
    die "$*"
}

# How slow the guest is, measured the same way on the host (before boot)
# and in the guest: a fixed CPU workload (pure Python, hashing, process
# starts: what the tests spend their time on), best of 3, in seconds.
cpu_bench() {
    "$REPO/.venv/bin/python" - <<'EOF'
import hashlib, subprocess, time
def once():
    t = time.perf_counter()
    x = 0
    for i in range(3_000_000):
        x += i * i % 7
    hashlib.sha256(b"w" * (32 << 20)).digest()
    for _ in range(20):
        subprocess.run(["/bin/true"])
    return time.perf_counter() - t
print(f"{min(once() for _ in range(3)):.3f}")
EOF
}

# The datapath compiled and loaded once with bcc (what every `wgmux serve`
# does first), output in $1, its seconds on a line "KM-COMPILE-SECONDS s";
# the exit status is the compile's.  Always a full compile (the slowness is
# what is measured): with no compile cache, or ($WGMUX_BYTECODE_CACHE) an
# empty one that keeps it for what follows (wgmux/bytecode.py).
timed_compile() {
    WGMUX_BYTECODE_CACHE=${WGMUX_BYTECODE_CACHE:-off} "$REPO/.venv/bin/python" - > "$1" 2>&1 <<'EOF'
import time
t = time.perf_counter()
from wgmux.datapath import Datapath
Datapath(51820).close()
print(f"KM-COMPILE-SECONDS {time.perf_counter() - t:.2f}")
EOF
}

# NETLAB_SLOWNESS for the guest, on stdout; how it came about on stderr.
# The larger of the CPU workload's and the first compile's guest/host
# ratios, times KM_SLOWNESS_MARGIN (the machine's load changes during a
# run), at least 1; KM_SLOWNESS sets it outright.
slowness_factor() {
    "$REPO/.venv/bin/python" - <<'EOF'
import os, sys
def num(name):
    try:
        v = float(os.environ.get(name) or "nan")
    except ValueError:
        return None
    return v if v == v and 0 < v < float("inf") else None
host_cpu, guest_cpu = num("KM_HOST_CPU_S"), num("KM_CPU_S")
host_c, guest_c = num("KM_HOST_COMPILE_S"), num("KM_COMPILE_S")
margin = max(1.0, num("KM_SLOWNESS_MARGIN") or 2.0)
cpu = guest_cpu / host_cpu if host_cpu and guest_cpu else None
comp = guest_c / host_c if host_c and guest_c else None
measured = max([r for r in (cpu, comp) if r] or [1.0])
forced = num("KM_SLOWNESS")
factor = max(1.0, forced if forced else measured * margin)
fmt = lambda r: f"{r:.1f}" if r else "-"
print(f"{factor:.1f}")
print(f"factor={factor:.1f} measured={measured:.1f} margin={margin:g}"
      f" cpu={fmt(cpu)} (guest {guest_cpu}s / host {host_cpu}s)"
      f" compile={fmt(comp)} (guest {guest_c}s / host {host_c}s)"
      + (f" forced by KM_SLOWNESS={forced:g}" if forced else ""), file=sys.stderr)
EOF
}

# ---------------------------------------------------------------------------
# Inside the guest: prepare what the tests need, report which WireGuard
# netlab uses, run pytest. Called by the host part through `vng --exec`.
# ---------------------------------------------------------------------------
in_guest() {
    cd "$REPO" || exit 2
    export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    export PYTHONDONTWRITEBYTECODE=1 HOME=/root TMPDIR=/tmp
    local kver kdir abi_base
    kver=$(uname -r)
    kdir=/lib/modules/$kver
    echo "KM-GUEST kernel=$kver"

    mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
    mkdir -p /run/netns /run/wireguard
    # Headers for bcc at build/ and source/ (the guest's /lib is a writable
    # overlay; the host is not touched). Debian: <abi>-amd64 holds the arch
    # part, <abi>-common the rest.
    abi_base=${kver%-*}
    [ -e "$kdir/build" ] || ln -sfn "/usr/src/linux-headers-$kver" "$kdir/build"
    [ -e "$kdir/source" ] || ln -sfn "/usr/src/linux-headers-$abi_base-common" "$kdir/source"
    if [ ! -e "$kdir/build/include/linux/kconfig.h" ] && [ ! -e "$kdir/source/include/linux/kconfig.h" ]; then
        echo "KM-GUEST no kernel headers for $kver under $kdir"
    fi
    modprobe wireguard 2>&1 && echo "KM-GUEST wireguard module: $(cat /sys/module/wireguard/version 2>/dev/null || echo built-in)"

    # Every start of wireguard-go is counted: with kernel WireGuard there
    # should be none. The wrapper comes first on PATH and runs the real one.
    mkdir -p /run/km-bin
    : > /run/km-wireguard-go.log
    cat > /run/km-bin/wireguard-go <<'EOF'
#!/bin/sh
echo "$*" >> /run/km-wireguard-go.log
exec /usr/bin/wireguard-go "$@"
EOF
    chmod +x /run/km-bin/wireguard-go
    export PATH=/run/km-bin:$PATH

    # What netlab itself decides (netlab/wireguard.py: kernel when a
    # `wireguard` link can be created in a scratch namespace), then a tunnel
    # between two namespaces and the hub-side read-back `wgmux serve` uses
    # (discovery.read_device: UAPI socket, else netlink, else `wg`), checked
    # field by field: test_discovery only compares endpoints, and the reflect
    # tests reach discovery only once the datapath loads.
    .venv/bin/python - <<'EOF'
from netlab import Lab
from netlab.traffic import ping
from netlab.wireguard import WireGuard, kernel_wireguard_available
from wgmux import discovery
print(f"KM-GUEST kernel_wireguard_available={kernel_wireguard_available()}")
with Lab() as lab:
    a, b = lab.add_node("a"), lab.add_node("b")
    lab.link(a, "eth0", b, "eth0", "192.0.2.1/24", "192.0.2.2/24")
    wa = WireGuard.create(a, "ka", 51820, "10.99.0.1/24")
    wb = WireGuard.create(b, "kb", 51821, "10.99.0.2/24")
    print(f"KM-GUEST netlab WireGuard implementation={wa.implementation}")
    wa.set_peer(wb.public_key, "192.0.2.2:51821", ["10.99.0.2/32"])
    wb.set_peer(wa.public_key, "192.0.2.1:51820", ["10.99.0.1/32"])
    ok = ping(a, "10.99.0.2", count=3)
    with a.entered():
        info = discovery.read_device(wa.name)
    peer = info.peers.get(wb.public_key)
    problems = [what for what, good in [
        ("ping through the tunnel", ok),
        (f"source {info.source!r}", info.source == ("netlink" if wa.implementation == "kernel" else "uapi")),
        (f"listen_port {info.listen_port}", info.listen_port == 51820),
        (f"public_key {info.public_key!r}", info.public_key == wa.public_key),
        ("peer present", peer is not None),
        (f"endpoint {peer and peer.endpoint}", peer and peer.endpoint == ("192.0.2.2", 51821)),
        (f"latest_handshake {peer and peer.latest_handshake}", peer and peer.latest_handshake > 0),
        (f"rx/tx {peer and (peer.rx_bytes, peer.tx_bytes)}", peer and peer.rx_bytes > 0 and peer.tx_bytes > 0),
    ] if not good]
    print(f"KM-GUEST discovery read_device source={info.source} "
          + ("OK" if not problems else "FAILED: " + "; ".join(problems)))
EOF

    # Does the datapath compile (bcc, these headers) and pass this kernel's
    # verifier? Said on its own so that a failing reflect test has its
    # reason next to it; it also warms bcc's and clang's files (9p root) so
    # the tests' first `wgmux serve` is not slowed by them, and the compile
    # is kept for the tests' starts of the same build (the suite's conftest
    # takes WGMUX_BYTECODE_CACHE as it finds it).
    local compile_s="" cpu_s start rc
    WGMUX_BYTECODE_CACHE=$(mktemp -d /tmp/km-bytecode.XXXXXX)
    export WGMUX_BYTECODE_CACHE
    if timed_compile /tmp/km-datapath.log; then
        compile_s=$(sed -n 's/^KM-COMPILE-SECONDS //p' /tmp/km-datapath.log)
        echo "KM-GUEST datapath load=OK seconds=$compile_s"
    else
        echo "KM-GUEST datapath load=FAILED: $(grep -B1 '^processed [0-9]* insns' /tmp/km-datapath.log | head -n 1)" \
             "| $(grep -E 'Error|error:' /tmp/km-datapath.log | tail -n 1)"
        grep -B6 '^processed [0-9]* insns' /tmp/km-datapath.log | sed 's/^/KM-GUEST   verifier: /'
    fi

    # How much slower than the host the guest runs (the host measured the
    # same before boot: KM_HOST_CPU_S, KM_HOST_COMPILE_S): every netlab
    # deadline (wait_for, Node.run, stop_process, scaled()) in the tests is
    # stretched by it through NETLAB_SLOWNESS.
    cpu_s=$(cpu_bench)
    NETLAB_SLOWNESS=$(KM_CPU_S=$cpu_s KM_COMPILE_S=$compile_s slowness_factor 2> /tmp/km-slowness.log) \
        || NETLAB_SLOWNESS=""
    echo "KM-GUEST slowness $(cat /tmp/km-slowness.log)"
    export NETLAB_SLOWNESS=${NETLAB_SLOWNESS:-1}
    echo "KM-GUEST NETLAB_SLOWNESS=$NETLAB_SLOWNESS"

    # No -x: one failure must not hide the rest; -rfEs lists every failure,
    # error and skip at the end (the host's summary repeats the failures).
    # KM_WORKERS=2 was measured (docs/kernel-matrix.md): the golden table
    # splits, but the end-to-end tests, most of the time, went no faster
    # (a compile, kernel WireGuard and the traffic keep both vCPUs busy
    # already), so one worker is the default.
    local workers=()
    [ "${KM_WORKERS:-1}" -gt 1 ] && workers=(-n "$KM_WORKERS")
    echo "KM-GUEST pytest workers=${KM_WORKERS:-1}"
    start=$(date +%s)
    .venv/bin/python -m pytest -p no:cacheprovider -q -rfEs --durations=30 "${workers[@]}" "$@"
    rc=$?
    echo "KM-GUEST wireguard-go starts=$(wc -l < /run/km-wireguard-go.log)"
    echo "KM-GUEST pytest rc=$rc seconds=$(( $(date +%s) - start ))"
    return $rc
}

if [ "${1:-}" = "--in-guest" ]; then
    shift
    in_guest "$@"
    exit $?
fi

# ---------------------------------------------------------------------------
# On the host.
# ---------------------------------------------------------------------------
KERNELS=${KM_KERNELS:-"6.1 6.12"}
MEMORY=${KM_MEMORY:-3G}
PARALLEL=${KM_PARALLEL:-0}
if [ "$PARALLEL" = 1 ]; then CPUS=${KM_CPUS:-1}; else CPUS=${KM_CPUS:-2}; fi
# Two guests at once run their end-to-end tests at about 3.5 min each
# (2026-12-02): 5400 s stopped both at 569 and 567 of 570.
if [ "$PARALLEL" = 1 ]; then TIMEOUT=${KM_TIMEOUT:-7200}; else TIMEOUT=${KM_TIMEOUT:-5400}; fi
VNG_DIR=${KM_VNG_DIR:-/opt/wgmux-vng}
LOGDIR=${KM_LOGDIR:-/tmp/wgmux-kernel-matrix}
NO_INSTALL=${KM_NO_INSTALL:-0}

while [ $# -gt 0 ]; do
    case "$1" in
        -k|--kernels) KERNELS=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -uo/p' "$SELF" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        --) shift; break ;;
        *) break ;;
    esac
done
SELECTION=("$@")
[ ${#SELECTION[@]} -gt 0 ] || SELECTION=("${DEFAULT_SELECTION[@]}")

[ "$(id -u)" = 0 ] || die "must run as root (installs packages, boots guests that create namespaces)"
[ -x "$REPO/.venv/bin/python" ] || die "no $REPO/.venv: run 'make setup' first"
export DEBIAN_FRONTEND=noninteractive

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'; }

apt_updated=0
apt_update() {
    [ $apt_updated = 1 ] && return 0
    apt-get update -q >/dev/null || unavailable "apt-get update failed"
    apt_updated=1
}

apt_install() {  # apt_install PKG... : the missing ones
    local missing=() p
    for p in "$@"; do installed "$p" || missing+=("$p"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$NO_INSTALL" = 1 ] && { say "missing (KM_NO_INSTALL=1): ${missing[*]}"; return 1; }
    apt_update
    say "installing ${missing[*]}"
    apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# Debian's bookworm-backports, for the 6.12 kernels (added once; apt pins
# backports low, so nothing else on the machine changes).
ensure_backports() {
    grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/ && return 0
    [ "$NO_INSTALL" = 1 ] && return 1
    . /etc/os-release
    [ "${VERSION_CODENAME:-}" = bookworm ] || return 1
    say "adding the bookworm-backports apt source (/etc/apt/sources.list.d/wgmux-bookworm-backports.sources)"
    cat > /etc/apt/sources.list.d/wgmux-bookworm-backports.sources <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    apt_updated=0
    apt_update
}

# The kernel ABI (e.g. 6.1.0-56-amd64) for a series or an exact ABI.
resolve_abi() {
    local spec=$1 meta abi
    case "$spec" in
        *-amd64) echo "$spec"; return 0 ;;
    esac
    # An installed kernel of that series wins (no apt needed, stays stable).
    abi=$(ls -d /usr/src/linux-headers-"$spec".*-amd64 /usr/src/linux-headers-"$spec"[.+-]*-amd64 2>/dev/null \
          | sed 's|.*/linux-headers-||' | grep -vE -- '-(cloud|rt)-amd64$' | sort -uV | while read -r a; do
                [ -e "/boot/vmlinuz-$a" ] && echo "$a"; done | tail -n 1)
    if [ -n "$abi" ]; then echo "$abi"; return 0; fi
    [ "$NO_INSTALL" = 1 ] && return 1
    for meta in "linux-headers-$spec-amd64" linux-headers-amd64; do
        apt-cache show "$meta" >/dev/null 2>&1 || { apt_update; apt-cache show "$meta" >/dev/null 2>&1; } \
            || { [ "$meta" = "linux-headers-$spec-amd64" ] && ensure_backports >&2 \
                 && apt-cache show "$meta" >/dev/null 2>&1; } || continue
        abi=$(apt-cache depends "$meta" 2>/dev/null | sed -n 's/^ *Depends: linux-headers-\(.*-amd64\)$/\1/p' | head -n 1)
        case "$abi" in "$spec".*|"$spec"+*) echo "$abi"; return 0 ;; esac
    done
    return 1
}

prepare_kernel() {  # the image with modules and the exactly matching headers
    local abi=$1
    apt_install "linux-image-$abi" "linux-headers-$abi" >&2 || return 1
    [ -e "/boot/vmlinuz-$abi" ] && [ -d "/lib/modules/$abi/kernel" ]
}

ensure_tools() {
    apt_install qemu-system-x86 busybox-static kmod || unavailable "cannot install qemu-system-x86/busybox-static"
    if [ ! -x "$VNG_DIR/bin/vng" ]; then
        [ "$NO_INSTALL" = 1 ] && die "no virtme-ng at $VNG_DIR (KM_NO_INSTALL=1)"
        say "installing virtme-ng into $VNG_DIR"
        /usr/bin/python3 -m venv "$VNG_DIR" || unavailable "cannot create $VNG_DIR"
        "$VNG_DIR/bin/pip" install -q --disable-pip-version-check virtme-ng \
            || unavailable "pip install virtme-ng failed"
    fi
}

ensure_tools
mkdir -p "$LOGDIR"
export PATH="$VNG_DIR/bin:$PATH"   # vng runs virtme-run from its own venv
say "virtme-ng $("$VNG_DIR/bin/vng" --version 2>&1 | awk '{print $2}'), logs in $LOGDIR"
say "selection: ${SELECTION[*]}"

# The host's side of the slowness measurement (see in_guest), once, before
# any guest runs: the same CPU workload, and the datapath's compile (best
# of two: the host may be busy with other work just now).
MARGIN=${KM_SLOWNESS_MARGIN:-2}
HOST_CPU_S=$(cpu_bench) || HOST_CPU_S=""
HOST_COMPILE_S=""
for _ in 1 2; do
    if WGMUX_BYTECODE_CACHE=off timed_compile "$LOGDIR/host-compile.log"; then
        c=$(sed -n 's/^KM-COMPILE-SECONDS //p' "$LOGDIR/host-compile.log")
        if [ -z "$HOST_COMPILE_S" ] || awk -v a="$c" -v b="$HOST_COMPILE_S" 'BEGIN { exit !(a < b) }'; then
            HOST_COMPILE_S=$c
        fi
    fi
done
say "host: CPU workload ${HOST_CPU_S:-?} s, datapath compile ${HOST_COMPILE_S:-? (failed, see $LOGDIR/host-compile.log)} s;" \
    "guest deadlines x (guest/host, the larger) x margin $MARGIN${KM_SLOWNESS:+ (KM_SLOWNESS=$KM_SLOWNESS overrides)}"
GUEST_ENV=(env "KM_HOST_CPU_S=$HOST_CPU_S" "KM_HOST_COMPILE_S=$HOST_COMPILE_S"
           "KM_SLOWNESS_MARGIN=$MARGIN" "KM_SLOWNESS=${KM_SLOWNESS:-}"
           "KM_WORKERS=${KM_WORKERS:-1}")

declare -a ROWS
FAILURES=()
overall=0
skip_or_fail() {  # skip_or_fail KERNEL SECONDS WHY: a kernel this machine could not run
    if [ "$UNAVAILABLE_OK" = 1 ]; then
        ROWS+=("$1|SKIP|-|-|-|-|$2|-|$3")
    else
        ROWS+=("$1|ERROR|-|-|-|-|$2|-|$3"); overall=1
    fi
}
# Installs first, one kernel at a time (apt takes a lock).
READY=()
for spec in $KERNELS; do
    t0=$(date +%s)
    abi=$(resolve_abi "$spec") || abi=""
    if [ -z "$abi" ]; then
        say "kernel $spec: no Debian kernel found for it"
        skip_or_fail "$spec" 0 "no Debian kernel package found"; continue
    fi
    if ! prepare_kernel "$abi"; then
        skip_or_fail "$abi" $(( $(date +%s) - t0 )) "cannot install linux-image/headers-$abi"
        continue
    fi
    READY+=("$abi")
done

# boot_guest ABI: run the selection in a guest of that kernel; its output
# in $LOGDIR/ABI.log (and on stdout unless the guests run in parallel),
# its exit code and seconds in ABI.rc and ABI.secs.
boot_guest() {
    local abi=$1 log="$LOGDIR/$1.log" t1 rc
    say "kernel $abi: booting (TCG, ${CPUS} CPUs, $MEMORY), log $log"\
        "$([ "$PARALLEL" = 1 ] && echo "(tail -f it: the guests run at once)")"
    t1=$(date +%s)
    # Software emulation (no usable KVM); 9p root (virtiofsd is not needed).
    timeout --kill-after=30 "$TIMEOUT" \
        vng --run "/boot/vmlinuz-$abi" --disable-kvm --force-9p --busybox /bin/busybox \
            --memory "$MEMORY" --cpus "$CPUS" --cwd "$REPO" \
            --exec "$(printf '%q ' "${GUEST_ENV[@]}") bash $(printf '%q' "$SELF") --in-guest $(printf '%q ' "${SELECTION[@]}")" \
        < /dev/null 2>&1 | if [ "$PARALLEL" = 1 ]; then cat > "$log"; else tee "$log"; fi
    rc=${PIPESTATUS[0]}
    echo "$rc" > "$LOGDIR/$abi.rc"
    echo $(( $(date +%s) - t1 )) > "$LOGDIR/$abi.secs"
    [ "$PARALLEL" = 1 ] && say "kernel $abi: guest done (rc $rc), $(tail -n 3 "$log" | tr -d '\r' | grep -E 'passed|failed' | tail -n 1)"
    return 0
}

# Each guest's vCPUs are host threads: two guests of two vCPUs on a 2-core
# machine spend their time preempted inside each other's kernels (each
# test took 2-3 times as long as alone); one vCPU each keeps both cores
# busy without that (docs/kernel-matrix.md).
if [ "$PARALLEL" = 1 ]; then
    pids=()
    for abi in "${READY[@]}"; do
        rm -f "$LOGDIR/$abi.rc" "$LOGDIR/$abi.secs"
        boot_guest "$abi" & pids+=($!)
    done
    # stopped: the guests go too (timeout passes the signal on to vng)
    kill_tree() { local c; for c in $(pgrep -P "$1"); do kill_tree "$c"; done; kill "$1" 2>/dev/null; }
    trap 'for p in "${pids[@]}"; do kill_tree "$p"; done; exit 130' INT TERM
    wait "${pids[@]}"
    trap - INT TERM
else
    for abi in "${READY[@]}"; do
        rm -f "$LOGDIR/$abi.rc" "$LOGDIR/$abi.secs"
        boot_guest "$abi"
    done
fi

for abi in "${READY[@]}"; do
    log="$LOGDIR/$abi.log"
    rc=$(cat "$LOGDIR/$abi.rc" 2>/dev/null || echo 1)
    secs=$(cat "$LOGDIR/$abi.secs" 2>/dev/null || echo 0)
    # pytest's closing line, e.g. "12 passed, 1 skipped in 301.2s".
    summary=$(grep -E '^(=+ )?[0-9]+ (passed|failed|error|skipped|deselected)' "$log" | tail -n 1 | sed 's/^=* *//; s/ *=*$//')
    count() { grep -oE "[0-9]+ $1" <<<"$summary" | head -n 1 | awk '{print $1}'; }
    passed=$(count passed); failed=$(count failed); errors=$(count 'errors?'); skipped=$(count skipped)
    passed=${passed:-0}; failed=$(( ${failed:-0} + ${errors:-0} )); skipped=${skipped:-0}
    impl=$(sed -n 's/.*KM-GUEST netlab WireGuard implementation=\([^[:space:]]*\).*/\1/p' "$log" | tail -n 1)
    wggo=$(sed -n 's/.*KM-GUEST wireguard-go starts=\([0-9]*\).*/\1/p' "$log" | tail -n 1)
    disc=$(sed -n 's/.*KM-GUEST discovery read_device source=[^ ]* \([A-Z]*\).*/\1/p' "$log" | tail -n 1)
    datapath=$(sed -n 's/.*KM-GUEST datapath load=\([A-Z]*\).*/\1/p' "$log" | tail -n 1)
    slow=$(sed -n 's/.*KM-GUEST NETLAB_SLOWNESS=\([0-9.]*\).*/\1/p' "$log" | tail -n 1)
    # pytest's short summary (-rfE): "FAILED tests/...::test - reason".
    while IFS= read -r line; do
        FAILURES+=("$abi: $line")
    done < <(tr -d '\r' < "$log" | grep -aoE '(FAILED|ERROR) tests/.*' | cut -c1-240)
    netlink=$(grep -cE 'test_discovery.py::test_netlink .*(SKIP|FAIL)|SKIPPED .*no kernel WireGuard' "$log")
    kwg=no
    [ "$impl" = kernel ] && [ "${wggo:-1}" = 0 ] && kwg=yes
    note=""
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then note="timed out after ${TIMEOUT}s"
    elif [ -z "$summary" ]; then note="no pytest summary (guest rc $rc)"
    elif [ "$rc" != 0 ]; then note="pytest rc $rc"
    fi
    [ "$netlink" != 0 ] && note="${note:+$note; }netlink discovery test skipped/failed"
    [ "$disc" = OK ] || note="${note:+$note; }discovery probe ${disc:-did not run}"
    [ "$kwg" = yes ] || note="${note:+$note; }kernel WireGuard not used"
    [ "$datapath" = OK ] || note="${note:+$note; }datapath load ${datapath:-not tried} (see KM-GUEST lines in the log)"
    if ! grep -q 'KM-GUEST kernel=' "$log"; then
        skip_or_fail "$abi" "$secs" "the guest did not boot (guest rc $rc, see $log)"
        continue
    fi
    # The point of the matrix is kernel WireGuard: a run that did not use it,
    # or whose discovery check failed, fails even when pytest passed.
    status=PASS
    if [ "$rc" != 0 ] || [ "$failed" != 0 ] || [ -z "$summary" ] || [ "$kwg" != yes ] \
       || [ "$disc" != OK ]; then
        status=FAIL; overall=1
    fi
    ROWS+=("$abi|$status|$passed|$failed|$skipped|$kwg (${impl:-?}, wireguard-go starts: ${wggo:-?})|$secs|${slow:--}|$note")
done

echo
say "summary (selection: ${SELECTION[*]})"
printf '%-24s %-6s %6s %6s %7s %5s %8s  %-40s %s\n' kernel result passed failed skipped secs slowness "kernel WireGuard" note
for row in "${ROWS[@]}"; do
    IFS='|' read -r k st p f s w secs slow note <<<"$row"
    printf '%-24s %-6s %6s %6s %7s %5s %8s  %-40s %s\n' "$k" "$st" "$p" "$f" "$s" "$secs" "$slow" "$w" "$note"
done
if [ ${#FAILURES[@]} -gt 0 ]; then
    say "failed tests:"
    printf '  %s\n' "${FAILURES[@]}"
fi
exit $overall
