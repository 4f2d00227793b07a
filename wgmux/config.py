"""The wgmux configuration file: parsing and validation.

The file is the seed's TOML, keys spelled exactly as there::

    [Interface]
    Device = "wg0"        # the hub's own WireGuard device
    HubPort = 51820       # its listen port
    Interface = "eth0"    # where the eBPF program attaches; or a list,
                          # ["eth0", "eth1"]: attached to each (spec §4c)
    WgUtil = "wg"         # optional: "wg" or "awg"
    Datapath = "auto"     # optional: "auto", "xdp" or "tc" (docs/spec.md §4a)
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
import math
import os
import re
import stat
import threading
import unicodedata
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

# Interfaces one instance attaches to (Interface = [...]); the datapath's
# per-interface counters have as many slots (bpf/wgmux.c WGMUX_MAX_IFACES).
MAX_INTERFACES = 8

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

# Session table entries (one per direction of a pair, and per half-open
# handshake; a quarter of them at most half-open).  The kernel allocates
# the table whole when the program loads: ~180 bytes an entry
# (docs/performance.md), so the default takes ~12 MB and a million ~180 MB.
MAX_SESSIONS = 65536
MAX_SESSIONS_MIN = 1024
MAX_SESSIONS_MAX = 16_777_216

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

_INTERFACE_KEYS = ("Device", "HubPort", "Interface", "WgUtil", "Datapath", "MetricsListen",
                   "HandshakeRate", "HandshakeBurst", "InitiationRate", "InitiationBurst",
                   "MaxSessions")
_JUNK_KEYS = ("Jc", "Jmin", "Jmax")
_PREFIX_KEYS = ("S1", "S2", "S3", "S4")
_HEADER_KEYS = ("H1", "H2", "H3", "H4")
_SPECIAL_KEYS = ("I1", "I2", "I3", "I4", "I5")
_AMNEZIA_KEYS = _JUNK_KEYS + _PREFIX_KEYS + _HEADER_KEYS + _SPECIAL_KEYS
_ALL_INTERFACE_KEYS = _INTERFACE_KEYS + _AMNEZIA_KEYS
_PEER_KEYS = ("Port", "PublicKey")
_WG_UTILS = ("wg", "awg")
# Where the datapath runs (docs/spec.md §4a, §10): "auto" XDP in front of
# TC where the driver has it (not veth), "xdp" insists on it, "tc" TC only.
DATAPATHS = ("auto", "xdp", "tc")
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
    interface: str               # the first of `interfaces`: names the instance
    wg_util: str = "wg"
    datapath: str = "auto"       # DATAPATHS
    metrics_listen: Optional[Tuple[str, int]] = None   # (host, port) or off
    handshake_rate: float = HANDSHAKE_RATE   # per source and second; 0: no limit
    handshake_burst: int = HANDSHAKE_BURST
    initiation_rate: float = INITIATION_RATE   # per peer port and second; 0: no budget
    initiation_burst: int = INITIATION_BURST
    max_sessions: int = MAX_SESSIONS   # session table entries (restart to change)
    amnezia: AmneziaParams = field(default_factory=AmneziaParams)
    peers: Tuple[PeerConfig, ...] = ()
    path: str = "<string>"
    # every interface the program attaches to, `interface` first (spec §4c);
    # () means (interface,)
    interfaces: Tuple[str, ...] = ()
    _by_port: Dict[int, PeerConfig] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "_by_port", {p.port: p for p in self.peers})
        if not self.interfaces:
            object.__setattr__(self, "interfaces", (self.interface,))

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
    shown = _path_text(name)
    try:
        with open(name, "rb") as f:
            raw = f.read(MAX_FILE_SIZE + 1)
    except OSError as e:
        raise ConfigError(f"{shown}: cannot read: {_clean(e.strerror or str(e))}") from None
    except ValueError as e:  # a path with a NUL byte
        raise ConfigError(f"{shown}: cannot read: {_clean(str(e))}") from None
    if len(raw) > MAX_FILE_SIZE:
        raise ConfigError(f"{shown}: larger than {MAX_FILE_SIZE >> 20} MiB; not a wgmux config")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise ConfigError(f"{shown}:{line}: not UTF-8 text (byte {e.start}, column {column}: "
                          f"{raw[e.start:e.end]!r})") from None
    return parse(text, name)


# How long reading the config file may take.  A FIFO or a hung network
# filesystem would otherwise hold the daemon's one loop (and SIGTERM).
CONFIG_READ_TIMEOUT = 5.0


def load_bounded(path: str, timeout: float = CONFIG_READ_TIMEOUT) -> Config:
    """load(path), refusing what is not a regular file and giving up after
    `timeout` seconds (OSError): the read runs in a thread of its own, left
    behind if it hangs."""
    try:
        st = os.stat(path)
    except OSError:
        return load(path)              # it says what is wrong in its own words
    if not stat.S_ISREG(st.st_mode):
        raise OSError(f"{_path_text(os.fspath(path))} is not a regular file")
    box: dict = {}

    def read():
        try:
            box["config"] = load(path)
        except BaseException as e:     # handed to the caller
            box["error"] = e

    reader = threading.Thread(target=read, name="wgmux-config-read", daemon=True)
    reader.start()
    reader.join(timeout)
    if reader.is_alive():
        raise OSError(f"reading {_path_text(os.fspath(path))} took more than {timeout:g} s "
                      f"(a hung filesystem?)")
    if "error" in box:
        raise box["error"]
    return box["config"]


def parse(text: str, path: str = "<string>") -> Config:
    """Validate config ``text``; ``path`` is only used in messages.

    Whatever the text, the outcome is a Config or a ConfigError: every
    message names the file and, where there is one, the line, and shows keys
    and values escaped, so that no message spans or forges a line.
    """
    shown = _path_text(path)
    # Fewer brackets than that cannot nest too deep: no need to look.
    deep = _scan(text).too_deep if text.count("[") + text.count("{") > MAX_NESTING else None
    if deep is not None:
        line, column = deep
        raise ConfigError(f"{shown}:{line}: invalid TOML: arrays or inline tables nested more "
                          f"than {MAX_NESTING} deep (column {column}{_key_on_line(text, line)})")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(_toml_error(text, shown, str(e))) from None
    except RecursionError:
        # _scan should have caught it first; this is the backstop.
        scan = _scan(text)
        line = scan.deepest_line or 1
        raise ConfigError(f"{shown}:{line}: invalid TOML: nested too deeply"
                          f"{_key_on_line(text, line, first=True)}") from None
    except ValueError as e:
        # int() refuses decimal literals of more than 4300 digits.
        line = _long_number_line(text)
        where = f"{shown}:{line}" if line else shown
        m = re.search(r"value has (\d+) digits", str(e))
        what = f"an integer of {m.group(1)} digits, too long" if m else _clean(str(e))
        raise ConfigError(f"{where}: invalid TOML: {what}"
                          f"{_key_on_line(text, line, first=True) if line else ''}") from None
    except Exception as e:  # MemoryError and whatever else: never a traceback
        raise ConfigError(f"{shown}: cannot parse: {type(e).__name__}: {_clean(str(e))}") from None
    try:
        checker = _Checker(text, shown)
        config = checker.check(data)
        problems = checker.sorted_problems()
    except Exception as e:  # a bug here must not take a reload down with it
        raise ConfigError(f"{shown}: internal error while checking the config "
                          f"({type(e).__name__}: {_short(_clean(str(e)))}); please report it"
                          ) from None
    if problems:
        raise ConfigError(problems)
    assert config is not None
    return config


# --- showing text safely -------------------------------------------------------
#
# Keys, values and paths come from the file: they are shown as TOML basic
# strings, with every character that is not printable (controls, line and
# paragraph separators, format characters, non-ASCII spaces) escaped, so a
# message is always exactly one line.

_ESCAPES = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r",
            '"': '\\"', "\\": "\\\\"}


def _escape_char(ch: str) -> str:
    if ch in _ESCAPES:
        return _ESCAPES[ch]
    if ch.isprintable():
        return ch
    return f"\\u{ord(ch):04x}" if ord(ch) < 0x10000 else f"\\U{ord(ch):08x}"


def _clean(text: str) -> str:
    """``text`` with every non-printable character escaped."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escape_char(ch) for ch in text)


def _quoted(value: str, limit: int = 60) -> str:
    """A string as a TOML basic string, shortened so one message stays one line."""
    pieces = [_escape_char(ch) for ch in value[:limit]]
    if len(value) <= limit and 2 + sum(map(len, pieces)) <= limit:
        return '"' + "".join(pieces) + '"'
    kept, size = [], 1
    for piece in pieces:
        if size + len(piece) > limit - 4:
            break
        kept.append(piece)
        size += len(piece)
    return '"' + "".join(kept) + '..."'


_BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]{1,60}")


def _key_text(key: str) -> str:
    """A key as written in TOML: bare if it can be, else quoted and escaped."""
    return key if _BARE_KEY_RE.fullmatch(key) else _quoted(key)


def _path_text(path: str) -> str:
    return path if path.isprintable() else _quoted(path, limit=4096)


# --- where tomllib gave up -----------------------------------------------------

MAX_FILE_SIZE = 16 << 20     # 65535 peers take about 6 MiB
MAX_NESTING = 64             # a config needs 2 (Peer = [{...}])

_TOML_POSITION_RE = re.compile(r"^(.*) \(at line (\d+), column (\d+)\)$", re.S)
_TOML_END_RE = re.compile(r"^(.*) \(at end of document\)$", re.S)


@dataclass
class _Scan:
    too_deep: Optional[Tuple[int, int]] = None      # (line, column) past MAX_NESTING
    deepest_line: Optional[int] = None              # where nesting is deepest
    depth: int = 0
    open_string: Optional[int] = None               # line of a string open at the end
    open_brackets: List[Tuple[str, int, int]] = field(default_factory=list)
    last_line: int = 1                              # last line with anything on it


_SCAN_STOP_RE = re.compile(r"[#\"'\[\]{}\n]")
_BASIC_BODY_RE = re.compile(r'(?:[^"\\\n]|\\.)*')
_ML_BASIC_BODY_RE = re.compile(r'(?:[^"\\]|\\.|"(?!""))*', re.S)


def _scan(text: str) -> _Scan:
    """Just enough of a TOML lexer to tell which brackets and strings are
    open, at the end of the text and where nesting gets too deep."""
    out = _Scan()
    stripped = text.rstrip()
    out.last_line = stripped.count("\n") + 1
    stack = out.open_brackets
    line, line_start, i, n = 1, 0, 0, len(text)
    while True:
        m = _SCAN_STOP_RE.search(text, i)
        if not m:
            break
        i = m.start()
        c = text[i]
        if c == "\n":
            line, line_start, i = line + 1, i + 1, i + 1
        elif c == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif c in "[{":
            stack.append((c, line, i - line_start + 1))
            if len(stack) > out.depth:
                out.depth, out.deepest_line = len(stack), line
            if len(stack) > MAX_NESTING and out.too_deep is None:
                out.too_deep = (line, i - line_start + 1)
            i += 1
        elif c in "]}":
            if stack:
                stack.pop()
            i += 1
        else:  # a string: basic or literal, on one line or multi-line
            start = line
            close = c * 3 if text.startswith(c * 3, i) else c
            if c == '"':
                body = _ML_BASIC_BODY_RE if len(close) == 3 else _BASIC_BODY_RE
                j = body.match(text, i + len(close)).end()
            else:
                j = text.find(close, i + len(close))
                if len(close) == 1:  # a one-line string ends with its line at the latest
                    nl = text.find("\n", i + 1)
                    j = nl if nl >= 0 and (j < 0 or nl < j) else j
                j = n if j < 0 else j
            newlines = text.count("\n", i, j)
            if newlines:
                line += newlines
                line_start = text.rfind("\n", i, j) + 1
            if text.startswith(close, j):
                i = j + len(close)
            elif j >= n:
                out.open_string = start
                break
            else:
                i = j  # the newline ending a one-line string
    return out


def _key_on_line(text: str, line: Optional[int], first: bool = False) -> str:
    """", key K" if ``line`` of ``text`` assigns a key, else "" (" (key K)" for
    a message that has no parenthesis of its own)."""
    if not line:
        return ""
    lines = text.split("\n", line)
    if len(lines) < line:
        return ""
    m = _KEY_LINE_RE.match(lines[line - 1].strip())
    if not m:
        return ""
    key = ".".join(_key_text(s) for s in _key_segments(m.group(1)))
    return f" (key {key})" if first else f", key {key}"


def _long_number_line(text: str) -> Optional[int]:
    m = re.search(r"[=\[,{][ \t]*[+-]?[0-9][0-9_]{4299,}", text)
    return text.count("\n", 0, m.start()) + 1 if m else None


def _short(text: str, limit: int = 200) -> str:
    """Such as "Cannot declare ('a', 'a', ...) twice" for 2,000 a's."""
    return text if len(text) <= limit else text[:limit - 40] + " ... " + text[-35:]


def _toml_error(text: str, shown: str, message: str) -> str:
    """tomllib's message with the file and the line up front."""
    m = _TOML_POSITION_RE.match(message)
    if m:
        what, line, column = _short(_clean(m.group(1))), int(m.group(2)), int(m.group(3))
        return (f"{shown}:{line}: invalid TOML: {what} (column {column}"
                f"{_key_on_line(text, line)})")
    m = _TOML_END_RE.match(message)
    if not m:
        return f"{shown}: invalid TOML: {_short(_clean(message))}"
    what = _short(_clean(m.group(1)))
    scan = _scan(text)
    if scan.open_string is not None:
        line = scan.open_string
        why = "the string that starts on this line is never closed"
    elif scan.open_brackets:
        bracket, line, column = scan.open_brackets[-1]
        why = f'the "{bracket}" at column {column} is never closed'
    else:
        line, why = scan.last_line, ""
    return (f"{shown}:{line}: invalid TOML: {what} (at the end of the file"
            f"{'; ' + why if why else ''}{_key_on_line(text, line)})")


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


_TOML_ESCAPE_RE = re.compile(r"\\(?:u([0-9A-Fa-f]{4})|U([0-9A-Fa-f]{8})|(.))")
_UNESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\",
              "e": "\x1b"}


def _unescape(body: str) -> str:
    """The value of a TOML basic string's body (as far as it is valid)."""
    def one(m: "re.Match[str]") -> str:
        code = m.group(1) or m.group(2)
        if code:
            value = int(code, 16)
            return chr(value) if value <= 0x10FFFF else m.group(0)
        return _UNESCAPES.get(m.group(3), m.group(0))
    return _TOML_ESCAPE_RE.sub(one, body) if "\\" in body else body


def _key_segments(dotted: str) -> List[str]:
    segments = []
    for m in _SIMPLE_KEY_RE.finditer(dotted):
        s = m.group(0)
        if s.startswith('"'):
            s = _unescape(s[1:-1])
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

def _show(value: Any) -> str:
    """A value as it would be written in TOML, with its type."""
    if isinstance(value, bool):
        return f"{'true' if value else 'false'} (boolean)"
    if isinstance(value, str):
        return f"{_quoted(value)} (string)"
    if isinstance(value, int):
        return f"{_int_text(value)} (integer)"
    if isinstance(value, float):
        return f"{value!r} (float)"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"{_clean(str(value))} ({type(value).__name__})"


def _int_text(value: int) -> str:
    """An integer as written, unless it is too long to be worth reading."""
    if -10**30 < value < 10**30:
        return str(value)
    digits = int(math.log10(abs(value))) + 1
    if digits > 4000:  # str() refuses more than 4300 digits
        return f"an integer of about {digits} digits"
    shown = str(value)
    return f"{shown[:12]}... ({len(shown.lstrip('-'))} digits)"


def _number_text(value: Union[int, float]) -> str:
    return _int_text(value) if isinstance(value, int) else str(value)


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
    if "\0" in name:
        return f"{bad}: contains a NUL character"
    control = next((ch for ch in name if unicodedata.category(ch) == "Cc"), None)
    if control is not None:
        return f"{bad}: contains the control character {_escape_char(control)}"
    if any(ch.isspace() for ch in name):
        return f"{bad}: contains whitespace"
    odd = next((ch for ch in name if not ch.isprintable()), None)
    if odd is not None:
        return f"{bad}: contains the invisible character {_escape_char(odd)}"
    size = len(name.encode("utf-8", "surrogatepass"))
    if size >= IFNAMSIZ:
        return (f"{bad}: longer than {IFNAMSIZ - 1} bytes"
                + (f" ({size} bytes in UTF-8)" if size != len(name) else ""))
    if name in (".", ".."):
        return bad
    for ch in "/:":
        if ch in name:
            return f'{bad}: contains "{ch}"'
    return None


def _bounded_int(digits: str) -> int:
    """Decimal ``digits`` as an int, anything beyond 10**12 as 10**12 (more
    than any u32; and int() refuses more than 4300 digits)."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 12 else 10**12


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
        where = " ".join(part for part in (label, shown or (key and _key_text(key))) if part)
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
        shown = _key_text(key)
        if isinstance(value, dict):
            label, what = f"[{shown}]", "unknown section"
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            label, what = f"[[{shown}]]", "unknown section"
        else:
            label, what = shown, "key outside any section"
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
            # Not on any line: the file as a whole lacks it (line 1, as
            # compilers report such things).
            self.problems.append((0, len(self.problems),
                                  f"{self.path}:1: missing [Interface] section"))
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
        ifnames = self.interface_names(section, table, label, device)

        wg_util = section.get("WgUtil", "wg")
        if not isinstance(wg_util, str) or wg_util not in _WG_UTILS:
            self.report(table, label, "WgUtil", f'expected "wg" or "awg", got {_show(wg_util)}')
            wg_util = None

        datapath = section.get("Datapath", "auto")
        if not isinstance(datapath, str) or datapath not in DATAPATHS:
            self.report(table, label, "Datapath",
                        f'expected "auto", "xdp" or "tc", got {_show(datapath)}')
            datapath = None

        rate = self.rate(section, table, label, "HandshakeRate", HANDSHAKE_RATE)
        burst = self.integer(section, table, label, "HandshakeBurst", 1, HANDSHAKE_BURST_MAX)
        init_rate = self.rate(section, table, label, "InitiationRate", INITIATION_RATE)
        init_burst = self.integer(section, table, label, "InitiationBurst", 1,
                                  HANDSHAKE_BURST_MAX)
        max_sessions = self.integer(section, table, label, "MaxSessions", MAX_SESSIONS_MIN,
                                    MAX_SESSIONS_MAX)

        return dict(device=device, hub_port=hub_port, interface=ifnames and ifnames[0],
                    interfaces=ifnames or (), wg_util=wg_util,
                    datapath=datapath,
                    metrics_listen=self.listen_address(section, table, label, "MetricsListen"),
                    handshake_rate=rate,
                    handshake_burst=HANDSHAKE_BURST if burst is None else burst,
                    initiation_rate=init_rate,
                    initiation_burst=INITIATION_BURST if init_burst is None else init_burst,
                    max_sessions=MAX_SESSIONS if max_sessions is None else max_sessions,
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
                        f"{_number_text(rate)} is out of range "
                        f"{HANDSHAKE_RATE_MIN}-{HANDSHAKE_RATE_MAX} "
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
            port_number = int(port) if port.isascii() and port.isdigit() and len(port) <= 5 else 0
        except ValueError:
            port_number = 0
        if not sep or not 1 <= port_number <= 65535:
            self.report(table, label, key, f"{expected}, got {_show(value)}")
            return None
        return host, port_number

    def interface_names(self, section, table, label, device) -> Optional[Tuple[str, ...]]:
        """Interface: one name, or a list of 1..MAX_INTERFACES distinct
        names (spec §4c); None where invalid."""
        key = "Interface"
        if key in section and isinstance(section[key], list):
            values = section[key]
            if not 1 <= len(values) <= MAX_INTERFACES:
                self.report(table, label, key, f"expected 1 to {MAX_INTERFACES} interface "
                            f"names, got {len(values)}")
                return None
            names, ok = [], True
            for n, value in enumerate(values, 1):
                problem = (f"expected a string, got {_show(value)}" if not isinstance(value, str)
                           else _ifname_problem(value))
                if problem is None and value in names:
                    problem = f"{_quoted(value)} is listed twice"
                if problem:
                    self.report(table, label, key, f"entry {n}: {problem}")
                    ok = False
                names.append(value)
            if not ok:
                return None
        else:
            name = self.ifname(section, table, label, key)
            if name is None:
                return None
            names = [name]
        if device is not None and device in names:
            where = (f"same as Device {_quoted(device)}" if len(names) == 1 else
                     f"entry {names.index(device) + 1}: {_quoted(device)} is Device")
            self.report(table, label, key,
                        f"{where}; Interface is the network interface that carries the UDP "
                        "traffic (such as eth0), not the WireGuard device")
            return None
        return tuple(names)

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
            self.report(table, label, key, f"{_int_text(value)} is out of range {lo}-{hi}")
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
            shown, r = _int_text(value), (value, value)
        elif isinstance(value, str):
            m = _HEADER_STRING_RE.fullmatch(value.strip())
            if not m:
                self.report(table, label, key,
                            f'{_quoted(value)} is not an integer or a range "a-b"')
                return None
            lo = _bounded_int(m.group(1))
            hi = lo if m.group(2) is None else _bounded_int(m.group(2))
            shown, r = _quoted(value), (lo, hi)
            if lo > hi and lo <= U32_MAX:
                self.report(table, label, key, f"{shown} is reversed: {lo} > {hi}")
                return None
        else:
            self.report(table, label, key,
                        f'expected an integer or a range "a-b", got {_show(value)}')
            return None
        lowest = WIREGUARD_TYPES[-1][1] + 1
        if r[0] < lowest or max(r) > U32_MAX:
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
                label += f" (Port = {_int_text(section['Port'])})"
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
