"""The Prometheus rendering of a daemon status (format and values)."""

import json
import math
import re
import time

import pytest

from wgmux.datapath import COUNTERS
from wgmux.metrics import render

STATUS = {
    "started": 1700000000.0,
    "reloads": 2,
    "stale_sessions": 1,
    "counters": {"pass_hub": 7, "reflect_transport": 42, "drop_unclassified": 3,
                 "ev_session_established": 1, "sp_mac1_bad": 5},
    "sessions": [
        {"port": 51821, "state": "established", "i2r_bytes": 1000, "r2i_bytes": 2000,
         "i2r_packets": 10, "r2i_packets": 20},
        {"port": 51821, "state": "half-open", "i2r_bytes": 0, "r2i_bytes": 148,
         "i2r_packets": 0, "r2i_packets": 1},
    ],
    "peers": [{"endpoint": "198.18.0.2:51820"}, {"endpoint": None}],
    "slow_path": {"initiators": [{"port": 51821}]},
    "datapath": "xdp",
    "datapath_setting": "auto",
}

SAMPLE = re.compile(r'^[a-z_]+(\{([a-z_]+="[^"]*",?)+\})? -?[0-9.e+-]+$')


def test_every_line_is_exposition_format():
    text = render(STATUS)
    assert text.endswith("\n")
    for line in text.splitlines():
        assert line.startswith("# HELP ") or line.startswith("# TYPE ") or SAMPLE.match(line), line


def test_values():
    lines = set(render(STATUS).splitlines())
    for expected in [
        'wgmux_packets_total{verdict="pass",reason="hub"} 7',
        'wgmux_packets_total{verdict="reflect",reason="transport"} 42',
        'wgmux_packets_total{verdict="drop",reason="unclassified"} 3',
        'wgmux_events_total{event="session_established"} 1',
        'wgmux_events_total{event="sp_mac1_bad"} 5',
        'wgmux_sessions{state="established"} 1',
        'wgmux_sessions{state="half-open"} 1',
        'wgmux_session_entries_stale 1',
        'wgmux_responders{state="known"} 1',
        'wgmux_responders{state="unknown"} 1',
        'wgmux_port_bytes_total{port="51821",direction="r2i"} 2148',
        'wgmux_port_packets_total{port="51821",direction="i2r"} 10',
        'wgmux_learned_initiators 1',
        'wgmux_start_time_seconds 1700000000.0',
        'wgmux_reloads_total 2',
        'wgmux_datapath_info{mode="xdp",setting="auto"} 1',
        "# TYPE wgmux_datapath_info gauge",
        "# TYPE wgmux_packets_total counter",
        "# TYPE wgmux_sessions gauge",
    ]:
        assert expected in lines, expected


def test_empty_status_renders():
    text = render({})
    assert 'wgmux_sessions{state="established"} 0' in text
    assert "wgmux_datapath_info" not in text      # a status that does not say


@pytest.mark.parametrize("mode, setting", [("tc", "tc"), ("tc", "auto"), ("xdp", "xdp")])
def test_datapath_mode(mode, setting):
    lines = render({**STATUS, "datapath": mode, "datapath_setting": setting}).splitlines()
    info = [x for x in lines if x.startswith("wgmux_datapath_info")]
    assert info == [f'wgmux_datapath_info{{mode="{mode}",setting="{setting}"}} 1'], info


# -- every sample equals the JSON value it is rendered from ------------------

# A status as `show --json` has it after a few hours of real traffic: every
# datapath counter, counters and byte totals far above 1e6 (where `%g` kept
# six digits), and a real wall-clock start with its fraction.
STARTED = 1764632057.318245   # `%g` printed 1.76463e+09: 2,057 s early
BIG = {"i2r_bytes": 1658808, "r2i_bytes": 98765432109, "i2r_packets": 1234567,
       "r2i_packets": 2**40 + 3}


def realistic_status() -> dict:
    counters = {name: (i * 7_919_993 + 1_000_001) if i % 3 else i
                for i, name in enumerate(COUNTERS)}
    counters["reflect_transport"] = 9_007_199_254_740_000     # just under 2**53
    sessions = [
        {"port": 51821, "state": "established", **BIG},
        {"port": 51821, "state": "established", "i2r_bytes": 1, "r2i_bytes": 3_000_001,
         "i2r_packets": 1, "r2i_packets": 2_001},
        {"port": 51821, "state": "half-open", "i2r_bytes": 0, "r2i_bytes": 148,
         "i2r_packets": 0, "r2i_packets": 1},
        {"port": 51822, "state": "half-open", "i2r_bytes": 1_048_577, "r2i_bytes": 0,
         "i2r_packets": 999_999, "r2i_packets": 0},
        {"port": 65535, "state": "established", "i2r_bytes": 12_345_678_901,
         "r2i_bytes": 10_987_654_321, "i2r_packets": 8_388_609, "r2i_packets": 8_388_607},
    ]
    for s in sessions:
        s.update(created=STARTED + 12.5, last_seen=STARTED + 7_000.25, confirmed=True)
    status = {
        "interface": "wg0", "device": "wg0", "hub_port": 51820, "pid": 4242,
        "started": STARTED, "now": STARTED + 7_200.123456, "reloads": 1_000_003,
        "stale_sessions": 2_000_001, "session_idle_timeout": 180.0,
        "counters": counters, "sessions": sessions,
        "peers": [{"port": 51821, "endpoint": "198.18.0.2:51820"},
                  {"port": 51822, "endpoint": "[2001:db8::2]:51820"},
                  {"port": 65535, "endpoint": None}],
        "datapath": "mixed", "datapath_setting": "auto",
        "interfaces": [
            {"name": "eth0", "ifindex": 2, "datapath": "xdp", "reflected_in": 2**40 + 5,
             "reflected_out": 9_007_199_254_740_001, "dropped": 0},
            {"name": "eth1.100", "ifindex": 7, "datapath": "tc", "reflected_in": 3,
             "reflected_out": 1, "dropped": 1_000_001}],
        "slow_path": {"rate": 1000.0, "burst": 2000, "initiators": [
            {"port": 51821, "public_key": "k1", "endpoint": None, "learned": STARTED + 1.5},
            {"port": 51822, "public_key": "k2", "endpoint": None, "learned": STARTED + 2.5}]},
    }
    # as the CLI and the scrape see it: through the control socket's JSON
    return json.loads(json.dumps(status))


def expected_samples(st: dict) -> dict:
    """(name, labels) -> value, from the JSON alone: the contract, written
    independently of the renderer."""
    out = {}

    def put(name, value, **labels):
        key = (name, frozenset((k, str(v)) for k, v in labels.items()))
        assert key not in out, key
        out[key] = value

    for name, value in st["counters"].items():
        verdict, _, reason = name.partition("_")
        if verdict in ("pass", "reflect", "drop"):
            put("wgmux_packets_total", value, verdict=verdict, reason=reason)
        else:
            put("wgmux_events_total", value, event=name[3:] if name.startswith("ev_") else name)
    for state in ("established", "half-open"):
        put("wgmux_sessions", sum(s["state"] == state for s in st["sessions"]), state=state)
    put("wgmux_session_entries_stale", st["stale_sessions"])
    put("wgmux_responders", sum(bool(p["endpoint"]) for p in st["peers"]), state="known")
    put("wgmux_responders", sum(not p["endpoint"] for p in st["peers"]), state="unknown")
    for port in {s["port"] for s in st["sessions"]}:
        for d in ("i2r", "r2i"):
            mine = [s for s in st["sessions"] if s["port"] == port]
            put("wgmux_port_bytes_total", sum(s[f"{d}_bytes"] for s in mine),
                port=port, direction=d)
            put("wgmux_port_packets_total", sum(s[f"{d}_packets"] for s in mine),
                port=port, direction=d)
    put("wgmux_learned_initiators", len((st["slow_path"] or {}).get("initiators", [])))
    put("wgmux_start_time_seconds", st["started"])
    put("wgmux_reloads_total", st["reloads"])
    if st.get("datapath"):
        put("wgmux_datapath_info", 1, mode=st["datapath"], setting=st["datapath_setting"])
    for i in st.get("interfaces", []):
        put("wgmux_interface_info", 1, interface=i["name"], mode=i["datapath"])
        for what in ("reflected_in", "reflected_out", "dropped"):
            if what in i:
                put("wgmux_interface_packets_total", i[what], interface=i["name"], what=what)
    return out


LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?')


def parse(text: str) -> dict:
    """Exposition text -> {(name, labels): int | float}: a value written as
    digits is an int (exact), anything else is parsed as Prometheus does."""
    samples, types = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            types[name] = kind
            continue
        if line.startswith("#") or not line:
            continue
        m = LINE.match(line)
        assert m, line
        name, labels, raw = m.groups()
        assert name in types, f"{name} has no # TYPE line before it"
        pairs = LABEL.findall(labels or "")
        assert ",".join(f'{k}="{v}"' for k, v in pairs) == (labels or ""), line
        value = int(raw) if re.fullmatch(r"-?[0-9]+", raw) else float(raw)
        key = (name, frozenset(pairs))
        assert key not in samples, f"duplicate sample {line}"
        samples[key] = value
    return samples


def test_every_sample_equals_its_json_value():
    st = realistic_status()
    got, want = parse(render(st)), expected_samples(st)
    assert set(got) == set(want), (set(got) ^ set(want))
    for key, value in want.items():
        assert type(got[key]) is type(value) and got[key] == value, (key, got[key], value)
    # the figures of issue 11, exactly
    assert got[("wgmux_port_bytes_total",
                frozenset({("port", "51821"), ("direction", "i2r")}))] == 1658808 + 1
    assert got[("wgmux_start_time_seconds", frozenset())] == STARTED


def test_start_time_of_now_round_trips():
    """`started` as Daemon sets it (time.time()) comes back as the same float."""
    st = realistic_status()
    st["started"] = time.time()
    got = parse(render(json.loads(json.dumps(st))))
    assert got[("wgmux_start_time_seconds", frozenset())] == st["started"]


@pytest.mark.parametrize("value, text", [
    (0, "0"), (1658808, "1658808"), (2**53 + 1, "9007199254740993"), (-5, "-5"),
    (True, "1"), (1700000000.0, "1700000000.0"), (STARTED, "1764632057.318245"),
    (0.1, "0.1"), (1.5e-07, "1.5e-07"), (1e+22, "1e+22"),
    (math.inf, "+Inf"), (-math.inf, "-Inf"), (math.nan, "NaN"),
])
def test_numbers_are_exact(value, text):
    line = render({"reloads": value}).splitlines()
    assert f"wgmux_reloads_total {text}" in line


def test_one_interface_has_info_and_no_per_interface_counts():
    lines = render({**STATUS, "interfaces": [{"name": "eth0", "ifindex": 2,
                                              "datapath": "tc"}]}).splitlines()
    assert 'wgmux_interface_info{interface="eth0",mode="tc"} 1' in lines
    assert not [x for x in lines if x.startswith("wgmux_interface_packets_total")]
