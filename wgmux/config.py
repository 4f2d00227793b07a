"""The wgmux configuration file: parsing and validation.

The file is the seed's TOML, keys spelled exactly as there::

    [Interface]
    Device = "wg0"        # the hub's own WireGuard device
    HubPort = 51820       # its listen port
    Interface = "eth0"    # where the eBPF program attaches
    WgUtil = "wg"         # optional: "wg" or "awg"
    # optional AmneziaWG: Jc Jmin Jmax S1 S2 S3 S4 H1 H2 H3 H4 I1..I5

    [[Peer]]
    Port = 51821          # the hub port dedicated to this responder
    PublicKey = "..."     # the responder's WireGuard public key

Everything is validated before anything is attached, and every problem is
reported, not only the first: a `ConfigError` carries one line per problem,
each naming the file, the line the key is on, the section and the key.

A config without any ``[[Peer]]`` is valid: the hub then reflects nothing
and passes all traffic to its own WireGuard. That is a legitimate state
while peers are being set up, and reloading the config adds them later.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import ipaddress
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from . import wire
from .wire import AmneziaParams  # noqa: F401  (part of this module's API)

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = [
    "DEFAULT_PATH", "AmneziaParams", "Config", "ConfigError", "PeerConfig", "load", "parse",
]

DEFAULT_PATH = "/etc/wgmux/config.toml"

# What each source address (IPv4 address, IPv6 /64) may send to the
# handshake slow path: messages per second on average, and at once.  A
# WireGuard peer sends an initiation every 5 s at most while it retries;
# the defaults leave room for a NAT with hundreds of peers behind one
# address, and stop one source from flooding the daemon.
HANDSHAKE_RATE = 250.0
HANDSHAKE_RATE_MIN = 0.01       # one per 100 s; the datapath's interval is in ns
HANDSHAKE_RATE_MAX = 1_000_000
HANDSHAKE_BURST = 100
HANDSHAKE_BURST_MAX = 1_000_000

# What each peer port forwards to its responder: initiations per second on
# average, and at once.  A WireGuard pair starts a handshake every 2 min
# while it talks (and retries every 5 s), so 20/s with a burst of 40 is a
# responder with thousands of initiators.  Beyond it the port is under
# load: the hub answers initiations with cookie replies on the responder's
# behalf and forwards only those whose mac2 checks out (docs/spec.md §9),
# so a flood never reaches the responder and real peers get in on their
# next retry.
INITIATION_RATE = 20.0
INITIATION_BURST = 40

HeaderRange = wire.HeaderRange

# Plain WireGuard message lengths (the one definition is wgmux.wire), and
# the type values AmneziaWG's H1-H4 replace.
INITIATION_SIZE = wire.WG_INITIATION_SIZE
RESPONSE_SIZE = wire.WG_RESPONSE_SIZE
COOKIE_SIZE = wire.WG_COOKIE_SIZE
WIREGUARD_TYPES: Tuple[HeaderRange, ...] = wire.WIREGUARD_HEADERS

# AmneziaWG limits, as its documentation recommends them: a padded handshake
# fits the 1280-byte minimum MTU (S1 <= 1280-148, S2 <= 1280-92, and
# S3 <= 1280-64 by the same rule), Jc <= 128, Jmax <= 1280; setup tools cap
# S4, paid on every transport packet and not counted in the tunnel MTU, at 32.
# The implementations themselves only require prefix + message <= 65535;
# wgmux holds to the documented limits, which also keep the datapath's
# header offsets small for the eBPF verifier.
MTU_FLOOR = 1280
JC_MAX = 128
JUNK_SIZE_MAX = 1280
S_MAX = {
    "S1": MTU_FLOOR - INITIATION_SIZE,
    "S2": MTU_FLOOR - RESPONSE_SIZE,
    "S3": MTU_FLOOR - COOKIE_SIZE,
    "S4": 32,
}
U32_MAX = 0xFFFFFFFF

# AmneziaWG 3.x settings. Header protection encrypts the headers wgmux steers
# by (the hub would need the key), the others change timing, padding and
# trailers the datapath does not model. Matched case-insensitively so they
# get "not supported" rather than "unknown key". DI/DR/DC/DT appear in
# amneziawg-tools next to I1-I5 without published semantics.
AMNEZIA3_KEYS = (
    "HeaderProtectionKey", "ContentPaddingAddition", "RandomTrailers", "DisableCookies",
    "RekeyAfterTime", "RekeyTimeout", "RejectAfterTime", "KeepaliveTimeout",
    "MaxHandshakeAttempts", "ObfsPSK", "DI", "DR", "DC", "DT",
)

IFNAMSIZ = 16  # the kernel's limit, including the terminating NUL

_INTERFACE_KEYS = ("Device", "HubPort", "Interface", "WgUtil", "MetricsListen",
                   "HandshakeRate", "HandshakeBurst", "InitiationRate", "InitiationBurst")
_JUNK_KEYS = ("Jc", "Jmin", "Jmax")
_PREFIX_KEYS = ("S1", "S2", "S3", "S4")
_HEADER_KEYS = ("H1", "H2", "H3", "H4")
_SPECIAL_KEYS = ("I1", "I2", "I3", "I4", "I5")
_AMNEZIA_KEYS = _JUNK_KEYS + _PREFIX_KEYS + _HEADER_KEYS + _SPECIAL_KEYS
_ALL_INTERFACE_KEYS = _INTERFACE_KEYS + _AMNEZIA_KEYS
_PEER_KEYS = ("Port", "PublicKey")
_WG_UTILS = ("wg", "awg")
# Keys a WireGuard user is likely to carry over, mapped to wgmux's spelling.
_ALIASES = {"listenport": "HubPort"}


class ConfigError(ValueError):
    """The config cannot be used. ``problems`` holds one message per problem;
    ``str()`` is those messages, one per line."""

    def __init__(self, problems: Union[str, Sequence[str]]):
        if isinstance(problems, str):
            problems = (problems,)
        self.problems: Tuple[str, ...] = tuple(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class PeerConfig:
    """A responder exposed on a dedicated hub port."""

    port: int
    public_key: str  # standard base64, exactly as in the file

    @property
    def public_key_bytes(self) -> bytes:
        return base64.b64decode(self.public_key)


@dataclass(frozen=True)
class Config:
    device: str
    hub_port: int
    interface: str
    wg_util: str = "wg"
    metrics_listen: Optional[Tuple[str, int]] = None   # (host, port) or off
    handshake_rate: float = HANDSHAKE_RATE   # per source and second; 0: no limit
    handshake_burst: int = HANDSHAKE_BURST
    initiation_rate: float = INITIATION_RATE   # per peer port and second; 0: no budget
    initiation_burst: int = INITIATION_BURST
    amnezia: AmneziaParams = field(default_factory=AmneziaParams)
    peers: Tuple[PeerConfig, ...] = ()
    path: str = "<string>"
    _by_port: Dict[int, PeerConfig] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "_by_port", {p.port: p for p in self.peers})

    @property
    def ports(self) -> Tuple[int, ...]:
        """The peers' ports, in file order (HubPort not included)."""
        return tuple(p.port for p in self.peers)

    def peer_by_port(self, port: int) -> Optional[PeerConfig]:
        return self._by_port.get(port)

    def peer_by_key(self, public_key: Union[str, bytes]) -> Optional[PeerConfig]:
        """The peer with this public key, given as base64 or as raw bytes."""
        key = public_key if isinstance(public_key, str) else base64.b64encode(public_key).decode()
        return next((p for p in self.peers if p.public_key == key), None)


def load(path: Union[str, "os.PathLike[str]"] = DEFAULT_PATH) -> Config:
    """Read and validate the config file at ``path``."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError(f"{name}: cannot read: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{name}: not UTF-8 text (byte {e.start})") from None
    return parse(text, name)


def parse(text: str, path: str = "<string>") -> Config:
    """Validate config ``text``; ``path`` is only used in messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    checker = _Checker(text, path)
    config = checker.check(data)
    if checker.problems:
        raise ConfigError(checker.sorted_problems())
    assert config is not None
    return config


# --- finding lines -----------------------------------------------------------
#
# tomllib gives no positions, so the text is scanned for table headers and
# key lines. Tables are identified as (name, index): ("", 0) is the root,
# ("Interface", 0) the [Interface] table, ("Peer", n) the n-th [[Peer]].

_ROOT = ("", 0)
_BARE = r"[A-Za-z0-9_-]+"
_BASIC = r'"(?:[^"\\\n]|\\.)*"'
_LITERAL = r"'[^'\n]*'"
_SIMPLE_KEY = rf"(?:{_BARE}|{_BASIC}|{_LITERAL})"
_DOTTED_KEY = rf"{_SIMPLE_KEY}(?:[ \t]*\.[ \t]*{_SIMPLE_KEY})*"
_ARRAY_HEADER_RE = re.compile(rf"\[\[[ \t]*({_DOTTED_KEY})[ \t]*\]\]")
_TABLE_HEADER_RE = re.compile(rf"\[[ \t]*({_DOTTED_KEY})[ \t]*\]")
_KEY_LINE_RE = re.compile(rf"({_DOTTED_KEY})[ \t]*=")
_SIMPLE_KEY_RE = re.compile(_SIMPLE_KEY)


def _key_segments(dotted: str) -> List[str]:
    segments = []
    for m in _SIMPLE_KEY_RE.finditer(dotted):
        s = m.group(0)
        if s.startswith('"'):
            try:
                s = json.loads(s)
            except ValueError:  # a TOML-only escape such as \U0001F600
                s = s[1:-1]
        elif s.startswith("'"):
            s = s[1:-1]
        segments.append(s)
    return segments


class _Locator:
    def __init__(self, text: str):
        self._tables: Dict[Tuple[str, int], int] = {}
        self._keys: Dict[Tuple[Tuple[str, int], str], int] = {}
        arrays: Dict[str, int] = {}
        current = _ROOT
        multiline: Optional[str] = None
        # TOML counts lines by "\n" only, unlike str.splitlines().
        for number, raw in enumerate(text.split("\n"), 1):
            line = raw.strip()
            if multiline:
                if multiline in line:
                    multiline = None
                continue
            header = _ARRAY_HEADER_RE.match(line)
            is_array = header is not None
            header = header or _TABLE_HEADER_RE.match(line)
            if header:
                names = _key_segments(header.group(1))
                self._keys.setdefault((_ROOT, names[0]), number)
                if len(names) == 1:
                    if is_array:
                        current = (names[0], arrays.get(names[0], 0))
                        arrays[names[0]] = current[1] + 1
                    else:
                        current = (names[0], 0)
                    self._tables.setdefault(current, number)
                else:
                    # A sub-table: report it as a key of its parent; keys
                    # inside it are nobody's concern here.
                    parent = (names[0], max(arrays.get(names[0], 1) - 1, 0))
                    self._keys.setdefault((parent, names[1]), number)
                    current = ("", -number)
                continue
            key = _KEY_LINE_RE.match(line)
            if key:
                self._keys.setdefault((current, _key_segments(key.group(1))[0]), number)
                rest = line[key.end():]
                for delim in ('"""', "'''"):
                    if rest.count(delim) % 2:
                        multiline = delim
                        break

    def line(self, table: Tuple[str, int], key: Optional[str] = None) -> Optional[int]:
        """The line of ``key`` in ``table``, else of the table itself."""
        if key is not None and (table, key) in self._keys:
            return self._keys[(table, key)]
        if table == _ROOT:
            return None
        # An inline table or array (Peer = [{...}]) has no header of its own.
        return self._tables.get(table, self._keys.get((_ROOT, table[0])))


# --- checking ------------------------------------------------------------------

def _quoted(value: str) -> str:
    """A string as a TOML basic string, shortened so one message stays one line."""
    shown = json.dumps(value, ensure_ascii=False)
    return shown if len(shown) <= 60 else shown[:56] + '..."'


def _show(value: Any) -> str:
    """A value as it would be written in TOML, with its type."""
    if isinstance(value, bool):
        return f"{'true' if value else 'false'} (boolean)"
    if isinstance(value, str):
        return f"{_quoted(value)} (string)"
    if isinstance(value, int):
        return f"{value} (integer)"
    if isinstance(value, float):
        return f"{value!r} (float)"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"{value} ({type(value).__name__})"


def _show_range(r: HeaderRange) -> str:
    return str(r[0]) if r[0] == r[1] else f"{r[0]}-{r[1]}"


def _suggest(name: str, candidates: Sequence[str]) -> Optional[str]:
    lowered = {c.lower(): c for c in candidates}
    if name.lower() in lowered:
        return lowered[name.lower()]
    close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.7)
    return lowered[close[0]] if close else None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _ifname_problem(name: str) -> Optional[str]:
    """Why ``name`` is not a Linux interface name (the kernel's dev_valid_name)."""
    if name == "":
        return "must not be empty"
    bad = f"{_quoted(name)} is not a valid interface name"
    if len(name) >= IFNAMSIZ:
        return f"{bad}: longer than {IFNAMSIZ - 1} characters"
    if name in (".", ".."):
        return bad
    for ch in "/:":
        if ch in name:
            return f'{bad}: contains "{ch}"'
    if any(ch.isspace() for ch in name):
        return f"{bad}: contains whitespace"
    return None


_HEADER_STRING_RE = re.compile(r"([0-9]+)(?:-([0-9]+))?")


class _Checker:
    def __init__(self, text: str, path: str):
        self.path = path
        self.locate = _Locator(text)
        self.problems: List[Tuple[int, int, str]] = []

    def sorted_problems(self) -> List[str]:
        return [msg for _, _, msg in sorted(self.problems)]

    def report(self, table: Tuple[str, int], label: str, key: Optional[str], text: str,
               shown: Optional[str] = None) -> None:
        """Record a problem with ``key`` of ``table`` (or the table itself),
        shown as ``label`` and ``shown`` (default: the key)."""
        line = self.locate.line(table, key)
        where = " ".join(part for part in (label, shown or key) if part)
        prefix = f"{self.path}:{line}" if line else self.path
        self.problems.append((line or 0, len(self.problems), f"{prefix}: {where}: {text}"))

    # -- top level

    def check(self, data: Mapping[str, Any]) -> Optional[Config]:
        """The Config, or None when anything was reported."""
        for key, value in data.items():
            if key not in ("Interface", "Peer"):
                self.unknown_top_level(key, value)

        interface = self.interface_section(data)
        peers = self.peer_sections(data, interface.get("hub_port") if interface else None)
        if self.problems or interface is None or peers is None:
            return None
        return Config(**interface, peers=peers, path=self.path)

    def unknown_top_level(self, key: str, value: Any) -> None:
        if isinstance(value, dict):
            label, what = f"[{key}]", "unknown section"
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            label, what = f"[[{key}]]", "unknown section"
        else:
            label, what = key, "key outside any section"
        section = _suggest(key, ("Interface", "Peer"))
        if section == "Interface":
            hint = "; did you mean [Interface]?"
        elif section == "Peer":
            hint = "; did you mean [[Peer]]?"
        elif _suggest(key, _ALL_INTERFACE_KEYS) or key.lower() in _ALIASES:
            hint = "; it belongs in [Interface]"
        elif _suggest(key, _PEER_KEYS):
            hint = "; it belongs in a [[Peer]] section"
        else:
            hint = ""
        self.report(_ROOT, "", key, what + hint, shown=label)

    # -- [Interface]

    def interface_section(self, data: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
        """The [Interface] values as Config fields; None where invalid."""
        table = ("Interface", 0)
        if "Interface" not in data:
            self.problems.append((0, len(self.problems),
                                  f"{self.path}: missing [Interface] section"))
            return None
        section = data["Interface"]
        if not isinstance(section, dict):
            if isinstance(section, list) and section and all(isinstance(v, dict) for v in section):
                shown, text = "[[Interface]]", "expected one [Interface] section, not an array"
            else:
                shown, text = "Interface", f"expected the [Interface] section, got {_show(section)}"
            self.report(_ROOT, "", "Interface", text, shown=shown)
            return None
        label = "[Interface]"

        for key in section:
            if key not in _ALL_INTERFACE_KEYS:
                self.unknown_key(table, label, key, _ALL_INTERFACE_KEYS,
                                 _PEER_KEYS, "a [[Peer]] section")

        device = self.ifname(section, table, label, "Device")
        hub_port = self.integer(section, table, label, "HubPort", 1, 65535, required=True)
        ifname = self.ifname(section, table, label, "Interface")
        if device is not None and ifname is not None and device == ifname:
            self.report(table, label, "Interface",
                        f"same as Device {_quoted(device)}; Interface is the network interface "
                        "that carries the UDP traffic (such as eth0), not the WireGuard device")

        wg_util = section.get("WgUtil", "wg")
        if not isinstance(wg_util, str) or wg_util not in _WG_UTILS:
            self.report(table, label, "WgUtil", f'expected "wg" or "awg", got {_show(wg_util)}')
            wg_util = None

        rate = self.rate(section, table, label, "HandshakeRate", HANDSHAKE_RATE)
        burst = self.integer(section, table, label, "HandshakeBurst", 1, HANDSHAKE_BURST_MAX)
        init_rate = self.rate(section, table, label, "InitiationRate", INITIATION_RATE)
        init_burst = self.integer(section, table, label, "InitiationBurst", 1,
                                  HANDSHAKE_BURST_MAX)

        return dict(device=device, hub_port=hub_port, interface=ifname, wg_util=wg_util,
                    metrics_listen=self.listen_address(section, table, label, "MetricsListen"),
                    handshake_rate=rate,
                    handshake_burst=HANDSHAKE_BURST if burst is None else burst,
                    initiation_rate=init_rate,
                    initiation_burst=INITIATION_BURST if init_burst is None else init_burst,
                    amnezia=self.amnezia(section, table, label))

    def rate(self, section, table, label, key, default) -> Optional[float]:
        """Messages per second: HANDSHAKE_RATE_MIN-HANDSHAKE_RATE_MAX, or 0
        (no limit)."""
        rate = section.get(key, default)
        if not isinstance(rate, (int, float)) or isinstance(rate, bool):
            self.report(table, label, key,
                        f"expected a number of messages per second, got {_show(rate)}")
            return None
        if rate != 0 and not HANDSHAKE_RATE_MIN <= rate <= HANDSHAKE_RATE_MAX:
            self.report(table, label, key,
                        f"{rate} is out of range {HANDSHAKE_RATE_MIN}-{HANDSHAKE_RATE_MAX} "
                        f"(or 0: no limit)")
            return None
        return float(rate)

    def listen_address(self, section, table, label, key) -> Optional[Tuple[str, int]]:
        """"host:port" or "[v6]:port" -> (host, port); absent -> None (off)."""
        if key not in section:
            return None
        value = section[key]
        expected = 'expected "host:port" such as "127.0.0.1:9586" or "[::1]:9586"'
        if not isinstance(value, str):
            self.report(table, label, key, f"{expected}, got {_show(value)}")
            return None
        host, sep, port = value.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        try:
            ipaddress.ip_address(host)
            port_number = int(port)
        except ValueError:
            port_number = 0
        if not sep or not 1 <= port_number <= 65535:
            self.report(table, label, key, f"{expected}, got {_show(value)}")
            return None
        return host, port_number

    def ifname(self, section, table, label, key) -> Optional[str]:
        if key not in section:
            self.report(table, label, None, f"missing required key {key}")
            return None
        value = section[key]
        if not isinstance(value, str):
            self.report(table, label, key, f"expected a string, got {_show(value)}")
            return None
        problem = _ifname_problem(value)
        if problem:
            self.report(table, label, key, problem)
            return None
        return value

    def integer(self, section, table, label, key, lo, hi, required=False) -> Optional[int]:
        if key not in section:
            if required:
                self.report(table, label, None, f"missing required key {key}")
            return None
        value = section[key]
        if not _is_int(value):
            self.report(table, label, key, f"expected an integer, got {_show(value)}")
            return None
        if not lo <= value <= hi:
            self.report(table, label, key, f"{value} is out of range {lo}-{hi}")
            return None
        return value

    def unknown_key(self, table, label, key, known, elsewhere, elsewhere_name) -> None:
        if key.lower() in (k.lower() for k in AMNEZIA3_KEYS):
            self.report(table, label, key, "AmneziaWG 3.x setting, not supported by wgmux")
            return
        suggestion = _suggest(key, known)
        alias = _ALIASES.get(key.lower())
        if key.lower() in (k.lower() for k in elsewhere):
            hint = f"; it belongs in {elsewhere_name}"
        elif alias in known:
            hint = f"; did you mean {alias}?"
        elif suggestion:
            hint = f"; did you mean {suggestion}?"
        else:
            hint = ""
        self.report(table, label, key, "unknown key" + hint)

    # -- AmneziaWG

    def amnezia(self, section, table, label) -> AmneziaParams:
        """The AmneziaWG parameters; meaningful only if nothing was reported."""
        values: Dict[str, Any] = {}
        values["jc"] = self.integer(section, table, label, "Jc", 0, JC_MAX)
        values["jmin"] = self.integer(section, table, label, "Jmin", 0, JUNK_SIZE_MAX)
        values["jmax"] = self.integer(section, table, label, "Jmax", 0, JUNK_SIZE_MAX)
        for key in _PREFIX_KEYS:
            values[key.lower()] = self.integer(section, table, label, key, 0, S_MAX[key])
        for key in _HEADER_KEYS:
            values[key.lower()] = self.header(section, table, label, key)
        for key in _SPECIAL_KEYS:
            value = section.get(key)
            if value is not None and not isinstance(value, str):
                self.report(table, label, key, f"expected a string, got {_show(value)}")
            # An empty I-packet is how AmneziaWG spells "unset".
            values[key.lower()] = value if isinstance(value, str) and value else None

        jc, jmin, jmax = values["jc"], values["jmin"], values["jmax"]
        if jc:
            missing = [k for k in ("Jmin", "Jmax") if k not in section]
            if missing:
                self.report(table, label, "Jc", f"Jc = {jc} needs {' and '.join(missing)}")
        if jmin is not None and jmax is not None and jmin > jmax:
            self.report(table, label, "Jmax", f"Jmax = {jmax} is less than Jmin = {jmin}")

        present = [k for k in _HEADER_KEYS if k in section]
        if present and len(present) < len(_HEADER_KEYS):
            missing = ", ".join(k for k in _HEADER_KEYS if k not in section)
            self.report(table, label, present[0], f"H1-H4 must be set together; missing {missing}")
        headers = [values[k.lower()] for k in _HEADER_KEYS]
        for j in range(len(headers)):
            for i in range(j):
                a, b = headers[i], headers[j]
                if a is not None and b is not None and a[0] <= b[1] and b[0] <= a[1]:
                    self.report(table, label, _HEADER_KEYS[j],
                                f"{_show_range(b)} overlaps {_HEADER_KEYS[i]} = {_show_range(a)}; "
                                "H1-H4 must not overlap")

        # The datapath tells handshake messages apart by length first; with
        # equal lengths, random prefix bytes could pass for the other header
        # (the likelier the wider the H ranges).
        sizes = (("initiation", "S1", INITIATION_SIZE), ("response", "S2", RESPONSE_SIZE),
                 ("cookie", "S3", COOKIE_SIZE))
        for j in range(len(sizes)):
            for i in range(j):
                (name_a, key_a, base_a), (name_b, key_b, base_b) = sizes[i], sizes[j]
                sa, sb = values[key_a.lower()], values[key_b.lower()]
                if (key_a in section and sa is None) or (key_b in section and sb is None):
                    continue  # already reported as invalid
                if base_a + (sa or 0) == base_b + (sb or 0):
                    blame = key_b if key_b in section else key_a
                    self.report(table, label, blame,
                                f"{name_b} size {base_b} + {key_b} = {base_b + (sb or 0)} equals "
                                f"{name_a} size {base_a} + {key_a} = {base_a + (sa or 0)}; "
                                "padded handshake sizes must differ")

        defaults = AmneziaParams()
        return AmneziaParams(**{k: getattr(defaults, k) if v is None else v
                                for k, v in values.items()})

    def header(self, section, table, label, key) -> Optional[HeaderRange]:
        if key not in section:
            return None
        value = section[key]
        if _is_int(value):
            shown, r = str(value), (value, value)
        elif isinstance(value, str):
            m = _HEADER_STRING_RE.fullmatch(value.strip())
            if not m:
                self.report(table, label, key,
                            f'{_quoted(value)} is not an integer or a range "a-b"')
                return None
            lo = int(m.group(1))
            hi = int(m.group(2)) if m.group(2) is not None else lo
            shown, r = _quoted(value), (lo, hi)
            if lo > hi:
                self.report(table, label, key, f"{shown} is reversed: {lo} > {hi}")
                return None
        else:
            self.report(table, label, key,
                        f'expected an integer or a range "a-b", got {_show(value)}')
            return None
        lowest = WIREGUARD_TYPES[-1][1] + 1
        if r[0] < lowest or r[1] > U32_MAX:
            text = f"{shown} is out of range {lowest}-{U32_MAX}"
            if 1 <= r[0] < lowest:
                text += f" (1-{lowest - 1} are WireGuard's own message types)"
            self.report(table, label, key, text)
            return None
        return r

    # -- [[Peer]]

    def peer_sections(self, data: Mapping[str, Any],
                      hub_port: Optional[int]) -> Optional[Tuple[PeerConfig, ...]]:
        if "Peer" not in data:
            return ()
        sections = data["Peer"]
        if isinstance(sections, dict):
            self.report(_ROOT, "", "Peer", "write [[Peer]]: each responder is an entry of an "
                                           "array of tables", shown="[Peer]")
            return None
        if not isinstance(sections, list):
            self.report(_ROOT, "", "Peer", f"expected [[Peer]] sections, got {_show(sections)}")
            return None

        peers: List[PeerConfig] = []
        ports: Dict[int, str] = {}  # first user of each port / key, for messages
        keys: Dict[str, str] = {}
        for index, section in enumerate(sections):
            table = ("Peer", index)
            label = f"[[Peer]] #{index + 1}"
            if not isinstance(section, dict):
                self.report(table, label, None, f"expected a table, got {_show(section)}")
                continue
            # Entries are easier to find by their port than by their number.
            if _is_int(section.get("Port")):
                label += f" (Port = {section['Port']})"
            for key in section:
                if key not in _PEER_KEYS:
                    self.unknown_key(table, label, key, _PEER_KEYS,
                                     _ALL_INTERFACE_KEYS, "[Interface]")

            port = self.integer(section, table, label, "Port", 1, 65535, required=True)
            if port is not None:
                if port == hub_port:
                    self.report(table, label, "Port",
                                "same as HubPort; each peer needs a port of its own")
                elif port in ports:
                    self.report(table, label, "Port", f"already used by {ports[port]}")
                else:
                    ports[port] = label

            key = self.public_key(section, table, label)
            if key is not None:
                if key in keys:
                    self.report(table, label, "PublicKey", f"same key as {keys[key]}")
                else:
                    keys[key] = label

            if port is not None and key is not None:
                peers.append(PeerConfig(port=port, public_key=key))
        return tuple(peers)

    def public_key(self, section, table, label) -> Optional[str]:
        if "PublicKey" not in section:
            self.report(table, label, None, "missing required key PublicKey")
            return None
        value = section["PublicKey"]
        if not isinstance(value, str):
            self.report(table, label, "PublicKey", f"expected a string, got {_show(value)}")
            return None
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        # Re-encoding rejects what wg itself rejects: wrong length, missing
        # padding, non-zero trailing bits, embedded whitespace.
        if len(raw) != 32 or base64.b64encode(raw).decode() != value:
            self.report(table, label, "PublicKey",
                        f"{_quoted(value)} is not a WireGuard key "
                        "(base64 of 32 bytes, 44 characters)")
            return None
        return value
