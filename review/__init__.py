"""The security review report: `python -m review cdk.out reports` reads every synthesized template and writes
reports/security-review.html, its Markdown twin and the architecture diagram (SVG, PNG). Standard library and
PyYAML only; Graphviz's `dot` draws the diagram. Importing the package imports nothing else, so that
`python3 -m review.deploy_plan` runs on a bare interpreter."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def generate(cdk_out: str | Path, reports: str | Path, **options: Any) -> dict[str, Path]:
    from review.report import generate as _generate  # noqa: PLC0415 - lazy on purpose, see above

    return _generate(cdk_out, reports, **options)


__all__ = ["generate"]
