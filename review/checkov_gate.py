"""`make scan`: checkov over every synthesized template; every failed check is fixed or listed in the baseline.

    python -m review.checkov_gate --checkov .venv-checkov/bin/checkov cdk.out review/checkov-baseline.yaml

checkov runs in its own virtual environment (its release pins an old boto3); this gate runs in the project's and
reads checkov's JSON. A baseline entry names a check id, the resources it covers (a glob over
`<template file>:<Type>.<logical id>`) and the reason it is accepted. A failed check that no entry covers fails the
scan; an entry that covers nothing is reported as stale so the baseline only ever shrinks with the findings.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

MIN_REASON = 40


@dataclass(frozen=True)
class Failed:
    check_id: str
    name: str
    file: str
    resource: str

    @property
    def subject(self) -> str:
        return f"{Path(self.file).name}:{self.resource}"


@dataclass(frozen=True)
class Entry:
    check_id: str
    resources: str
    reason: str

    def covers(self, failed: Failed) -> bool:
        return self.check_id == failed.check_id and fnmatch.fnmatchcase(failed.subject, self.resources)


def load_baseline(path: Path) -> list[Entry]:
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    entries = []
    for item in data.get("accepted", []):
        entry = Entry(str(item["check"]), str(item["resources"]), " ".join(str(item.get("reason", "")).split()))
        if len(entry.reason) < MIN_REASON:
            raise ValueError(
                f"{path}: {entry.check_id} on {entry.resources}: the reason must say why (compensating "
                "control or why the check does not apply)"
            )
        entries.append(entry)
    return entries


def parse(report: Any) -> list[Failed]:
    reports = report if isinstance(report, list) else [report]
    failed = []
    for part in reports:
        if not isinstance(part, Mapping):
            continue
        for check in (part.get("results") or {}).get("failed_checks", []):
            failed.append(
                Failed(
                    check["check_id"],
                    check.get("check_name", ""),
                    check.get("file_path", ""),
                    check.get("resource", ""),
                )
            )
    return failed


def judge(
    failed: Iterable[Failed], baseline: list[Entry]
) -> tuple[list[Failed], list[tuple[Failed, Entry]], list[Entry]]:
    """(open failures, accepted failures with their entry, stale entries)."""
    open_, accepted, used = [], [], set()
    for f in failed:
        entry = next((e for e in baseline if e.covers(f)), None)
        if entry is None:
            open_.append(f)
        else:
            accepted.append((f, entry))
            used.add(entry)
    return open_, accepted, [e for e in baseline if e not in used]


def run_checkov(checkov: str, cdk_out: Path) -> Any:
    command = [
        checkov,
        "--directory",
        str(cdk_out),
        "--framework",
        "cloudformation",
        "--output",
        "json",
        "--quiet",
        "--compact",
        "--skip-download",
        "--skip-path",
        "asset\\.",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=900)  # noqa: S603
    if result.returncode not in (0, 1) or not result.stdout.strip():
        raise RuntimeError(f"checkov failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
    return json.loads(result.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkov", default=".venv-checkov/bin/checkov")
    parser.add_argument("--report", help="read this checkov JSON instead of running checkov")
    parser.add_argument("cdk_out", type=Path)
    parser.add_argument("baseline", type=Path)
    args = parser.parse_args(argv)
    report = (
        json.loads(Path(args.report).read_text(encoding="utf-8"))
        if args.report
        else run_checkov(args.checkov, args.cdk_out)
    )
    open_, accepted, stale = judge(parse(report), load_baseline(args.baseline))
    summaries = [
        p.get("summary", {}) for p in (report if isinstance(report, list) else [report]) if isinstance(p, Mapping)
    ]
    passed = sum(int(s.get("passed", 0)) for s in summaries)
    print(f"checkov: {passed} passed, {len(accepted)} failed and accepted in {args.baseline}, {len(open_)} open")
    for f, entry in accepted:
        print(f"  accepted {f.check_id} {f.subject}: {entry.reason[:100]}")
    for entry in stale:
        print(f"  stale baseline entry (covers no failure now; remove it): {entry.check_id} {entry.resources}")
    for f in open_:
        print(f"  OPEN {f.check_id} {f.subject}: {f.name}")
    if open_:
        print(f"error: fix each open check, or add it to {args.baseline} with its reason", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
