"""`python -m review [CDK_OUT] [REPORTS]`: write the security review report from a synthesized cloud assembly."""

from __future__ import annotations

import sys

from review.diagram import GraphvizMissing
from review.report import generate


def main(argv: list[str]) -> int:
    if len(argv) > 2 or any(arg in ("-h", "--help") for arg in argv):
        print(__doc__, file=sys.stderr)
        return 2
    cdk_out = argv[0] if argv else "cdk.out"
    reports = argv[1] if len(argv) > 1 else "reports"
    try:
        paths = generate(cdk_out, reports)
    except (FileNotFoundError, GraphvizMissing) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    pictures = [paths[k].name for k in ("dataflow_svg", "dataflow_png", "svg", "png") if k in paths]
    print(f"security review: {paths['html']} ({', '.join([paths['md'].name, *pictures])})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
