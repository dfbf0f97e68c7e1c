"""The security review report: `python -m review cdk.out reports` reads every synthesized template and writes
reports/security-review.html, its Markdown twin and the architecture diagram (SVG, PNG). Standard library and
PyYAML only; Graphviz's `dot` draws the diagram."""

from review.report import generate

__all__ = ["generate"]
