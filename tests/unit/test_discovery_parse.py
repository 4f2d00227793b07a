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
