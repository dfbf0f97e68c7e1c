"""The router function's assets: its code staged per cell with that cell's routing table, and the dependency layer
that `make` builds. Pure file work, no construct."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stacks import ROUTER_ROOT
from stacks.platform import PlatformConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]
DEPS_DIR = REPO_ROOT / "build" / "router-deps"  # written by `make` ($(STAMPS)/router-deps)
STAGING_DIR = REPO_ROOT / "build" / "router-code"  # per-region code assets, content-addressed
ROUTING_FILE = "routing.json"
# What never ships in the function's asset: bytecode, tests, and the checked-in routing.json (replaced per cell).
CODE_EXCLUDES = ("__pycache__", "*.pyc", "*.pyo", "tests", ".pytest_cache", ".mypy_cache")
ASSET_EXCLUDES = ["**/__pycache__", "*.pyc", "tests"]


class RouterBuildError(PlatformConfigError):
    """A build artifact the router stack needs is missing; app.py prints it like a config error."""


def dependencies_layer_dir() -> Path:
    """The layer folder `make` builds; a clear error (not a jsii traceback) when it is missing."""
    if not (DEPS_DIR / "python").is_dir():
        where = DEPS_DIR.relative_to(REPO_ROOT) if DEPS_DIR.is_relative_to(REPO_ROOT) else DEPS_DIR
        raise RouterBuildError(
            str(where),
            "",
            "the router's dependency layer is missing: run `make synth` (or `make .stamps/router-deps`), which "
            "installs lambdas/router/requirements.txt for Lambda (arm64, Python 3.13) without Docker",
        )
    return DEPS_DIR


def _code_files(root: Path) -> list[Path]:
    files = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part in {"__pycache__", "tests", ".pytest_cache", ".mypy_cache"} for part in relative.parts):
            continue
        if path.suffix in {".pyc", ".pyo"} or str(relative) == ROUTING_FILE or not path.is_file():
            continue
        files.append(path)
    return files


def stage_router_code(table: Mapping[str, Any], *, source: Path = ROUTER_ROOT, staging: Path = STAGING_DIR) -> Path:
    """The function's asset for one cell: lambdas/router without bytecode or tests, plus the cell's routing.json.

    The folder is named by a digest of its content, written to a temporary name and renamed into place, so the same
    bytes always give the same folder (and the same asset hash), and concurrent syntheses never see half a folder.
    """
    rendered = (json.dumps(table, indent=2, sort_keys=True) + "\n").encode()
    files = _code_files(source)
    digest = hashlib.sha256()
    for path in files:
        # The mode's execute bits count: runtime-wrapper is Lambda's AWS_LAMBDA_EXEC_WRAPPER, which must be executable.
        executable = b"x" if path.stat().st_mode & 0o111 else b"-"
        digest.update(str(path.relative_to(source)).encode() + b"\0" + executable + path.read_bytes() + b"\0")
    digest.update(ROUTING_FILE.encode() + b"\0" + rendered)
    target = staging / digest.hexdigest()[:24]
    if target.is_dir():
        return target
    staging.mkdir(parents=True, exist_ok=True)
    temporary = staging / f".tmp-{os.getpid()}-{uuid.uuid4().hex}"
    for path in files:
        destination = temporary / path.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, destination)  # content and permission bits
    (temporary / ROUTING_FILE).write_bytes(rendered)
    try:
        temporary.rename(target)
    except OSError:  # another synthesis staged the same content first
        shutil.rmtree(temporary, ignore_errors=True)
    return target
