"""`python -m netlab.amnezia`: the wire adapter process (netlab.amnezia.adapter)."""

import contextlib
import sys

from .adapter import main

if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
