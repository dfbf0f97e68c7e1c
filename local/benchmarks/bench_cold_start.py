"""Cold start: importing the router's handler (and boto3, which it imports at init) against the floor any such
Lambda pays (boto3 plus Powertools' logger and REST event handler), on the Lambda's interpreter (Python 3.13, the
router's pinned dependencies).

The production shape: every sample is a fresh process (as a new Lambda environment is), the import is timed inside
it (interpreter start-up excluded, the same for both), bytecode already compiled (the layer ships it). The two
imports alternate round by round, and each round gives one paired difference (handler minus floor, measured seconds
apart, so a change in the machine's load between rounds cancels out). The goal is judged on the median of those
paired differences; the minimums and medians of each import and the load average are recorded beside it.
AWS_LAMBDA_FUNCTION_NAME is unset, so the router is not built or warmed at import: that is init work of its own
(engine and HTTP benchmarks), not import cost.
Merges the key "cold_start" into local/benchmarks/results.json.
Usage: python local/benchmarks/bench_cold_start.py [--quick]
[--python PATH] (default: .venv-lambda/bin/python when it exists, else this interpreter).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT)]

from local.benchmarks.results import merge_result  # noqa: E402

ROUTER = ROOT / "lambdas" / "router"
LAMBDA_PYTHON = ROOT / ".venv-lambda" / "bin" / "python"
# The router imports boto3 when it builds its first client (at init, in Lambda): counted here, so both sides hold
# the same SDK and the difference is the router's own cost.
HANDLER = "import handler; import boto3"
FLOOR = (
    "import boto3; from aws_lambda_powertools import Logger; "
    "from aws_lambda_powertools.event_handler import APIGatewayRestResolver"
)
GOAL_DIFFERENCE_MS = 100.0
_TIMED = "import time; t0 = time.perf_counter(); {stmt}; print((time.perf_counter() - t0) * 1000.0)"


def _environment() -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "PYENV_VERSION")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(AWS_REGION="us-east-1", AWS_DEFAULT_REGION="us-east-1")
    return env


def import_ms(python: str, statement: str) -> float:
    """Milliseconds to run `statement` in a fresh interpreter, timed inside it."""
    out = subprocess.run(
        [python, "-c", _TIMED.format(stmt=statement)],
        cwd=ROUTER,
        env=_environment(),
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def measure(python: str, rounds: int) -> dict[str, Any]:
    for statement in (HANDLER, FLOOR):  # compile bytecode, fill the page cache
        import_ms(python, statement)
    handler: list[float] = []
    floor: list[float] = []
    for i in range(rounds):
        order = [(HANDLER, handler), (FLOOR, floor)]
        for statement, samples in order if i % 2 == 0 else reversed(order):
            samples.append(import_ms(python, statement))
    paired = [h - f for h, f in zip(handler, floor, strict=True)]
    version = subprocess.run(
        [python, "-c", "import platform; print(platform.python_version())"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return {
        "python": version,
        "machine": f"{platform.machine()}, {platform.system()}",
        "rounds": rounds,
        "shape": "one fresh process per sample, import timed inside it, bytecode compiled; paired rounds",
        "load_average": round(os.getloadavg()[0], 2),
        "floor": "boto3 + Powertools Logger + APIGatewayRestResolver",
        "difference_ms": round(statistics.median(paired), 1),
        "difference_ms_p90": round(sorted(paired)[int(0.9 * (len(paired) - 1))], 1),
        "handler_import_ms": {"min": round(min(handler), 1), "median": round(statistics.median(handler), 1)},
        "floor_import_ms": {"min": round(min(floor), 1), "median": round(statistics.median(floor), 1)},
        "goal": {"difference_ms_max": GOAL_DIFFERENCE_MS},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="3 rounds instead of 31 (a smoke run)")
    default = str(LAMBDA_PYTHON) if LAMBDA_PYTHON.exists() else sys.executable
    parser.add_argument("--python", default=default, help="the interpreter to measure (default: %(default)s)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave results.json alone")
    args = parser.parse_args()
    result = measure(args.python, 3 if args.quick else 31)
    if not args.no_write:
        merge_result("cold_start", result)
    print(
        f"python {result['python']}: import handler {result['handler_import_ms']} ms, floor "
        f"{result['floor_import_ms']} ms; paired difference median {result['difference_ms']} ms "
        f"(goal <= {GOAL_DIFFERENCE_MS:.0f}), p90 {result['difference_ms_p90']} ms"
    )
    # Like the other benchmarks, a missed goal is reported, not an error: results.json and the READMEs say it.
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
