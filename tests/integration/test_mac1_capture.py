"""mac1 against real WireGuard: two peers in a fresh lab do handshakes both
ways; every captured initiation verifies against the responder's public key
and not the initiator's, every response against the initiator's key.

Run as a script, this file also (re)writes the unit-test vectors from such a
capture (they hold public keys and captured bytes only):

    .venv/bin/python tests/integration/test_mac1_capture.py --write-vectors
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # for the script form; conftest does it under pytest
    sys.path.insert(0, str(ROOT))

from netlab import Lab, wait_for  # noqa: E402
from netlab.capture import Capture  # noqa: E402
from netlab.traffic import ping  # noqa: E402
from netlab.wireguard import WireGuard, genkey  # noqa: E402
from wgmux.mac1 import find_receiver, mac1_key, mac1_keys, verify_mac1  # noqa: E402
from wgmux.wire import Initiation, Response, parse_message  # noqa: E402

pytestmark = pytest.mark.netlab

PORT = 51820
A_IP, B_IP = "10.0.0.1", "10.0.0.2"
A_TUN, B_TUN = "10.9.0.1", "10.9.0.2"
VECTORS = ROOT / "tests" / "unit" / "vectors" / "mac1.json"


def handshakes_both_ways(lab: Lab, implementation=None):
    """a initiates to b, then b (after forgetting a) initiates to a.
    Returns (wa, wb, captured UDP packets on a's eth0)."""
    a, b = lab.add_node("a"), lab.add_node("b")
    lab.link(a, "eth0", b, "eth0", f"{A_IP}/24", f"{B_IP}/24")
    wa = WireGuard.create(a, "mac1a", PORT, f"{A_TUN}/24", implementation=implementation)
    wb = WireGuard.create(b, "mac1b", PORT, f"{B_TUN}/24", implementation=implementation)
    wa.set_peer(wb.public_key, endpoint=f"{B_IP}:{PORT}", allowed_ips=[f"{B_TUN}/32"])
    wb.set_peer(wa.public_key, endpoint=f"{A_IP}:{PORT}", allowed_ips=[f"{A_TUN}/32"])

    def response_from(src_ip):
        return lambda p: p.src == src_ip and isinstance(parse_message(p.payload), Response)

    with Capture(a, "eth0", f"udp port {PORT}") as cap:
        # 1. a -> b: initiation from a, response from b.
        wait_for(lambda: ping(a, B_TUN), timeout=20, what="ping a -> b over WireGuard")
        cap.wait_for(response_from(B_IP), what="b's handshake response")
        # 2. b forgets its session with a; its next packet starts a handshake.
        wb.remove_peer(wa.public_key)
        wb.set_peer(wa.public_key, endpoint=f"{A_IP}:{PORT}", allowed_ips=[f"{A_TUN}/32"])
        wait_for(lambda: ping(b, A_TUN), timeout=20, what="ping b -> a over WireGuard")
        cap.wait_for(response_from(A_IP), what="a's handshake response")
    return wa, wb, cap.packets


def handshake_messages(packets):
    """(src ip, parsed message) of every initiation and response captured."""
    out = []
    for p in packets:
        msg = parse_message(p.payload) if p.udp else None
        if isinstance(msg, (Initiation, Response)):
            out.append((p.src, msg))
    return out


def test_captured_handshakes_verify_with_the_receivers_key_only(lab):
    wa, wb, packets = handshakes_both_ways(lab)
    key_a, key_b = mac1_key(wa.public_key), mac1_key(wb.public_key)
    # The peer each message is addressed to, by the address it came from.
    receiver_key = {A_IP: key_b, B_IP: key_a}
    sender_key = {A_IP: key_a, B_IP: key_b}
    names = {A_IP: "b", B_IP: "a"}
    stranger_public = genkey()[1]
    known = mac1_keys({"a": wa.public_key, "b": wb.public_key, "stranger": stranger_public})

    messages = handshake_messages(packets)
    seen = {(src, type(m).__name__) for src, m in messages}
    assert seen == {(A_IP, "Initiation"), (A_IP, "Response"),
                    (B_IP, "Initiation"), (B_IP, "Response")}, (
        f"expected initiations and responses both ways ({wa.implementation}), got {sorted(seen)}")
    for src, msg in messages:
        what = f"{type(msg).__name__} from {src} ({wa.implementation})"
        assert verify_mac1(msg.raw, receiver_key[src]), f"{what}: mac1 invalid for its receiver"
        assert not verify_mac1(msg.raw, sender_key[src]), f"{what}: mac1 valid for its sender"
        assert not verify_mac1(msg.raw, mac1_key(stranger_public)), what
        assert find_receiver(msg.raw, known) == names[src], what


# ---- vector generation (run by hand, see the module docstring) -----------

def write_vectors(path: Path = VECTORS):
    implementation = "wireguard-go"
    version = subprocess.run(["wireguard-go", "--version"], capture_output=True,
                             text=True).stdout.splitlines()[0].strip()
    with Lab() as lab:
        wa, wb, packets = handshakes_both_ways(lab, implementation=implementation)
    messages = handshake_messages(packets)
    initiation = next(m for src, m in messages if src == A_IP and isinstance(m, Initiation))
    response = next(m for src, m in messages if src == B_IP and isinstance(m, Response))
    assert response.receiver == initiation.sender, "response does not answer this initiation"
    data = {
        "source": (
            f"Captured with tcpdump in a netlab lab: two {version} peers (a, b) on a veth "
            f"link, a pinged b over the tunnel, a initiated. Written by "
            f"`.venv/bin/python tests/integration/test_mac1_capture.py --write-vectors`. "
            f"Keys were fresh random test keys; only the public keys are kept."),
        "implementation": version,
        "initiator_public_key": wa.public_key,
        "responder_public_key": wb.public_key,
        "initiation": {
            "note": "a -> b, mac1 keyed with responder_public_key",
            "hex": initiation.raw.hex(),
        },
        "response": {
            "note": "b -> a, answers the initiation above, mac1 keyed with initiator_public_key",
            "hex": response.raw.hex(),
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write-vectors"]:
        sys.exit(f"usage: {sys.argv[0]} --write-vectors")
    write_vectors()
