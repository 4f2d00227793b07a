"""`make bench` keeps working: both benchmarks run a small size and print
their rows (the numbers themselves belong in docs/spec.md §8, not here)."""

import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.netlab


def bench(*args):
    return subprocess.run([sys.executable, "-m", "harness.bench", *args], capture_output=True,
                          text=True, timeout=600)


def test_micro_benchmark_checks_its_rows():
    out = bench("--repeat", "1000", "--rounds", "1", "-k", "transport")
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [l for l in out.stdout.splitlines() if "redirect" in l]
    assert rows and not any("WRONG" in l for l in rows), out.stdout


def test_end_to_end_benchmark_measures_a_reflected_transfer():
    out = bench("--e2e", "--size-mb", "1", "--rounds", "1", "-k", "wgmux-nofwd")
    assert out.returncode == 0, out.stdout + out.stderr
    (row,) = [l for l in out.stdout.splitlines() if l.startswith("wgmux-nofwd")]
    seconds, mbit, rtt, p90 = map(float, row.split()[1:])
    assert seconds > 0 and mbit > 0 and rtt > 0, row
    assert re.search(r"1 MB TCP", out.stdout)
