"""wgmux.config: every rule, with the exact message a user gets."""

import base64
import re
from pathlib import Path

import pytest

from wgmux.config import (
    DEFAULT_PATH, AmneziaParams, Config, ConfigError, PeerConfig, load, parse,
)

KEY_A = base64.b64encode(bytes(range(32))).decode()
KEY_B = base64.b64encode(bytes(range(100, 132))).decode()
KEY_C = base64.b64encode(bytes(range(200, 232))).decode()

# Line numbers in the expected messages refer to this layout.
BASE = f"""\
[Interface]
Device = "wg0"
HubPort = 51820
Interface = "eth0"

[[Peer]]
Port = 51821
PublicKey = "{KEY_A}"

[[Peer]]
Port = 51822
PublicKey = "{KEY_B}"
"""
# With awg(...), lines 5.. are the inserted ones.
PEER1 = "[[Peer]] #1 (Port = 51821)"
PEER2 = "[[Peer]] #2 (Port = 51822)"
OUT_OF_H = "is out of range 5-4294967295"


def sub(old, new, text=BASE, count=1):
    assert old in text, old
    return text.replace(old, new, count)


def awg(*lines):
    """BASE with ``lines`` added to [Interface], as lines 5, 6, ..."""
    return sub('Interface = "eth0"\n', 'Interface = "eth0"\n' + "".join(line + "\n" for line in lines))


def problems(text):
    with pytest.raises(ConfigError) as info:
        parse(text, "cfg.toml")
    return list(info.value.problems)


BAD = [
    # -- syntax
    ("toml-syntax", sub("HubPort = 51820", "HubPort = "),
     ["cfg.toml:3: invalid TOML: Invalid value (column 11, key HubPort)"]),
    ("toml-duplicate-key", sub('Device = "wg0"', 'Device = "wg0"\nDevice = "wg1"'),
     ["cfg.toml:3: invalid TOML: Cannot overwrite a value (column 15, key Device)"]),
    # -- sections
    ("no-interface-section", BASE.split("\n\n", 1)[1],
     ["cfg.toml:1: missing [Interface] section"]),
    ("interface-as-string", 'Interface = "eth0"\n',
     ['cfg.toml:1: Interface: expected the [Interface] section, got "eth0" (string)']),
    ("interface-as-array", sub("[Interface]", "[[Interface]]"),
     ["cfg.toml:1: [[Interface]]: expected one [Interface] section, not an array"]),
    ("peer-single-brackets", sub("[[Peer]]", "[Peer]", count=2).split("\n\n[Peer]\nPort = 51822")[0],
     ["cfg.toml:6: [Peer]: write [[Peer]]: each responder is an entry of an array of tables"]),
    ("peer-not-a-table", "Peer = 5\n" + BASE.split("\n\n")[0],
     ["cfg.toml:1: Peer: expected [[Peer]] sections, got 5 (integer)"]),
    ("unknown-section-typo", sub("[[Peer]]\nPort = 51822", "[[Peers]]\nPort = 51822"),
     ["cfg.toml:10: [[Peers]]: unknown section; did you mean [[Peer]]?"]),
    ("unknown-section-case", sub("[Interface]", "[interface]"),
     ["cfg.toml:1: missing [Interface] section",
      "cfg.toml:1: [interface]: unknown section; did you mean [Interface]?"]),
    ("unknown-section", BASE + "[Logging]\nLevel = 1\n",
     ["cfg.toml:13: [Logging]: unknown section"]),
    ("key-above-sections", "HubPort = 51820\n" + sub("HubPort = 51820\n", ""),
     ["cfg.toml:1: HubPort: key outside any section; it belongs in [Interface]",
      "cfg.toml:2: [Interface]: missing required key HubPort"]),
    # -- [Interface] keys
    ("missing-device", sub('Device = "wg0"\n', ""),
     ["cfg.toml:1: [Interface]: missing required key Device"]),
    ("hubport-bool", sub("HubPort = 51820", "HubPort = true"),
     ["cfg.toml:3: [Interface] HubPort: expected an integer, got true (boolean)"]),
    ("hubport-string", sub("HubPort = 51820", 'HubPort = "51820"'),
     ['cfg.toml:3: [Interface] HubPort: expected an integer, got "51820" (string)']),
    ("hubport-float", sub("HubPort = 51820", "HubPort = 51820.0"),
     ["cfg.toml:3: [Interface] HubPort: expected an integer, got 51820.0 (float)"]),
    ("hubport-too-big", sub("HubPort = 51820", "HubPort = 65536"),
     ["cfg.toml:3: [Interface] HubPort: 65536 is out of range 1-65535"]),
    ("hubport-zero", sub("HubPort = 51820", "HubPort = 0"),
     ["cfg.toml:3: [Interface] HubPort: 0 is out of range 1-65535"]),
    ("hubport-lowercase", sub("HubPort = 51820", "hubport = 51820"),
     ["cfg.toml:1: [Interface]: missing required key HubPort",
      "cfg.toml:3: [Interface] hubport: unknown key; did you mean HubPort?"]),
    ("listenport", sub("HubPort = 51820", "ListenPort = 51820"),
     ["cfg.toml:1: [Interface]: missing required key HubPort",
      "cfg.toml:3: [Interface] ListenPort: unknown key; did you mean HubPort?"]),
    ("device-typo", awg('Devise = "wg1"'),
     ["cfg.toml:5: [Interface] Devise: unknown key; did you mean Device?"]),
    ("unknown-interface-key", awg("MTU = 1420"),
     ["cfg.toml:5: [Interface] MTU: unknown key"]),
    ("peer-key-in-interface", awg("Port = 51823"),
     ["cfg.toml:5: [Interface] Port: unknown key; it belongs in a [[Peer]] section"]),
    ("device-empty", sub('Device = "wg0"', 'Device = ""'),
     ["cfg.toml:2: [Interface] Device: must not be empty"]),
    ("device-not-string", sub('Device = "wg0"', "Device = 0"),
     ["cfg.toml:2: [Interface] Device: expected a string, got 0 (integer)"]),
    ("interface-too-long", sub('Interface = "eth0"', 'Interface = "enp0s31f6-uplink"'),
     ['cfg.toml:4: [Interface] Interface: "enp0s31f6-uplink" is not a valid interface name: '
      "longer than 15 bytes"]),
    ("interface-slash", sub('Interface = "eth0"', 'Interface = "eth0/1"'),
     ['cfg.toml:4: [Interface] Interface: "eth0/1" is not a valid interface name: contains "/"']),
    ("interface-whitespace", sub('Interface = "eth0"', 'Interface = "eth 0"'),
     ['cfg.toml:4: [Interface] Interface: "eth 0" is not a valid interface name: '
      "contains whitespace"]),
    ("interface-dot", sub('Interface = "eth0"', 'Interface = ".."'),
     ['cfg.toml:4: [Interface] Interface: ".." is not a valid interface name']),
    ("interface-is-device", sub('Interface = "eth0"', 'Interface = "wg0"'),
     ['cfg.toml:4: [Interface] Interface: same as Device "wg0"; Interface is the network '
      "interface that carries the UDP traffic (such as eth0), not the WireGuard device"]),
    ("interfaces-empty", sub('Interface = "eth0"', "Interface = []"),
     ["cfg.toml:4: [Interface] Interface: expected 1 to 8 interface names, got 0"]),
    ("interfaces-too-many", sub('Interface = "eth0"', "Interface = [%s]" % ", ".join(
        f'"eth{i}"' for i in range(9))),
     ["cfg.toml:4: [Interface] Interface: expected 1 to 8 interface names, got 9"]),
    ("interfaces-twice", sub('Interface = "eth0"', 'Interface = ["eth0", "eth1", "eth0"]'),
     ['cfg.toml:4: [Interface] Interface: entry 3: "eth0" is listed twice']),
    ("interfaces-bad-entries", sub('Interface = "eth0"', 'Interface = ["eth0", 1, "a/b"]'),
     ["cfg.toml:4: [Interface] Interface: entry 2: expected a string, got 1 (integer)",
      'cfg.toml:4: [Interface] Interface: entry 3: "a/b" is not a valid interface name: '
      'contains "/"']),
    ("interfaces-device", sub('Interface = "eth0"', 'Interface = ["eth0", "wg0"]'),
     ['cfg.toml:4: [Interface] Interface: entry 2: "wg0" is Device; Interface is the network '
      "interface that carries the UDP traffic (such as eth0), not the WireGuard device"]),
    ("metrics-hostname", awg('MetricsListen = "localhost:9586"'),
     ['cfg.toml:5: [Interface] MetricsListen: expected "host:port" such as "127.0.0.1:9586" '
      'or "[::1]:9586", got "localhost:9586" (string)']),
    ("metrics-no-port", awg('MetricsListen = "127.0.0.1"'),
     ['cfg.toml:5: [Interface] MetricsListen: expected "host:port" such as "127.0.0.1:9586" '
      'or "[::1]:9586", got "127.0.0.1" (string)']),
    ("metrics-integer", awg("MetricsListen = 9586"),
     ['cfg.toml:5: [Interface] MetricsListen: expected "host:port" such as "127.0.0.1:9586" '
      'or "[::1]:9586", got 9586 (integer)']),
    ("handshake-rate-string", awg('HandshakeRate = "100/s"'),
     ['cfg.toml:5: [Interface] HandshakeRate: expected a number of messages per second, '
      'got "100/s" (string)']),
    ("handshake-rate-negative", awg("HandshakeRate = -1"),
     ["cfg.toml:5: [Interface] HandshakeRate: -1 is out of range 0.01-1000000 (or 0: no limit)"]),
    ("handshake-rate-tiny", awg("HandshakeRate = 0.001"),
     ["cfg.toml:5: [Interface] HandshakeRate: 0.001 is out of range 0.01-1000000 "
      "(or 0: no limit)"]),
    ("handshake-burst-zero", awg("HandshakeBurst = 0"),
     ["cfg.toml:5: [Interface] HandshakeBurst: 0 is out of range 1-1000000"]),
    ("handshake-burst-float", awg("HandshakeBurst = 2.5"),
     ["cfg.toml:5: [Interface] HandshakeBurst: expected an integer, got 2.5 (float)"]),
    ("max-sessions-small", awg("MaxSessions = 100"),
     ["cfg.toml:5: [Interface] MaxSessions: 100 is out of range 1024-16777216"]),
    ("max-sessions-huge", awg("MaxSessions = 100_000_000"),
     ["cfg.toml:5: [Interface] MaxSessions: 100000000 is out of range 1024-16777216"]),
    ("max-sessions-string", awg('MaxSessions = "1M"'),
     ["cfg.toml:5: [Interface] MaxSessions: expected an integer, got \"1M\" (string)"]),
    ("handshake-typo", awg("HandshakeRates = 10"),
     ["cfg.toml:5: [Interface] HandshakeRates: unknown key; did you mean HandshakeRate?"]),
    # -- names the kernel refuses, shown escaped (issue 11)
    ("device-nul", sub('Device = "wg0"', 'Device = "\\u0000"'),
     ['cfg.toml:2: [Interface] Device: "\\u0000" is not a valid interface name: '
      "contains a NUL character"]),
    ("device-nul-inside", sub('Device = "wg0"', 'Device = "wg\\u00000"'),
     ['cfg.toml:2: [Interface] Device: "wg\\u00000" is not a valid interface name: '
      "contains a NUL character"]),
    ("device-escape-sequence", sub('Device = "wg0"', 'Device = "\\u001b[31mwg0"'),
     ['cfg.toml:2: [Interface] Device: "\\u001b[31mwg0" is not a valid interface name: '
      "contains the control character \\u001b"]),
    ("device-newline", sub('Device = "wg0"', 'Device = "wg0\\n[ ok ] x"'),
     ['cfg.toml:2: [Interface] Device: "wg0\\n[ ok ] x" is not a valid interface name: '
      "contains the control character \\n"]),
    ("interface-zero-width", sub('Interface = "eth0"', 'Interface = "eth\\u200b0"'),
     ['cfg.toml:4: [Interface] Interface: "eth\\u200b0" is not a valid interface name: '
      "contains the invisible character \\u200b"]),
    ("interface-16-bytes", sub('Interface = "eth0"', 'Interface = "' + "é" * 8 + '"'),
     ['cfg.toml:4: [Interface] Interface: "' + "é" * 8 + '" is not a valid interface name: '
      "longer than 15 bytes (16 bytes in UTF-8)"]),
    ("interface-colon", sub('Interface = "eth0"', 'Interface = "eth0:1"'),
     ['cfg.toml:4: [Interface] Interface: "eth0:1" is not a valid interface name: contains ":"']),
    ("key-with-newline", awg('"x\\n[ ok ] config fine" = 1'),
     ['cfg.toml:5: [Interface] "x\\n[ ok ] config fine": unknown key']),
    ("key-with-toml-escape", awg('"\\U0001F600\\u2028" = 1'),
     ['cfg.toml:5: [Interface] "\U0001F600\\u2028": unknown key']),
    ("section-with-cr", BASE + '["a\\rb"]\n',
     ['cfg.toml:13: ["a\\rb"]: unknown section']),
    ("top-key-with-escape", '"\\u001b[2J" = 1\n' + BASE,
     ['cfg.toml:1: "\\u001b[2J": key outside any section']),
    # -- numbers of any size
    ("huge-decimal", sub("HubPort = 51820", "HubPort = " + "9" * 5000),
     ["cfg.toml:3: invalid TOML: an integer of 5000 digits, too long (key HubPort)"]),
    ("huge-hex", sub("HubPort = 51820", "HubPort = 0x" + "f" * 5000),
     ["cfg.toml:3: [Interface] HubPort: an integer of about 6021 digits is out of range 1-65535"]),
    ("big-port", sub("Port = 51822", "Port = " + "1" * 40),
     ["cfg.toml:11: [[Peer]] #2 (Port = 111111111111... (40 digits)) Port: "
      "111111111111... (40 digits) is out of range 1-65535"]),
    ("huge-header-range", awg('H1 = "5-' + "9" * 5000 + '"', "H2 = 6", "H3 = 7", "H4 = 8"),
     ['cfg.toml:5: [Interface] H1: "5-' + "9" * 53 + '..." ' + OUT_OF_H]),
    ("huge-header-reversed", awg('H1 = "99999999999999-5"', "H2 = 6", "H3 = 7", "H4 = 8"),
     [f'cfg.toml:5: [Interface] H1: "99999999999999-5" {OUT_OF_H}']),
    ("rate-infinite", awg("HandshakeRate = inf"),
     ["cfg.toml:5: [Interface] HandshakeRate: inf is out of range 0.01-1000000 (or 0: no limit)"]),
    ("metrics-port-space", awg('MetricsListen = "127.0.0.1: 9586"'),
     ['cfg.toml:5: [Interface] MetricsListen: expected "host:port" such as "127.0.0.1:9586" '
      'or "[::1]:9586", got "127.0.0.1: 9586" (string)']),
    # -- nesting and truncation: a line where there is one
    ("nested-2000", awg("Jc = " + "[" * 2000 + "]" * 2000),
     ["cfg.toml:5: invalid TOML: arrays or inline tables nested more than 64 deep "
      "(column 70, key Jc)"]),
    ("nested-tables", awg("Jc = " + "{ a = " * 100 + "1" + " }" * 100),
     ["cfg.toml:5: invalid TOML: arrays or inline tables nested more than 64 deep "
      "(column 390, key Jc)"]),
    ("nested-64-is-parsed", awg("Jc = " + "[" * 64 + "]" * 64),
     ["cfg.toml:5: [Interface] Jc: expected an integer, got an array"]),
    ("eof-in-string", BASE[:BASE.index(KEY_B) + 5],
     ["cfg.toml:12: invalid TOML: Unterminated string (at the end of the file; the string "
      "that starts on this line is never closed, key PublicKey)"]),
    ("eof-in-multiline-string", awg("I1 = '''<b 0x00>", "", ""),
     ["cfg.toml:5: invalid TOML: Expected \"'''\" (at the end of the file; the string "
      "that starts on this line is never closed, key I1)"]),
    ("eof-in-array", BASE + "Junk = [\n  1,\n  2,\n",
     ['cfg.toml:13: invalid TOML: Invalid value (at the end of the file; the "[" at column 8 '
      "is never closed, key Junk)"]),
    ("eof-after-equals", BASE + "Jc =",
     ["cfg.toml:13: invalid TOML: Invalid value (at the end of the file, key Jc)"]),
    ("eof-in-header", BASE + "\n[[Pe",
     ["cfg.toml:14: invalid TOML: Expected ']]' at the end of an array declaration "
      '(at the end of the file; the "[" at column 2 is never closed)']),
    ("eof-in-key", BASE + "\n\nJc",
     ["cfg.toml:15: invalid TOML: Expected '=' after a key in a key/value pair "
      "(at the end of the file)"]),
    ("raw-control-character", sub('Device = "wg0"', 'Device = "wg\x1b0"'),
     ["cfg.toml:2: invalid TOML: Illegal character '\\x1b' (column 13, key Device)"]),
    ("empty-file", "", ["cfg.toml:1: missing [Interface] section"]),
    ("wgutil", awg('WgUtil = "wireguard"'),
     ['cfg.toml:5: [Interface] WgUtil: expected "wg" or "awg", got "wireguard" (string)']),
    # -- [[Peer]]
    ("peer-port-missing", sub("Port = 51822\n", ""),
     ["cfg.toml:10: [[Peer]] #2: missing required key Port"]),
    ("peer-key-missing", sub(f'PublicKey = "{KEY_B}"\n', ""),
     [f"cfg.toml:10: {PEER2}: missing required key PublicKey"]),
    ("peer-empty", BASE + "\n[[Peer]]\n",
     ["cfg.toml:14: [[Peer]] #3: missing required key Port",
      "cfg.toml:14: [[Peer]] #3: missing required key PublicKey"]),
    ("peer-port-bool", sub("Port = 51822", "Port = false"),
     ["cfg.toml:11: [[Peer]] #2 Port: expected an integer, got false (boolean)"]),
    ("peer-port-range", sub("Port = 51822", "Port = 100000"),
     ["cfg.toml:11: [[Peer]] #2 (Port = 100000) Port: 100000 is out of range 1-65535"]),
    ("peer-port-is-hubport", sub("Port = 51821", "Port = 51820"),
     ["cfg.toml:7: [[Peer]] #1 (Port = 51820) Port: same as HubPort; each peer needs a port "
      "of its own"]),
    ("peer-port-duplicate", sub("Port = 51822", "Port = 51821"),
     [f"cfg.toml:11: [[Peer]] #2 (Port = 51821) Port: already used by {PEER1}"]),
    ("key-too-short", sub(KEY_B, "AAECAw=="),
     [f'cfg.toml:12: {PEER2} PublicKey: "AAECAw==" is not a WireGuard key '
      "(base64 of 32 bytes, 44 characters)"]),
    ("key-33-bytes", sub(KEY_B, base64.b64encode(bytes(33)).decode()),
     [f'cfg.toml:12: {PEER2} PublicKey: "{base64.b64encode(bytes(33)).decode()}" is not a '
      "WireGuard key (base64 of 32 bytes, 44 characters)"]),
    ("key-no-padding", sub(KEY_B, KEY_B.rstrip("=")),
     [f'cfg.toml:12: {PEER2} PublicKey: "{KEY_B.rstrip("=")}" is not a WireGuard key '
      "(base64 of 32 bytes, 44 characters)"]),
    ("key-trailing-bits", sub(KEY_A, KEY_A[:42] + "x="),
     [f'cfg.toml:8: {PEER1} PublicKey: "{KEY_A[:42]}x=" is not a WireGuard key '
      "(base64 of 32 bytes, 44 characters)"]),
    ("key-urlsafe", sub(KEY_B, KEY_B.replace("+", "-").replace("/", "_")),
     [f'cfg.toml:12: {PEER2} PublicKey: "{KEY_B.replace("+", "-").replace("/", "_")}" is not a '
      "WireGuard key (base64 of 32 bytes, 44 characters)"]),
    ("key-hex", sub(KEY_B, "ab" * 32),
     [f'cfg.toml:12: {PEER2} PublicKey: "{("ab" * 28)[:55]}..." is not a WireGuard key '
      "(base64 of 32 bytes, 44 characters)"]),
    ("key-not-string", sub(f'"{KEY_B}"', "32"),
     [f"cfg.toml:12: {PEER2} PublicKey: expected a string, got 32 (integer)"]),
    ("key-duplicate", sub(KEY_B, KEY_A),
     [f"cfg.toml:12: {PEER2} PublicKey: same key as {PEER1}"]),
    ("peer-key-case", sub(f'PublicKey = "{KEY_B}"', f'Publickey = "{KEY_B}"'),
     [f"cfg.toml:10: {PEER2}: missing required key PublicKey",
      f"cfg.toml:12: {PEER2} Publickey: unknown key; did you mean PublicKey?"]),
    ("peer-endpoint", sub("Port = 51822", 'Port = 51822\nEndpoint = "1.2.3.4:51820"'),
     [f"cfg.toml:12: {PEER2} Endpoint: unknown key"]),
    ("awg-key-in-peer", sub("Port = 51822", "Port = 51822\nJc = 4"),
     [f"cfg.toml:12: {PEER2} Jc: unknown key; it belongs in [Interface]"]),
    # -- AmneziaWG
    ("jc-range", awg("Jc = 129", "Jmin = 10", "Jmax = 50"),
     ["cfg.toml:5: [Interface] Jc: 129 is out of range 0-128"]),
    ("jc-needs-jmin-jmax", awg("Jc = 4"),
     ["cfg.toml:5: [Interface] Jc: Jc = 4 needs Jmin and Jmax"]),
    ("jc-needs-jmax", awg("Jc = 4", "Jmin = 10"),
     ["cfg.toml:5: [Interface] Jc: Jc = 4 needs Jmax"]),
    ("jmin-above-jmax", awg("Jc = 4", "Jmin = 100", "Jmax = 50"),
     ["cfg.toml:7: [Interface] Jmax: Jmax = 50 is less than Jmin = 100"]),
    ("jmax-range", awg("Jc = 4", "Jmin = 100", "Jmax = 1281"),
     ["cfg.toml:7: [Interface] Jmax: 1281 is out of range 0-1280"]),
    ("jc-bool", awg("Jc = true"),
     ["cfg.toml:5: [Interface] Jc: expected an integer, got true (boolean)"]),
    ("s1-range", awg("S1 = 1133"),
     ["cfg.toml:5: [Interface] S1: 1133 is out of range 0-1132"]),
    ("s2-range", awg("S2 = 1189"),
     ["cfg.toml:5: [Interface] S2: 1189 is out of range 0-1188"]),
    ("s3-range", awg("S3 = 1217"),
     ["cfg.toml:5: [Interface] S3: 1217 is out of range 0-1216"]),
    ("s4-range", awg("S4 = 33"),
     ["cfg.toml:5: [Interface] S4: 33 is out of range 0-32"]),
    ("s-negative", awg("S1 = -1"),
     ["cfg.toml:5: [Interface] S1: -1 is out of range 0-1132"]),
    ("init-response-same-size", awg("S1 = 10", "S2 = 66"),
     ["cfg.toml:6: [Interface] S2: response size 92 + S2 = 158 equals initiation size "
      "148 + S1 = 158; padded handshake sizes must differ"]),
    ("init-response-same-size-s1-unset", awg("S2 = 56"),
     ["cfg.toml:5: [Interface] S2: response size 92 + S2 = 148 equals initiation size "
      "148 + S1 = 148; padded handshake sizes must differ"]),
    ("init-cookie-same-size", awg("S3 = 84"),
     ["cfg.toml:5: [Interface] S3: cookie size 64 + S3 = 148 equals initiation size "
      "148 + S1 = 148; padded handshake sizes must differ"]),
    ("response-cookie-same-size", awg("S2 = 20", "S3 = 48"),
     ["cfg.toml:6: [Interface] S3: cookie size 64 + S3 = 112 equals response size "
      "92 + S2 = 112; padded handshake sizes must differ"]),
    ("h-partial", awg("H1 = 100", "H2 = 200"),
     ["cfg.toml:5: [Interface] H1: H1-H4 must be set together; missing H3, H4"]),
    ("h-wireguard-type", awg("H1 = 1", "H2 = 200", "H3 = 300", "H4 = 400"),
     [f"cfg.toml:5: [Interface] H1: 1 {OUT_OF_H} (1-4 are WireGuard's own message types)"]),
    ("h-too-big", awg("H1 = 100", "H2 = 200", "H3 = 300", "H4 = 4294967296"),
     [f"cfg.toml:8: [Interface] H4: 4294967296 {OUT_OF_H}"]),
    ("h-range-too-big", awg("H1 = 100", "H2 = 200", "H3 = 300", 'H4 = "400-4294967296"'),
     [f'cfg.toml:8: [Interface] H4: "400-4294967296" {OUT_OF_H}']),
    ("h-duplicate", awg("H1 = 100", "H2 = 200", "H3 = 100", "H4 = 400"),
     ["cfg.toml:7: [Interface] H3: 100 overlaps H1 = 100; H1-H4 must not overlap"]),
    ("h-ranges-overlap", awg('H1 = "100-199"', 'H2 = "150-250"', "H3 = 300", 'H4 = "240-299"'),
     ["cfg.toml:6: [Interface] H2: 150-250 overlaps H1 = 100-199; H1-H4 must not overlap",
      "cfg.toml:8: [Interface] H4: 240-299 overlaps H2 = 150-250; H1-H4 must not overlap"]),
    ("h-range-reversed", awg('H1 = "200-100"', "H2 = 300", "H3 = 400", "H4 = 500"),
     ['cfg.toml:5: [Interface] H1: "200-100" is reversed: 200 > 100']),
    ("h-garbage", awg('H1 = "0x10"', "H2 = 300", "H3 = 400", "H4 = 500"),
     ['cfg.toml:5: [Interface] H1: "0x10" is not an integer or a range "a-b"']),
    ("h-float", awg("H1 = 1e9", "H2 = 300", "H3 = 400", "H4 = 500"),
     ['cfg.toml:5: [Interface] H1: expected an integer or a range "a-b", got 1000000000.0 (float)']),
    ("i-not-string", awg("I1 = 5"),
     ["cfg.toml:5: [Interface] I1: expected a string, got 5 (integer)"]),
    ("awg3-header-protection", awg('HeaderProtectionKey = "AAAA"'),
     ["cfg.toml:5: [Interface] HeaderProtectionKey: AmneziaWG 3.x setting, not supported by wgmux"]),
    ("awg3-any-case", awg("randomtrailers = true"),
     ["cfg.toml:5: [Interface] randomtrailers: AmneziaWG 3.x setting, not supported by wgmux"]),
]


@pytest.mark.parametrize("text, expected", [(t, e) for _, t, e in BAD], ids=[i for i, _, _ in BAD])
def test_bad_config(text, expected):
    assert problems(text) == expected


def test_message_is_one_problem_per_line():
    text = sub("HubPort = 51820", "HubPort = true", sub("Port = 51822", "Port = 51821"))
    with pytest.raises(ConfigError) as info:
        parse(text, "cfg.toml")
    assert str(info.value) == "\n".join(info.value.problems)
    assert len(str(info.value).splitlines()) == 2
    assert isinstance(info.value, ValueError)


def test_all_problems_reported_in_line_order():
    text = f"""\
# a comment
[Interface]
Device = "wg 0"
HubPort = "51820"
Interface = "eth0"
WgUtil = "awgg"
Jc = 300
H1 = 3

[[Peer]]
Port = 51820
PublicKey = "nope"
Endpoint = "x"

[[Peer]]
PublicKey = "{KEY_A}"

[[Peer]]
Port = 51821
PublicKey = "{KEY_A}"
"""
    assert problems(text) == [
        'cfg.toml:3: [Interface] Device: "wg 0" is not a valid interface name: contains whitespace',
        'cfg.toml:4: [Interface] HubPort: expected an integer, got "51820" (string)',
        'cfg.toml:6: [Interface] WgUtil: expected "wg" or "awg", got "awgg" (string)',
        "cfg.toml:7: [Interface] Jc: 300 is out of range 0-128",
        f"cfg.toml:8: [Interface] H1: 3 {OUT_OF_H} (1-4 are WireGuard's own message types)",
        "cfg.toml:8: [Interface] H1: H1-H4 must be set together; missing H2, H3, H4",
        'cfg.toml:12: [[Peer]] #1 (Port = 51820) PublicKey: "nope" is not a WireGuard key '
        "(base64 of 32 bytes, 44 characters)",
        'cfg.toml:13: [[Peer]] #1 (Port = 51820) Endpoint: unknown key',
        "cfg.toml:15: [[Peer]] #2: missing required key Port",
        "cfg.toml:20: [[Peer]] #3 (Port = 51821) PublicKey: same key as [[Peer]] #2",
    ]


def test_lines_found_past_comments_quotes_and_multiline_strings():
    text = f"""\
[Interface]   # the hub
  "Device" = "wg0"
HubPort = 51820
Interface = 'eth0'
I1 = '''
HubPort = 1
[[Peer]]
'''
Jc = 200

# [[Peer]]
[[Peer]]
Port = 51821
PublicKey = "{KEY_A}"
[[ Peer ]]
Port = 51821
PublicKey = "{KEY_B}"
"""
    assert problems(text) == [
        "cfg.toml:9: [Interface] Jc: 200 is out of range 0-128",
        f"cfg.toml:16: [[Peer]] #2 (Port = 51821) Port: already used by {PEER1}",
    ]


def test_inline_tables_fall_back_to_the_line_of_their_key():
    text = f"""\
Interface = {{ Device = "wg0", HubPort = 0, Interface = "eth0" }}
Peer = [
  {{ Port = 51821, PublicKey = "{KEY_A}" }},
  {{ Port = 51821, PublicKey = "{KEY_B}" }},
]
"""
    assert problems(text) == [
        "cfg.toml:1: [Interface] HubPort: 0 is out of range 1-65535",
        f"cfg.toml:2: [[Peer]] #2 (Port = 51821) Port: already used by {PEER1}",
    ]


def test_subtable_is_reported_as_unknown_key():
    assert problems(BASE + "[Peer.extra]\nx = 1\n") == [
        f"cfg.toml:13: {PEER2} extra: unknown key",
    ]


# -- good configs

def test_minimal():
    text = '[Interface]\nDevice = "wg0"\nHubPort = 51820\nInterface = "eth0"\n'
    config = parse(text)
    assert config == Config(device="wg0", hub_port=51820, interface="eth0")
    assert config.wg_util == "wg"
    assert config.peers == () and config.ports == ()
    assert config.path == "<string>"
    assert config.amnezia == AmneziaParams()
    assert not config.amnezia.enabled and config.amnezia.version is None


def test_peers():
    config = parse(BASE, "/etc/wgmux/x.toml")
    assert config.peers == (PeerConfig(51821, KEY_A), PeerConfig(51822, KEY_B))
    assert config.ports == (51821, 51822)
    assert config.peer_by_port(51822).public_key == KEY_B
    assert config.peer_by_port(51820) is None
    assert config.peer_by_key(KEY_A).port == 51821
    assert config.peer_by_key(bytes(range(100, 132))).port == 51822
    assert config.peer_by_key(KEY_C) is None
    assert config.peers[0].public_key_bytes == bytes(range(32))
    assert config.path == "/etc/wgmux/x.toml"


def test_amnezia_1_0():
    config = parse(awg('WgUtil = "awg"', "Jc = 4", "Jmin = 40", "Jmax = 70", "S1 = 52", "S2 = 81",
                       "H1 = 1376421553", "H2 = 742188613", "H3 = 1915338721", "H4 = 1089032540"))
    assert config.wg_util == "awg"
    a = config.amnezia
    assert (a.jc, a.jmin, a.jmax) == (4, 40, 70)
    assert a.prefixes == (52, 81, 0, 0)
    assert a.headers == ((1376421553,) * 2, (742188613,) * 2, (1915338721,) * 2, (1089032540,) * 2)
    assert a.enabled and a.version == "1.0"


def test_amnezia_2_0_ranges():
    a = parse(awg("Jc = 3", "Jmin = 10", "Jmax = 10", "S1 = 15", "S2 = 18", "S3 = 20", "S4 = 32",
                  'H1 = "5-1000"', 'H2 = "1001-2000"', "H3 = 2001", 'H4 = "3000-4294967295"',
                  'I1 = "<b 0xc00000080000000000>"', 'I2 = ""')).amnezia
    assert a.headers == ((5, 1000), (1001, 2000), (2001, 2001), (3000, 4294967295))
    assert a.prefixes == (15, 18, 20, 32)
    assert a.i1 == "<b 0xc00000080000000000>" and a.i2 is None
    assert a.version == "2.0"


@pytest.mark.parametrize("lines, version", [
    (["S1 = 0", "S2 = 0"], None),                     # the defaults: still plain WireGuard
    (["Jc = 2", "Jmin = 1", "Jmax = 2"], "1.0"),      # junk only, plain headers
    (["S1 = 30"], "1.0"),
    (['H1 = "5"', "H2 = 6", "H3 = 7", "H4 = 8"], "1.0"),  # a one-value range is a single value
    (["S3 = 1"], "2.0"),
    (["S4 = 1"], "2.0"),
    (['I3 = "<r 10>"'], "2.0"),
    (['H1 = "5-6"', "H2 = 7", "H3 = 8", "H4 = 9"], "2.0"),
], ids=["defaults", "junk", "s1", "h-single", "s3", "s4", "i3", "h-range"])
def test_amnezia_version(lines, version):
    a = parse(awg(*lines)).amnezia
    assert a.version == version
    assert a.enabled == (version is not None)


@pytest.mark.parametrize("line", ["Jc = 128\nJmin = 1280\nJmax = 1280", "S1 = 1132", "S2 = 1188",
                                  "S3 = 1216", "S4 = 32"])
def test_limits_are_inclusive(line):
    # One at a time: at their maxima, 148 + S1 = 92 + S2 = 64 + S3 = 1280.
    a = parse(awg(line)).amnezia
    key, value = line.split("\n")[-1].split(" = ")
    assert getattr(a, key.lower()) == int(value)


def test_example_config_is_valid():
    example = Path(__file__).resolve().parents[2] / "examples" / "config.toml"
    config = load(example)
    assert config.device == "wg0" and config.hub_port == 51820 and config.interface == "eth0"
    assert config.ports == (51821, 51822)
    assert not config.amnezia.enabled


@pytest.mark.parametrize("block, version", [("Jc = 4", "1.0"), ("S3 = 30", "2.0")])
def test_example_amnezia_blocks_are_valid(block, version):
    """Each commented-out AmneziaWG block in the example works once uncommented."""
    text = (Path(__file__).resolve().parents[2] / "examples" / "config.toml").read_text()
    lines = text.splitlines()
    start = lines.index("# " + block)
    end = next(i for i in range(start, len(lines)) if not re.match(r"# [A-Z]\w* = ", lines[i]))
    lines[start:end] = [line[2:] for line in lines[start:end]]
    assert parse("\n".join(lines)).amnezia.version == version


# -- load()

def test_load_reports_the_file(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(sub("HubPort = 51820", "HubPort = 1.5"))
    with pytest.raises(ConfigError) as info:
        load(path)
    assert info.value.problems == (
        f"{path}:3: [Interface] HubPort: expected an integer, got 1.5 (float)",)
    path.write_text(BASE)
    assert load(str(path)).path == str(path)


def test_load_missing_file(tmp_path):
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"^.*nope\.toml: cannot read: No such file or directory$"):
        load(path)


def test_load_not_utf8(tmp_path):
    path = tmp_path / "config.toml"
    path.write_bytes(b"[Interface]\nDevice = \"\xff\"\n")
    with pytest.raises(ConfigError,
                       match=r"config\.toml:2: not UTF-8 text \(byte 22, column 11: b'\\xff'\)$"):
        load(path)


def test_load_path_with_nul():
    with pytest.raises(ConfigError, match=r'^"cfg\\u0000\.toml": cannot read: embedded null byte$'):
        load("cfg\0.toml")


def test_path_shown_escaped():
    with pytest.raises(ConfigError) as info:
        parse(sub("HubPort = 51820", "HubPort = 0"), "/tmp/a\n[ ok ] b.toml")
    assert info.value.problems == (
        '"/tmp/a\\n[ ok ] b.toml":3: [Interface] HubPort: 0 is out of range 1-65535',)


def test_not_utf8_names_line_and_column(tmp_path):
    path = tmp_path / "config.toml"
    path.write_bytes(BASE.encode().replace(b"eth0", b"eth\xc0\x80"))
    with pytest.raises(ConfigError) as info:
        load(path)
    byte = BASE.index("eth0") + 3
    assert info.value.problems == (f"{path}:4: not UTF-8 text (byte {byte}, column 17: b'\\xc0')",)


def test_every_message_is_one_printable_line():
    """Keys, values and sections from the file come out escaped: no message
    can print a line of its own (such as a fake "[ ok ]" of wgmux check)."""
    text = awg('"a\\n[ ok ] b" = 1', "I1 = 5", '"\\u2028\\u0085\\u202e" = "x"')
    text = sub('Device = "wg0"', 'Device = "\\u0000\\t"', text) + '["\\r\\u001b[1A"]\nx = 1\n'
    found = problems(text)
    assert len(found) == 5, found
    for problem in found:
        assert problem.isprintable(), problem
        assert re.match(r"cfg\.toml:\d+: ", problem), problem


def test_a_bug_in_the_checker_is_still_a_config_error(monkeypatch):
    from wgmux import config as config_module

    def broken(self, data):
        raise KeyError("surprise\n[ ok ] fine")

    monkeypatch.setattr(config_module._Checker, "check", broken)
    with pytest.raises(ConfigError) as info:
        parse(BASE, "cfg.toml")
    assert info.value.problems == (
        "cfg.toml: internal error while checking the config "
        "(KeyError: 'surprise\\n[ ok ] fine'); please report it",)


def test_recursion_backstop(monkeypatch):
    """Should tomllib recurse too deep below the nesting limit (a caller deep
    in its own stack), the error is still a ConfigError with the line."""
    from wgmux import config as config_module

    monkeypatch.setattr(config_module, "MAX_NESTING", 100000)
    with pytest.raises(ConfigError) as info:
        parse(awg("Jc = " + "[" * 5000 + "]" * 5000), "cfg.toml")
    assert info.value.problems == ("cfg.toml:5: invalid TOML: nested too deeply (key Jc)",)


def test_default_path():
    assert DEFAULT_PATH == "/etc/wgmux/config.toml"


@pytest.mark.parametrize("value,expected", [
    ('"127.0.0.1:9586"', ("127.0.0.1", 9586)),
    ('"[::1]:9586"', ("::1", 9586)),
    ('"0.0.0.0:1"', ("0.0.0.0", 1)),
])
def test_metrics_listen(value, expected):
    text = '[Interface]\nDevice = "wg0"\nHubPort = 51820\nInterface = "eth0"\n'
    assert parse(text).metrics_listen is None
    assert parse(text + f"MetricsListen = {value}\n").metrics_listen == expected


def test_max_sessions():
    text = '[Interface]\nDevice = "wg0"\nHubPort = 51820\nInterface = "eth0"\n'
    assert parse(text).max_sessions == 65536
    assert parse(text + "MaxSessions = 1_048_576\n").max_sessions == 1 << 20


def test_handshake_rate_limit():
    text = '[Interface]\nDevice = "wg0"\nHubPort = 51820\nInterface = "eth0"\n'
    default = parse(text)
    assert (default.handshake_rate, default.handshake_burst) == (250.0, 100)
    tuned = parse(text + "HandshakeRate = 20\nHandshakeBurst = 5\n")
    assert (tuned.handshake_rate, tuned.handshake_burst) == (20.0, 5)
    assert parse(text + "HandshakeRate = 0\n").handshake_rate == 0.0      # no limit
    assert parse(text + "HandshakeRate = 0.5\n").handshake_rate == 0.5


def test_interface_list_attaches_to_each_and_the_first_names_the_instance():
    cfg = parse(sub('Interface = "eth0"', 'Interface = ["eth1", "eth0"]'), "cfg.toml")
    assert cfg.interfaces == ("eth1", "eth0")
    assert cfg.interface == "eth1"


def test_a_single_interface_is_a_list_of_one():
    assert parse(BASE, "cfg.toml").interfaces == ("eth0",)
    assert parse(sub('Interface = "eth0"', 'Interface = ["eth0"]'), "cfg.toml").interfaces \
        == ("eth0",)
