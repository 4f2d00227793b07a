"""Parsing what WireGuard tools print (no device needed)."""

import pytest

from wgmux.discovery import parse_endpoint


@pytest.mark.parametrize("text,expected", [
    ("198.18.0.1:51820", ("198.18.0.1", 51820)),
    ("[2001:db8::1]:443", ("2001:db8::1", 443)),
    ("[fe80::1%eth0]:5", ("fe80::1", 5)),
    ("(none)", None),
    ("", None),
])
def test_parse_endpoint(text, expected):
    assert parse_endpoint(text) == expected


# ---- `wg show <dev> dump` / `awg show <dev> dump` ------------------------------

from wgmux.discovery import GENL_FAMILY, netlink_class, parse_dump  # noqa: E402

PRIV = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
PUB = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="
PEER1 = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
PEER2 = "TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0="
PEERS = (
    f"{PEER1}\t(none)\t198.18.0.1:51820\t10.99.1.1/32\t1700000000\t1234\t5678\toff\n"
    f"{PEER2}\t(none)\t[2001:db8::2]:40000\t10.99.2.1/32,fd00::2/128\t0\t0\t0\t25\n"
    f"{PUB}\t(none)\t(none)\t(none)\t0\t0\t0\toff\n"
)

WG_DUMP = f"{PRIV}\t{PUB}\t51820\toff\n" + PEERS
# amneziawg-tools 1.0: Jc Jmin Jmax S1 S2 H1 H2 H3 H4 before fwmark
AWG10_DUMP = (f"{PRIV}\t{PUB}\t51820\t4\t40\t70\t15\t40\t1122334455\t2233445566\t3344556677"
              f"\t4055667788\toff\n" + PEERS)
# 2.0: S3 S4, header ranges, I1-I5 ("(null)" when unset; values with spaces)
AWG20_DUMP = (f"{PRIV}\t{PUB}\t51821\t3\t64\t200\t23\t41\t9\t12\t100000-100999"
              f"\t200000-299999\t3000000000-3000065535\t400000-4000000"
              f"\t<b 0xc0ffee00><r 32><rc 8>\t(null)\t(null)\t(null)\t(null)\t0xca6c\n" + PEERS)
# 3.x prints still more (header protection key, timers...) before fwmark
AWG3X_DUMP = (f"{PRIV}\t{PUB}\t443\t3\t64\t200\t23\t41\t9\t12\t100000-100999\t200000-299999"
              f"\t3000000000-3000065535\t400000-4000000\t(null)\t(null)\t(null)\t(null)\t(null)"
              f"\t(none)\t\t\t\t\t\t\toff\n" + PEERS)


@pytest.mark.parametrize("text,port,source", [
    (WG_DUMP, 51820, "wg"),
    (AWG10_DUMP, 51820, "awg"),
    (AWG20_DUMP, 51821, "awg"),
    (AWG3X_DUMP, 443, "awg"),
], ids=["wg", "awg-1.0", "awg-2.0", "awg-3.x"])
def test_parse_dump(text, port, source):
    info = parse_dump(text, "wg0", source)
    assert info.name == "wg0" and info.source == source
    assert info.listen_port == port
    assert info.public_key == PUB
    assert set(info.peers) == {PEER1, PEER2, PUB}
    p1, p2, p3 = info.peers[PEER1], info.peers[PEER2], info.peers[PUB]
    assert p1.endpoint == ("198.18.0.1", 51820)
    assert (p1.latest_handshake, p1.rx_bytes, p1.tx_bytes) == (1700000000, 1234, 5678)
    assert p2.endpoint == ("2001:db8::2", 40000) and p2.latest_handshake == 0
    assert p3.endpoint is None


def test_parse_dump_interface_without_keys():
    info = parse_dump("(none)\t(none)\t0\t0\t0\t0\t0\t0\t1\t2\t3\t4\toff\n", "awg0", "awg")
    assert info.public_key is None and info.listen_port == 0 and info.peers == {}


@pytest.mark.parametrize("text", ["", "\n", "garbage\n", f"{PRIV}\t{PUB}\tnot-a-port\toff\n"])
def test_parse_dump_rejects_garbage(text):
    with pytest.raises(ValueError):
        parse_dump(text, "wg0")


def test_netlink_families():
    """WgUtil = "awg" asks the kernel for the "amneziawg" family; pyroute2's
    WireGuard class is reused, bound to that name."""
    from pyroute2 import WireGuard

    assert GENL_FAMILY == {"wg": "wireguard", "awg": "amneziawg"}
    assert netlink_class("wireguard") is WireGuard
    awg = netlink_class("amneziawg")
    assert issubclass(awg, WireGuard) and awg is netlink_class("amneziawg")
    assert awg.genl_family == "amneziawg"


def test_netlink_class_binds_its_family(monkeypatch):
    """The subclass really asks for "amneziawg" (none is registered here, so
    the kernel's answer is an error; what matters is the name asked for)."""
    from wgmux import discovery

    cls = discovery.netlink_class("amneziawg")
    asked = []
    orig = cls.async_class.bind

    async def bind(self, proto, *args, **kwargs):
        asked.append(proto)
        return await orig(self, proto, *args, **kwargs)

    monkeypatch.setattr(cls.async_class, "bind", bind)
    try:
        discovery.read_netlink("nlnope0", "amneziawg")
    except Exception:
        pass
    assert asked == ["amneziawg"]
