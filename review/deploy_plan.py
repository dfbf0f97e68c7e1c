"""What CI deploys, read from the cloud assembly: the account, the regions, and the stacks in dependency order.

    python3 -m review.deploy_plan cdk.out          # account=..., home_region=..., regions=... for $GITHUB_OUTPUT
    python3 -m review.deploy_plan --order cdk.out  # the deployment order, one stack a line

Standard library only: CI runs it with the runner's python3 before any environment exists.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def stacks(outdir: Path) -> dict[str, dict[str, Any]]:
    manifest = json.loads((outdir / "manifest.json").read_text(encoding="utf-8"))
    found = {}
    for artifact_id, artifact in manifest.get("artifacts", {}).items():
        if artifact.get("type") != "aws:cloudformation:stack":
            continue
        account, _, region = artifact.get("environment", "").removeprefix("aws://").partition("/")
        found[artifact_id] = {
            "account": account,
            "region": region,
            "dependencies": [d for d in artifact.get("dependencies", []) if not d.endswith(".assets")],
        }
    return found


def order(found: dict[str, dict[str, Any]]) -> list[str]:
    """Stacks in an order that deploys every dependency first (the order `cdk deploy --all` follows)."""
    done: list[str] = []
    pending = dict(sorted(found.items()))
    while pending:
        ready = [name for name, s in pending.items() if all(d in done or d not in found for d in s["dependencies"])]
        if not ready:
            raise ValueError(f"dependency cycle among {sorted(pending)}")
        for name in ready:
            done.append(name)
            del pending[name]
    return done


def plan(outdir: Path) -> dict[str, str]:
    found = stacks(outdir)
    if not found:
        raise ValueError(f"no stacks in {outdir}/manifest.json: run `make synth` first")
    accounts = sorted({s["account"] for s in found.values()})
    if len(accounts) != 1 or not accounts[0].isdigit():
        raise ValueError(f"the platform must deploy to one explicit account; the templates name {accounts}")
    deploy_order = order(found)
    regions = list(dict.fromkeys(found[name]["region"] for name in deploy_order))
    return {"account": accounts[0], "home_region": regions[0], "regions": ",".join(regions)}


def main(argv: list[str]) -> int:
    show_order = "--order" in argv
    args = [a for a in argv if a != "--order"]
    outdir = Path(args[0] if args else "cdk.out")
    try:
        if show_order:
            found = stacks(outdir)
            for index, name in enumerate(order(found), 1):
                print(f"{index}. {name} ({found[name]['region']})")
        else:
            for key, value in plan(outdir).items():
                print(f"{key}={value}")
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
