"""The NIST 800-53 rev 5 control matrix: each control of review/controls.yaml, decided by its checks over the
templates (review/checks_*.py). A control is met only when every applicable check passes, that is when no resource
any of them examined falls short; a control none of whose checks applies is outside these stacks, and says who must
provide it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from review import checks_api, checks_audit, checks_cross_cloud, checks_data, checks_iam, checks_network  # noqa: F401 - they register
from review.cfn import CloudAssembly
from review.check import PREDICATES, Check
from review.checks_iam import wildcard_invoke

CONTROLS_FILE = Path(__file__).with_name("controls.yaml")

MET, NOT_MET, OUTSIDE = "met", "not met", "outside these stacks"


@dataclass
class ControlResult:
    id: str
    title: str
    status: str
    checks: list[Check]
    outside: str

    @property
    def gaps(self) -> list[str]:
        return [f"[{check.name}] {gap}" for check in self.checks for gap in check.gaps]


def load_controls(path: Path = CONTROLS_FILE) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    for control in data["controls"]:
        unknown = [name for name in control.get("evidence", []) if name not in PREDICATES]
        if unknown:
            raise ValueError(f"{path}: {control['id']} names unknown checks {unknown}")
        if not control.get("evidence") and not control.get("outside"):
            raise ValueError(f"{path}: {control['id']} has no check and does not say who provides it")
    return data


def status_of(checks: list[Check]) -> str:
    applicable = [c for c in checks if c.passed is not None]
    if not applicable:
        return OUTSIDE
    return MET if all(c.passed for c in applicable) else NOT_MET


def run_checks(a: CloudAssembly, names: list[str], params: Mapping[str, Any]) -> list[Check]:
    checks = []
    for name in names:
        check = PREDICATES[name](a, params)
        check.description = " ".join((PREDICATES[name].__doc__ or "").split())
        checks.append(check)
    return checks


def evaluate(a: CloudAssembly, controls: Mapping[str, Any] | None = None) -> list[ControlResult]:
    controls = controls or load_controls()
    return [
        ControlResult(
            control["id"],
            control["title"],
            status_of(checks := run_checks(a, control.get("evidence", []), control.get("params") or {})),
            checks,
            str(control.get("outside", "")),
        )
        for control in controls["controls"]
    ]


__all__ = ["MET", "NOT_MET", "OUTSIDE", "PREDICATES", "Check", "ControlResult", "evaluate", "wildcard_invoke"]
