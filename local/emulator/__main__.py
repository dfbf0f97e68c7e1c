"""``python -m local.emulator --targets targets.json``: run the emulator standalone and print its URLs."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from types import FrameType

from local.emulator.core import Emulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.emulator", description=__doc__)
    parser.add_argument("--targets", required=True, help="JSON file: a list of targets or a full emulator config")
    parser.add_argument("--control-port", type=int, default=0, help="port of the HTTP control API (0: any)")
    parser.add_argument("--no-control", action="store_true", help="do not start the HTTP control API")
    parser.add_argument("--appconfig-port", type=int, default=None, help="port of the AppConfig extension")
    args = parser.parse_args(argv)

    overrides: dict[str, object] = {}
    if not args.no_control:
        overrides.update(control=True, control_port=args.control_port)
    if args.appconfig_port is not None:
        overrides["appconfig_port"] = args.appconfig_port
    emulator = Emulator.from_file(args.targets, **overrides)
    done = threading.Event()

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    with emulator:
        print(json.dumps(emulator.describe(), indent=2), flush=True)
        done.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
