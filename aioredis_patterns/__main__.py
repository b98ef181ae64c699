"""``python -m aioredis_patterns tour``: run every pattern against a real Redis."""

from __future__ import annotations

import sys

from ._tour import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
