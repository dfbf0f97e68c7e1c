"""The layering of DESIGN.md, read from the source: the engine and policy import no AWS SDK, the backends import
no engine, and only backends/ may load boto3 or botocore (by import or by importlib): the fleet store signs its
IAM token with hmac, so no store module loads the SDK either."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROUTER = Path(__file__).resolve().parents[2] / "lambdas" / "router"
PACKAGE = ROUTER / "spillway"
AWS_SDK = ("boto3", "botocore")
MAY_CALL_AWS = {f"spillway/backends/{p.name}" for p in (PACKAGE / "backends").glob("*.py")}


def imported(path: Path) -> set[str]:
    """Every module a file imports, relative imports resolved against its package, plus importlib string literals."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = path.relative_to(ROUTER).parent.parts
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)
    return names


def _sources() -> list[Path]:
    return sorted([*PACKAGE.rglob("*.py"), ROUTER / "handler.py"])


def _uses(names: set[str], roots: tuple[str, ...]) -> set[str]:
    return {n for n in names if n.split(".")[0] in roots}


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROUTER)))
def test_only_backends_load_the_aws_sdk(path: Path) -> None:
    relative = str(path.relative_to(ROUTER))
    sdk = _uses(imported(path), AWS_SDK)
    if relative not in MAY_CALL_AWS:
        assert not sdk, f"{relative} loads {sorted(sdk)}"


@pytest.mark.parametrize("path", sorted((PACKAGE / "backends").glob("*.py")), ids=lambda p: p.name)
def test_backends_import_no_engine(path: Path) -> None:
    assert not {n for n in imported(path) if n == "spillway.engine" or n.startswith("spillway.engine.")}


def test_the_check_sees_what_it_must() -> None:
    """The walker finds a plain import, a relative one and an importlib literal (else the tests above prove
    nothing)."""
    backends_init = imported(PACKAGE / "backends" / "__init__.py")
    assert {"boto3", "botocore.config"} <= backends_init  # importlib.import_module literals
    assert "spillway.errors" in backends_init  # `from ..errors import ...`
    assert "spillway.backends.contract.BackendReply" in imported(PACKAGE / "engine.py")


@pytest.mark.parametrize("name", ["kinds.py", "contract.py"])
def test_the_registry_and_the_contract_load_no_runtime(name: str) -> None:
    """The config, planner and engine read these two: they load no SDK and no backend implementation (the registry
    names its implementations as strings and imports them only when the router is built)."""
    names = imported(PACKAGE / "backends" / name)
    assert not _uses(names, AWS_SDK)
    runtimes = {"spillway.backends.bedrock", "spillway.backends.sagemaker", "spillway.backends.chat"}
    assert not {n for n in names if n.rsplit(".", 1)[0] in runtimes or n in runtimes}


def test_one_name_per_idea() -> None:
    assert not (PACKAGE / "backend.py").exists(), "the engine-backend contract is spillway/backends/contract.py"
