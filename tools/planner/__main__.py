"""`python -m tools.planner` (`make plan`): the capacity and cost plan of every feature in the traffic profile.

Reads config/platform.yaml, config/traffic.yaml and config/prices.yaml; writes reports/plan/ (plan.md, plan.json,
traffic.png, cost.png). A bad input stops with one line naming the file and the key; exit status 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TextIO

from stacks.platform import PlatformConfigError, load_platform
from stacks.routing import render_routing_table
from tools.planner.inputs import InputError, load_prices, load_traffic
from tools.planner.plan import check_together, plan_feature
from tools.planner.replay import SHAPES
from tools.planner.report import write_report


class Progress:
    """One line per step on a pipe; a line redrawn in place on a terminal."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.t0 = time.monotonic()
        self._last = ""

    def __call__(self, label: str, fraction: float) -> None:
        line = f"[{time.monotonic() - self.t0:5.1f}s] replaying {label}: {fraction:4.0%}"
        if self.tty:
            print("\r" + line.ljust(len(self._last)), end="" if fraction < 1 else "\n", file=self.stream, flush=True)
        elif fraction >= 1 or label != self._last.split(": ")[0]:
            print(line, file=self.stream, flush=True)
        self._last = line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.planner", description=__doc__.splitlines()[0])
    parser.add_argument("--platform", type=Path, default=Path("config/platform.yaml"))
    parser.add_argument("--traffic", type=Path, default=Path("config/traffic.yaml"))
    parser.add_argument("--prices", type=Path, default=Path("config/prices.yaml"))
    parser.add_argument("--out", type=Path, default=Path("reports/plan"))
    parser.add_argument("--no-plots", action="store_true", help="tables only")
    parser.add_argument(
        "--shape",
        choices=SHAPES,
        default="shared",
        help="shared: one router view for the fleet (fleet-wide state); lambda-fleet: one environment per request",
    )
    args = parser.parse_args(argv)

    try:
        platform = load_platform(args.platform)
        features = dict(platform.features)
        traffic = load_traffic(args.traffic, features)
        prices = load_prices(args.prices, set(platform.models))
        progress = Progress()
        plans = [
            plan_feature(
                name,
                render_routing_table(platform, features[name].home_region),
                traffic,
                prices,
                progress=progress,
                shape=args.shape,
            )
            for name in traffic.features
        ]
        together = None
        joint = render_routing_table(platform, features[plans[0].feature].home_region)
        if all(p.feature in joint["features"] for p in plans):
            progress("the chosen plans together", 0.0)
            together = check_together(plans, joint, traffic, prices, shape=args.shape)
            progress("the chosen plans together", 1.0)
    except (InputError, PlatformConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    written = write_report(plans, traffic, prices, args.out, plots=not args.no_plots, together=together)
    print((args.out / "plan.md").read_text())
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
