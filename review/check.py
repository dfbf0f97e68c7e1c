"""One check over the templates: what it looked at, which resources fall short, and the registry of checks.

A check examines every resource of its kind in every template. `passed` is None when no resource of its kind exists
(the check does not apply), else True only when no subject falls short. `evidence` lists the subjects that pass,
`gaps` the ones that fall short, each named by stack and logical id, with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from review.cfn import CloudAssembly, Resource

S = TypeVar("S")


@dataclass
class Check:
    name: str
    passed: bool | None
    evidence: list[str] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)
    description: str = ""

    @property
    def examined(self) -> int:
        return len(self.evidence) + len(self.gaps)

    @property
    def summary(self) -> str:
        """One line: the result, what is checked, and how many subjects fall short."""
        if self.passed is None:
            return f"N/A {self.name}: no resource of this kind"
        counts = f" ({len(self.gaps)} of {self.examined} fall short)" if self.gaps else f" ({self.examined} examined)"
        return f"{'PASS' if self.passed else 'FAIL'} {self.name}{counts}: {self.description}"


def where(r: Resource) -> str:
    """A resource as the report names it: stack and logical id, and the construct path when it says more."""
    label = f" ({r.label})" if r.label and r.label != r.logical_id else ""
    return f"{r.stack}/{r.logical_id}{label}"


def judge(name: str, subjects: list[S], shortfalls: Callable[[S], list[str]], describe: Callable[[S], str]) -> Check:
    """A check over subjects: a subject falls short when `shortfalls` names at least one reason."""
    if not subjects:
        return Check(name, None)
    evidence, gaps = [], []
    for subject in subjects:
        reasons = shortfalls(subject)
        if reasons:
            gaps.append(f"{describe(subject)}: {'; '.join(reasons)}")
        else:
            evidence.append(describe(subject))
    return Check(name, not gaps, evidence, gaps)


def simple(name: str, subjects: list[S], good: Callable[[S], bool], describe: Callable[[S], str]) -> Check:
    """A check whose subjects describe themselves, good or not (the description carries the setting)."""
    if not subjects:
        return Check(name, None)
    return Check(
        name,
        all(good(s) for s in subjects),
        [describe(s) for s in subjects if good(s)],
        [describe(s) for s in subjects if not good(s)],
    )


Predicate = Callable[[CloudAssembly, Mapping[str, Any]], Check]
PREDICATES: dict[str, Predicate] = {}


def predicate(fn: Predicate) -> Predicate:
    PREDICATES[fn.__name__] = fn
    return fn
