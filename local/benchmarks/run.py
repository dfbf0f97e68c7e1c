"""`make bench`: run every local/benchmarks/bench_*.py in its own process; each merges its key into results.json."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    status = 0
    for bench in sorted(HERE.glob("bench_*.py")):
        print(f"== {bench.name}", flush=True)
        status |= subprocess.run([sys.executable, str(bench), *sys.argv[1:]], check=False).returncode
    return status


if __name__ == "__main__":
    raise SystemExit(main())
