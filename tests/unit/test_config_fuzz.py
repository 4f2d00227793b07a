"""The config parser never fails with anything but a ConfigError that names
the file and a line (issue 11, item 3).

Thousands of configs generated from examples/config.toml (and two compact
variants): every byte offset of a truncation, random bytes, deep nesting,
values of the wrong type, huge numbers, unicode, control characters, NUL,
duplicate keys and tables, other encodings and line endings. For each:

* ``wgmux.config.load()`` returns a Config or raises ConfigError, nothing
  else;
* every problem of a ConfigError is ``FILE:LINE: ...`` with LINE a line of
  the file, and no problem holds a character that is not printable (so no
  message spans or forges a line of output);
* a sample also goes through the real CLI, ``wgmux check -c FILE``: exit
  status 1, no traceback, every output line one of check's own.

WGMUX_CONFIG_FUZZ_SEED (default 11) and WGMUX_CONFIG_FUZZ_COUNT (default
2000) pick another run; WGMUX_CONFIG_FUZZ_CLI (default 50) is the size of
the CLI sample. A failure names the seed and the case, and the failing files
are kept under the test's tmp_path.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from wgmux.config import Config, ConfigError, load, parse

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = (ROOT / "examples" / "config.toml").read_text()
SEED = int(os.environ.get("WGMUX_CONFIG_FUZZ_SEED", "11"))
COUNT = int(os.environ.get("WGMUX_CONFIG_FUZZ_COUNT", "2000"))
CLI_SAMPLE = int(os.environ.get("WGMUX_CONFIG_FUZZ_CLI", "50"))

KEY_A = "Lo7Z71yq2evHJChiUoNXYAyEW9B15GPblB6m6JA7A58="
KEY_B = "eERXxkDvqyVHeox0dbBh7Vm0WWxFSlFYvHUWtyGJ/WU="

# Every construct once, in few bytes, so that truncating at every offset
# cuts keys, values, strings of each kind, headers, escapes, comments and a
# multi-byte character.
COMPACT = f"""\
[Interface]  # hub ✓
Device = "wg0"
'HubPort' = 51_820
Interface = 'eth0'
HandshakeRate = 2.5e2
"H1" = "1000000-1099999"
H2 = 0x1E8480
H3 = 3000000
H4 = 4000000
I1 = \"\"\"<b 0xc0\\
  00>\"\"\"
I2 = '''<r 10>'''

[[Peer]]
Port = 51821
PublicKey = "{KEY_A}"
"""
INLINE = f"""\
Interface = {{ Device = "wg0", HubPort = 51820, Interface = "eth0" }}
Peer = [
  {{ Port = 51821, PublicKey = "{KEY_A}" }},
  {{ Port = 51822, PublicKey = "{KEY_B}" }},
]
"""
BASES = {"example": EXAMPLE, "compact": COMPACT, "inline": INLINE}

# --- generated pieces ----------------------------------------------------------

NAMES = [  # for Device and Interface
    '"\\u0000"', '"wg\\u0000"', '"wg0\\n[ ok ] config fine: 9 responders"', '"\\u001b[31mwg0"',
    '"\\r"', '"\\t"', '"\\u007f"', '"\\u0085"', '"\\u2028"', '"\\u200b"', '"\\u202ewg0"',
    '"\\u00a0"', '"a"', '"' + "a" * 15 + '"', '"' + "a" * 16 + '"', '"' + "é" * 7 + '"',
    '"' + "é" * 8 + '"', '"ü"', '"😀😀😀😀"', '"/"', '"wg/0"', '"."', '".."', '"eth0:1"',
    '"eth 0"', '""', '"-h"', '"\\U0001F600"', "'wg0\x01'", '"' + "x" * 10000 + '"',
]
KEYS = [
    '"a\\nb"', '"\\u0000"', '"[ ok ] fake\\n[ ok ] fake"', '"\\r\\u001b[2K[ ok ] x"',
    '"\\u2028"', '"\\u0085x"', "'\x7f'", '"\\U0001F600"', '"é"', "Ä", "a.b.c",
    '"Device"', "'Interface'", "device", "Devise", "listenport", "HeaderProtectionKey", "x" * 5000,
    '"' + "\\u0001" * 100 + '"', '""', "''", "1", "-", "_", '"\\\\"', '"\\""',
]
VALUES = [
    "0", "-1", "1", "65535", "65536", str(2**32), str(2**63), str(2**64), str(-2**63 - 1),
    "9" * 20, "9" * 100, "9" * 4300, "9" * 4301, "9" * 5000, "-" + "9" * 5000,
    "1_" * 3000 + "1", "0x" + "f" * 5000, "0o" + "7" * 5000, "0b" + "1" * 20000, "0x7fffffff",
    "+1", "-0", "00", "1__0", "0xG", "1.5", "-0.0", "1e999", "-1e999", "1e-400", "inf", "-inf",
    "nan", "+nan", "0.001", "1e9", "1" + "0" * 400 + ".0", "true", "false", "True", '""',
    '"wg0"', "'eth0'", '"""\nmulti\nline"""', "'''\nlit'''", '"\\u0000"', '"\\UFFFFFFFF"',
    '"\\x41"', '"\\e"', '"' + "\\u0001" * 50 + '"', '"' + "z" * 100000 + '"', '"5-6"', '"6-5"',
    '"5-' + "9" * 5000 + '"', '"' + "0" * 5000 + '7"', '" 7 "', '"٣"', '"1-٣"', '"0x10"',
    "[]", "[1]", "[1, 2,]", "[[1], [2]]", '["a", 1]', "{}", "{ a = 1 }", "{ Port = 1 }",
    "1979-05-27T07:32:00Z", "1979-05-27", "07:32:00", "2023-02-30",
    "9999-12-31T23:59:59.999999999+14:00",
    "", "=", "[", "]", "{", '"', "'''", '"""', "#", "\\", "1 2", "[1,\n2", '"a" "b"',
    '"127.0.0.1:9586"', '"[::1]:9586"', '"127.0.0.1: 9586"', '"127.0.0.1:9_586"',
    '"127.0.0.1:' + "9" * 5000 + '"', '"[::1%eth0]:1"', '"\\u0000:1"',
]
RAW_CONTROLS = [chr(c) for c in range(32)] + ["\x7f", "\x85", "\u2028", "\u2029", "\ufeff"]
UNICODE = ["é", "😀", "\u0301", "\u202e", "\u200b", "\u00a0", "\u3000", "Ω", "\uffff", "ß", "İ"]
BYTES = [b"\xff", b"\xfe", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80", b"\xe2\x82",
         b"\x00", b"\xef\xbb\xbf"]


def nest(rng: random.Random) -> str:
    depth = rng.choice([2, 30, 63, 64, 65, 66, 200, 999, 1000, 2000, 10000])
    kind = rng.choice(["array", "table", "mixed", "open-array", "open-table", "wide"])
    if kind == "array":
        return "[" * depth + "1" + "]" * depth
    if kind == "table":
        return "{ a = " * depth + "1" + " }" * depth
    if kind == "mixed":
        return "[{ a = " * (depth // 2) + "1" + " }]" * (depth // 2)
    if kind == "open-array":
        return "[" * depth
    if kind == "open-table":
        return "{ a = " * depth
    return "[" + ", ".join(["[1]"] * depth) + "]"


# --- mutations -----------------------------------------------------------------

ASSIGN_RE = re.compile(r"(?m)^([ \t]*)([^#\s=\[][^=\n]*?)([ \t]*=[ \t]*)([^\n]*)$")


def assignments(text: str):
    return [m for m in ASSIGN_RE.finditer(text) if m.group(2)]


def replace_value(rng, text, value):
    ms = assignments(text)
    if not ms:
        return text + "\nx = " + value + "\n"
    m = rng.choice(ms)
    return text[:m.start(4)] + value + text[m.end(4):]


def replace_key(rng, text, key):
    ms = assignments(text)
    if not ms:
        return key + " = 1\n" + text
    m = rng.choice(ms)
    return text[:m.start(2)] + key + text[m.end(2):]


def set_name(rng, text):
    key = rng.choice(["Device", "Interface"])
    m = re.search(rf"(?m)^{key} = .*$|{key} = \"[^\"]*\"", text)
    line = f"{key} = {rng.choice(NAMES)}"
    if not m:
        return "[Interface]\n" + line + "\n" + text
    return text[:m.start()] + line + text[m.end():]


def insert_at(rng, text, piece):
    i = rng.randrange(len(text) + 1)
    return text[:i] + piece + text[i:]


def duplicate(rng, text):
    choice = rng.randrange(6)
    lines = text.split("\n")
    if choice == 0:  # a key line twice
        ms = assignments(text)
        if ms:
            m = rng.choice(ms)
            return text[:m.end()] + "\n" + m.group(0).strip() + text[m.end():]
    if choice == 1:
        return text + "\n[Interface]\nDevice = \"wg1\"\n"
    if choice == 2:
        return text + "\n[Peer]\nPort = 51830\n"
    if choice == 3:
        return text + "\nPeer = 1\nInterface.Device = \"wg2\"\n"
    if choice == 4:
        return "[[Interface]]\n" + text
    i = rng.randrange(len(lines))
    j = min(len(lines), i + rng.randrange(1, 8))
    return "\n".join(lines[:j] + lines[i:j] + lines[j:])


def text_mutation(rng: random.Random, text: str):
    kind = rng.choice(["value", "value", "nest", "name", "name", "key", "key", "control",
                       "escape", "unicode", "duplicate", "crlf", "truncate", "lines", "dotted"])
    if kind == "value":
        return kind, replace_value(rng, text, rng.choice(VALUES))
    if kind == "nest":
        return kind, replace_value(rng, text, nest(rng))
    if kind == "name":
        return kind, set_name(rng, text)
    if kind == "key":
        return kind, replace_key(rng, text, rng.choice(KEYS))
    if kind == "control":
        return kind, insert_at(rng, text, rng.choice(RAW_CONTROLS))
    if kind == "escape":  # escapes inside a string value or a quoted key
        esc = rng.choice(["\\u0000", "\\n", "\\r", "\\u001b", "\\u2028", "\\t", "\\U0010ffff",
                          "\\U00110000", "\\q", "\\"])
        spots = [m.start() + 1 for m in re.finditer('"[^"\n]', text)]
        i = rng.choice(spots) if spots else 0
        return kind, text[:i] + esc + text[i:]
    if kind == "unicode":
        return kind, insert_at(rng, text, rng.choice(UNICODE) * rng.randrange(1, 20))
    if kind == "duplicate":
        return kind, duplicate(rng, text)
    if kind == "crlf":
        return kind, text.replace("\n", rng.choice(["\r\n", "\r", "\n\r", "\x0b", "\u2028"]))
    if kind == "truncate":
        return kind, text[:rng.randrange(len(text) + 1)]
    if kind == "lines":  # shuffle, drop or repeat lines
        lines = text.split("\n")
        op = rng.randrange(3)
        if op == 0:
            rng.shuffle(lines)
        elif op == 1 and lines:
            del lines[rng.randrange(len(lines))]
        else:
            lines = lines * rng.randrange(2, 50)
        return kind, "\n".join(lines)
    depth = rng.choice([2, 64, 65, 2000])  # dotted keys and headers, deep
    return kind, text + rng.choice([
        "\n[" + ".".join(["a"] * depth) + "]\n", "\n" + ".".join(["b"] * depth) + " = 1\n",
        "\n[Interface." + ".".join(["c"] * depth) + "]\n"])


def byte_mutation(rng: random.Random, data: bytes):
    kind = rng.choice(["flip", "bytes", "encoding", "random", "soup"])
    if kind == "flip":
        out = bytearray(data)
        for _ in range(rng.randrange(1, 20)):
            if not out:
                break
            op, i = rng.randrange(3), rng.randrange(len(out))
            if op == 0:
                out[i] = rng.randrange(256)
            elif op == 1:
                out.insert(i, rng.randrange(256))
            else:
                del out[i]
        return kind, bytes(out)
    if kind == "bytes":
        i = rng.randrange(len(data) + 1)
        return kind, data[:i] + rng.choice(BYTES) + data[i:]
    if kind == "encoding":
        text = data.decode("utf-8", "replace")
        enc = rng.choice(["utf-16", "utf-16-le", "utf-32", "latin-1", "cp1252", "utf-8-sig"])
        return kind, text.encode(enc, "replace")
    if kind == "random":
        return kind, bytes(rng.randrange(256) for _ in range(rng.randrange(0, 3000)))
    alphabet = '[]{}"\'=#.,\n \t\\abcDevicePort0123456789-+_:eé😀\x00'
    return kind, "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 2000))).encode()


def generate(seed: int, count: int):
    """[(name, bytes)]: the systematic cases, then random ones up to count."""
    cases = []
    for base_name in ("compact", "inline"):
        data = BASES[base_name].encode()
        cases += [(f"truncate-{base_name}@{i}", data[:i]) for i in range(len(data))]
    example = EXAMPLE.encode()
    ends = sorted({m.end() for m in re.finditer(rb"\n|=|\[|\"|#", example)})
    cases += [(f"truncate-example@{i}", example[:i]) for i in ends]
    rng = random.Random(seed)
    while len(cases) < count:
        base_name = rng.choice(list(BASES))
        text = BASES[base_name]
        kinds = []
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            kind, text = text_mutation(rng, text)
            kinds.append(kind)
        data = text.encode("utf-8", "surrogatepass")
        if rng.random() < 0.2:
            kind, data = byte_mutation(rng, data)
            kinds.append(kind)
        cases.append((f"{base_name}:{'+'.join(kinds)}#{len(cases)}", data))
    return cases


# --- the criterion ---------------------------------------------------------------

def judge(path: Path, data: bytes):
    """None if ``load(path)`` behaved, else what went wrong; and the outcome."""
    try:
        config = load(path)
    except ConfigError as e:
        problems = list(e.problems)
        if not problems:
            return "ConfigError without a problem", e
        if str(e) != "\n".join(problems):
            return f"str() is not the problems, one per line: {str(e)!r}", e
        lines = data.count(b"\n") + 1
        prefix = re.compile(re.escape(str(path)) + r":(\d+): \S")
        for problem in problems:
            m = prefix.match(problem)
            if not m:
                return f"no FILE:LINE: {problem[:300]!r}", e
            if not 1 <= int(m.group(1)) <= lines:
                return f"line {m.group(1)} of a {lines}-line file: {problem[:300]!r}", e
            if not problem.isprintable():
                return f"unprintable character in {problem[:300]!r}", e
            if "internal error" in problem:
                return f"checker bug: {problem[:300]!r}", e
        return None, e
    except BaseException as e:  # noqa: B902 -- anything else is the finding
        return f"{type(e).__name__}: {str(e)[:300]!r}", e
    if not isinstance(config, Config):
        return f"returned {type(config).__name__}", config
    for key in ("device", "interface"):
        name = getattr(config, key)
        if not usable_ifname(name):
            return f"accepted {key} = {name!r}, not a Linux interface name", config
    return None, config


def usable_ifname(name: str) -> bool:
    """What Linux takes as an interface name (dev_valid_name), without control
    characters: 1-15 bytes, not "." or "..", no "/", ":", whitespace or NUL."""
    size = len(name.encode("utf-8", "surrogatepass"))
    return (0 < size <= 15 and name not in (".", "..") and name.isprintable()
            and not any(ch in name for ch in "/: \0") and not any(ch.isspace() for ch in name))


def test_bases_are_valid():
    for name, text in BASES.items():
        assert isinstance(parse(text, name), Config), name


def test_fuzz_config_parser(tmp_path):
    started = time.monotonic()
    cases = generate(SEED, COUNT)
    assert len(cases) >= COUNT
    failures, outcomes = [], {"valid": 0, "ConfigError": 0}
    for index, (name, data) in enumerate(cases):
        path = tmp_path / f"case-{index:05d}.toml"
        path.write_bytes(data)
        what, outcome = judge(path, data)
        if what:
            failures.append(f"case {index} ({name}): {what}")
        else:
            path.unlink()
            outcomes["valid" if isinstance(outcome, Config) else "ConfigError"] += 1
    elapsed = time.monotonic() - started
    print(f"config fuzz: seed {SEED}, {len(cases)} files, {outcomes['valid']} valid, "
          f"{outcomes['ConfigError']} ConfigError, {len(failures)} failures, {elapsed:.1f} s")
    assert not failures, (f"seed {SEED}: {len(failures)} of {len(cases)} configs misbehaved "
                          f"(files kept in {tmp_path}):\n" + "\n".join(failures[:20]))


# --- through the CLI ----------------------------------------------------------------

CHECK_LINE_RE = re.compile(r"^(\[ ok \]|\[warn\]|\[fail\]|\[skip\]) |^       hint: |^wgmux check: ")


def cli_sample(cases, size: int, rng: random.Random):
    """The cases the issue names first (deep nesting, NUL, a key that forges a
    line), then a random draw."""
    wanted = ["nest", "name", "key", "escape", "control", "random", "bytes", "encoding"]
    picked = {}
    for want in wanted:
        for i, (name, _) in enumerate(cases):
            if want in name and i not in picked.values():
                picked[want] = i
                break
    rest = [i for i in range(len(cases)) if i not in picked.values()]
    chosen = list(picked.values()) + rng.sample(rest, max(0, min(size - len(picked), len(rest))))
    return [cases[i] + (i,) for i in chosen[:size]]


def run_check(path: Path, env):
    exe = Path(sys.executable).with_name("wgmux")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "wgmux.cli"]
    return subprocess.run(cmd + ["check", "-c", str(path)], capture_output=True, env=env,
                          timeout=120, cwd=ROOT)


def test_fuzz_config_through_wgmux_check(tmp_path):
    """`wgmux check` has no config-only mode: beyond the config it checks the
    host, and its bcc checks compile (3 s a file, 6 s for a valid config).
    The sample runs with bcc made unimportable, so that part fails at once
    (exit 1 for every file, "bcc is not importable"); the config, Interface
    and Device checks run as they would. Two files, the nested array and the
    NUL Device of the issue, also run with the host as it is."""
    started = time.monotonic()
    cases = generate(SEED, COUNT)
    sample = cli_sample(cases, CLI_SAMPLE, random.Random(SEED))
    fake = tmp_path / "nobcc" / "bcc"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise ImportError("hidden by the config fuzzer")\n')
    hidden = dict(os.environ, PYTHONPATH=os.pathsep.join([str(fake.parent), str(ROOT)]))
    real = dict(os.environ, PYTHONPATH=str(ROOT))

    issue_cases = [("issue:deep-array", b'[Interface]\nDevice = "wg0"\nHubPort = 51820\n'
                    b'Interface = "eth0"\nJc = ' + b"[" * 2000 + b"]" * 2000 + b"\n", -1),
                   ("issue:nul-device", b'[Interface]\nDevice = "\\u0000"\nHubPort = 51820\n'
                    b'Interface = "eth0"\n', -2)]
    # The two slow ones first, so that the quick ones run beside them.
    jobs = [(name, data, index, real) for name, data, index in issue_cases]
    jobs += [(name, data, index, hidden) for name, data, index in sample]
    jobs.append(("example (valid)", EXAMPLE.encode(), -3, hidden))

    def one(job):
        name, data, index, env = job
        path = tmp_path / f"cli-{index}.toml"
        path.write_bytes(data)
        try:
            expected = load(path)
        except ConfigError as e:
            expected = e
        out = run_check(path, env)
        stdout = out.stdout.decode("utf-8", "replace")
        stderr = out.stderr.decode("utf-8", "replace")
        where = f"case {index} ({name}), {path}"
        problems = []
        if out.returncode != 1:
            problems.append(f"{where}: exit {out.returncode}")
        if "Traceback" in stdout + stderr or stderr.strip():
            problems.append(f"{where}: stderr {stderr[-600:]!r}")
        lines = stdout.split("\n")
        if lines[-1] == "":
            lines.pop()
        odd = [l for l in lines if not CHECK_LINE_RE.match(l) or not l.isprintable()]
        if odd:
            problems.append(f"{where}: not a line of wgmux check: {odd[0][:200]!r}")
        config_lines = [l for l in lines if re.match(r"^\[....\] config", l)]
        if isinstance(expected, ConfigError):
            want = [f"[fail] config: {p}" for p in expected.problems]
        else:
            n = len(expected.peers)
            want = [f"[ ok ] config {path}: {n} responder{'s' if n != 1 else ''}"]
        if config_lines != want:
            problems.append(f"{where}: config lines {config_lines[:3]!r}, expected {want[:3]!r}")
        if env is hidden and "bcc is not importable" not in stdout:
            problems.append(f"{where}: bcc was not hidden")
        return problems

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(one, jobs))
    failures = [p for r in results for p in r]
    elapsed = time.monotonic() - started
    print(f"wgmux check: {len(jobs)} files ({len(issue_cases)} with bcc), {len(failures)} "
          f"failures, {elapsed:.1f} s")
    assert not failures, f"seed {SEED}:\n" + "\n".join(failures[:20])
