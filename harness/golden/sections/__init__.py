"""The golden table's rows, one module per concern, each a `rows()` built
on its own `Table` (harness/golden/builders.py) and so its own seed.
harness.golden.cases() puts them together in SECTIONS' order."""
