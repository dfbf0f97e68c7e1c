"""The example platform file as a mutable document, for the tests of config validation: change one thing, parse,
and check the one error that names the file and the key."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from stacks.platform import Platform, PlatformConfigError, parse_platform

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "platform.yaml"
SOURCE = "bad.yaml"


def example() -> dict[str, Any]:
    """A fresh copy of config/platform.yaml as plain data."""
    document = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def region_document(region: str, vpc_cidr: str, zones: list[str]) -> dict[str, Any]:
    """A `regions:` entry for a cell the example lacks; its prefix list ids are well-formed placeholders."""
    ids = {service: "pl-" + hashlib.sha256(f"{region}/{service}".encode()).hexdigest()[:8] for service in ("s3",)}
    return {"vpc_cidr": vpc_cidr, "availability_zones": zones, "gateway_prefix_lists": ids}


def parse(document: dict[str, Any], source: str = SOURCE) -> Platform:
    return parse_platform(yaml.safe_dump(document, sort_keys=False), source)


def rejects(mutate: Callable[[dict[str, Any]], None]) -> PlatformConfigError:
    """The error the example gives once `mutate` has changed it (the test fails if it is accepted)."""
    document = example()
    mutate(document)
    with pytest.raises(PlatformConfigError) as caught:
        parse(document)
    return caught.value


def assert_names_key(error: PlatformConfigError, key: str, words: str, source: str = SOURCE) -> None:
    """One line: `<file>: <dotted key>: <what is wrong>`."""
    assert (error.source, error.key) == (source, key)
    assert words in error.detail
    assert str(error).startswith(f"{source}: {key}: ")
