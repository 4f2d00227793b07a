"""Where are the responders?  Read the hub's own WireGuard device.

Every peer keeps a session with the hub, so the hub's device knows each
peer's current public endpoint.  Three ways to ask, tried in this order:

1. userspace implementations (wireguard-go, amneziawg-go): the UAPI socket
   `/var/run/wireguard/<dev>.sock` (`/var/run/amneziawg/` for awg);
2. the kernel module: generic netlink (`wireguard`, or `amneziawg`) through
   pyroute2;
3. `WgUtil` (`wg` / `awg`) `show <dev> dump`, the fallback.

AmneziaWG (`WgUtil = "awg"`): its kernel module registers the generic
netlink family "amneziawg" with WireGuard's commands and attribute numbers
(its own attributes come after WireGuard's), so pyroute2's WireGuard class is
pointed at that family name (`netlink_class`); `awg show <dev> dump` prints
peer lines exactly as `wg` does, and an interface line with extra columns
whose number depends on the AmneziaWG version (`parse_dump`).
"""

from __future__ import annotations

import base64
import ipaddress
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional


class DiscoveryError(RuntimeError):
    pass


@dataclass(frozen=True)
class PeerInfo:
    public_key: str                      # base64, as wg prints it
    endpoint: Optional[tuple]            # (ip string, port) or None
    latest_handshake: int                # unix seconds, 0 = never
    rx_bytes: int
    tx_bytes: int


@dataclass(frozen=True)
class DeviceInfo:
    name: str
    listen_port: int
    public_key: Optional[str]
    peers: dict                          # public key -> PeerInfo
    source: str                          # "uapi", "netlink" or the WgUtil name


def parse_endpoint(text: str) -> Optional[tuple]:
    """'1.2.3.4:5' or '[::1]:5' -> ('1.2.3.4', 5); '(none)'/'' -> None."""
    if not text or text == "(none)":
        return None
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    return str(ipaddress.ip_address(host.split("%")[0])), int(port)


def socket_dir(wg_util: str) -> Path:
    return Path("/var/run/amneziawg" if wg_util == "awg" else "/var/run/wireguard")


# generic netlink family of the kernel module, by WgUtil
GENL_FAMILY = {"wg": "wireguard", "awg": "amneziawg"}


# -- userspace: the cross-platform UAPI ---------------------------------------
def _uapi_get(path: Path, timeout: float = 2.0) -> list:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(b"get=1\n\n")
        buf = b""
        while not buf.endswith(b"\n\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    lines = buf.decode().strip().splitlines()
    pairs = [tuple(l.split("=", 1)) for l in lines if "=" in l]
    errno = dict(pairs).get("errno", "0")
    if errno != "0":
        raise DiscoveryError(f"{path}: UAPI get failed with errno={errno}")
    return pairs


def _hex_to_b64(hexkey: str) -> str:
    return base64.b64encode(bytes.fromhex(hexkey)).decode()


def read_uapi(device: str, path: Path) -> DeviceInfo:
    listen_port, pub, peers, cur = 0, None, {}, None
    for key, value in _uapi_get(path):
        if key == "public_key":
            cur = {"public_key": _hex_to_b64(value), "endpoint": None,
                   "last_handshake_time_sec": 0, "rx_bytes": 0, "tx_bytes": 0}
            peers[cur["public_key"]] = cur
        elif cur is None:
            if key == "listen_port":
                listen_port = int(value)
            elif key == "private_key":
                pass  # never needed, never kept
        elif key == "endpoint":
            cur["endpoint"] = parse_endpoint(value)
        elif key in ("last_handshake_time_sec", "rx_bytes", "tx_bytes"):
            cur[key] = int(value)
    return DeviceInfo(device, listen_port, pub, {
        k: PeerInfo(k, v["endpoint"], v["last_handshake_time_sec"], v["rx_bytes"], v["tx_bytes"])
        for k, v in peers.items()}, "uapi")


# -- kernel: generic netlink -------------------------------------------------
_netlink_classes: dict = {}


def netlink_class(family: str = "wireguard"):
    """pyroute2's WireGuard socket class, bound to generic netlink `family`.

    pyroute2 binds its WireGuard class to the family name "wireguard" in
    `setup_endpoint`; AmneziaWG's kernel module speaks the same protocol
    under "amneziawg", so a subclass binds that name instead."""
    from pyroute2 import WireGuard

    if family == "wireguard":
        return WireGuard
    if family not in _netlink_classes:
        from pyroute2.netlink.generic.wireguard import AsyncWireGuard, wgmsg

        class _AsyncFamily(AsyncWireGuard):
            async def setup_endpoint(self):
                if getattr(self.local, "transport", None) is not None:
                    return
                # AsyncWireGuard's parent sets up the socket; bind our family.
                await super(AsyncWireGuard, self).setup_endpoint()
                await self.bind(family, wgmsg)

        _netlink_classes[family] = type(f"WireGuardFamily_{family}", (WireGuard,),
                                        {"async_class": _AsyncFamily, "genl_family": family})
    return _netlink_classes[family]


def read_netlink(device: str, family: str = "wireguard") -> DeviceInfo:
    wg = netlink_class(family)()
    try:
        msgs = wg.info(device)
    finally:
        wg.close()
    listen_port, pub, peers = 0, None, {}
    for msg in msgs:
        listen_port = msg.get_attr("WGDEVICE_A_LISTEN_PORT") or listen_port
        key = msg.get_attr("WGDEVICE_A_PUBLIC_KEY")
        if key:
            pub = key.decode() if isinstance(key, bytes) else key
        for peer in msg.get_attr("WGDEVICE_A_PEERS") or []:
            pk = peer.get_attr("WGPEER_A_PUBLIC_KEY")
            pk = pk.decode() if isinstance(pk, bytes) else pk
            ep = peer.get_attr("WGPEER_A_ENDPOINT")
            endpoint = None
            if ep and ep.get("addr") and ep.get("port"):
                endpoint = (str(ipaddress.ip_address(ep["addr"])), int(ep["port"]))
            hs = peer.get_attr("WGPEER_A_LAST_HANDSHAKE_TIME") or {}
            peers[pk] = PeerInfo(pk, endpoint, int(hs.get("tv_sec", 0) or 0),
                                 int(peer.get_attr("WGPEER_A_RX_BYTES") or 0),
                                 int(peer.get_attr("WGPEER_A_TX_BYTES") or 0))
    return DeviceInfo(device, listen_port, pub, peers,
                      "netlink" if family == "wireguard" else f"netlink:{family}")


# -- fallback: wg / awg show dump ---------------------------------------------
def read_wgutil(device: str, wg_util: str = "wg") -> DeviceInfo:
    try:
        out = subprocess.run([wg_util, "show", device, "dump"], capture_output=True,
                             text=True, timeout=5)
    except FileNotFoundError:
        raise DiscoveryError(f"WgUtil {wg_util!r} not found on PATH") from None
    if out.returncode != 0:
        raise DiscoveryError(f"{wg_util} show {device} dump: {out.stderr.strip() or out.returncode}")
    if not out.stdout.strip():
        raise DiscoveryError(f"{wg_util} show {device} dump printed nothing")
    try:
        return parse_dump(out.stdout, device, wg_util)
    except (ValueError, IndexError) as e:
        raise DiscoveryError(f"{wg_util} show {device} dump: unexpected output ({e})") from None


def parse_dump(text: str, device: str, source: str = "wg") -> DeviceInfo:
    """Parse `wg show <dev> dump` or `awg show <dev> dump`.

    The first line is the interface: private-key public-key listen-port
    fwmark for wg; awg inserts its obfuscation values (Jc Jmin Jmax S1 S2
    [S3 S4] H1-H4 [I1-I5, "(null)" when unset] [3.x settings]) before
    fwmark, a count that varies by version, so only the first three fields
    (and the last, fwmark) have a fixed place.  Peer lines are the same for
    both: public-key preshared-key endpoint allowed-ips latest-handshake
    rx tx keepalive.  I-packet values contain spaces, never tabs."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError("no interface line")
    iface = lines[0].split("\t")
    if len(iface) < 4:
        raise ValueError(f"interface line has {len(iface)} fields, expected at least 4")
    public_key = None if iface[1] == "(none)" else iface[1]
    peers = {}
    for line in lines[1:]:
        f = line.split("\t")
        if len(f) < 8:
            continue
        peers[f[0]] = PeerInfo(f[0], parse_endpoint(f[2]), int(f[4]), int(f[5]), int(f[6]))
    return DeviceInfo(device, int(iface[2]), public_key, peers, source)


def read_device(device: str, wg_util: str = "wg") -> DeviceInfo:
    """The hub device's state by the best available means (see module doc)."""
    sock = socket_dir(wg_util) / f"{device}.sock"
    errors = []
    if sock.exists():
        try:
            return read_uapi(device, sock)
        except (OSError, DiscoveryError) as e:
            errors.append(f"UAPI {sock}: {e}")
    family = GENL_FAMILY.get(wg_util, "wireguard")
    try:
        return read_netlink(device, family)
    except Exception as e:  # pyroute2 raises NetlinkError and friends
        errors.append(f"netlink ({family}): {e}")
    try:
        return read_wgutil(device, wg_util)
    except DiscoveryError as e:
        errors.append(str(e))
    raise DiscoveryError(f"cannot read WireGuard device {device!r}: " + "; ".join(errors))


def device_exists(device: str, wg_util: str = "wg") -> bool:
    """True if the device has a UAPI socket or is a link in this netns.

    Asks netlink, not /sys: under `nsenter --net` /sys still shows the
    namespace it was mounted from.
    """
    if (socket_dir(wg_util) / f"{device}.sock").exists():
        return True
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        return bool(ipr.link_lookup(ifname=device))
