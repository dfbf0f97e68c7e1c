"""What the fleet store's client adds to the router's cold start: `python -X importtime` of the router's own RESP
client (spillway.resp, with socket and ssl) against a PyPI client, each imported after what the router loads anyway
(`spillway`; with `--after "boto3, spillway"` also boto3, which brings ssl and socket itself), interleaved, median
of N runs. Run it on the Lambda's interpreter:

    PYENV_VERSION=3.13.0 python3.13 tools/fleet_client_import_cost.py [--pypi-path DIR] [--runs 15]

`--pypi-path` is a folder where `redis` (or `valkey`) is installed (pip install --target DIR redis==8.1.0): the
PyPI client is only measured, never a dependency of the router.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROUTER = Path(__file__).resolve().parents[1] / "lambdas" / "router"


def cumulative_us(module: str, pypi_path: str | None, after: str) -> int:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROUTER), pypi_path) if p)
    out = subprocess.run(  # noqa: S603 (this interpreter, on module names given by whoever runs the tool)
        [sys.executable, "-X", "importtime", "-c", f"import {after}; import {module}"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    for line in out.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 3 and parts[2] == module:
            return int(parts[1])
    raise SystemExit(f"{module} not found in -X importtime output")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pypi-path", default=None)
    parser.add_argument("--pypi-module", default="redis")
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--after", default="spillway", help="what is imported first (e.g. 'boto3, spillway')")
    args = parser.parse_args()
    modules = ["spillway.resp", "spillway.fleet_store"] + ([args.pypi_module] if args.pypi_path else [])
    samples: dict[str, list[int]] = {m: [] for m in modules}
    for _ in range(args.runs):
        for module in modules:  # interleaved, so a busy moment costs every candidate alike
            samples[module].append(cumulative_us(module, args.pypi_path, args.after))
    print(f"python {sys.version.split()[0]}, {args.runs} runs, cumulative import time after `import {args.after}`:")
    for module, values in samples.items():
        print(f"  {module:24s} median {statistics.median(values) / 1000:7.1f} ms   min {min(values) / 1000:7.1f} ms")


if __name__ == "__main__":
    main()
