"""wgmux.cookie against a real initiator: wireguard-go takes the hub's
cookie reply for its peer R's and puts a valid mac2 into its next
initiation.

The test plays R's impostor hub: a wireguard-go interface on node `peer`
has one peer, R (a fresh key pair; only its public key is used), whose
Endpoint is a plain UDP socket on node `hub`.  A datagram into the tunnel
makes wireguard-go send initiations to that socket, every ~5 s
(REKEY_TIMEOUT plus jitter) while nobody answers them.
"""

import socket
import time

import pytest

from netlab.wireguard import WireGuard, genkey
from wgmux.cookie import CookieSecret
from wgmux.mac1 import mac1_key, verify_mac1
from wgmux.wire import WG_INITIATION_OFF_MAC2, WG_MAC_SIZE, Initiation, parse_message

pytestmark = pytest.mark.netlab

PORT = 51820
PEER_IP, HUB_IP = "10.0.0.1", "10.0.0.2"
PEER_TUN, R_TUN = "10.9.0.1", "10.9.0.2"
# wireguard-go resends an unanswered initiation after REKEY_TIMEOUT (5 s)
# plus up to 1/3 s of jitter; the first one may take as long.
NEXT_INITIATION = 12.0


class Impostor:
    """The socket R's Endpoint points at, and what it needs to answer."""

    def __init__(self, lab):
        peer, hub = lab.add_node("peer"), lab.add_node("hub")
        lab.link(peer, "eth0", hub, "eth0", f"{PEER_IP}/24", f"{HUB_IP}/24")
        with hub.entered():
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        lab.on_close(self.sock.close)
        self.sock.bind((HUB_IP, PORT))
        self.r_public = genkey()[1]
        self.wg = WireGuard.create(peer, "ck", PORT, f"{PEER_TUN}/24",
                                   implementation="wireguard-go")
        self.wg.set_peer(self.r_public, endpoint=f"{HUB_IP}:{PORT}",
                         allowed_ips=[f"{R_TUN}/32"])
        self.peer = peer
        self.secret = CookieSecret()

    def trigger(self):
        """One datagram into the tunnel: wireguard-go starts a handshake
        with R and keeps retrying it."""
        with self.peer.entered():
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with s:
            s.sendto(b"hello R", (R_TUN, 9))

    def next_initiation(self, timeout: float = NEXT_INITIATION):
        """(initiation, source) of the next initiation; polls with a deadline."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no initiation from {self.wg.implementation} "
                                   f"within {timeout:.0f}s")
            self.sock.settimeout(left)
            try:
                data, source = self.sock.recvfrom(2048)
            except socket.timeout:
                continue
            msg = parse_message(data)
            if isinstance(msg, Initiation):
                assert verify_mac1(msg.raw, mac1_key(self.r_public)), "mac1 not R's"
                return msg, source

    def answer(self, msg: Initiation, source, responder_public_key=None):
        payload = self.secret.reply(msg.raw, responder_public_key or self.r_public, *source)
        self.sock.sendto(payload, source)


def mac2_of(msg: Initiation) -> bytes:
    return msg.raw[WG_INITIATION_OFF_MAC2:WG_INITIATION_OFF_MAC2 + WG_MAC_SIZE]


def test_wireguard_go_adds_mac2_after_the_hubs_cookie_reply(lab):
    hub = Impostor(lab)
    hub.trigger()
    first, source = hub.next_initiation()
    assert source == (PEER_IP, PORT)
    assert mac2_of(first) == bytes(WG_MAC_SIZE)
    assert not hub.secret.mac2_valid(first.raw, *source)
    hub.answer(first, source)

    second, source2 = hub.next_initiation()
    assert source2 == source
    assert second.sender != first.sender, "not a new handshake"
    assert mac2_of(second) != bytes(WG_MAC_SIZE), (
        f"{hub.wg.implementation} did not take the cookie reply")
    assert hub.secret.mac2_valid(second.raw, *source)
    assert not hub.secret.mac2_valid(second.raw, source[0], source[1] + 1)
    assert not hub.secret.mac2_valid(second.raw, "10.0.0.3", source[1])
    assert not CookieSecret().mac2_valid(second.raw, *source)


def test_without_a_valid_cookie_reply_retries_carry_no_mac2(lab):
    hub = Impostor(lab)
    hub.trigger()
    first, source = hub.next_initiation()
    # no reply at all
    second, _ = hub.next_initiation()
    assert second.sender != first.sender, "not a retry"
    assert mac2_of(second) == bytes(WG_MAC_SIZE)
    assert not hub.secret.mac2_valid(second.raw, *source)
    # a reply encrypted for another peer's key: wireguard-go cannot open it
    hub.answer(second, source, responder_public_key=genkey()[1])
    third, _ = hub.next_initiation()
    assert mac2_of(third) == bytes(WG_MAC_SIZE)
    assert not hub.secret.mac2_valid(third.raw, *source)
