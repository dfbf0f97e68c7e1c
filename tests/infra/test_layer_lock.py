"""The router's dependency layer is installed from lambdas/router/requirements.lock with pip's --require-hashes: every
package pinned with its wheel's hash, the versions requirements.txt pins and .venv runs (the ones the tests ran)."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "lambdas" / "router" / "requirements.lock"
REQUIREMENTS = ROOT / "lambdas" / "router" / "requirements.txt"
_LINE = re.compile(r"^(?P<name>[A-Za-z0-9._-]+)==(?P<version>[^\s]+)(?P<hashes>(\s+--hash=sha256:[0-9a-f]{64})+)$")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_problems(text: str) -> tuple[dict[str, str], list[str]]:
    """(name -> version, problems): a line that is not `name==version --hash=sha256:...` is a problem."""
    pins: dict[str, str] = {}
    problems = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = _LINE.match(line.strip())
        if match is None:
            problems.append(f"not pinned with a hash: {line}")
            continue
        pins[_normal(match["name"])] = match["version"]
    return pins, problems


def test_every_layer_package_is_pinned_with_its_hash() -> None:
    pins, problems = lock_problems(LOCK.read_text(encoding="utf-8"))
    assert problems == []
    assert {"boto3", "botocore", "aws-lambda-powertools"} <= set(pins)
    _, planted = lock_problems("boto3==1.44.5\n")
    assert planted == ["not pinned with a hash: boto3==1.44.5"]


def test_the_lock_holds_what_requirements_pin_and_the_tests_ran() -> None:
    pins, _ = lock_problems(LOCK.read_text(encoding="utf-8"))
    for line in REQUIREMENTS.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.strip().split("==")
            assert pins[_normal(name)] == version, name
    for name, version in pins.items():
        assert importlib.metadata.version(name) == version, name


def test_make_installs_the_layer_with_require_hashes() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = makefile[makefile.index("$(STAMPS)/router-deps:") :].split("\n\n", 1)[0]
    assert "--require-hashes" in recipe
    assert "-r lambdas/router/requirements.lock" in recipe
