"""The wgmux datapath: C sources compiled and loaded by bcc at run time."""
from pathlib import Path

SOURCE_DIR = Path(__file__).resolve().parent
