"""Endpoint discovery reads a real WireGuard device three ways, and they agree."""

import pytest

from netlab.wireguard import WireGuard, genkey, kernel_wireguard_available
from wgmux import discovery

pytestmark = pytest.mark.netlab


@pytest.fixture
def device(lab):
    node = lab.add_node("hub")
    wg = WireGuard.create(node, "d0", 51820, "10.9.0.1/24")
    keys = [genkey()[1] for _ in range(3)]
    wg.set_peer(keys[0], endpoint="198.18.0.7:40001", allowed_ips=["10.9.0.2/32"])
    wg.set_peer(keys[1], endpoint="[2001:db8::9]:40002", allowed_ips=["10.9.0.3/32"])
    wg.set_peer(keys[2], allowed_ips=["10.9.0.4/32"])
    return node, wg, keys


def expected(keys):
    return {keys[0]: ("198.18.0.7", 40001), keys[1]: ("2001:db8::9", 40002), keys[2]: None}


def test_uapi_socket(device):
    node, wg, keys = device
    if wg.implementation != "wireguard-go":
        pytest.skip("kernel WireGuard here: no UAPI socket")
    info = discovery.read_uapi(wg.name, discovery.socket_dir("wg") / f"{wg.name}.sock")
    assert info.listen_port == 51820 and info.source == "uapi"
    assert {k: p.endpoint for k, p in info.peers.items()} == expected(keys)


def test_wg_tool_fallback(device):
    node, wg, keys = device
    # `wg` reaches userspace devices through their socket from any namespace,
    # kernel devices only from their own: run where the device is.
    with node.entered():
        info = discovery.read_wgutil(wg.name, "wg")
    assert info.listen_port == 51820 and info.public_key == wg.public_key
    assert {k: p.endpoint for k, p in info.peers.items()} == expected(keys)


@pytest.mark.skipif(not kernel_wireguard_available(), reason="no kernel WireGuard on this kernel")
def test_netlink(device):
    node, wg, keys = device
    with node.entered():
        info = discovery.read_netlink(wg.name)
    assert {k: p.endpoint for k, p in info.peers.items()} == expected(keys)


def test_missing_device_is_a_clear_error():
    with pytest.raises(discovery.DiscoveryError, match="cannot read WireGuard device 'nope0'"):
        discovery.read_device("nope0")
