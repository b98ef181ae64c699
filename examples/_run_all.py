"""Run every example script and the tour against a throwaway redis-server.

Used by `nox -s examples`. Each script must exit 0 within its time limit. Pass
script names to run only those: `python examples/_run_all.py lock.py`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from aioredis_patterns.testing import RedisServer

HERE = Path(__file__).parent
LIMIT_SECONDS = 60


def main(argv: list[str]) -> int:
    scripts = sorted(p for p in HERE.glob("*.py") if not p.name.startswith("_"))
    if argv:
        scripts = [p for p in scripts if p.name in argv]
    failures = 0
    with RedisServer() as server:
        env = {**os.environ, "REDIS_URL": server.url}
        runs = [[sys.executable, str(p)] for p in scripts]
        runs.append([sys.executable, "-m", "aioredis_patterns", "tour"])
        for command in runs:
            name = " ".join(command[1:])
            started = time.monotonic()
            try:
                done = subprocess.run(
                    command, env=env, capture_output=True, text=True, timeout=LIMIT_SECONDS
                )
            except subprocess.TimeoutExpired:
                print(f"FAIL {name}: still running after {LIMIT_SECONDS} s")
                failures += 1
                continue
            took = time.monotonic() - started
            status = "ok  " if done.returncode == 0 else "FAIL"
            print(f"{status} {name} ({took:.1f} s)")
            if done.returncode != 0:
                failures += 1
                print(done.stdout[-3000:], done.stderr[-3000:], sep="\n")
    print(f"{len(runs) - failures} of {len(runs)} ran cleanly")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
