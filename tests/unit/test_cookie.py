"""wgmux.cookie: cookie replies made on a responder's behalf, and mac2.

The initiator's side of the exchange (decrypting a reply, adding mac2) is
only needed to test the hub's side, so it lives here, not in wgmux:
`consume_reply` and `with_mac2`, written from the whitepaper (§5.4.7) the
way wireguard-go's CookieGenerator does it.  The real-peer proof is
tests/integration/test_cookie_wireguard_go.py.
"""

import base64
import hashlib
import itertools
import json
import os
import struct
from pathlib import Path

import pytest
from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
)
from nacl.exceptions import CryptoError

from wgmux import cookie as ck
from wgmux.cookie import COOKIE_SECRET_MAX_AGE, CookieSecret, source_bytes
from harness.golden import AWG1, AWG2, AWG3
from wgmux.mac1 import cookie_key, mac, mac1_key, message_mac1, verify_mac1, with_mac1
from wgmux.wire import (
    WG_COOKIE_SIZE, WG_INITIATION_OFF_MAC2, WIREGUARD, Classifier, Cookie, MessageType,
    build_initiation, parse_message,
)

VECTORS = json.loads((Path(__file__).parent / "vectors" / "mac1.json").read_text())
R_PUB = VECTORS["responder_public_key"]
I_PUB = VECTORS["initiator_public_key"]
CAPTURED = bytes.fromhex(VECTORS["initiation"]["hex"])   # a real wireguard-go initiation
SRC = ("192.0.2.10", 40001)


# ---- the initiator's side (test-only) ------------------------------------

def consume_reply(payload: bytes, responder_public_key, mac1_sent: bytes,
                  classifier: Classifier = WIREGUARD) -> bytes:
    """The cookie inside a cookie reply, as the initiator gets it: decrypted
    with HASH("cookie--" || responder's public key) and the mac1 it sent as
    additional data.  Raises CryptoError if either is not the right one."""
    msg = parse_message(payload, classifier)
    assert isinstance(msg, Cookie), f"not a cookie reply for {classifier}: {payload.hex()}"
    return crypto_aead_xchacha20poly1305_ietf_decrypt(
        msg.cookie, mac1_sent, msg.nonce, cookie_key(responder_public_key))


def with_mac2(initiation: bytes, cookie: bytes) -> bytes:
    """`initiation` (prefix stripped) with mac2 = MAC(cookie, msg[:mac2])."""
    covered = initiation[:WG_INITIATION_OFF_MAC2]
    return covered + mac(cookie, covered)


def initiation(sender: int = 0x11223344, header: int = 1, key=R_PUB) -> bytes:
    """A fresh initiation (random fields) with a valid mac1 for `key`."""
    msg = build_initiation(sender, header=header, ephemeral=os.urandom(32),
                           static=os.urandom(48), timestamp=os.urandom(28))
    return with_mac1(msg, mac1_key(key))


class FakeClock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def counting_urandom():
    """Deterministic, distinct "random" bytes."""
    counter = itertools.count(1)
    return lambda n: (next(counter).to_bytes(8, "little") * (n // 8 + 1))[:n]


# ---- the primitive ---------------------------------------------------------

def test_xchacha20poly1305_is_the_drafts():
    """draft-irtf-cfrg-xchacha-03, A.3.1: pins the AEAD PyNaCl gives us."""
    plaintext = (b"Ladies and Gentlemen of the class of '99: If I could offer you only one "
                 b"tip for the future, sunscreen would be it.")
    aad = bytes.fromhex("50515253c0c1c2c3c4c5c6c7")
    key = bytes(range(0x80, 0xA0))
    nonce = bytes(range(0x40, 0x58))
    expected = bytes.fromhex(
        "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb"
        "731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452"
        "2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9"
        "21f9664c97637da9768812f615c68b13b52e"
        "c0875924c1c7987947deafd8780acf49")
    assert crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, aad, nonce, key) == expected


def test_cookie_key_is_the_whitepapers():
    raw = base64.b64decode(R_PUB)
    assert cookie_key(R_PUB) == hashlib.blake2s(b"cookie--" + raw).digest()
    assert cookie_key(raw) == cookie_key(R_PUB) != mac1_key(R_PUB)


def test_cookie_is_mac_of_packed_address_and_big_endian_port():
    secret = CookieSecret(urandom=lambda n: b"\x07" * n)
    expected = mac(b"\x07" * 32, bytes([192, 0, 2, 10]) + b"\x9c\x41")   # 40001 = 0x9c41
    assert secret.cookie(*SRC) == expected and len(expected) == 16
    assert source_bytes("2001:db8::1", 1) == bytes.fromhex("20010db8" + "00" * 11 + "01" + "0001")


# ---- the reply -------------------------------------------------------------

@pytest.mark.parametrize("message", ["captured", "built"])
def test_reply_round_trip(message):
    msg = CAPTURED if message == "captured" else initiation()
    assert verify_mac1(msg, mac1_key(R_PUB))
    secret = CookieSecret()
    payload = secret.reply(msg, R_PUB, *SRC)
    parsed = parse_message(payload)
    assert len(payload) == WG_COOKIE_SIZE and isinstance(parsed, Cookie)
    assert parsed.header == 3
    assert parsed.receiver == parse_message(msg).sender
    cookie = consume_reply(payload, R_PUB, message_mac1(msg))
    assert cookie == secret.cookie(*SRC)
    # the initiator's next initiation carries a mac2 the hub accepts
    assert secret.mac2_valid(with_mac2(initiation(), cookie), *SRC)


def test_reply_does_not_open_with_another_key_or_another_mac1():
    msg = initiation()
    payload = CookieSecret().reply(msg, R_PUB, *SRC)
    with pytest.raises(CryptoError):
        consume_reply(payload, I_PUB, message_mac1(msg))
    with pytest.raises(CryptoError):
        consume_reply(payload, R_PUB, message_mac1(initiation()))
    tampered = payload[:-1] + bytes([payload[-1] ^ 1])
    with pytest.raises(CryptoError):
        consume_reply(tampered, R_PUB, message_mac1(msg))


def test_each_reply_has_a_fresh_nonce():
    secret, msg = CookieSecret(), initiation()
    a, b = (parse_message(secret.reply(msg, R_PUB, *SRC)) for _ in range(2))
    assert a.nonce != b.nonce and a.cookie != b.cookie


def test_reply_key_may_be_raw_bytes():
    msg = initiation()
    payload = CookieSecret().reply(msg, base64.b64decode(R_PUB), *SRC)
    consume_reply(payload, R_PUB, message_mac1(msg))


# ---- mac2 ------------------------------------------------------------------

def _mac2_for(secret, ip, port, msg=None):
    return with_mac2(msg or initiation(), secret.cookie(ip, port))


def test_mac2_valid_only_for_the_same_source():
    secret = CookieSecret()
    msg = _mac2_for(secret, *SRC)
    assert secret.mac2_valid(msg, *SRC)
    assert secret.mac2_valid(msg, "::ffff:192.0.2.10", SRC[1])     # the same IPv4 source
    assert not secret.mac2_valid(msg, SRC[0], SRC[1] + 1)
    assert not secret.mac2_valid(msg, "192.0.2.11", SRC[1])
    assert not secret.mac2_valid(msg, "2001:db8::c000:20a", SRC[1])
    assert not CookieSecret().mac2_valid(msg, *SRC)                # another hub's secret


def test_mac2_ipv6_source():
    secret = CookieSecret()
    msg = _mac2_for(secret, "2001:db8::7", 51820)
    assert secret.mac2_valid(msg, "2001:db8::7", 51820)
    assert not secret.mac2_valid(msg, "2001:db8::8", 51820)
    assert not secret.mac2_valid(msg, "2001:db8::7", 51821)


def test_mac2_covers_the_message():
    secret = CookieSecret()
    msg = _mac2_for(secret, *SRC)
    for i in (0, 4, 8, 100, WG_INITIATION_OFF_MAC2 - 1, WG_INITIATION_OFF_MAC2):
        flipped = msg[:i] + bytes([msg[i] ^ 0x80]) + msg[i + 1:]
        assert not secret.mac2_valid(flipped, *SRC), i


def test_zero_mac2_is_never_valid():
    secret = CookieSecret()
    msg = initiation()
    assert msg[WG_INITIATION_OFF_MAC2:] == bytes(16)
    assert not secret.mac2_valid(msg, *SRC)
    assert not secret.mac2_valid(CAPTURED, *SRC)


def test_mac2_across_rotations():
    clock = FakeClock()
    secret = CookieSecret(clock=clock, urandom=counting_urandom())
    msg = _mac2_for(secret, *SRC)
    first = secret.cookie(*SRC)
    clock.now += COOKIE_SECRET_MAX_AGE - 0.001
    assert secret.mac2_valid(msg, *SRC) and secret.cookie(*SRC) == first
    clock.now += 0.001                                   # one rotation: previous secret
    assert secret.cookie(*SRC) != first
    assert secret.mac2_valid(msg, *SRC)
    late = _mac2_for(secret, *SRC)                        # made under the new secret
    clock.now += COOKIE_SECRET_MAX_AGE                   # two rotations
    assert not secret.mac2_valid(msg, *SRC)
    assert secret.mac2_valid(late, *SRC)
    clock.now += COOKIE_SECRET_MAX_AGE
    assert not secret.mac2_valid(late, *SRC)


def test_rotation_periods_are_fixed_and_an_idle_period_drops_the_previous():
    clock = FakeClock(0.0)
    secret = CookieSecret(clock=clock, urandom=counting_urandom())
    clock.now = 119.0
    msg = _mac2_for(secret, *SRC)                         # made late in the first period
    clock.now = 239.0                                    # 120 s later: still the previous
    assert secret.mac2_valid(msg, *SRC)
    clock.now = 240.0                                    # the period it was made in is two back
    assert not secret.mac2_valid(msg, *SRC)
    msg = _mac2_for(secret, *SRC)
    clock.now = 240.0 + 2 * COOKIE_SECRET_MAX_AGE + 5     # two periods at once, unused
    assert not secret.mac2_valid(msg, *SRC)


def test_every_secret_is_fresh():
    clock, seen = FakeClock(), []

    def urandom(n):
        data = os.urandom(n)
        seen.append(data)
        return data

    secret = CookieSecret(clock=clock, urandom=urandom)
    cookies = set()
    for _ in range(3):
        cookies.add(secret.cookie(*SRC))
        clock.now += COOKIE_SECRET_MAX_AGE
    assert len(cookies) == 3 and [len(s) for s in seen] == [32, 32, 32]


# ---- AmneziaWG framing ------------------------------------------------------

@pytest.mark.parametrize("classifier", [AWG1, AWG2, AWG3], ids=["awg1", "awg2", "awg3"])
def test_amneziawg_reply(classifier):
    spec = classifier.spec(MessageType.COOKIE)
    h1 = classifier.spec(MessageType.INITIATION).lo
    msg = initiation(header=h1)          # as received: prefix stripped, H1 in the type field
    secret = CookieSecret()
    for _ in range(20):
        payload = secret.reply(msg, R_PUB, *SRC, classifier=classifier)
        assert len(payload) == spec.prefix + WG_COOKIE_SIZE
        assert classifier.classify(payload) == (MessageType.COOKIE, spec.prefix)
        (header,) = struct.unpack_from("<I", payload, spec.prefix)
        assert spec.lo <= header <= spec.hi
        assert WIREGUARD.classify(payload)[0] is None
        assert consume_reply(payload, R_PUB, message_mac1(msg), classifier) == secret.cookie(*SRC)
    assert secret.mac2_valid(with_mac2(msg, secret.cookie(*SRC)), *SRC)


def test_amneziawg_prefix_and_header_come_from_urandom():
    lo, hi = AWG3.headers[MessageType.COOKIE]
    prefix_len = AWG3.prefixes[MessageType.COOKIE]
    queue = []

    def urandom(n):
        return queue.pop(0) if queue else bytes(n)

    secret = CookieSecret(urandom=urandom)
    for draw, header in ((0, lo), (hi - lo, hi), ((hi - lo + 1) * 7 + 3, lo + 3)):
        queue[:] = [b"N" * 24, draw.to_bytes(8, "little"), b"P" * prefix_len]
        payload = secret.reply(initiation(), R_PUB, *SRC, classifier=AWG3)
        assert payload[:prefix_len] == b"P" * prefix_len
        assert struct.unpack_from("<I", payload, prefix_len)[0] == header
        assert parse_message(payload, AWG3).nonce == b"N" * 24


# ---- errors ----------------------------------------------------------------

def test_errors_name_the_problem():
    secret = CookieSecret()
    msg = initiation()
    prefixed = os.urandom(17) + msg
    for call in (lambda: secret.reply(prefixed, R_PUB, *SRC),
                 lambda: secret.mac2_valid(prefixed, *SRC),
                 lambda: secret.reply(msg[:92], R_PUB, *SRC)):
        with pytest.raises(ValueError, match="not a WireGuard initiation"):
            call()
    with pytest.raises(ValueError, match="not valid base64"):
        secret.reply(msg, "not a key!", *SRC)
    with pytest.raises(ValueError, match="decodes to 16 bytes"):
        secret.reply(msg, base64.b64encode(bytes(16)).decode(), *SRC)
    with pytest.raises(ValueError, match="source port 65536"):
        secret.cookie(SRC[0], 65536)
    with pytest.raises(ValueError, match="source port -1"):
        secret.mac2_valid(msg, SRC[0], -1)
    with pytest.raises(ValueError, match="source address '192.0.2'"):
        secret.cookie("192.0.2", 1)
    with pytest.raises(ValueError, match="source address"):
        secret.reply(msg, R_PUB, b"\x01\x02\x03", 1)
    with pytest.raises(ValueError, match="max age"):
        CookieSecret(max_age=0)
    with pytest.raises(ValueError, match="returned 3 bytes"):
        CookieSecret(urandom=lambda n: b"abc")


def test_module_constants():
    assert ck.COOKIE_SECRET_MAX_AGE == 120.0 and ck.COOKIE_SIZE == 16
