"""Write docs/openapi.json from the router's own route definitions (lambdas/router/spillway/api.py).

python -m tools.openapi           # regenerate docs/openapi.json
python -m tools.openapi --check   # exit 1 when the committed document is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROUTER = ROOT / "lambdas" / "router"
DOC = ROOT / "docs" / "openapi.json"


def render() -> str:
    if str(ROUTER) not in sys.path:
        sys.path.insert(0, str(ROUTER))
    from spillway.api import render_openapi  # noqa: PLC0415 (needs the router's import root on the path)

    return render_openapi()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    parser.add_argument("--output", type=Path, default=DOC)
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is stale: run `python -m tools.openapi`", file=sys.stderr)
            return 1
        print(f"{args.output} is up to date")
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
