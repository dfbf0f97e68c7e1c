"""The CDK stacks of Spillway. The router library (lambdas/router, the Lambda asset and its own import root) is put
on the import path here, before any stack module runs, because the stacks render the router's own contracts
(routing table, request schema, the fleet store's access string) instead of keeping copies."""

import sys
from pathlib import Path

ROUTER_ROOT = Path(__file__).resolve().parents[1] / "lambdas" / "router"
if str(ROUTER_ROOT) not in sys.path:
    sys.path.insert(0, str(ROUTER_ROOT))
