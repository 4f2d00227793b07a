"""A hub with two uplinks: Interface = ["eth0", "eth1"] (docs/spec.md §4c).

netlab.topology.two_uplinks: the initiator's site behind a NAT on the
hub's eth0 segment, the responder's on eth1's, two internet segments that
nothing routes between but the hub, and each site knows the hub by the
address of its own uplink (198.18.0.254, 198.19.0.254).
- The negative: with one interface configured (Interface = "eth0") the pair
  fails: the responder's packets arrive on eth1 and never meet the program.
- With both (TC, and XDP in front of TC, which passes what leaves by the
  other interface to TC): handshake, ping both
  ways, 2 MB each way over TCP; the hub's own WireGuard does not carry it;
  what goes to the responder leaves eth1 from the hub's address there
  (its port-restricted NAT takes nothing else), and to the initiator eth0
  from 198.18.0.254; show, its text and the metrics count per interface.
- The same over two VLANs on one cable (two_uplinks(vlans=True): eth0
  and eth1 are 802.1Q interfaces on the hub's one veth), where the kernel
  has 8021q (the host here has not; the kernel matrix's guests have), in
  TC: an 802.1Q interface has no XDP in its driver, so Datapath = "xdp" is
  refused there with the interface named, and nothing stays attached.
- IPv4 on one NIC and IPv6 on the other (two_uplinks(families=...)): an
  IPv4 initiator on eth0 and an IPv6-only responder on eth1 (and the
  reverse), every packet changing family and interface at once (§4b,
  §4c), in TC and XDP (which passes them to TC); the negative with eth0
  alone.
- A hub multi-homed to two providers (two_providers: one internet, each
  provider dropping what the hub sends from the other's address): the
  first initiation leaves from each hub address (the hub cannot tell which
  one the responder was given) and each packet by its address's provider,
  in TC and XDP; the negative with eth0 alone.
- Hostile input on each interface: tests/hostile/test_uplinks.py.
- Forwarding off on an Interface: serve says that packets arriving there
  are not reflected out of the other (bpf_fib_lookup() refuses them), and
  indeed the pair fails.
- A restart with eth1 taken out of the list removes the program the last
  start left there, and keeps the state (the first names the instance);
  `wgmux detach` removes it from every interface; a missing interface is
  refused before anything is attached.
- A reload adds an interface (attached, the pair across it works) and
  removes it (detached, the pair stops); one that changes the first
  interface (the instance's name) or lists a missing one is refused, and
  serving goes on.  An interface another wgmux is named after is never
  taken over, by a start or a reload.
"""

import sys

import pytest

from harness.hub import WgmuxHub, handshake_fails, translated_session, transfers_past_the_hub
from netlab import wait_for
from netlab.lab import vlans_available
from netlab.capture import Capture
from netlab.nat import NatKind
from netlab.topology import (HUB_IP, HUB_IP2, HUB_IP6, HUB_IP6_2, PROVIDER_NETS, bcp38_drops,
                             two_providers, two_uplinks)
from netlab.traffic import ping
from wgmux.wire import WG_MSG_INITIATION

pytestmark = pytest.mark.netlab

PORT = 51821
MB = 1 << 20
KINDS = [NatKind.PORT_RESTRICTED, NatKind.PORT_RESTRICTED]


def uplinks(lab, interfaces, mode="tc", forwarding=True, extra="", families=("v4", "v4"),
            vlans=False):
    topo = two_uplinks(lab, KINDS, wireguard=True, tx_checksum=False, families=families,
                       vlans=vlans)
    initiator, responder = topo.host(1), topo.host(2)
    assert (initiator.family, responder.family) == tuple(families)
    for host in (initiator, responder):
        topo.hub_wg.wait_handshake(host.wg.public_key)
    if mode == "xdp":
        for port in (("hubtrunk",) if vlans else ("hub", "hub1")):
            topo.inet.take_xdp_frames(port)     # the veths' far ends take XDP_TX (netlab.xdp)
    hub = WgmuxHub(topo, interfaces=list(interfaces), forwarding=forwarding,
                   extra_config=f'Datapath = "{mode}"\n{extra}')
    hub.pair(initiator, responder, PORT)
    return topo, hub, initiator, responder


def test_with_one_interface_configured_the_pair_fails(lab):
    topo, hub, initiator, responder = uplinks(lab, ["eth0"])
    hub.start()
    assert [i["name"] for i in hub.show()["interfaces"]] == ["eth0"]
    handshake_fails(topo, initiator, responder, PORT)
    assert hub.show()["counters"]["slow_initiation"] > 0   # it saw them arrive on eth0
    # ... and sent them on to the responder, whose answers never met it
    assert hub.show()["counters"]["reflect_response"] == 0


# Not vlans-xdp: an 802.1Q interface has no native XDP, so "xdp" is refused
# there (test_xdp_on_vlans_is_refused_and_nothing_stays) and "auto" is TC.
@pytest.mark.parametrize("cable,mode", [("veths", "tc"), ("veths", "xdp"), ("vlans", "tc")],
                         ids=["veths-tc", "veths-xdp", "vlans-tc"])
def test_reflects_between_two_uplinks(lab, cable, mode):
    if cable == "vlans" and not vlans_available():
        pytest.skip("this kernel cannot create 802.1Q interfaces (no 8021q); "
                    "the kernel matrix's guests can")
    topo, hub, initiator, responder = uplinks(lab, ["eth0", "eth1"], mode,
                                              extra='MetricsListen = "127.0.0.1:9586"',
                                              vlans=cable == "vlans")
    hub.start()
    st = hub.show()
    assert [(i["name"], i["datapath"]) for i in st["interfaces"]] == \
        [("eth0", mode), ("eth1", mode)]
    assert st["datapath"] == mode

    with Capture(topo.hub, "eth1", f"udp and dst host {responder.public_ip}") as to_r, \
            Capture(topo.hub, "eth0", f"udp and dst host {initiator.public_ip}") as to_i:
        wait_for(lambda: ping(initiator.node, responder.overlay_ip), timeout=30,
                 what="the first ping across the uplinks")
        assert ping(responder.node, initiator.overlay_ip, count=3)
    # each side hears the hub from the address it talks to; the responder
    # also gets the first initiation from the hub's other address (the
    # slow path cannot tell which one it talks to: it sends from each),
    # which its NAT drops
    initiations = [p for p in to_r.packets if p.payload[:1] == bytes([WG_MSG_INITIATION])]
    others = [p for p in to_r.packets if p not in initiations]
    assert HUB_IP2 in {p.src for p in initiations}, to_r.packets[:3]
    assert others and {p.src for p in others} == {HUB_IP2}, others[:3]
    assert to_i.packets and {p.src for p in to_i.packets} == {HUB_IP}, to_i.packets[:3]

    transfers_past_the_hub(topo, initiator, responder, 2 * MB)

    st = hub.show()
    s = [s for s in st["sessions"] if s["port"] == PORT]
    assert len(s) == 1 and s[0]["state"] == "established", st["sessions"]
    assert s[0]["i2r_packets"] > MB // 1500 and s[0]["r2i_packets"] > MB // 1500, s
    assert (s[0]["initiator_interface"], s[0]["responder_interface"]) == ("eth0", "eth1"), s
    per = {i["name"]: i for i in st["interfaces"]}
    for name in ("eth0", "eth1"):
        # each uplink carried one direction in and the other out
        assert per[name]["reflected_in"] > MB // 1500, per
        assert per[name]["reflected_out"] > MB // 1500, per
    assert st["counters"]["ev_nh_fwd_disabled"] == 0
    text = hub.show_text()
    assert "hub: eth0, eth1 " in text and "interface eth1: " in text, text
    assert "(established, via eth0 <-> eth1)" in text, text
    metrics = topo.hub.run([sys.executable, "-c", "import urllib.request; print(urllib.request."
                            "urlopen('http://127.0.0.1:9586/metrics').read().decode())"]).stdout
    assert f'wgmux_interface_info{{interface="eth1",mode="{mode}"}} 1' in metrics, metrics
    assert 'wgmux_interface_packets_total{interface="eth1",what="reflected_out"}' in metrics


SPLIT = {"v4-on-eth0": ("v4", "v6"), "v6-on-eth0": ("v6", "v4")}
HUB_ADDRESSES = {("v4", 1): HUB_IP, ("v6", 1): HUB_IP6, ("v4", 2): HUB_IP2, ("v6", 2): HUB_IP6_2}


def test_with_one_family_s_interface_configured_the_split_pair_fails(lab):
    topo, hub, initiator, responder = uplinks(lab, ["eth0"], families=("v4", "v6"))
    hub.start()
    handshake_fails(topo, initiator, responder, PORT)
    # eth1's IPv6 address is not the hub's to wgmux: an initiation for the
    # IPv6 responder has no source to leave from (spec §4b)
    c = hub.show()["counters"]
    assert c["drop_family"] > 0 and c["slow_initiation"] == 0, c


@pytest.mark.parametrize("mode", ["tc", "xdp"])
@pytest.mark.parametrize("split", SPLIT)
def test_ipv4_and_ipv6_on_different_uplinks(lab, split, mode):
    families = SPLIT[split]
    topo, hub, initiator, responder = uplinks(lab, ["eth0", "eth1"], mode, families=families)
    hub.start()
    from_hub = {side: HUB_ADDRESSES[(host.family, side)]
                for side, host in ((1, initiator), (2, responder))}
    with Capture(topo.hub, "eth1", f"udp and dst host {responder.public_ip}") as to_r, \
            Capture(topo.hub, "eth0", f"udp and dst host {initiator.public_ip}") as to_i:
        wait_for(lambda: ping(initiator.node, responder.overlay_ip), timeout=30,
                 what="the first ping across the uplinks and the families")
        assert ping(responder.node, initiator.overlay_ip, count=3)
    # each side hears the hub from its own uplink's address, in its family
    assert to_r.packets and {p.src for p in to_r.packets} == {from_hub[2]}, to_r.packets[:3]
    assert to_i.packets and {p.src for p in to_i.packets} == {from_hub[1]}, to_i.packets[:3]

    before = hub.show()["counters"]
    transfers_past_the_hub(topo, initiator, responder, 2 * MB)
    st = hub.show()
    s = translated_session(before, st, families, PORT, MB // 1500)
    assert st["counters"]["ev_nh_fwd_disabled"] == 0
    assert (s["initiator_interface"], s["responder_interface"]) == ("eth0", "eth1"), s
    per = {i["name"]: i for i in st["interfaces"]}
    for name in ("eth0", "eth1"):
        assert per[name]["reflected_in"] > MB // 1500, per
        assert per[name]["reflected_out"] > MB // 1500, per


def providers(lab, interfaces, mode="tc"):
    topo = two_providers(lab, KINDS, wireguard=True, tx_checksum=False)
    initiator, responder = topo.host(1), topo.host(2)
    for host in (initiator, responder):
        topo.hub_wg.wait_handshake(host.wg.public_key)
    if mode == "xdp":
        for name in ("pA", "pB"):    # the veths' far ends take XDP_TX (netlab.xdp)
            lab.nodes[name].take_xdp_frames("hub0")
    hub = WgmuxHub(topo, interfaces=list(interfaces), extra_config=f'Datapath = "{mode}"')
    hub.pair(initiator, responder, PORT)
    return topo, hub, initiator, responder


def test_between_two_providers_with_one_interface_configured_the_pair_fails(lab):
    topo, hub, initiator, responder = providers(lab, ["eth0"])
    hub.start()
    handshake_fails(topo, initiator, responder, PORT)


@pytest.mark.parametrize("mode", ["tc", "xdp"])
def test_reflects_between_two_providers(lab, mode):
    """The multi-homed hub (two_providers): both peers reach both of its
    addresses over one internet, and only the hub's source routing (and
    wgmux's choice of source) sends each packet out by the provider that
    gave that address, which drops anything else (BCP 38)."""
    topo, hub, initiator, responder = providers(lab, ["eth0", "eth1"], mode)
    hub.start()
    a, b = (str(net[254]) for net in PROVIDER_NETS)
    with Capture(topo.hub, "eth1", f"udp and dst host {responder.public_ip}") as to_r, \
            Capture(topo.hub, "eth0", f"udp and dst host {initiator.public_ip}") as to_i:
        wait_for(lambda: ping(initiator.node, responder.overlay_ip), timeout=30,
                 what="the first ping across the providers")
        assert ping(responder.node, initiator.overlay_ip, count=3)
    assert to_r.packets and {p.src for p in to_r.packets} == {b}, to_r.packets[:3]
    assert to_i.packets and {p.src for p in to_i.packets} == {a}, to_i.packets[:3]
    transfers_past_the_hub(topo, initiator, responder, 2 * MB)
    assert bcp38_drops(topo) == {"pA": 0, "pB": 0}
    (s,) = [s for s in hub.show()["sessions"] if s["port"] == PORT]
    assert (s["initiator_interface"], s["responder_interface"]) == ("eth0", "eth1"), s


@pytest.mark.parametrize("policy", [True, False], ids=["source-rule", "no-source-rule"])
def test_check_says_whether_each_address_routes_out_by_its_interface(lab, policy):
    """Without the source rule, pB's address would leave by pA, which drops
    it: `wgmux check` says so, naming the address and both interfaces."""
    topo = two_providers(lab, KINDS, wireguard=True, policy_routing=policy)
    hub = WgmuxHub(topo, interfaces=["eth0", "eth1"])
    hub.write_config()
    out = topo.hub.run(hub.cli("check", "-c", str(hub.config_path)), check=False).stdout
    (said,) = [line for line in out.splitlines() if "source routes:" in line]
    b = str(PROVIDER_NETS[1][254])
    if policy:
        assert said.startswith("[ ok ]") and "each route out by their own interface" in said, out
    else:
        assert said.startswith("[warn]") and f"packets from {b} ('eth1') leave by 'eth0'" in said, out
        assert f"ip rule add from {b} table <N>" in out, out


def filter_on(topo, ifname) -> bool:
    return "wgmux" in topo.hub.run(["tc", "filter", "show", "dev", ifname, "ingress"]).stdout


def xdp_on(topo, ifname) -> bool:
    return " xdp" in topo.hub.run(["ip", "link", "show", "dev", ifname]).stdout


def test_xdp_on_vlans_is_refused_and_nothing_stays(lab):
    """Datapath = "xdp" asks for XDP in the driver, which an 802.1Q
    interface does not have: serve exits 1 naming the interface and the
    way out ("auto", TC there), and leaves nothing attached on either
    VLAN.  (The same refusal on lo, and "auto" falling back to TC, are
    tests/unit/test_datapath_modes.py's; the VLANs run only where the
    kernel has 8021q: the kernel matrix's guests.)"""
    if not vlans_available():
        pytest.skip("this kernel cannot create 802.1Q interfaces (no 8021q); "
                    "the kernel matrix's guests can")
    topo, hub, initiator, responder = uplinks(lab, ["eth0", "eth1"], "xdp", vlans=True)
    with pytest.raises(RuntimeError, match="wgmux serve exited 1"):
        hub.start()
    said = hub.log()
    assert ('Datapath = "xdp"' in said and "cannot attach XDP to eth0: its driver has no "
            'native XDP; "auto" falls back to TC ingress' in said), said
    for ifname in ("eth0", "eth1"):
        assert not filter_on(topo, ifname) and not xdp_on(topo, ifname), ifname


def test_restart_without_an_interface_removes_the_program_there(lab):
    topo, hub, initiator, responder = uplinks(lab, ["eth0", "eth1"])
    hub.start()
    wait_for(lambda: ping(initiator.node, responder.overlay_ip), timeout=30,
             what="the first ping across the uplinks")
    assert hub.stop() == 0       # not kept attached: nothing stays on either
    assert not filter_on(topo, "eth0") and not filter_on(topo, "eth1")
    hub.serve_args = ["--keep-attached"]
    hub.start()
    hub.stop()                   # left attached to both, as for a restart
    assert filter_on(topo, "eth0") and filter_on(topo, "eth1")
    hub.interfaces = ["eth0"]
    hub.serve_args = []
    hub.start()
    # the same instance (named after the first): its state carried on
    assert "reusing the pinned state" in hub.log(), hub.log()
    wait_for(lambda: not filter_on(topo, "eth1"), timeout=5, what="the program on eth1 to go")
    assert filter_on(topo, "eth0")
    assert "Interface no longer lists eth1" in hub.log(), hub.log()


def test_detach_removes_the_program_from_every_interface(lab):
    topo, hub, initiator, responder = uplinks(lab, ["eth0", "eth1"])
    hub.serve_args = ["--keep-attached"]
    hub.start()
    hub.stop()
    assert filter_on(topo, "eth0") and filter_on(topo, "eth1")
    out = topo.hub.run(hub.cli("detach", "-c", str(hub.config_path))).stdout
    assert not filter_on(topo, "eth0") and not filter_on(topo, "eth1"), out
    assert "on eth0" in out and "on eth1" in out, out


def test_a_missing_interface_is_refused_before_anything_is_attached(lab):
    topo, hub, initiator, responder = uplinks(lab, ["eth0", "eth1"])
    hub.interfaces = ["eth0", "eth9"]
    hub.write_config()
    run = topo.hub.run(hub.cli("serve", "-c", str(hub.config_path)), check=False)
    assert run.returncode == 1, run
    assert "Interface 'eth9'" in run.stderr and "does not exist" in run.stderr, run.stderr
    assert not filter_on(topo, "eth0")


def test_an_interface_another_wgmux_is_named_after_is_not_taken_over(lab):
    """Another instance, named after eth1, serves it: neither a start nor a
    reload that lists eth1 after eth0 replaces that one's program."""
    topo, hub, initiator, responder = uplinks(lab, ["eth0", "eth1"])
    other = WgmuxHub(topo, interfaces=["eth1"])
    other.write_config()
    other.start()
    theirs = topo.hub.run(["tc", "filter", "show", "dev", "eth1", "ingress"]).stdout
    run = topo.hub.run(hub.cli("serve", "-c", str(hub.config_path)), check=False)
    assert run.returncode == 1, run
    assert "Interface 'eth1'" in run.stderr and "is served by another wgmux" in run.stderr, \
        run.stderr
    assert not filter_on(topo, "eth0")
    hub.interfaces = ["eth0"]
    hub.start()
    hub.interfaces = ["eth0", "eth1"]
    hub.write_config()
    said = hub.reload()
    assert "reload rejected" in said and "is served by another wgmux" in said, said
    assert topo.hub.run(["tc", "filter", "show", "dev", "eth1", "ingress"]).stdout == theirs
    assert [i["name"] for i in other.show()["interfaces"]] == ["eth1"]


def test_a_reload_adds_and_removes_an_interface(lab):
    """eth1 comes and goes on SIGHUP, without a restart: the pair that
    needs it starts working when it is added and stops when it is removed,
    and the instance (named after eth0) serves on throughout."""
    topo, hub, initiator, responder = uplinks(lab, ["eth0"])
    hub.start()
    assert not filter_on(topo, "eth1")
    hub.interfaces = ["eth0", "eth1"]
    hub.write_config()
    said = hub.reload()
    assert "reload: Interface now eth0 (TC ingress), eth1 (TC ingress); attached to eth1" \
        in said and "reloaded " in said, said
    # the added interface's checks run as at a start: forwarding is off there
    assert "forwarding is off on 'eth1'" in said, said
    topo.hub.sysctls({"net.ipv4.conf.eth1.forwarding": 1})
    assert filter_on(topo, "eth1")
    assert [i["name"] for i in hub.show()["interfaces"]] == ["eth0", "eth1"]
    wait_for(lambda: ping(initiator.node, responder.overlay_ip), timeout=30,
             what="a ping across the uplinks once the reload added eth1")
    (s,) = [s for s in hub.show()["sessions"] if s["port"] == PORT]
    assert (s["initiator_interface"], s["responder_interface"]) == ("eth0", "eth1"), s

    hub.interfaces = ["eth0"]
    hub.write_config()
    said = hub.reload()
    assert "removed from eth1" in said and "reloaded " in said, said
    assert not filter_on(topo, "eth1") and filter_on(topo, "eth0")
    assert [i["name"] for i in hub.show()["interfaces"]] == ["eth0"]
    # the responder's packets arrive on eth1 again, where nothing reflects them
    assert not ping(initiator.node, responder.overlay_ip, count=3)
    assert hub.stop() == 0
    assert not filter_on(topo, "eth0") and not filter_on(topo, "eth1")


def test_a_reload_that_cannot_serve_the_new_list_is_refused(lab):
    topo, hub, initiator, responder = uplinks(lab, ["eth0", "eth1"])
    hub.start()
    wait_for(lambda: ping(initiator.node, responder.overlay_ip), timeout=30,
             what="the first ping across the uplinks")
    for interfaces, expected in [
            (["eth1", "eth0"], "Interface changed from ['eth0', 'eth1'] to ['eth1', 'eth0']"
                               " (from " + str(hub.config_path) + "): the first one names the "
                               "instance"),
            (["eth0", "eth1", "eth9"], "Interface 'eth9' (from " + str(hub.config_path)
                                       + ") does not exist")]:
        hub.interfaces = interfaces
        hub.write_config()
        said = hub.reload()
        assert "reload rejected, the running config stays: " + expected in said, said
        hub.interfaces = ["eth0", "eth1"]
        hub.write_config()           # for `show`, which finds the instance by the file
        assert [i["name"] for i in hub.show()["interfaces"]] == ["eth0", "eth1"]
        assert filter_on(topo, "eth0") and filter_on(topo, "eth1")
    assert ping(initiator.node, responder.overlay_ip, count=3)


def test_forwarding_off_is_said_and_the_pair_fails(lab):
    topo, hub, initiator, responder = uplinks(lab, ["eth0", "eth1"], forwarding=False)
    hub.start()
    said = ("forwarding is off on 'eth0', 'eth1': packets arriving there are not reflected "
            "out of the other Interfaces")
    assert said in hub.log(), hub.log()
    handshake_fails(topo, initiator, responder, PORT)
