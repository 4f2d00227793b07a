"""The Prometheus rendering of a daemon status (format and values)."""

import re

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
}

SAMPLE = re.compile(r'^[a-z_]+(\{([a-z_]+="[^"]*",?)+\})? -?[0-9.e+]+$')


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
        'wgmux_start_time_seconds 1.7e+09',
        'wgmux_reloads_total 2',
        "# TYPE wgmux_packets_total counter",
        "# TYPE wgmux_sessions gauge",
    ]:
        assert expected in lines, expected


def test_empty_status_renders():
    text = render({})
    assert 'wgmux_sessions{state="established"} 0' in text
