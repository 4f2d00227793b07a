/* SPDX-License-Identifier: MIT */
/*
 * WireGuard / AmneziaWG message layout as the datapath sees it.
 *
 * This is the only C description of the wire format; wgmux/wire.py is the
 * only Python one, and tests/unit/test_datapath.py checks that every
 * WG_* define below has the same value there, so the two cannot drift.
 *
 * Offsets are relative to the start of the WireGuard message, i.e. after an
 * AmneziaWG prefix of S1..S4 random bytes.  All multi-byte fields of the
 * message (type/header, indices, counter) are little-endian.
 */
#ifndef WGMUX_WIRE_H
#define WGMUX_WIRE_H

/* Message types of plain WireGuard: the u32 at offset 0 ("type" plus three
 * reserved zero bytes).  AmneziaWG replaces them with H1..H4 (values or
 * ranges), which is why the datapath never compares against these directly:
 * they only seed the default classifier. */
#define WG_MSG_INITIATION 1
#define WG_MSG_RESPONSE 2
#define WG_MSG_COOKIE 3
#define WG_MSG_TRANSPORT 4

/* Classifier slots, in the order the datapath tries them: the three exact
 * sizes first, transport (open-ended size) last, as amneziawg-go does. */
#define WG_CLASS_INITIATION 0
#define WG_CLASS_RESPONSE 1
#define WG_CLASS_COOKIE 2
#define WG_CLASS_TRANSPORT 3
#define WG_NUM_CLASSES 4

#define WG_INITIATION_SIZE 148
#define WG_RESPONSE_SIZE 92
#define WG_COOKIE_SIZE 64
/* header (16) + AEAD tag (16): an empty transport message is a keepalive */
#define WG_TRANSPORT_MIN_SIZE 32
#define WG_TRANSPORT_HEADER_SIZE 16

#define WG_KEY_SIZE 32
#define WG_MAC_SIZE 16
#define WG_TAG_SIZE 16

#define WG_OFF_TYPE 0

/* initiation: type sender ephemeral(32) static(32+16) timestamp(12+16) mac1 mac2 */
#define WG_INITIATION_OFF_SENDER 4
#define WG_INITIATION_OFF_EPHEMERAL 8
#define WG_INITIATION_OFF_STATIC 40
#define WG_INITIATION_OFF_TIMESTAMP 88
#define WG_INITIATION_OFF_MAC1 116
#define WG_INITIATION_OFF_MAC2 132

/* response: type sender receiver ephemeral(32) empty(0+16) mac1 mac2 */
#define WG_RESPONSE_OFF_SENDER 4
#define WG_RESPONSE_OFF_RECEIVER 8
#define WG_RESPONSE_OFF_EPHEMERAL 12
#define WG_RESPONSE_OFF_EMPTY 44
#define WG_RESPONSE_OFF_MAC1 60
#define WG_RESPONSE_OFF_MAC2 76

/* cookie reply: type receiver nonce(24) cookie(16+16) */
#define WG_COOKIE_OFF_RECEIVER 4
#define WG_COOKIE_OFF_NONCE 8
#define WG_COOKIE_OFF_COOKIE 32

/* transport: type receiver counter(8) data(n+16) */
#define WG_TRANSPORT_OFF_RECEIVER 4
#define WG_TRANSPORT_OFF_COUNTER 8
#define WG_TRANSPORT_OFF_DATA 16

/* Bytes of a classified message the datapath reads: header, sender and
 * receiver index of a response (the widest case). */
#define WG_PEEK_SIZE 12

/* Largest AmneziaWG prefix the datapath accepts.  awg limits S1/S2 so that
 * the padded handshake stays within 1280 bytes (S1 <= 1132, S2 <= 1188);
 * the verifier needs some bound on the variable offset, and this one is
 * both safe and generous. */
#define WG_MAX_PREFIX 1280

/* One classifier slot: a message of this class is `prefix + size` bytes
 * (at least that, for transport) with a little-endian u32 in [lo, hi] at
 * offset `prefix`.  Plain WireGuard: prefix 0, lo == hi == type. */
struct wg_class {
	__u32 lo;
	__u32 hi;
	__u16 prefix;
	__u16 _pad;
};

#endif /* WGMUX_WIRE_H */
