"""`make bench` keeps working: every benchmark runs a small size and prints
its rows (the numbers themselves belong in docs/spec.md §8 and
docs/performance.md, not here)."""

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
    assert rows and "WRONG" not in out.stdout, out.stdout
    # XDP next to TC on every row: what it does with the packet, its ns
    # (run, base, walk), the total with XDP in front and its ratio to TC's
    table = [l.split() for l in out.stdout.splitlines()
             if len(l.split()) == 11 and l.split()[1] in ("redirect", "pass", "drop")]
    assert len(table) > len(rows), out.stdout      # the redirects and a pass or two
    for cells in table:
        line = " ".join(cells)
        assert cells[5] in ("XDP_TX", "pass"), line
        assert all(float(c) > 0 for c in cells[6:7] + cells[9:]), line
    # (which rows XDP must finish, bench.py checks with g.xdp_finishes: WRONG)
    assert {"XDP_TX", "pass"} <= {cells[5] for cells in table}, out.stdout


def test_end_to_end_benchmark_measures_a_reflected_transfer():
    out = bench("--e2e", "--size-mb", "1", "--rounds", "1", "-k", "wgmux-nofwd")
    assert out.returncode == 0, out.stdout + out.stderr
    (row,) = [l for l in out.stdout.splitlines() if l.startswith("wgmux-nofwd")]
    seconds, mbit, rtt, p90 = map(float, row.split()[1:])
    assert seconds > 0 and mbit > 0 and rtt > 0, row
    assert re.search(r"1 MB TCP", out.stdout)


def test_modes_benchmark_puts_tc_and_forwarding_side_by_side():
    out = bench("--modes", "--seconds", "1", "--cpu-seconds", "1", "--rate", "5000")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    # ratios first: XDP/TC and TC/forward of each figure, one cell per size
    ratios = [l for l in lines if l.strip().startswith(("XDP/TC", "TC/forward"))]
    assert len(ratios) == 6 and lines.index(ratios[0]) < lines.index(
        next(l for l in lines if l.startswith("open "))), out.stdout
    for line in ratios:
        assert all(c == "n/a" or float(c) > 0 for c in line.split()[-2:]), line
    for kind in ("open", "fixed"):
        for mode in ("tc", "xdp", "forward"):
            for size in ("128", "1400"):
                (row,) = [l for l in lines if l.split()[:3] == [kind, mode, size]]
                if mode == "xdp" and "not available" in row:
                    continue
                cells = row.split()[3:]
                delivered_kpps = float(cells[1] if kind == "open" else cells[0])
                assert delivered_kpps > 0, row
                if kind == "fixed":
                    assert float(cells[2]) > 0, row       # hub CPU ns per packet
    assert "WRONG" not in out.stdout, out.stdout
