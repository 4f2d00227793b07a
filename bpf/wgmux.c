/* SPDX-License-Identifier: MIT */
/*
 * wgmux datapath: a TC ingress program on the hub's public interface that
 * reflects WireGuard/AmneziaWG packets between two peers (docs/spec.md §3),
 * and the same walk as an XDP program (wgmux_xdp) that finishes the fast
 * path in the driver and leaves everything else to TC (docs/spec.md §4a).
 *
 * Per packet it decides one verdict and counts it under exactly one reason
 * (the X-macro below, which wgmux/datapath.py parses for the names):
 *
 *   - UDP to a peer port P (a key of `ports`):
 *       initiation -> the slow path (ring buffer `slow_ring`), original
 *         dropped: the daemon checks mac1 against R's public key, opens
 *         the half-open session (HubPort, sender) and re-sends it to E_R
 *       response/cookie/transport with a known (P, receiver) -> reflect
 *       anything else -> TC_ACT_SHOT (the hub is no open reflector)
 *   - UDP to HubPort: response/cookie/transport with a known
 *     (HubPort, receiver) -> reflect (a response is also copied to the
 *     slow path, which learns the initiator's identity from its mac1);
 *     an initiation is copied to the slow path (a responder-initiated
 *     handshake, docs/spec.md §9) and passed; everything else is the hub's own
 *     WireGuard -> TC_ACT_OK untouched.
 *   - anything else -> TC_ACT_OK untouched.
 *
 * What goes to the slow path is rate-limited per source address (a GCRA
 * in the LRU map `slow_rate`, rate and burst in the config), so a flood
 * cannot starve the daemon; what is shed, and what finds the ring buffer
 * full, is counted.  Transport data never leaves the kernel.
 *
 * Reflection rewrites only IP addresses, UDP ports, TTL and the two
 * checksums (incrementally, by hand: two bpf_l4_csum_replace() calls alone
 * cost ~58 ns here, more than the rest of the fast path), never the
 * WireGuard message, whose handshake bytes are covered by mac1.  The next
 * hop is resolved with bpf_fib_lookup() once per session/responder and
 * cached in the entry; the fast path writes the cached MACs and redirects.
 *
 * Byte order in the maps: addresses and UDP ports as on the wire (network
 * order); session indices and AmneziaWG headers as numbers (WireGuard sends
 * them little-endian).
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/udp.h>
#include <uapi/linux/pkt_cls.h>

#include "wire.h"

#ifndef WGMUX_MAX_SESSIONS
#define WGMUX_MAX_SESSIONS 65536
#endif
#ifndef WGMUX_MAX_PORTS
#define WGMUX_MAX_PORTS 4096
#endif
/* The session table is a plain (preallocated) hash by default: when it is
 * full, new handshakes fail and are counted, but established sessions are
 * never evicted by a flood of initiations.  Idle entries are collected by
 * the daemon.  -DWGMUX_SESSIONS_MAP_TYPE='"lru_hash"' trades that for
 * self-cleaning. */
#ifndef WGMUX_SESSIONS_MAP_TYPE
#define WGMUX_SESSIONS_MAP_TYPE "hash"
#endif
/* Slow path: ring buffer size in pages (a power of two), sources tracked
 * by the rate limiter, initiator identities the daemon may learn. */
#ifndef WGMUX_SLOW_RING_PAGES
#define WGMUX_SLOW_RING_PAGES 256   /* 1 MiB: ~4,800 initiations, a second of
					   cookie budget for two ports under load */
#endif
#ifndef WGMUX_MAX_RATE_SOURCES
#define WGMUX_MAX_RATE_SOURCES 16384
#endif
#ifndef WGMUX_MAX_INITIATORS
#define WGMUX_MAX_INITIATORS 16384
#endif
/* The hub's own addresses on Interface, per family, that packets must be
 * addressed to (the daemon keeps them current, docs/spec.md §3). */
#ifndef WGMUX_MAX_ADDRS
#define WGMUX_MAX_ADDRS 8
#endif
/* Interfaces one instance serves (Interface = [...], docs/spec.md §4c):
 * the slots of the per-interface counters (wgmux.config.MAX_INTERFACES). */
#ifndef WGMUX_MAX_IFACES
#define WGMUX_MAX_IFACES 8
#endif

/* Roaming (docs/spec.md §5): a transport message from a new source moves
 * its session only if its counter is above the highest one seen on that
 * session and at most this far above it.  WireGuard numbers every
 * transport message of a key pair from 0, in clear; only the sender knows
 * the current value.  A NAT rebinding loses nothing in this direction (the
 * peer's next packet simply comes from the new mapping); a peer that
 * changes networks mid-stream loses what it sent meanwhile: 8192 messages
 * are ~1 s of a stream at 8k packets/s.  Past that the move is refused and
 * WireGuard's own re-handshake (after 15 s without an answer) opens new
 * entries from the new source.  A forged message must carry a live index
 * and a counter inside this window; a replayed one is always below it. */
#define WGMUX_ROAM_WINDOW 8192ULL

/* Under load (a port over its initiation budget) each source address may
 * ask for one cookie reply, and send one initiation carrying a mac2, per
 * this interval (WireGuard retries an initiation every 5 s). */
#define WGMUX_GATE_NS 1000000000ULL
/* How long a port stays under load after its budget was last exceeded. */
#define WGMUX_LOAD_HOLD_NS 2000000000ULL

/* Every map is declared through this macro.  Built with WGMUX_PIN_DIR (the
 * daemon does, wgmux/pinning.py), each is pinned as WGMUX_PIN_DIR/<name>
 * and a map already pinned there is reused: a restarted daemon keeps its
 * sessions.  Without it (tests, benchmark) maps are private to the load. */
#ifdef WGMUX_PIN_DIR
#define WGMUX_TABLE(type, key, leaf, name, max) \
	BPF_TABLE_PINNED(type, key, leaf, name, max, WGMUX_PIN_DIR "/" #name)
#else
#define WGMUX_TABLE(type, key, leaf, name, max) BPF_TABLE(type, key, leaf, name, max)
#endif

#define WGMUX_AF_INET 2
#define WGMUX_AF_INET6 10

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define WG_HTONS(x) ((__be16)__builtin_bswap16(x))
#define WG_NTOHS(x) ((__u16)__builtin_bswap16(x))
#define WG_LE32(x) (x)
#define WG_LE64(x) (x)
#define WG_NTOHL(x) __builtin_bswap32(x)
#define WG_HTONL(x) __builtin_bswap32(x)
#else
#define WG_HTONS(x) ((__be16)(x))
#define WG_NTOHS(x) ((__u16)(x))
#define WG_LE32(x) __builtin_bswap32(x)
#define WG_LE64(x) __builtin_bswap64(x)
#define WG_NTOHL(x) (x)
#define WG_HTONL(x) (x)
#endif

/* Hide x's value range from clang, so that a check after it is emitted as
 * written, on the register that is used next: clang otherwise fuses range
 * checks ("x - lo > hi - lo") or drops masks it knows are redundant, and
 * the verifier of older kernels (Debian 12's 6.1) cannot carry such a
 * check back to x. */
#define WGMUX_OPAQUE(x) asm volatile("" : "+r"(x))

/* A big-endian length field as a number the verifier knows is < 65536.
 * Older verifiers (6.1) forget a register's range at a byte swap, and then
 * refuse packet pointer arithmetic with it; the mask gives it back. */
static __always_inline __u32 be16_len(__be16 field)
{
	__u32 n = WG_NTOHS(field);

	WGMUX_OPAQUE(n);
	return n & 0xffff;
}

/* bcc 0.26 declares this helper with three arguments; the kernel's has
 * four (ifindex, params, plen, flags), and the verifier insists on all. */
static long (*redirect_neigh)(__u32 ifindex, void *params, int plen, __u64 flags) =
	(void *)BPF_FUNC_redirect_neigh;

/* bcc declares these returning int; the kernel returns a 64-bit value
 * whose upper half tells a checksum from an error. */
static long (*csum_diff64)(void *from, __u32 from_size, void *to, __u32 to_size, __u32 seed) =
	(void *)BPF_FUNC_csum_diff;
static long (*csum_update64)(void *ctx, __u32 csum) = (void *)BPF_FUNC_csum_update;

#define wg_barrier() asm volatile("" ::: "memory")

#define WGMUX_IP_MF 0x2000
#define WGMUX_IP_OFFSET 0x1fff

/* Counter slots.  Verdicts: every packet increments exactly one of the
 * PASS_/REFLECT_/DROP_/SLOW_ slots.  EV_ slots count events on top of that.
 * SP_ slots are never touched here: the daemon's slow path (wgmux/
 * slowpath.py) counts there what became of each message it was sent, one
 * SP_ slot per message (so that they live, and survive restarts, with the
 * rest). */
#define WGMUX_COUNTERS(X)                                                    \
	X(PASS_NOT_CONFIGURED)  /* config has no HubPort yet */              \
	X(PASS_NOT_IP)          /* neither IPv4 nor IPv6 (ARP, VLAN, ...) */ \
	X(PASS_BAD_IP)          /* IPv4 header checksum wrong, or version   \
				   not the ethertype's: the stack drops it */\
	X(PASS_NOT_LOCAL)       /* not addressed to a hub address on        \
				   Interface (transit, broadcast, ...) */    \
	X(PASS_TRUNCATED)       /* headers cut short: the stack decides */   \
	X(PASS_NOT_UDP)         /* incl. IPv6 with extension headers */      \
	X(PASS_FRAGMENT)        /* non-first fragment: port unknown */       \
	X(PASS_OTHER_PORT)      /* neither HubPort nor a peer port */        \
	X(PASS_HUB)             /* HubPort, not a reflected session */       \
	X(REFLECT_INITIATION)   /* unused: the slow path re-sends those */   \
	X(REFLECT_RESPONSE)                                                  \
	X(REFLECT_COOKIE)                                                    \
	X(REFLECT_TRANSPORT)                                                 \
	X(DROP_NO_RESPONDER)    /* initiation, responder endpoint unknown */ \
	X(DROP_UNKNOWN_INDEX)   /* peer port, no session for the index */    \
	X(DROP_UNCLASSIFIED)    /* peer port, junk or wrong size */          \
	X(DROP_MALFORMED)       /* peer port, UDP/IP lengths disagree */     \
	X(DROP_IP_OPTIONS)      /* peer port, IPv4 options */                \
	X(DROP_FRAGMENT)        /* peer port, first fragment */              \
	X(DROP_TTL)             /* reflecting would send TTL 0 */            \
	X(DROP_FAMILY)          /* target endpoint is of a family the hub    \
				   has no address of on Interface */         \
	X(DROP_NO_ROUTE)        /* FIB has no usable route to the target */  \
	X(DROP_SESSIONS_FULL)   /* session table full */                     \
	X(DROP_INDEX_CLASH)     /* index already used by another session */  \
	X(DROP_MARTIAN)         /* peer port, source cannot be a peer:      \
				   unspecified, loopback, multicast, ... */  \
	X(DROP_NOT_EXPECTED)    /* response / cookie not from the endpoint  \
				   the session expects (they never roam) */  \
	X(DROP_HALF_OPEN)       /* transport for a half-open session */      \
	X(DROP_ROAM_REJECTED)   /* transport from a new source whose counter \
				   is not just above the session's: forged, \
				   replayed, or too late to follow */        \
	X(DROP_UNDER_LOAD)      /* peer port initiation while the port is   \
				   over its budget, beyond what may ask for \
				   a cookie or present a mac2 */             \
	X(DROP_TOO_BIG)         /* translated to the target's family, it no  \
				   longer fits the egress MTU (spec §4b) */  \
	X(DROP_NO_CHECKSUM)     /* IPv4 UDP without checksum for an IPv6     \
				   target: IPv6 forbids a zero checksum */   \
	X(DROP_TRANSLATE)       /* the kernel could not resize the packet    \
				   for the other family */                   \
	X(SLOW_INITIATION)      /* peer port initiation: to the slow path,   \
				   original dropped (mac1 decides there) */ \
	X(SLOW_UNDER_LOAD)      /* the same while the port is over its      \
				   budget: the slow path answers with a     \
				   cookie or checks its mac2 */              \
	X(SLOW_HUB_INITIATION)  /* HubPort initiation: passed to the stack   \
				   and copied to the slow path */            \
	X(DROP_RATE_LIMITED)    /* peer port initiation, its source is over  \
				   the slow-path rate: shed */               \
	X(DROP_SLOW_FULL)       /* peer port initiation, ring buffer full */ \
	X(PASS_HUB_RATE_LIMITED) /* HubPort initiation passed, its copy shed \
				   by the rate limit */                      \
	X(PASS_HUB_SLOW_FULL)   /* HubPort initiation passed, ring full */   \
	X(EV_SESSION_ESTABLISHED) /* response created the reverse one */     \
	X(EV_NH_RESOLVED)       /* FIB lookup cached a next hop */           \
	X(EV_NH_NO_NEIGH)       /* no neighbour yet: bpf_redirect_neigh */   \
	X(EV_NH_FWD_DISABLED)   /* forwarding off on ingress: slow path */   \
	X(EV_ROAM)              /* a known index came from a new source */  \
	X(EV_PORT_OVER_BUDGET)  /* a port went over its initiation budget:  \
				   under load from then (once per episode) */\
	X(EV_HALF_OPEN_EVICTED) /* the slow path evicted the oldest half-   \
				   open entry to make room (counted there) */\
	X(EV_CSUM_PARTIAL)      /* UDP checksum field held a partial sum */  \
	X(EV_CSUM_VERIFIED)     /* had to sum the segment to find out */     \
	X(EV_GSO)               /* a GRO batch was reflected as a whole */   \
	X(EV_SLOW_RESPONSE)     /* reflected response copied to the slow     \
				   path (learning the initiator) */          \
	X(EV_SLOW_RESPONSE_RATE_LIMITED) /* ...its copy shed by the limit */ \
	X(EV_SLOW_RESPONSE_FULL) /* ...its copy lost: ring buffer full */    \
	X(EV_TRANSLATED_4TO6)   /* reflected from IPv4 to an IPv6 target */  \
	X(EV_TRANSLATED_6TO4)   /* reflected from IPv6 to an IPv4 target */  \
	X(SP_REFLECT_INITIATION) /* peer port, mac1 valid for the port's     \
				   responder: session opened, sent to E_R */ \
	X(SP_REFLECT_HUB_INITIATION) /* HubPort, mac1 valid for a learned    \
				   initiator: session opened, sent to E_I */ \
	X(SP_PASS_HUB)          /* HubPort, for no learned initiator: left   \
				   to the hub's own WireGuard */             \
	X(SP_DROP_MAC1)         /* peer port, mac1 not valid for the port's  \
				   responder: dropped (no open reflector) */ \
	X(SP_DROP_NO_RESPONDER) /* port no longer a peer port / no E_R */    \
	X(SP_DROP_UNREFLECTABLE) /* TTL would hit 0, or no hub address of   \
				   the target's family */                    \
	X(SP_DROP_INDEX_CLASH)  /* session index already taken */            \
	X(SP_DROP_SESSIONS_FULL) /* session table full */                    \
	X(SP_DROP_STALE)        /* waited too long in the ring buffer */     \
	X(SP_DROP_SEND)         /* re-injecting it failed */                 \
	X(SP_DROP_MALFORMED)    /* not a message the slow path can use */    \
	X(SP_DROP_MARTIAN)      /* source cannot be a peer */                \
	X(SP_DROP_HALF_OPEN_SOURCE) /* its source has as many half-open      \
				   entries as it may */                      \
	X(SP_DROP_PORT_BUDGET)  /* valid, but the port has forwarded its     \
				   budget of initiations this second */      \
	X(SP_COOKIE_SENT)       /* port under load, no valid mac2: the hub   \
				   answered with a cookie reply itself */    \
	X(SP_REFLECT_MAC2)      /* port under load, mac2 valid: session      \
				   opened, sent to E_R */                    \
	X(SP_LEARN_INITIATOR)   /* response: its mac1 named the initiator */ \
	X(SP_LEARN_UNKNOWN)     /* response: no peer key / session matched */

#define WGMUX_ENUM(name) CTR_##name,
enum wgmux_counter { WGMUX_COUNTERS(WGMUX_ENUM) CTR_MAX };

/* config.flags */
#define WGMUX_CFG_ROAMING 0x1

struct wgmux_config {
	__be16 hub_port;  /* 0: not configured, everything passes */
	__u16 flags;
	__u8 n_addr4;     /* how many of addr4 / addr6 are set */
	__u8 n_addr6;
	/* interfaces served (iface_slots); counted per interface only when
	 * more than one, so a single-interface hub pays nothing for it */
	__u8 n_ifaces;
	__u8 _pad;
	/* Bumped by the control plane to invalidate every cached next hop at
	 * once (route or neighbour change) without writing to live entries. */
	__u32 nh_gen;
	struct wg_class cls[WG_NUM_CLASSES];
	/* Slow-path rate limit per source address (GCRA): a source may send
	 * one message per slow_interval_ns on average, and run up to
	 * slow_tolerance_ns ahead of that ((burst - 1) x interval).
	 * slow_interval_ns 0: no limit. */
	__u64 slow_interval_ns;
	__u64 slow_tolerance_ns;
	/* Initiations each peer port takes per second before it is under
	 * load (GCRA over what passed the per-source limit; 0: no budget),
	 * and under load the cookie replies it may ask the slow path for. */
	__u64 port_interval_ns;
	__u64 port_tolerance_ns;
	__u64 cookie_interval_ns;
	__u64 cookie_tolerance_ns;
	/* The hub's addresses on its Interfaces: packets for anything else
	 * pass. */
	__be32 addr4[WGMUX_MAX_ADDRS];
	/* four words per address, flat: bcc's ctypes layout flattens a 2-D
	 * array to its first dimension and would be short of the map's value */
	__be32 addr6[WGMUX_MAX_ADDRS * 4];
};

/* An IPv4 address sits in addr.v4 with the rest of the union zero. */
struct endpoint {
	union {
		__be32 v4;
		__be32 v6[4];
	} addr;
	__be16 port;
	__u8 family;  /* 0: unknown */
	__u8 _pad;
};

enum { NH_NONE = 0, NH_DIRECT = 1, NH_NEIGH = 2 };

struct next_hop {
	__u32 ifindex;
	__u32 gen;      /* valid only while equal to config.nh_gen */
	__u8 dmac[6];   /* dmac, smac: the Ethernet header's order */
	__u8 smac[6];
	__u8 state;     /* NH_*: DIRECT writes MACs, NEIGH lets the kernel */
	__u8 _pad[3];
};

struct responder {
	struct endpoint ep;  /* E_R as the hub's own WireGuard sees it */
	struct next_hop nh;
	__u64 init_tat;      /* GCRA of initiations to this port */
	__u64 load_until;    /* under load until then (bpf_ktime_get_ns) */
	__u64 cookie_tat;    /* GCRA of cookie requests under load */
};

struct session_key {
	__be16 port;    /* the hub port the packet arrived on */
	__u16 _pad;
	__u32 index;    /* receiver index the packet carries */
};

/* session.flags */
#define WGMUX_SF_TRANSPORT 0x1  /* has reflected a transport message */

struct session {
	struct endpoint dst;     /* where packets for this key go */
	struct endpoint expect;  /* where they come from (roaming) */
	struct session_key reverse; /* port 0: half-open */
	__be16 src_port;         /* hub port they are sent from */
	__u8 flags;              /* WGMUX_SF_* */
	/* 1 + the index in config.addr4/addr6 (dst's family) of the hub
	 * address dst's owner sends to: translated packets (the other family,
	 * spec §4b) leave from it, so that its NAT or firewall lets them in.
	 * 0: the first. */
	__u8 via;
	struct next_hop nh;      /* towards dst */
	__u64 created;           /* CLOCK_MONOTONIC ns (coarse) */
	__u64 last_seen;         /* same clock, lags by at most one jiffy */
	__u64 packets;
	__u64 bytes;             /* IP bytes */
	__u64 last_jiffies;      /* when last_seen was last refreshed */
	__u64 max_counter;       /* highest transport counter from expect */
};

WGMUX_TABLE("array", __u32, struct wgmux_config, config, 1);
WGMUX_TABLE("hash", __be16, struct responder, ports, WGMUX_MAX_PORTS);
WGMUX_TABLE(WGMUX_SESSIONS_MAP_TYPE, struct session_key, struct session, sessions,
	    WGMUX_MAX_SESSIONS);
WGMUX_TABLE("percpu_array", __u32, __u64, counters, CTR_MAX);
/* Per interface (spec §4c): the ifindex of each slot, written by the
 * daemon, and per slot what arrived there and was reflected or dropped,
 * and what was reflected out of it. */
enum { IFC_REFLECTED_IN, IFC_REFLECTED_OUT, IFC_DROPPED, IFC_MAX };
struct iface_slots {
	__u32 ifindex[WGMUX_MAX_IFACES];
};
WGMUX_TABLE("array", __u32, struct iface_slots, iface_slots, 1);
WGMUX_TABLE("percpu_array", __u32, __u64, iface_counters, WGMUX_MAX_IFACES * IFC_MAX);
/* Every responder's endpoint (the ep of some `ports` entry), kept by the
 * daemon with `ports`: whose HubPort initiations the slow path gets. */
WGMUX_TABLE("hash", struct endpoint, __u8, responder_eps, WGMUX_MAX_PORTS);

/* ---- slow path maps ---------------------------------------------------------
 * One message per handshake sent to the daemon: the metadata it needs and
 * the whole UDP payload (AmneziaWG prefix included: re-sent as received).
 * Built in a per-CPU buffer, queued with as many payload bytes as there
 * are.  Its ctypes layout reaches Python as slow_buf's leaf type. */
#define WGMUX_SLOW_PAYLOAD_MAX (WG_MAX_PREFIX + WG_INITIATION_SIZE)
struct slow_msg {
	__u64 ktime;            /* bpf_ktime_get_ns() when it arrived */
	__u32 ifindex;          /* ingress ifindex */
	__u16 len;              /* UDP payload bytes in payload[] */
	__u8 cls;               /* WG_CLASS_INITIATION or _RESPONSE */
	__u8 ttl;               /* TTL / hop limit as received */
	struct endpoint src;    /* where it came from */
	struct endpoint dst;    /* the hub address and port it came to */
	__u8 tos;               /* TOS / traffic class */
	__u8 load;              /* SLOW_LOAD_*: why it is here (initiations) */
	__be16 ip_id;           /* IPv4 identification (0 for IPv6) */
	__be16 frag_off;        /* IPv4 flags (DF), 0 for IPv6 */
	__u16 _pad2;
	__u8 payload[WGMUX_SLOW_PAYLOAD_MAX];
};
_Static_assert(WGMUX_SLOW_PAYLOAD_MAX >= WG_MAX_PREFIX + WG_RESPONSE_SIZE,
	       "a prefixed response fits too");
WGMUX_TABLE("percpu_array", __u32, struct slow_msg, slow_buf, 1);
BPF_RINGBUF_OUTPUT(slow_ring, WGMUX_SLOW_RING_PAGES);

/* IPv4: the address; IPv6: its /64 (one subscriber's prefix). */
struct rate_key {
	__be32 addr[4];
	__u8 family;
	__u8 _pad[3];
};
/* value: the source's theoretical arrival time (GCRA), bpf_ktime_get_ns() */
WGMUX_TABLE("lru_hash", struct rate_key, __u64, slow_rate, WGMUX_MAX_RATE_SOURCES);

/* Under load: when each source (keyed as in slow_rate) last asked for a
 * cookie reply and last presented a mac2 (bpf_ktime_get_ns; 0: never). */
struct load_gate {
	__u64 cookie_at;
	__u64 mac2_at;
};
WGMUX_TABLE("lru_hash", struct rate_key, struct load_gate, load_gates, WGMUX_MAX_RATE_SOURCES);

/* slow_msg.load: an initiation queued while its port is under load */
enum { SLOW_LOAD_NONE = 0, SLOW_LOAD_COOKIE = 1, SLOW_LOAD_MAC2 = 2 };

/* Written and read by the daemon only (kept here so that it survives a
 * restart with the other maps): initiator I's public key, learned from
 * the mac1 of a response R sent it through port P, and I's endpoint as
 * seen on P.  A responder-initiated handshake on HubPort is matched
 * against these. */
struct initiator_key {
	__be16 port;            /* P */
	__u16 _pad;
	__u8 public_key[WG_KEY_SIZE];
};
struct initiator {
	struct endpoint ep;     /* E_I as seen on P */
	__u32 index;            /* I's index in that handshake: (HubPort, index) */
	__u64 learned;          /* CLOCK_MONOTONIC ns */
};
WGMUX_TABLE("lru_hash", struct initiator_key, struct initiator, initiators,
	    WGMUX_MAX_INITIATORS);

/* Scratch space to sum a UDP segment on the (rare) path that must tell a
 * full checksum from a partial one, see udp_csum_partial(). */
#define WGMUX_VERIFY_MAX 2048
struct scratch {
	__u8 buf[WGMUX_VERIFY_MAX + 4];
};
WGMUX_TABLE("percpu_array", __u32, struct scratch, scratch, 1);

/* Built with WGMUX_MAPS_ONLY, the source ends here: the maps above and
 * nothing that uses them.  wgmux/bytecode.py compiles it so when it loads
 * the programs from bytecode kept from a full compile (docs/spec.md §10):
 * bcc still creates, pins and describes every map, in a fraction of the
 * time. */
#ifndef WGMUX_MAPS_ONLY
static __always_inline int verdict(__u32 reason, int action)
{
	__u64 *c = counters.lookup(&reason);

	if (c)
		*c += 1;
	return action;
}

static __always_inline void event(__u32 reason)
{
	verdict(reason, 0);
}

static __always_inline void iface_count(__u32 ifindex, __u32 what)
{
	__u32 zero = 0;
	struct iface_slots *sl = iface_slots.lookup(&zero);

	if (!sl)
		return;
#pragma unroll
	for (int i = 0; i < WGMUX_MAX_IFACES; i++) {
		if (sl->ifindex[i] == ifindex) {
			__u32 k = i * IFC_MAX + what;
			__u64 *c = iface_counters.lookup(&k);
			if (c)
				*c += 1;
			return;
		}
	}
}

/* ---- one walk, two hooks ------------------------------------------------
 * The walk below runs at TC ingress (wgmux_ingress, ctx a struct __sk_buff)
 * and in the driver (wgmux_xdp, ctx a struct xdp_md), `xdp` a constant the
 * compiler folds away in each copy, so that both apply the same rules to
 * the same bytes.  XDP finishes only what xdp_finishes() says; for
 * everything else tc_ok()/tc_shot() are not verdicts there but XDP_PASS:
 * the packet goes on untouched and uncounted, and TC at ingress decides and
 * counts it as it would without XDP (docs/spec.md §4a: one count per packet,
 * by whichever program gives the verdict). */
static __always_inline void *ctx_data(void *ctx, const int xdp)
{
	if (xdp)
		return (void *)(long)((struct xdp_md *)ctx)->data;
	return (void *)(long)((struct __sk_buff *)ctx)->data;
}

static __always_inline void *ctx_data_end(void *ctx, const int xdp)
{
	if (xdp)
		return (void *)(long)((struct xdp_md *)ctx)->data_end;
	return (void *)(long)((struct __sk_buff *)ctx)->data_end;
}

static __always_inline int tc_ok(__u32 reason, const int xdp)
{
	return xdp ? XDP_PASS : verdict(reason, TC_ACT_OK);
}

static __always_inline int tc_shot(__u32 reason, const int xdp)
{
	return xdp ? XDP_PASS : verdict(reason, TC_ACT_SHOT);
}

/* ---- checksums (RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m')) ------------- */

static __always_inline __u32 csum_add32(__u32 sum, __u32 word2)
{
	return sum + (word2 & 0xffff) + (word2 >> 16);
}

static __always_inline __u16 csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

/* ---- classification (docs/spec.md §3, §12) ---------------------------------------- */

static __always_inline __u32 class_size(int cls)
{
	switch (cls) {
	case WG_CLASS_INITIATION:
		return WG_INITIATION_SIZE;
	case WG_CLASS_RESPONSE:
		return WG_RESPONSE_SIZE;
	case WG_CLASS_COOKIE:
		return WG_COOKIE_SIZE;
	default:
		return WG_TRANSPORT_MIN_SIZE;
	}
}

static __always_inline __u32 load_le32(void *p)
{
	return WG_LE32(*(__u32 *)p);
}

static __always_inline __u64 load_le64(void *p)
{
	return WG_LE64(*(__u64 *)p);
}

/* Exact sizes first, transport last: a transport packet may have the size
 * of a handshake message, and only the header tells them apart. */
static __always_inline int classify(struct wgmux_config *cfg, void *payload, __u32 plen,
				    void *data_end, void **msg)
{
#pragma unroll
	for (int i = 0; i < WG_NUM_CLASSES; i++) {
		__u32 pfx = cfg->cls[i].prefix;
		__u32 lo = cfg->cls[i].lo;

		if (pfx > WG_MAX_PREFIX)
			continue;
		if (i == WG_CLASS_TRANSPORT) {
			if (plen < pfx + WG_TRANSPORT_MIN_SIZE)
				continue;
		} else if (plen != pfx + class_size(i)) {
			continue;
		}
		void *m = payload + pfx;
		if (m + WG_PEEK_SIZE > data_end)
			continue;
		if (load_le32(m) - lo > cfg->cls[i].hi - lo)
			continue;
		*msg = m;
		return i;
	}
	return -1;
}

/* ---- endpoints --------------------------------------------------------- */

static __always_inline void packet_source(struct endpoint *ep, void *l3, struct udphdr *udp,
					  const int v6)
{
	__builtin_memset(ep, 0, sizeof(*ep));
	if (v6) {
		struct ipv6hdr *ip6 = l3;
		__builtin_memcpy(ep->addr.v6, &ip6->saddr, 16);
		ep->family = WGMUX_AF_INET6;
	} else {
		struct iphdr *ip = l3;
		ep->addr.v4 = ip->saddr;
		ep->family = WGMUX_AF_INET;
	}
	ep->port = udp->source;
}

static __always_inline int source_is(struct endpoint *ep, void *l3, struct udphdr *udp,
				     const int v6)
{
	if (ep->port != udp->source)
		return 0;
	if (v6) {
		struct ipv6hdr *ip6 = l3;
		__u32 *a = (__u32 *)&ip6->saddr;
		return ep->family == WGMUX_AF_INET6 && ep->addr.v6[0] == a[0] &&
		       ep->addr.v6[1] == a[1] && ep->addr.v6[2] == a[2] &&
		       ep->addr.v6[3] == a[3];
	}
	struct iphdr *ip = l3;
	return ep->family == WGMUX_AF_INET && ep->addr.v4 == ip->saddr;
}

static __always_inline int ep_equal(struct endpoint *a, struct endpoint *b)
{
	return a->family == b->family && a->port == b->port && a->addr.v6[0] == b->addr.v6[0] &&
	       a->addr.v6[1] == b->addr.v6[1] && a->addr.v6[2] == b->addr.v6[2] &&
	       a->addr.v6[3] == b->addr.v6[3];
}

/* ---- who may be a peer, what is the hub --------------------------------- */

/* Addresses no peer can have (the kernel's martians and a few more):
 * IPv4 0/8, 127/8, 169.254/16 (link-local: no scope beyond this link),
 * 224/4 (multicast) and 240/4 (class E, the limited broadcast included); IPv6 ::/64 (unspecified, loopback, IPv4-mapped and
 * -compatible), fe80::/10 (link-local: no scope beyond this link) and
 * ff00::/8 (multicast).  Network order. */
static __always_inline int martian4(__be32 a)
{
	__u32 h = WG_NTOHL(a);
	__u32 first = h >> 24;

	return first == 0 || first == 127 || first >= 224 || (h >> 16) == 0xa9fe;
}

static __always_inline int martian6(const __be32 *a)
{
	__u32 w = WG_NTOHL(a[0]);

	if ((w >> 24) == 0xff || (w >> 22) == (0xfe80 >> 6))
		return 1;
	return a[0] == 0 && a[1] == 0;
}

/* 1 + the index of a among the hub's addresses, 0 if it is none of them. */
static __always_inline int hub_addr4(struct wgmux_config *cfg, __be32 a)
{
	__u32 n = cfg->n_addr4;

#pragma unroll
	for (int i = 0; i < WGMUX_MAX_ADDRS; i++) {
		if (i < n && cfg->addr4[i] == a)
			return i + 1;
	}
	return 0;
}

static __always_inline int hub_addr6(struct wgmux_config *cfg, const __be32 *a)
{
	__u32 n = cfg->n_addr6;

#pragma unroll
	for (int i = 0; i < WGMUX_MAX_ADDRS; i++) {
		if (i < n && cfg->addr6[4 * i] == a[0] && cfg->addr6[4 * i + 1] == a[1] &&
		    cfg->addr6[4 * i + 2] == a[2] && cfg->addr6[4 * i + 3] == a[3])
			return i + 1;
	}
	return 0;
}

/* May the packet's source be a peer: not a martian, not the hub itself.
 * Checked wherever a source would become state (a session's endpoint, a
 * roam, a message for the slow path); an established session's own
 * source was checked when it was learned. */
static __always_inline int peer_source(struct wgmux_config *cfg, void *l3, const int v6)
{
	if (v6) {
		__be32 *a = (__be32 *)&((struct ipv6hdr *)l3)->saddr;
		return !martian6(a) && !hub_addr6(cfg, a);
	}
	__be32 a = ((struct iphdr *)l3)->saddr;
	return !martian4(a) && !hub_addr4(cfg, a);
}

/* The IPv4 header (no options) sums to 0xffff, as ip_rcv() demands. */
static __always_inline int ipv4_csum_ok(struct iphdr *ip)
{
	__u32 *w = (__u32 *)ip;
	__u64 sum = (__u64)w[0] + w[1] + w[2] + w[3] + w[4];

	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffffffff) + (sum >> 32);
	return csum_fold((__u32)sum) == 0xffff;
}

/* ---- verdict helpers ----------------------------------------------------- */

/* A packet that is not (or not yet) a reflected one: the port decides. */
static __always_inline int not_reflected(struct wgmux_config *cfg, __be16 dport, __u32 drop_reason,
					 const int xdp)
{
	if (xdp)
		return XDP_PASS;
	if (dport == cfg->hub_port)
		return verdict(CTR_PASS_HUB, TC_ACT_OK);
	if (ports.lookup(&dport))
		return verdict(drop_reason, TC_ACT_SHOT);
	return verdict(CTR_PASS_OTHER_PORT, TC_ACT_OK);
}

static __always_inline int family_of(const int v6)
{
	return v6 ? WGMUX_AF_INET6 : WGMUX_AF_INET;
}

/* 0 if the packet can be reflected to dst, else the drop reason.  Checked
 * before any state is created for it.  A target of the other family needs
 * a hub address of that family to send from (spec §4b). */
static __always_inline __u32 reflectable(struct wgmux_config *cfg, void *l3,
					 struct endpoint *dst, const int v6)
{
	if (dst->family != family_of(v6)) {
		if (dst->family == WGMUX_AF_INET6 && !cfg->n_addr6)
			return CTR_DROP_FAMILY;
		if (dst->family == WGMUX_AF_INET && !cfg->n_addr4)
			return CTR_DROP_FAMILY;
		if (dst->family != WGMUX_AF_INET6 && dst->family != WGMUX_AF_INET)
			return CTR_DROP_FAMILY;
	}
	if (v6)
		return ((struct ipv6hdr *)l3)->hop_limit <= 1 ? CTR_DROP_TTL : 0;
	return ((struct iphdr *)l3)->ttl <= 1 ? CTR_DROP_TTL : 0;
}

/* ---- full or partial UDP checksum? -----------------------------------------
 * The RFC 1624 update assumes the UDP checksum field holds a finished
 * checksum.  A CHECKSUM_PARTIAL skb (sent from this host or a local
 * namespace with checksum offload, or a UDP GRO batch) holds only the plain
 * pseudo-header sum there, finished later by the device; it needs the
 * address change added and the ports left out.  TC programs cannot read
 * ip_summed, so: a field that differs from the pseudo-header sum is a
 * finished checksum (the fast path, one comparison).  One that equals it is
 * partial, unless the kernel says the checksum was verified or is
 * CHECKSUM_COMPLETE, or (the 1 in 65536 finished checksums that look like
 * a pseudo-header sum) the segment sums correctly as it stands. */

static __always_inline __u16 pseudo_sum(void *l3, struct udphdr *udp, const int v6)
{
	__u32 sum = WG_HTONS(IPPROTO_UDP) + udp->len;

	if (v6) {
		__u32 *a = (__u32 *)&((struct ipv6hdr *)l3)->saddr;
#pragma unroll
		for (int i = 0; i < 8; i++)   /* saddr and daddr are adjacent */
			sum = csum_add32(sum, a[i]);
	} else {
		struct iphdr *ip = l3;
		sum = csum_add32(sum, ip->saddr);
		sum = csum_add32(sum, ip->daddr);
	}
	return csum_fold(sum);
}

static __always_inline int segment_sums_to_zero(struct __sk_buff *skb, __u32 off, __u32 len,
						__u16 pseudo)
{
	__u32 zero = 0;
	struct scratch *sc = scratch.lookup(&zero);

	if (!sc || len < sizeof(struct udphdr) || len > WGMUX_VERIFY_MAX)
		return 0;
	/* The same len, in a form older verifiers bound to 1..WGMUX_VERIFY_MAX
	 * whatever clang does with the checks above. */
	WGMUX_OPAQUE(len);
	len = ((len - 1) & (WGMUX_VERIFY_MAX - 1)) + 1;
	if (bpf_skb_load_bytes(skb, off, sc->buf, len))
		return 0;
	sc->buf[len] = 0;
	sc->buf[len + 1] = 0;
	sc->buf[len + 2] = 0;
	__u32 len4 = (len + 3) & ~3u;
	__u32 sum = pseudo;
#pragma unroll
	for (int i = 0; i < WGMUX_VERIFY_MAX / 512; i++) {
		__u32 start = i * 512;
		if (start >= len4)
			break;
		__u32 n = len4 - start;
		if (n > 512)
			n = 512;
		/* the same n, bounded where 6.1's verifier can see it (it lost
		 * the sign of the clamped value once the program grew) */
		WGMUX_OPAQUE(n);
		n &= 0x3ff;
		if (n > 512)
			break;
		long part = csum_diff64(NULL, 0, sc->buf + start, n, 0);
		if (part < 0)
			return 0;
		sum = csum_add32(sum, (__u32)part);
		sum = csum_fold(sum);
	}
	return csum_fold(sum) == 0xffff;
}

static __always_inline int udp_csum_partial(struct __sk_buff *skb, void *l3, struct udphdr *udp,
					    const int v6)
{
	__u16 pseudo = pseudo_sum(l3, udp, v6);

	if (!udp->check || udp->check != pseudo)
		return 0;
	if (skb->gso_size) {
		event(CTR_EV_GSO);
		return 1;
	}
	if (bpf_csum_level(skb, BPF_CSUM_LEVEL_QUERY) >= 0)   /* CHECKSUM_UNNECESSARY */
		return 0;
	if (csum_update64(skb, 0) >= 0)                        /* CHECKSUM_COMPLETE */
		return 0;
	event(CTR_EV_CSUM_VERIFIED);
	return !segment_sums_to_zero(skb, (void *)udp - (void *)(long)skb->data,
				     be16_len(udp->len), pseudo);
}

/* ---- rewrite --------------------------------------------------------------
 * src ip <- the packet's dst ip (the hub), dst ip <- target, src port <- the
 * hub port to send from, dst port <- target port, TTL - 1.  The old dst ip
 * moves into the src field, so in the checksums it cancels out and only
 * "old src ip -> target ip" remains. */

/* `sum`: the UDP checksum field as a sum (the field itself when `partial`,
 * its complement otherwise) plus the address change.  Finishes the field
 * and writes the ports.  A zero field (IPv4: no checksum) stays zero. */
static __always_inline void udp_rewrite(struct udphdr *udp, __u32 sum, int partial,
					__be16 sport, __be16 dport)
{
	if (partial) {
		/* The field holds the plain pseudo-header sum; the ports are
		 * data and get summed when the checksum is finished. */
		udp->check = csum_fold(sum);
	} else if (udp->check) {
		sum += (__u16)~udp->source + sport;
		sum += (__u16)~udp->dest + dport;
		__u16 check = ~csum_fold(sum);
		udp->check = check ? check : 0xffff;
	}
	udp->source = sport;
	udp->dest = dport;
}

/* `saddr`: the hub address it leaves from (via_addr4()). */
static __always_inline void rewrite4(struct iphdr *ip, struct udphdr *udp, struct endpoint *dst,
				     __be16 sport, int partial, __be32 saddr)
{
	__be32 old_saddr = ip->saddr;
	__be32 old_daddr = ip->daddr;
	__be32 daddr = dst->addr.v4;
	__be16 dport = dst->port;
	__u32 delta = csum_add32(csum_add32(csum_add32(csum_add32(0, ~old_saddr), ~old_daddr),
						saddr), daddr);
	__u32 sum;

	sum = (__u16)~ip->check + delta;
	/* The 16-bit word {ttl, protocol} loses 0x0100. */
	sum += (__u16)~WG_HTONS(0x0100);
	ip->check = ~csum_fold(sum);
	ip->ttl--;
	ip->saddr = saddr;
	ip->daddr = daddr;

	sum = (partial ? udp->check : (__u16)~udp->check) + delta;
	udp_rewrite(udp, sum, partial, sport, dport);
}

/* `src`: the hub address it leaves from (via_addr6()), NULL: the one it
 * came to. */
static __always_inline void rewrite6(struct ipv6hdr *ip6, struct udphdr *udp, struct endpoint *dst,
				     __be16 sport, int partial, const __be32 *src)
{
	__u32 *saddr = (__u32 *)&ip6->saddr;
	__u32 *daddr = (__u32 *)&ip6->daddr;
	__be16 dport = dst->port;
	__u32 sum = partial ? udp->check : (__u16)~udp->check;

#pragma unroll
	for (int i = 0; i < 4; i++) {
		__u32 from = src ? src[i] : daddr[i];
		sum = csum_add32(sum, ~saddr[i]);
		sum = csum_add32(sum, ~daddr[i]);
		sum = csum_add32(sum, from);
		sum = csum_add32(sum, dst->addr.v6[i]);
		saddr[i] = from;
		daddr[i] = dst->addr.v6[i];
	}
	ip6->hop_limit--;
	/* (a zero UDP checksum never gets here: wgmux_walk drops it) */
	udp_rewrite(udp, sum, partial, sport, dport);
}

/* ---- next hop -------------------------------------------------------------
 * Resolved from the rewritten header: the FIB as the kernel would route a
 * packet from the hub to the target, with the ingress device as input
 * interface (policy rules on iif apply).  Outcomes:
 *   SUCCESS       cache MACs + ifindex: later packets just write and redirect
 *   NO_NEIGH      hand this packet to bpf_redirect_neigh(), which resolves
 *                 the neighbour (queueing the packet); do not cache, so the
 *                 next packet retries the lookup and caches once resolved
 *   FWD_DISABLED  bpf_fib_lookup() refuses when forwarding is off on the
 *                 ingress device; cache NEIGH
 *                 mode on the ingress device (correct for a single-homed
 *                 hub, but every packet then takes the kernel's route +
 *                 neighbour path; with several interfaces, spec §4c, a
 *                 target behind another one is not reached: preflight says
 *                 so)
 *   other         drop, counted: no route, blackhole, local target...
 * Returns the ifindex to redirect to with NEIGH semantics when the entry
 * stays uncached, 0 when the entry holds the answer, <0 on drop. */
static __always_inline int nh_resolve(struct __sk_buff *skb, struct wgmux_config *cfg,
				      struct next_hop *nh, void *l3, struct udphdr *udp,
				      const int v6)
{
	struct bpf_fib_lookup fib = {};
	int rc;

	fib.ifindex = skb->ingress_ifindex;
	fib.l4_protocol = IPPROTO_UDP;
	fib.sport = udp->source;
	fib.dport = udp->dest;
	if (v6) {
		struct ipv6hdr *ip6 = l3;
		fib.family = WGMUX_AF_INET6;
		__builtin_memcpy(fib.ipv6_src, &ip6->saddr, 16);
		__builtin_memcpy(fib.ipv6_dst, &ip6->daddr, 16);
	} else {
		struct iphdr *ip = l3;
		fib.family = WGMUX_AF_INET;
		fib.tos = ip->tos;
		fib.ipv4_src = ip->saddr;
		fib.ipv4_dst = ip->daddr;
	}
	/* tot_len stays 0: the kernel then checks this skb against the egress
	 * MTU and reports FRAG_NEEDED after a complete lookup.  The cache is
	 * per endpoint, not per packet size, so that counts as success. */
	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	switch (rc) {
	case BPF_FIB_LKUP_RET_SUCCESS:
	case BPF_FIB_LKUP_RET_FRAG_NEEDED:
		nh->ifindex = fib.ifindex;
		__builtin_memcpy(nh->dmac, fib.dmac, 6);
		__builtin_memcpy(nh->smac, fib.smac, 6);
		nh->gen = cfg->nh_gen;
		/* state last: other CPUs read it first (BPF has no fences; the
		 * store order holds on x86, elsewhere a torn read costs at
		 * most one packet with a stale MAC) */
		wg_barrier();
		nh->state = NH_DIRECT;
		event(CTR_EV_NH_RESOLVED);
		return 0;
	case BPF_FIB_LKUP_RET_NO_NEIGH:
		event(CTR_EV_NH_NO_NEIGH);
		return fib.ifindex;
	case BPF_FIB_LKUP_RET_FWD_DISABLED:
		nh->ifindex = skb->ingress_ifindex;
		nh->gen = cfg->nh_gen;
		wg_barrier();
		nh->state = NH_NEIGH;
		event(CTR_EV_NH_FWD_DISABLED);
		return 0;
	default:
		return -1;
	}
}

/* Can the driver finish a packet for session s (docs/spec.md §4a)?  Only
 * to a target of the packet's own family, with the answer cached by an
 * earlier packet (TC resolved it), out of the interface it came in on
 * (XDP_TX), and a UDP checksum field that is not a pseudo-header sum.  The
 * rest is TC's: a change of family (the skb is resized, §4b), a next hop
 * to resolve, or one
 * the kernel's neighbour code must finish (redirect_neigh has no XDP twin);
 * another egress interface (XDP_REDIRECT silently drops where the target
 * has no XDP transmit of its own, veth or virtio_net without a program);
 * a field that may be a partial checksum, which only the skb tells from a
 * finished one (§4).  Decided before anything is written, so what XDP
 * passes TC sees as if XDP were not there. */
static __always_inline int xdp_finishes(void *ctx, struct wgmux_config *cfg,
					struct session *s, void *l3, struct udphdr *udp,
					const int v6)
{
	struct next_hop *nh = &s->nh;

	if (s->dst.family != family_of(v6))
		return 0;
	if (nh->state != NH_DIRECT || nh->gen != cfg->nh_gen)
		return 0;
	if (nh->ifindex != ((struct xdp_md *)ctx)->ingress_ifindex)
		return 0;
	return !udp->check || udp->check != pseudo_sum(l3, udp, v6);
}

/* Send a rewritten packet (TC): by the cached next hop, or resolve it.
 * v6: the family of the packet as it leaves.  A translated packet has
 * grown or shrunk: it must still fit the egress device (spec §4b). */
static __always_inline int send_out(struct __sk_buff *skb, struct wgmux_config *cfg,
				    struct ethhdr *eth, void *l3, struct udphdr *udp,
				    struct next_hop *nh, __u32 reason, const int v6,
				    const int translated)
{
	int ifindex = 0;

	if (nh->state == NH_NONE || nh->gen != cfg->nh_gen) {
		nh->state = NH_NONE;
		ifindex = nh_resolve(skb, cfg, nh, l3, udp, v6);
		if (ifindex < 0)
			return verdict(CTR_DROP_NO_ROUTE, TC_ACT_SHOT);
	}
	if (translated) {
		__u32 mtu = 0;
		if (bpf_check_mtu(skb, ifindex ? ifindex : nh->ifindex, &mtu, 0, 0) > 0)
			return verdict(CTR_DROP_TOO_BIG, TC_ACT_SHOT);
	}
	if (cfg->n_ifaces > 1)
		iface_count(ifindex ? ifindex : nh->ifindex, IFC_REFLECTED_OUT);
	if (ifindex)
		return verdict(reason, redirect_neigh(ifindex, NULL, 0, 0));
	if (nh->state == NH_DIRECT) {
		__builtin_memcpy(eth->h_dest, nh->dmac, 12);
		return verdict(reason, bpf_redirect(nh->ifindex, 0));
	}
	return verdict(reason, redirect_neigh(nh->ifindex, NULL, 0, 0));
}

/* ---- the other family (spec §4b) -------------------------------------------
 * A target of the other family: the outer header is replaced (IPv4 20
 * bytes <-> IPv6 40, bpf_skb_change_proto() moves the link header), sent
 * from the hub's address of the target's family that the target's owner
 * talks to (session.via).  TTL/hop limit - 1, TOS <-> traffic class; IPv4
 * leaves without DF, as WireGuard's own IPv4 does, its identification the
 * low bits of the transport counter (0 for handshake messages): unique per
 * flow for as long as fragments could meet.  The UDP checksum is updated,
 * not recomputed: the IPv4 and IPv6 pseudo-headers sum length and protocol
 * alike, so only the addresses and ports change. */
static __always_inline int reflect_other_family(struct __sk_buff *skb, struct wgmux_config *cfg,
						void *l3, struct udphdr *udp, struct session *s,
						__u16 ip_id, __u32 reason, const int v6)
{
	struct endpoint *dst = &s->dst;
	int partial = udp_csum_partial(skb, l3, udp, v6);
	__u32 i = s->via ? s->via - 1 : 0;
	__be32 src[4] = {};
	__u32 sum;
	__u8 tos, ttl;
	__u32 ulen = be16_len(udp->len);

	if (partial)
		event(CTR_EV_CSUM_PARTIAL);
	if (!v6 && !udp->check)
		return verdict(CTR_DROP_NO_CHECKSUM, TC_ACT_SHOT);
	sum = partial ? udp->check : (__u16)~udp->check;
	if (v6) {
		struct ipv6hdr *ip6 = l3;
		__u32 *a = (__u32 *)&ip6->saddr;
#pragma unroll
		for (int k = 0; k < 8; k++)   /* saddr and daddr are adjacent */
			sum = csum_add32(sum, ~a[k]);
		ttl = ip6->hop_limit - 1;
		tos = (ip6->priority << 4) | (ip6->flow_lbl[0] >> 4);
		if (i >= cfg->n_addr4)
			i = 0;
		src[0] = cfg->addr4[i & (WGMUX_MAX_ADDRS - 1)];
		sum = csum_add32(sum, src[0]);
		sum = csum_add32(sum, dst->addr.v4);
	} else {
		struct iphdr *ip = l3;
		sum = csum_add32(sum, ~ip->saddr);
		sum = csum_add32(sum, ~ip->daddr);
		ttl = ip->ttl - 1;
		tos = ip->tos;
		if (i >= cfg->n_addr6)
			i = 0;
		i &= WGMUX_MAX_ADDRS - 1;
#pragma unroll
		for (int k = 0; k < 4; k++) {
			src[k] = cfg->addr6[4 * i + k];
			sum = csum_add32(sum, src[k]);
			sum = csum_add32(sum, dst->addr.v6[k]);
		}
	}
	udp_rewrite(udp, sum, partial, s->src_port, dst->port);

	if (bpf_skb_change_proto(skb, WG_HTONS(v6 ? ETH_P_IP : ETH_P_IPV6), 0))
		return verdict(CTR_DROP_TRANSLATE, TC_ACT_SHOT);
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	if (v6) {
		struct iphdr *ip = (void *)(eth + 1);
		struct udphdr *u = (void *)(ip + 1);
		if ((void *)(u + 1) > data_end)
			return verdict(CTR_DROP_TRANSLATE, TC_ACT_SHOT);
		eth->h_proto = WG_HTONS(ETH_P_IP);
		*(__u8 *)ip = 0x45;
		ip->tos = tos;
		ip->tot_len = WG_HTONS(ulen + sizeof(*ip));
		ip->id = WG_HTONS(ip_id);
		ip->frag_off = 0;
		ip->ttl = ttl;
		ip->protocol = IPPROTO_UDP;
		ip->check = 0;
		ip->saddr = src[0];
		ip->daddr = dst->addr.v4;
		__u32 *w = (__u32 *)ip;
		__u32 hs = 0;
#pragma unroll
		for (int k = 0; k < 5; k++)
			hs = csum_add32(hs, w[k]);
		ip->check = ~csum_fold(hs);
		event(CTR_EV_TRANSLATED_6TO4);
		return send_out(skb, cfg, eth, ip, u, &s->nh, reason, 0, 1);
	}
	struct ipv6hdr *ip6 = (void *)(eth + 1);
	struct udphdr *u = (void *)(ip6 + 1);
	if ((void *)(u + 1) > data_end)
		return verdict(CTR_DROP_TRANSLATE, TC_ACT_SHOT);
	eth->h_proto = WG_HTONS(ETH_P_IPV6);
	*(__be32 *)ip6 = WG_HTONL(0x60000000u | ((__u32)tos << 20));
	ip6->payload_len = WG_HTONS(ulen);
	ip6->nexthdr = IPPROTO_UDP;
	ip6->hop_limit = ttl;
	__builtin_memcpy(&ip6->saddr, src, 16);
	__builtin_memcpy(&ip6->daddr, dst->addr.v6, 16);
	event(CTR_EV_TRANSLATED_4TO6);
	return send_out(skb, cfg, eth, ip6, u, &s->nh, reason, 1, 1);
}

/* The hub address a packet for s leaves from: the one of dst's family
 * that dst's owner talks to (s->via), so that its NAT or firewall lets it
 * in when the hub has several (two uplinks, spec §4c); the one the packet
 * came to when s has none (or it is gone). */
static __always_inline __be32 via_addr4(struct wgmux_config *cfg, struct session *s,
					__be32 arrival)
{
	__u32 i = (__u32)s->via - 1;

	if (!s->via || i >= cfg->n_addr4)
		return arrival;
	return cfg->addr4[i & (WGMUX_MAX_ADDRS - 1)];
}

static __always_inline const __be32 *via_addr6(struct wgmux_config *cfg, struct session *s)
{
	__u32 i = (__u32)s->via - 1;

	if (!s->via || i >= cfg->n_addr6)
		return NULL;
	return &cfg->addr6[4 * (i & (WGMUX_MAX_ADDRS - 1))];
}

/* Rewrite and send.  The caller has checked reflectable(), and in XDP
 * xdp_finishes(). */
static __always_inline int reflect(void *ctx, struct wgmux_config *cfg,
				   struct ethhdr *eth, void *l3, struct udphdr *udp,
				   struct session *s, __u16 ip_id, __u32 reason,
				   const int v6, const int xdp)
{
	int partial = 0;

	if (!xdp && s->dst.family != family_of(v6))
		return reflect_other_family(ctx, cfg, l3, udp, s, ip_id, reason, v6);
	if (!xdp)
		partial = udp_csum_partial(ctx, l3, udp, v6);
	if (partial)
		event(CTR_EV_CSUM_PARTIAL);
	if (v6)
		rewrite6(l3, udp, &s->dst, s->src_port, partial, via_addr6(cfg, s));
	else
		rewrite4(l3, udp, &s->dst, s->src_port, partial,
			 via_addr4(cfg, s, ((struct iphdr *)l3)->daddr));

	if (xdp) {
		/* (a next hop re-resolved meanwhile on another CPU costs at most
		 * this packet, as in nh_resolve()) */
		__builtin_memcpy(eth->h_dest, s->nh.dmac, 12);
		return verdict(reason, XDP_TX);
	}
	return send_out(ctx, cfg, eth, l3, udp, &s->nh, reason, v6, 0);
}

/* ---- sessions ------------------------------------------------------------ */

static __always_inline __u32 insert_session(struct session_key *key, struct session *s)
{
	int rc = sessions.insert(key, s);

	if (rc == 0)
		return 0;
	/* lost a race against an identical insert on another CPU */
	if (rc == -17 /* EEXIST */)
		return CTR_DROP_INDEX_CLASH;
	return CTR_DROP_SESSIONS_FULL;
}

/* Half-open sessions are opened by the daemon once mac1 checks out:
 * (HubPort, I's sender) -> {E_I, from P} for an initiation on P, and
 * (P, R's sender) -> {E_R, from HubPort} for a responder-initiated one on
 * HubPort (docs/spec.md §3, §9).
 *
 * Response that matched half-open (key, s): its sender index on the port
 * the initiation came in on now means "to the responder (src), from the
 * port this response came in on", and the two entries point at each other.
 * Written generically so that a responder-initiated handshake (the
 * initiation arrives on HubPort, the response on P) takes the same path. */
static __always_inline __u32 establish(struct session *s, struct session_key *key,
				       struct endpoint *src, __be16 port, __u32 sender,
				       __u8 via)
{
	struct session_key rkey = { .port = s->src_port, .index = sender };
	struct session *old = sessions.lookup(&rkey);

	if (old) {
		if (!(ep_equal(&old->dst, src) && old->src_port == port))
			return CTR_DROP_INDEX_CLASH;
	} else {
		struct session r = {};
		r.dst = *src;
		r.expect = s->dst;
		r.reverse = *key;
		r.src_port = port;
		r.via = via;
		r.created = r.last_seen = bpf_ktime_get_coarse_ns();
		__u32 rc = insert_session(&rkey, &r);
		if (rc)
			return rc;
		event(CTR_EV_SESSION_ESTABLISHED);
	}
	s->reverse = rkey;
	return 0;
}

/* A packet for a known (port, index) from a source the session does not
 * expect.  0 if it may move the session there (roam() then does), else
 * the drop reason.  Only transport of an established session roams, and
 * only with a counter just above the highest seen (WGMUX_ROAM_WINDOW):
 * the counter is the one thing in a transport message that an off-path
 * attacker cannot know, and a replayed message is always below it.
 * Responses and cookies never move anything (docs/spec.md §5). */
static __always_inline __u32 may_roam(struct wgmux_config *cfg, struct session *s, __u64 c,
				      void *l3, const int v6)
{
	if (!(cfg->flags & WGMUX_CFG_ROAMING))
		return CTR_DROP_NOT_EXPECTED;
	if (!peer_source(cfg, l3, v6))
		return CTR_DROP_MARTIAN;
	__u64 max = s->max_counter;
	if (c <= max || c - max > WGMUX_ROAM_WINDOW)
		return CTR_DROP_ROAM_REJECTED;
	s->max_counter = c;
	return 0;
}

/* Follow the move as WireGuard would: packets towards that side now go to
 * the new source, from the hub address it sent to. */
static __always_inline void roam(struct session *s, void *l3, struct udphdr *udp, __u8 via,
				 const int v6)
{
	struct endpoint src;
	struct session_key rkey = s->reverse;

	packet_source(&src, l3, udp, v6);
	s->expect = src;
	struct session *r = sessions.lookup(&rkey);
	if (r) {
		r->dst = src;
		r->via = via;
		r->nh.state = NH_NONE;
	}
	event(CTR_EV_ROAM);
}

/* Reading the clock costs ~20 ns here (bpf_ktime_get_coarse_ns; ~38 ns for
 * bpf_ktime_get_ns), a third of the whole fast path; jiffies cost ~1 ns.
 * So the clock is read at most once per jiffy and session. */
static __always_inline void account(struct session *s, __u32 bytes)
{
	__u64 j = bpf_jiffies64();

	if (s->last_jiffies != j) {
		s->last_jiffies = j;
		s->last_seen = bpf_ktime_get_coarse_ns();
	}
	__sync_fetch_and_add(&s->packets, 1);
	__sync_fetch_and_add(&s->bytes, bytes);
}

/* ---- slow path ------------------------------------------------------------ */

enum { SLOW_QUEUED = 0, SLOW_FULL = 1 };

/* GCRA: allowed if the theoretical arrival time *tat is at most tolerance
 * ahead of now; then it advances by one interval.  interval 0: no limit.
 * Two CPUs racing on one *tat may both pass: a flood guard, not a meter. */
static __always_inline int gcra(__u64 *tat, __u64 interval, __u64 tolerance, __u64 now)
{
	if (!interval)
		return 1;
	__u64 t = *tat;
	if (t < now)
		t = now;
	if (t - now > tolerance)
		return 0;
	*tat = t + interval;
	return 1;
}

/* IPv4: the address; IPv6: its /64. */
static __always_inline void source_key(struct rate_key *k, void *l3, const int v6)
{
	__builtin_memset(k, 0, sizeof(*k));
	if (v6) {
		__be32 *a = (__be32 *)&((struct ipv6hdr *)l3)->saddr;
		k->family = WGMUX_AF_INET6;
		k->addr[0] = a[0];
		k->addr[1] = a[1];
	} else {
		k->family = WGMUX_AF_INET;
		k->addr[0] = ((struct iphdr *)l3)->saddr;
	}
}

/* The per-source limit on what reaches the slow path. */
static __always_inline int slow_allowed(struct wgmux_config *cfg, void *l3, __u64 now,
					const int v6)
{
	if (!cfg->slow_interval_ns)
		return 1;
	struct rate_key k;
	source_key(&k, l3, v6);
	__u64 *tat = slow_rate.lookup(&k);
	if (!tat) {
		__u64 next = now + cfg->slow_interval_ns;
		slow_rate.update(&k, &next);
		return 1;
	}
	return gcra(tat, cfg->slow_interval_ns, cfg->slow_tolerance_ns, now);
}

/* Is the peer port under load: over its initiation budget now, or within
 * WGMUX_LOAD_HOLD_NS of having been.  Every initiation that passed the
 * per-source limit counts against the budget. */
static __always_inline int port_under_load(struct wgmux_config *cfg, struct responder *r,
					   __u64 now)
{
	if (!cfg->port_interval_ns)
		return 0;
	if (!gcra(&r->init_tat, cfg->port_interval_ns, cfg->port_tolerance_ns, now)) {
		if (now >= r->load_until)
			event(CTR_EV_PORT_OVER_BUDGET);
		r->load_until = now + WGMUX_LOAD_HOLD_NS;
		return 1;
	}
	return now < r->load_until;
}

/* An initiation to a port under load: WireGuard's cookie mechanism, with
 * the hub answering for the responder (docs/spec.md §9).  Without a mac2
 * the sender may ask for a cookie reply (SLOW_LOAD_COOKIE); with one, it
 * may present it (SLOW_LOAD_MAC2) and the slow path checks it: each once
 * per source and WGMUX_GATE_NS, both within the port's cookie budget.  Spoofed sources never see their cookie, so
 * their mac2 never checks out.  -1: shed. */
static __always_inline int load_admit(struct wgmux_config *cfg, struct responder *r, void *l3,
				      void *msg, void *data_end, __u64 now, const int v6)
{
	if (msg + WG_INITIATION_SIZE > data_end)
		return -1;
	__u64 *mac2 = msg + WG_INITIATION_OFF_MAC2;
	int has_mac2 = (mac2[0] | mac2[1]) != 0;
	struct rate_key k;
	source_key(&k, l3, v6);
	struct load_gate *g = load_gates.lookup(&k);
	if (!g) {
		struct load_gate fresh = {};
		load_gates.update(&k, &fresh);
		g = load_gates.lookup(&k);
		if (!g)
			return -1;
	}
	__u64 *at = has_mac2 ? &g->mac2_at : &g->cookie_at;
	if (*at && now - *at < WGMUX_GATE_NS)
		return -1;
	/* Both kinds count against the port's budget for work under load:
	 * a random mac2 costs the slow path as much as a cookie request. */
	if (!gcra(&r->cookie_tat, cfg->cookie_interval_ns, cfg->cookie_tolerance_ns, now))
		return -1;
	*at = now;
	return has_mac2 ? SLOW_LOAD_MAC2 : SLOW_LOAD_COOKIE;
}

/* Queue the packet (UDP payload of plen bytes, classified as cls) for the
 * daemon.  The caller has applied the per-source limit.  Reads the packet
 * only. */
static __always_inline int to_slow_path(struct __sk_buff *skb, struct wgmux_config *cfg,
					void *l3, struct udphdr *udp, __u32 plen, int cls,
					int load, const int v6)
{
	__u32 zero = 0;
	struct slow_msg *m = slow_buf.lookup(&zero);

	if (!m)
		return SLOW_FULL;
	packet_source(&m->src, l3, udp, v6);
	__builtin_memset(&m->dst, 0, sizeof(m->dst));
	if (v6) {
		struct ipv6hdr *ip6 = l3;
		__builtin_memcpy(m->dst.addr.v6, &ip6->daddr, 16);
		m->dst.family = WGMUX_AF_INET6;
		m->ttl = ip6->hop_limit;
		m->tos = (ip6->priority << 4) | (ip6->flow_lbl[0] >> 4);
		m->ip_id = 0;
		m->frag_off = 0;
	} else {
		struct iphdr *ip = l3;
		m->dst.addr.v4 = ip->daddr;
		m->dst.family = WGMUX_AF_INET;
		m->ttl = ip->ttl;
		m->tos = ip->tos;
		m->ip_id = ip->id;
		m->frag_off = ip->frag_off;
	}
	m->dst.port = udp->dest;
	m->ktime = bpf_ktime_get_ns();
	m->ifindex = skb->ingress_ifindex;
	m->cls = cls;
	m->load = load;
	m->_pad2 = 0;
	/* classify() bounds plen by an exact size plus a prefix of at most
	 * WG_MAX_PREFIX; the verifier wants to see it again, as two checks
	 * on the value passed below. */
	WGMUX_OPAQUE(plen);
	if (plen > WGMUX_SLOW_PAYLOAD_MAX)
		return SLOW_FULL;
	WGMUX_OPAQUE(plen);
	if (plen < WG_PEEK_SIZE)
		return SLOW_FULL;
	m->len = plen;
	__u32 off = (void *)(udp + 1) - (void *)(long)skb->data;
	if (bpf_skb_load_bytes(skb, off, m->payload, plen))
		return SLOW_FULL;
	if (slow_ring.ringbuf_output(m, __builtin_offsetof(struct slow_msg, payload) + plen, 0))
		return SLOW_FULL;
	return SLOW_QUEUED;
}

/* An initiation to HubPort: the hub's own handshake, or a responder-
 * initiated one (docs/spec.md §9) that only mac1 tells apart.  Passed either
 * way; the slow path gets a copy and re-sends it if it is the latter.  Only
 * a responder may start a handshake through its port, so only initiations
 * from a responder's endpoint are copied: a flood to HubPort from anywhere
 * else is the hub's own WireGuard's business and never reaches the ring
 * buffer that peer ports need. */
static __always_inline int hub_initiation(struct __sk_buff *skb, struct wgmux_config *cfg,
					  void *l3, struct udphdr *udp, __u32 plen, const int v6)
{
	struct endpoint src;

	packet_source(&src, l3, udp, v6);
	if (!responder_eps.lookup(&src))
		return verdict(CTR_PASS_HUB, TC_ACT_OK);
	if (!slow_allowed(cfg, l3, bpf_ktime_get_ns(), v6))
		return verdict(CTR_PASS_HUB_RATE_LIMITED, TC_ACT_OK);
	switch (to_slow_path(skb, cfg, l3, udp, plen, WG_CLASS_INITIATION, SLOW_LOAD_NONE, v6)) {
	case SLOW_QUEUED:
		return verdict(CTR_SLOW_HUB_INITIATION, TC_ACT_OK);
	default:
		return verdict(CTR_PASS_HUB_SLOW_FULL, TC_ACT_OK);
	}
}

/* A reflected response from R on HubPort: its mac1 is keyed with the
 * initiator's public key, which the slow path learns from a copy. */
static __always_inline void copy_response(struct __sk_buff *skb, struct wgmux_config *cfg,
					  void *l3, struct udphdr *udp, __u32 plen, const int v6)
{
	if (!slow_allowed(cfg, l3, bpf_ktime_get_ns(), v6)) {
		event(CTR_EV_SLOW_RESPONSE_RATE_LIMITED);
		return;
	}
	switch (to_slow_path(skb, cfg, l3, udp, plen, WG_CLASS_RESPONSE, SLOW_LOAD_NONE, v6)) {
	case SLOW_QUEUED:
		event(CTR_EV_SLOW_RESPONSE);
		break;
	default:
		event(CTR_EV_SLOW_RESPONSE_FULL);
	}
}

/* ---- the packet walk ----------------------------------------------------- */

/* An initiation: reflected only once the slow path has checked its mac1
 * (the hub is no open reflector); the checks that need no key are made
 * here, so that nothing doomed reaches the daemon. */
static __always_inline int initiation(struct __sk_buff *skb, struct wgmux_config *cfg,
				      void *data_end, void *l3, struct udphdr *udp, void *msg,
				      __u32 plen, const int v6)
{
	__be16 dport = udp->dest;

	if (dport == cfg->hub_port) {
		if (!peer_source(cfg, l3, v6))   /* the stack drops martians */
			return verdict(CTR_PASS_HUB, TC_ACT_OK);
		return hub_initiation(skb, cfg, l3, udp, plen, v6);
	}
	struct responder *r = ports.lookup(&dport);
	if (!r)
		return verdict(CTR_PASS_OTHER_PORT, TC_ACT_OK);
	if (!peer_source(cfg, l3, v6))
		return verdict(CTR_DROP_MARTIAN, TC_ACT_SHOT);
	if (!r->ep.family)
		return verdict(CTR_DROP_NO_RESPONDER, TC_ACT_SHOT);
	__u32 why = reflectable(cfg, l3, &r->ep, v6);
	if (why)
		return verdict(why, TC_ACT_SHOT);
	__u64 now = bpf_ktime_get_ns();
	if (!slow_allowed(cfg, l3, now, v6))
		return verdict(CTR_DROP_RATE_LIMITED, TC_ACT_SHOT);
	int load = SLOW_LOAD_NONE;
	if (port_under_load(cfg, r, now)) {
		load = load_admit(cfg, r, l3, msg, data_end, now, v6);
		if (load < 0)
			return verdict(CTR_DROP_UNDER_LOAD, TC_ACT_SHOT);
	}
	switch (to_slow_path(skb, cfg, l3, udp, plen, WG_CLASS_INITIATION, load, v6)) {
	case SLOW_QUEUED:
		return verdict(load ? CTR_SLOW_UNDER_LOAD : CTR_SLOW_INITIATION, TC_ACT_SHOT);
	default:
		return verdict(CTR_DROP_SLOW_FULL, TC_ACT_SHOT);
	}
}

/* local: 1 + the index of the hub address the packet came to. */
static __always_inline int handle(void *ctx, struct wgmux_config *cfg, void *data_end,
				  struct ethhdr *eth, void *l3, struct udphdr *udp, __u32 plen,
				  __u32 ip_bytes, __u8 local, const int v6, const int xdp)
{
	__be16 dport = udp->dest;
	void *msg = 0;
	__u32 why;
	int cls = classify(cfg, (void *)(udp + 1), plen, data_end, &msg);

	if (cls < 0 || !msg)
		return not_reflected(cfg, dport, CTR_DROP_UNCLASSIFIED, xdp);
	if (msg + WG_PEEK_SIZE > data_end)
		return not_reflected(cfg, dport, CTR_DROP_UNCLASSIFIED, xdp);
	/* Handshakes are TC's: an initiation goes to the slow path, a response
	 * creates the reverse entry and is copied there (docs/spec.md §4a). */
	if (xdp && (cls == WG_CLASS_INITIATION || cls == WG_CLASS_RESPONSE))
		return XDP_PASS;
	if (!xdp && cls == WG_CLASS_INITIATION)
		return initiation(ctx, cfg, data_end, l3, udp, msg, plen, v6);

	/* Response, cookie and transport all carry a receiver index, the key
	 * of the session on the port they arrive on. */
	_Static_assert(WG_COOKIE_OFF_RECEIVER == WG_TRANSPORT_OFF_RECEIVER,
		       "cookie and transport share the receiver offset");
	struct session_key key = { .port = dport };
	if (cls == WG_CLASS_RESPONSE)
		key.index = load_le32(msg + WG_RESPONSE_OFF_RECEIVER);
	else
		key.index = load_le32(msg + WG_TRANSPORT_OFF_RECEIVER);
	struct session *s = sessions.lookup(&key);
	if (!s)
		return not_reflected(cfg, dport, CTR_DROP_UNKNOWN_INDEX, xdp);
	why = reflectable(cfg, l3, &s->dst, v6);
	if (why)
		return tc_shot(why, xdp);
	if (xdp && !xdp_finishes(ctx, cfg, s, l3, udp, v6))
		return XDP_PASS;
	/* A half-open entry (an initiation the slow path sent on) waits for
	 * the responder's answer and nothing else: no transport, no roaming,
	 * no refresh (docs/spec.md §6). */
	int half_open = !s->reverse.port;
	__u16 ip_id = 0;
	if (cls == WG_CLASS_TRANSPORT) {
		if (half_open)
			return tc_shot(CTR_DROP_HALF_OPEN, xdp);
		/* (classify() has checked the size; the verifier wants it here) */
		if (msg + WG_TRANSPORT_HEADER_SIZE > data_end)
			return tc_shot(CTR_DROP_UNCLASSIFIED, xdp);
		__u64 c = load_le64(msg + WG_TRANSPORT_OFF_COUNTER);
		ip_id = (__u16)c;
		if (!source_is(&s->expect, l3, udp, v6)) {
			why = may_roam(cfg, s, c, l3, v6);
			if (why)
				return tc_shot(why, xdp);
			roam(s, l3, udp, local, v6);
		} else if (c > s->max_counter) {
			s->max_counter = c;
		}
		if (!(s->flags & WGMUX_SF_TRANSPORT))
			s->flags |= WGMUX_SF_TRANSPORT;
	} else if (!source_is(&s->expect, l3, udp, v6)) {
		return tc_shot(CTR_DROP_NOT_EXPECTED, xdp);
	}
	if (!xdp && cls == WG_CLASS_RESPONSE) {
		struct endpoint src;
		packet_source(&src, l3, udp, v6);
		why = establish(s, &key, &src, dport, load_le32(msg + WG_RESPONSE_OFF_SENDER),
				local);
		if (why)
			return verdict(why, TC_ACT_SHOT);
		if (dport == cfg->hub_port)
			copy_response(ctx, cfg, l3, udp, plen, v6);
		half_open = 0;
	}
	if (!half_open)
		account(s, ip_bytes);
	return reflect(ctx, cfg, eth, l3, udp, s, ip_id, CTR_REFLECT_INITIATION + cls, v6, xdp);
}

/* IPv4 with options or a first fragment: never reflected (the rewrite
 * assumes a 20-byte header, and a fragment's message cannot be classified),
 * dropped on a peer port so the hub reflects nothing it cannot check. */
static __always_inline int ipv4_irregular(struct wgmux_config *cfg, struct iphdr *ip,
					  void *data_end, const int xdp)
{
	__u32 ihl = ip->ihl * 4;

	if (ihl < sizeof(*ip) || ihl > 60)
		return tc_ok(CTR_PASS_TRUNCATED, xdp);
	struct udphdr *udp = (void *)ip + ihl;
	if ((void *)(udp + 1) > data_end)
		return tc_ok(CTR_PASS_TRUNCATED, xdp);
	return not_reflected(cfg, udp->dest,
			     ihl != sizeof(*ip) ? CTR_DROP_IP_OPTIONS : CTR_DROP_FRAGMENT, xdp);
}

static __always_inline int wgmux_walk(void *ctx, const int xdp)
{
	void *data = ctx_data(ctx, xdp);
	void *data_end = ctx_data_end(ctx, xdp);
	struct ethhdr *eth = data;
	__u32 zero = 0;

	if ((void *)(eth + 1) > data_end)
		return tc_ok(CTR_PASS_TRUNCATED, xdp);
	struct wgmux_config *cfg = config.lookup(&zero);
	if (!cfg || !cfg->hub_port)
		return tc_ok(CTR_PASS_NOT_CONFIGURED, xdp);

	/* What the stack would not take, or not as its own, is never
	 * reflected: a wrong IP version or IPv4 header checksum, a destination
	 * that is not one of the hub's addresses (a hub that also routes
	 * passes transit traffic untouched). */
	if (eth->h_proto == WG_HTONS(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > data_end)
			return tc_ok(CTR_PASS_TRUNCATED, xdp);
		if (ip->version != 4)
			return tc_ok(CTR_PASS_BAD_IP, xdp);
		if (ip->protocol != IPPROTO_UDP)
			return tc_ok(CTR_PASS_NOT_UDP, xdp);
		__u8 local = hub_addr4(cfg, ip->daddr);
		if (!local)
			return tc_ok(CTR_PASS_NOT_LOCAL, xdp);
		if (ip->frag_off & WG_HTONS(WGMUX_IP_OFFSET))
			return tc_ok(CTR_PASS_FRAGMENT, xdp);
		if (ip->ihl != 5 || (ip->frag_off & WG_HTONS(WGMUX_IP_MF)))
			return ipv4_irregular(cfg, ip, data_end, xdp);
		if (!ipv4_csum_ok(ip))
			return tc_ok(CTR_PASS_BAD_IP, xdp);
		struct udphdr *udp = (void *)(ip + 1);
		if ((void *)(udp + 1) > data_end)
			return tc_ok(CTR_PASS_TRUNCATED, xdp);
		__u32 ulen = be16_len(udp->len);
		__u32 tot = be16_len(ip->tot_len);
		if (ulen < sizeof(*udp) || ulen + sizeof(*ip) != tot || (void *)udp + ulen > data_end)
			return not_reflected(cfg, udp->dest, CTR_DROP_MALFORMED, xdp);
		return handle(ctx, cfg, data_end, eth, ip, udp, ulen - sizeof(*udp), tot, local, 0,
			      xdp);
	}
	if (eth->h_proto == WG_HTONS(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > data_end)
			return tc_ok(CTR_PASS_TRUNCATED, xdp);
		if (ip6->version != 6)
			return tc_ok(CTR_PASS_BAD_IP, xdp);
		/* Extension headers (fragments included) are not walked: such
		 * packets pass, and WireGuard never sends them. */
		if (ip6->nexthdr != IPPROTO_UDP)
			return tc_ok(CTR_PASS_NOT_UDP, xdp);
		__u8 local = hub_addr6(cfg, (__be32 *)&ip6->daddr);
		if (!local)
			return tc_ok(CTR_PASS_NOT_LOCAL, xdp);
		struct udphdr *udp = (void *)(ip6 + 1);
		if ((void *)(udp + 1) > data_end)
			return tc_ok(CTR_PASS_TRUNCATED, xdp);
		__u32 ulen = be16_len(udp->len);
		/* A zero UDP checksum is invalid over IPv6: the receiver would
		 * drop what the hub reflected. */
		if (ulen < sizeof(*udp) || ulen != be16_len(ip6->payload_len) ||
		    (void *)udp + ulen > data_end || !udp->check)
			return not_reflected(cfg, udp->dest, CTR_DROP_MALFORMED, xdp);
		return handle(ctx, cfg, data_end, eth, ip6, udp, ulen - sizeof(*udp),
			      ulen + sizeof(*ip6), local, 1, xdp);
	}
	return tc_ok(CTR_PASS_NOT_IP, xdp);
}

/* The walk, and with several interfaces (spec §4c) its outcome counted
 * per interface it arrived on (what left by which: send_out(), XDP_TX). */
static __always_inline int wgmux_process(void *ctx, const int xdp)
{
	int action = wgmux_walk(ctx, xdp);
	__u32 zero = 0;
	struct wgmux_config *cfg = config.lookup(&zero);

	if (!cfg || cfg->n_ifaces <= 1)
		return action;
	__u32 in = xdp ? ((struct xdp_md *)ctx)->ingress_ifindex
		       : ((struct __sk_buff *)ctx)->ingress_ifindex;
	if (xdp ? action == XDP_TX : action == TC_ACT_REDIRECT) {
		iface_count(in, IFC_REFLECTED_IN);
		if (xdp)
			iface_count(in, IFC_REFLECTED_OUT);
	} else if (xdp ? action == XDP_DROP : action == TC_ACT_SHOT) {
		iface_count(in, IFC_DROPPED);
	}
	return action;
}

int wgmux_ingress(struct __sk_buff *skb)
{
	return wgmux_process(skb, 0);
}

/* Attached in the driver as well when Datapath is "xdp" or (where native)
 * "auto", TC staying at ingress for what this one passes (docs/spec.md §4a). */
int wgmux_xdp(struct xdp_md *ctx)
{
	return wgmux_process(ctx, 1);
}

#ifdef WGMUX_BENCH
/* BPF_PROG_TEST_RUN runs a program `repeat` times on the same packet, so
 * after the first run it would see its own output.  The benchmark programs
 * first restore the headers (the payload is never written), and the _base
 * ones do only that restore, to be subtracted. */
#define WGMUX_BENCH_HDR 64
struct bench_hdr {
	__u64 w[WGMUX_BENCH_HDR / 8];
};
WGMUX_TABLE("array", __u32, struct bench_hdr, bench_hdr, 1);

/* Spread the runs over n sessions (harness/bench_scale.py: a table too big
 * for the caches): each run writes base + the next of n receiver indices
 * at byte `off` of the restored frame.  n 0: the frame as restored. */
struct bench_spread {
	__u32 n;
	__u32 base;
	__u32 next;
	__u32 off;
};
WGMUX_TABLE("array", __u32, struct bench_spread, bench_spread, 1);

static __always_inline int bench_restore(void *ctx, const int xdp)
{
	__u32 zero = 0;
	struct bench_hdr *h = bench_hdr.lookup(&zero);

	if (!h)
		return -1;
	/* A run that changed the family (spec §4b) left the skb 20 bytes
	 * longer or shorter: change it back first (so a translated row's walk
	 * includes one extra bpf_skb_change_proto(), an upper bound). */
	__be16 proto = ((__be16 *)h->w)[6];
	if (!xdp && ((struct __sk_buff *)ctx)->protocol != proto &&
	    bpf_skb_change_proto(ctx, proto, 0))
		return -1;
	void *data = ctx_data(ctx, xdp);
	void *data_end = ctx_data_end(ctx, xdp);
	if (data + WGMUX_BENCH_HDR > data_end)
		return -1;
	__u64 *p = data;
#pragma unroll
	for (int i = 0; i < WGMUX_BENCH_HDR / 8; i++)
		p[i] = h->w[i];
	struct bench_spread *sp = bench_spread.lookup(&zero);
	if (sp && sp->n) {
		__u32 i = sp->next;
		sp->next = i + 1 < sp->n ? i + 1 : 0;
		__u32 off = sp->off & (WGMUX_BENCH_HDR - 1);
		if (data + off + 4 > data_end || off + 4 > WGMUX_BENCH_HDR)
			return -1;
		*(__u32 *)(data + off) = sp->base + i;
	}
	return 0;
}

int wgmux_bench(struct __sk_buff *skb)
{
	if (bench_restore(skb, 0))
		return TC_ACT_SHOT;
	return wgmux_process(skb, 0);
}

int wgmux_bench_base(struct __sk_buff *skb)
{
	if (bench_restore(skb, 0))
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}

int wgmux_bench_xdp(struct xdp_md *ctx)
{
	if (bench_restore(ctx, 1))
		return XDP_ABORTED;
	return wgmux_process(ctx, 1);
}

int wgmux_bench_xdp_base(struct xdp_md *ctx)
{
	if (bench_restore(ctx, 1))
		return XDP_ABORTED;
	return XDP_PASS;
}
#endif
#endif /* WGMUX_MAPS_ONLY */
