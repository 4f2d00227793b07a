"""netlab's AmneziaWG adapter, the conversion part (no I/O): WireGuard
datagrams to AmneziaWG 1.0/2.0 and back, junk, I-packets, mac1, and the IP
packets it reads from its TUN.  mac1 is checked with wgmux.mac1, the
daemon's implementation: what the adapter puts on the wire must be what the
hub's slow path will verify."""

import base64
import random
import struct

import pytest

from netlab.amnezia.adapter import INNER_V4, INNER_V6, _Keys, _udp_from_tun
from netlab.amnezia.codec import Codec, render_special
from netlab.amnezia.params import AwgParams, parse_special
from wgmux import config, mac1, packet, wire

R_KEY = bytes(range(32))                 # the receiver's public key (raw)
OTHER_KEY = bytes(range(1, 33))
I1 = "<b 0xc0ffee00><r 32><rc 8><rd 4><t>"

AWG10 = AwgParams.of(dict(jc=4, jmin=40, jmax=70, s1=15, s2=40, h1=1122334455,
                          h2=2233445566, h3=3344556677, h4=4055667788))
AWG20 = AwgParams.of(dict(jc=3, jmin=64, jmax=200, s1=23, s2=41, s3=9, s4=12,
                          h1="100000-100999", h2="200000-299999",
                          h3="3000000000-3000065535", h4="400000-4000000", i1=I1))
SETS = [AWG10, AWG20]
IDS = ["awg-1.0", "awg-2.0"]

rng = random.Random(5)


def codec(params, local=R_KEY, peers=(OTHER_KEY, R_KEY), seed=1):
    return Codec(params, lambda: local, lambda refresh: list(peers), random.Random(seed))


def wg_initiation(receiver_key=R_KEY, sender=0x11223344):
    m = wire.build_initiation(sender, ephemeral=rng.randbytes(32), static=rng.randbytes(48),
                              timestamp=rng.randbytes(28))
    return mac1.with_mac1(m, mac1.mac1_key(receiver_key))


def wg_response(receiver_key=R_KEY):
    m = wire.build_response(0xA1B2C3D4, 0x11223344, ephemeral=rng.randbytes(32),
                            empty=rng.randbytes(16))
    return mac1.with_mac1(m, mac1.mac1_key(receiver_key))


@pytest.mark.parametrize("params", SETS, ids=IDS)
@pytest.mark.parametrize("kind", ["initiation", "response"])
def test_handshake_round_trip_and_mac1_over_header(params, kind):
    m = wg_initiation() if kind == "initiation" else wg_response()
    k = wire.MessageType.INITIATION if kind == "initiation" else wire.MessageType.RESPONSE
    out = codec(params).encode(m)
    msg = out[-1]
    got, off = params.classifier.classify(msg)
    assert got is k and off == params.prefixes[k]
    body = msg[off:]
    lo, hi = params.headers[k]
    assert lo <= struct.unpack_from("<I", body)[0] <= hi
    assert wire.WIREGUARD.classify(msg)[0] is None, "still looks like plain WireGuard"
    # what the hub checks: mac1 over the message with H in the type field
    assert mac1.verify_mac1(body, mac1.mac1_key(R_KEY))
    # and the receiving adapter gives WireGuard back exactly what it sent
    assert codec(params).decode(msg) == m
    if k is wire.MessageType.INITIATION:
        assert len(out) == params.jc + len(params.specials) + 1
    else:
        assert len(out) == 1


@pytest.mark.parametrize("params", SETS, ids=IDS)
def test_transport_and_cookie_round_trip(params):
    c = codec(params)
    for m, k in ((wire.build_transport(0xA1B2C3D4, 9, rng.randbytes(100)),
                  wire.MessageType.TRANSPORT),
                 (wire.build_transport(0xA1B2C3D4, 10), wire.MessageType.TRANSPORT),  # keepalive
                 (wire.build_cookie(0x11223344, nonce=rng.randbytes(24),
                                    cookie=rng.randbytes(32)), wire.MessageType.COOKIE)):
        (out,) = c.encode(m)
        assert len(out) == len(m) + params.prefixes[k]
        assert params.classifier.classify(out) == (k, params.prefixes[k])
        assert out[params.prefixes[k] + 4:] == m[4:]          # only the header changed
        assert codec(params).decode(out) == m


def test_headers_are_drawn_from_the_whole_range():
    c = codec(AWG20)
    seen = set()
    for i in range(400):
        (out,) = c.encode(wire.build_transport(1, i))
        seen.add(struct.unpack_from("<I", out, AWG20.s4)[0])
    lo, hi = AWG20.h4
    assert all(lo <= h <= hi for h in seen) and len(seen) > 390


@pytest.mark.parametrize("params", SETS, ids=IDS)
def test_junk_sizes_cover_jmin_to_jmax_exclusive(params):
    c = codec(params)
    sizes = [len(j) for _ in range(3000) for j in c.junk()]
    assert len(sizes) == 3000 * params.jc
    assert set(sizes) == set(range(params.jmin, params.jmax))


def test_initiation_sequence_specials_then_junk_then_message():
    c = codec(AWG20)
    out = c.encode(wg_initiation())
    special, junk, msg = out[0], out[1:-1], out[-1]
    assert special.startswith(bytes.fromhex("c0ffee00")) and len(special) == 4 + 32 + 8 + 4 + 4
    assert len(junk) == AWG20.jc and all(AWG20.jmin <= len(j) < AWG20.jmax for j in junk)
    assert AWG20.classifier.classify(msg)[0] is wire.MessageType.INITIATION
    assert c.stats["tx_special"] == 1 and c.stats["tx_junk"] == 3


@pytest.mark.parametrize("params", SETS, ids=IDS)
def test_decode_drops_junk_specials_plain_wireguard_and_foreign_handshakes(params):
    c = codec(params)
    for j in c.junk() + c.special_packets():
        if params.classifier.classify(j)[0] is None:
            assert c.decode(j) is None
    assert c.decode(wg_initiation()) is None           # plain WireGuard is junk to AWG
    assert c.decode(wire.build_transport(1, 1)) is None
    # an initiation for somebody else (mac1 keyed with another key)
    foreign = codec(params).encode(wg_initiation(receiver_key=OTHER_KEY))[-1]
    assert codec(params, peers=(OTHER_KEY,)).decode(foreign) is None
    assert c.stats["rx_junk_dropped"] >= 2
    assert codec(params, local=OTHER_KEY).decode(foreign) is not None


def test_unknown_receiver_is_counted_not_fatal():
    c = codec(AWG10, peers=())
    out = c.encode(wg_initiation())
    assert AWG10.classifier.classify(out[-1])[0] is wire.MessageType.INITIATION
    assert c.stats["tx_mac1_receiver_unknown"] == 1


def test_special_tags():
    items = parse_special("<b 0xc0ffee> <r 4><rc 3><rd 2><t><c>")
    out = render_special(items, random.Random(1), counter=7, now=0x01020304)
    assert len(out) == 3 + 4 + 3 + 2 + 4 + 4
    assert out[:3] == b"\xc0\xff\xee"
    assert out[7:10].isalpha() and out[10:12].isdigit()
    assert out[12:16] == b"\x01\x02\x03\x04" and out[16:] == b"\0\0\0\x07"
    for bad in ("", "text", "<x 1>", "<b c0ffee>", "<r>", "<t 1>", "<b 0xzz>", "<d>",
                "<r 4> trailing"):
        with pytest.raises(ValueError):
            parse_special(bad)
    with pytest.raises(ValueError):
        AwgParams.of(dict(i1="<ds>"))


def test_params_from_wgmux_config_and_back():
    """The test sets go through wgmux's validation; settings() writes them
    back in AmneziaWG's spelling, which wgmux parses to the same values."""
    import json

    def toml(key, value):
        return value if value.isdigit() else json.dumps(value)

    text = ("[Interface]\nDevice = \"wg0\"\nHubPort = 51820\nInterface = \"eth0\"\n"
            + "".join(f"{k} = {toml(k, v)}\n" for k, v in AWG20.settings().items()))
    parsed = config.parse(text).amnezia
    assert parsed.version == "2.0"
    assert AwgParams.of(parsed) == AWG20
    assert AWG20.awg_set_args()[:2] == ["jc", "3"] and "i1" in AWG20.awg_set_args()
    assert AwgParams.from_json(AWG10.to_json()) == AWG10
    assert AwgParams.of(object()) == AwgParams()      # nothing set: plain WireGuard


@pytest.mark.parametrize("src,dst", [("198.18.0.254", INNER_V4), ("2001:db8::1", INNER_V6)])
def test_tun_packets_carry_whole_udp_datagrams_only(src, dst):
    payload = rng.randbytes(333)
    frame = _udp_from_tun(packet.udp_packet((dst, 51821), (src, 51820), payload))
    assert (str(frame.dst), frame.dport, frame.payload) == (src, 51820, payload)
    if ":" not in dst:
        first = packet.udp_packet((dst, 51821), (src, 51820), payload, flags=packet.IP_MF,
                                  tot_len=100)[:100]
        assert _udp_from_tun(first) is None, "a first fragment"
    assert _udp_from_tun(b"") is None and _udp_from_tun(b"\x45" + bytes(10)) is None
    tcp = packet.ipv4(INNER_V4, "198.18.0.254", bytes(20), proto=packet.IPPROTO_TCP)
    assert _udp_from_tun(tcp) is None


def test_key_helpers_accept_wg_base64():
    assert _Keys._raw(base64.b64encode(R_KEY).decode()) == R_KEY
    assert _Keys._raw("not base64!") is None
