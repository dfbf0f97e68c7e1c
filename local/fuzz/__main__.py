"""`python -m local.fuzz [--max-examples N] [--max-time S]`: schemathesis against docs/openapi.json, on loopback.

Starts a LocalWorld (emulator with every target healthy, redis, router behind the local API Gateway-shaped
endpoint) and runs schemathesis' examples, coverage and fuzzing phases over every operation with the checks:
not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
response_schema_conformance, negative_data_rejection, plus ours (local/fuzz/hooks.py): no_server_error (no 5xx at all)
and documented_error_shape. Bounded by --max-examples per operation and --max-time. Exit status: schemathesis'.

Authentication is API Gateway's (IAM/SigV4 on every method, proven by the infra tests), not the router's: the
local endpoint has none, so the schema is fuzzed with its `security` requirements removed (a copy under
reports/fuzz/); otherwise schemathesis would report every request without a signature as wrongly accepted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from local.localrun import Latency, LocalWorld

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "docs" / "openapi.json"
CONFIG = Path(__file__).resolve().with_name("schemathesis.toml")
CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,"
    "response_schema_conformance,negative_data_rejection,no_server_error,documented_error_shape"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m local.fuzz", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--max-examples", type=int, default=150, help="examples per operation (default 150)")
    parser.add_argument("--max-time", type=int, default=120, help="time budget in seconds (default 120)")
    parser.add_argument("--seed", type=int, default=20261123)
    parser.add_argument("--report-dir", type=Path, default=ROOT / "reports" / "fuzz")
    args = parser.parse_args(argv)
    schemathesis = Path(sys.executable).with_name("schemathesis")
    args.report_dir.mkdir(parents=True, exist_ok=True)
    doc = json.loads(SCHEMA.read_text())
    for operations in doc["paths"].values():
        for operation in operations.values():
            operation.pop("security", None)
    doc.pop("security", None)
    local_schema = args.report_dir / "openapi-local.json"
    local_schema.write_text(json.dumps(doc, indent=2))
    with LocalWorld(latency=Latency(ttft_ms=1.0, ms_per_token=0.0)) as world:
        env = {**os.environ, "SCHEMATHESIS_HOOKS": "local.fuzz.hooks", "PYTHONPATH": str(ROOT)}
        command = [
            str(schemathesis),
            "--config-file",
            str(CONFIG),
            "run",
            str(local_schema),
            "--url",
            world.url,
            "--checks",
            CHECKS,
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            str(args.max_examples),
            "--max-time",
            str(args.max_time),
            "--seed",
            str(args.seed),
            "--workers",
            "2",
            "--request-timeout",
            "30",
            "--report",
            "junit",
            "--report-dir",
            str(args.report_dir),
            "--continue-on-failure",
        ]
        print(f"fuzz: schemathesis against {SCHEMA.relative_to(ROOT)} at {world.url}", flush=True)
        answer = subprocess.run(command, env=env, check=False, timeout=args.max_time + 120)  # noqa: S603 (our own argv)
    return answer.returncode


if __name__ == "__main__":
    sys.exit(main())
