#!/usr/bin/env python3
"""CDK entry: config/platform.yaml -> one cell of stacks per region -> links -> compliance gate.

`cdk synth` runs this file (cdk.json); `cdk synth -c config=other.yaml` or CONFIG=... picks another platform.
A bad config or an open compliance finding ends with one clear message and exit status 1, never a traceback.
"""

from __future__ import annotations

import os
import sys

from stacks.assembly import build, new_app, synthesize
from stacks.platform import PlatformConfigError, load_platform
from stacks.routing import render_routing_table

DEFAULT_CONFIG = "config/platform.yaml"


def main() -> int:
    app = new_app(
        os.environ.get("CDK_OUTDIR", "cdk.out"),
        cloudformation_validation=os.environ.get("CDK_VALIDATION", "true").lower() != "false",
    )
    config = app.node.try_get_context("config") or os.environ.get("CONFIG") or DEFAULT_CONFIG
    try:
        platform = load_platform(config)
        for region in platform.region_names:  # the routers' tables too, before any stack exists
            render_routing_table(platform, region)
    except PlatformConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    try:  # a missing build artifact (the router's dependency layer) is reported like a config error
        assembly = build(platform, app=app)
    except PlatformConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    result = synthesize(assembly)
    print(result.summary(), file=sys.stderr)
    if not result.passed:
        print(f"error: the compliance gate failed; see {result.outdir}/validation-report.json", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
