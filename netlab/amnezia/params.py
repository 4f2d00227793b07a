"""AmneziaWG parameters as netlab uses them, and the I-packet language.

`AwgParams` is `wgmux.wire.AmneziaParams` (the project's one definition of
the values, docs/spec.md §12) with what netlab needs on top: taking them
from anything config-shaped, spelling them for `awg` and .conf files, and
passing them to the adapter process as JSON.

I-packet tags supported (the AmneziaWG 2.0 language, minimal):
`<b 0xHEX>` literal bytes, `<r N>` N random bytes, `<rc N>` N random ASCII
letters, `<rd N>` N random digits, `<t>` 4-byte big-endian unix time,
`<c>` 4-byte big-endian count of I-packets sent.  Text outside tags or other
tags (3.x's `<d>`, `<ds>`, `<dz>`) are refused with ValueError, so that a
test never believes it sent what the adapter cannot (netlab.amnezia.codec
renders them).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Dict, List, Tuple

from wgmux import wire

HeaderRange = wire.HeaderRange
_WG_DEFAULT_HEADERS = wire.WIREGUARD_HEADERS


def _range(value, default: HeaderRange) -> HeaderRange:
    if value is None:
        return default
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, str):
        lo, _, hi = value.partition("-")
        return (int(lo), int(hi or lo))
    lo, hi = value
    return (int(lo), int(hi))


@dataclass(frozen=True)
class AwgParams(wire.AmneziaParams):
    """AmneziaWG obfuscation values (the fields of wire.AmneziaParams), with
    what netlab needs on top: conversion and the adapter's settings.

    `AwgParams.of(x)` takes anything with jc/jmin/jmax/s1..s4/h1..h4/i1..i5
    attributes or keys (e.g. wgmux.config.AmneziaParams, whose validation a
    test should go through), with H values as ints, (lo, hi) pairs or "a-b".
    """

    _INTS = ("jc", "jmin", "jmax", "s1", "s2", "s3", "s4")
    _HEADERS = ("h1", "h2", "h3", "h4")
    _SPECIALS = ("i1", "i2", "i3", "i4", "i5")

    @classmethod
    def of(cls, obj) -> "AwgParams":
        if isinstance(obj, cls):
            return obj
        get = (lambda k: obj.get(k)) if isinstance(obj, dict) else (lambda k: getattr(obj, k, None))
        values = {}
        for k in cls._INTS:
            values[k] = int(get(k) or 0)
        for i, k in enumerate(cls._HEADERS):
            values[k] = _range(get(k), _WG_DEFAULT_HEADERS[i])
        for k in cls._SPECIALS:
            values[k] = get(k) or None
        params = cls(**values)
        for spec in params.specials:
            parse_special(spec)  # refuse what the adapter cannot send, early
        return params

    @property
    def specials(self) -> Tuple[str, ...]:
        return tuple(s for s in (self.i1, self.i2, self.i3, self.i4, self.i5) if s)

    @property
    def classifier(self) -> wire.Classifier:
        return wire.Classifier(prefixes=self.prefixes, headers=self.headers)

    _KEYS = {"jc": "Jc", "jmin": "Jmin", "jmax": "Jmax"}

    def settings(self) -> Dict[str, str]:
        """Non-default values by AmneziaWG config key (Jc, S1, H1, I1, ...),
        as strings the way `awg` and .conf files spell them."""
        out: Dict[str, str] = {}
        for k in self._INTS:
            if getattr(self, k):
                out[self._KEYS.get(k, k.upper())] = str(getattr(self, k))
        for i, k in enumerate(self._HEADERS):
            lo, hi = getattr(self, k)
            if (lo, hi) != _WG_DEFAULT_HEADERS[i]:
                out[k.upper()] = str(lo) if lo == hi else f"{lo}-{hi}"
        for k in self._SPECIALS:
            if getattr(self, k):
                out[k.upper()] = getattr(self, k)
        return out

    def awg_set_args(self) -> List[str]:
        """Arguments for `awg set <if> ...` (lower-case keywords)."""
        args: List[str] = []
        for key, value in self.settings().items():
            args += [key.lower(), value]
        return args

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "AwgParams":
        return cls.of(json.loads(text))


# ---- I-packets -----------------------------------------------------------------

_TAG_RE = re.compile(r"<([^<>]*)>")


def parse_special(spec: str) -> List[Tuple[str, object]]:
    """Parse an I-packet spec into (tag, argument) items; ValueError if the
    adapter does not support it (see the module doc)."""
    items: List[Tuple[str, object]] = []
    pos = 0
    for m in _TAG_RE.finditer(spec):
        if spec[pos:m.start()].strip():
            raise ValueError(f"I-packet {spec!r}: text outside a tag: {spec[pos:m.start()]!r}")
        pos = m.end()
        parts = m.group(1).split()
        if not parts:
            raise ValueError(f"I-packet {spec!r}: empty tag")
        tag, args = parts[0], parts[1:]
        if tag == "b":
            if len(args) != 1 or not args[0].lower().startswith("0x"):
                raise ValueError(f"I-packet {spec!r}: <b> takes one 0x-prefixed hex string")
            try:
                items.append(("b", bytes.fromhex(args[0][2:])))
            except ValueError:
                raise ValueError(f"I-packet {spec!r}: bad hex in <b {args[0]}>") from None
        elif tag in ("r", "rc", "rd"):
            if len(args) != 1 or not args[0].isdigit():
                raise ValueError(f"I-packet {spec!r}: <{tag}> takes one length")
            items.append((tag, int(args[0])))
        elif tag in ("t", "c"):
            if args:
                raise ValueError(f"I-packet {spec!r}: <{tag}> takes no argument")
            items.append((tag, None))
        else:
            raise ValueError(f"I-packet {spec!r}: tag <{tag}> is not supported by the netlab "
                             "adapter (supported: b r rc rd t c)")
    if spec[pos:].strip():
        raise ValueError(f"I-packet {spec!r}: text outside a tag: {spec[pos:]!r}")
    if not items:
        raise ValueError(f"I-packet {spec!r}: no tags")
    return items
