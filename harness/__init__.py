"""The harness: what drives wgmux for its tests, `make demo` and `make bench`.

- golden/: the datapath's golden packet table (input -> verdict, output,
  counters, map state), one module per section, built on testrun.py
  (BPF_PROG_TEST_RUN);
- hub.py: the real `wgmux serve` on a netlab hub (WgmuxHub, serving_pair);
- demo.py, bench.py, bench_e2e.py: `make demo` and `make bench`.

The product (wgmux/) never imports it; it may import wgmux and netlab.
Used from a checkout only (pyproject.toml does not install it).
"""
