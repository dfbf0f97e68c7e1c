"""The router's library (lambdas/router, the Lambda asset and its own import root) made importable by the stacks.

The router never imports stacks; the stacks read the router's own loader and backend registry, so that what they
render is validated by the code that will read it.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROUTER_ROOT = Path(__file__).resolve().parents[1] / "lambdas" / "router"


def put_router_on_path() -> None:
    if str(ROUTER_ROOT) not in sys.path:
        sys.path.insert(0, str(ROUTER_ROOT))
