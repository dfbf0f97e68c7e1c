"""At Lambda init the router builds what a first request would otherwise pay for inside its deadline."""

from __future__ import annotations

from typing import Any

import pytest

from handler import Router
from spillway.backends import ClientPool, tier_for
from spillway.backends.bedrock import BedrockBackend
from spillway.backends.openai_compat import OpenAICompatBackend
from spillway.backends.sagemaker import SageMakerBackend
from spillway.settings import Settings, SettingsError
from tests.router.conftest import Harness


class RecordingMaker:
    """Stands in for boto3: records each client built as (service, region, read timeout)."""

    def __init__(self) -> None:
        self.built: list[tuple[str, str, float]] = []

    def __call__(self, service: str, region: str, config: Any) -> object:
        self.built.append((service, region, config.read_timeout))
        return object()


def _wired(table_doc: dict[str, Any]) -> tuple[Harness, RecordingMaker, ClientPool]:
    h = Harness(table_doc)
    maker = RecordingMaker()
    pool = ClientPool(maker)
    h.router.backends.update(
        {"bedrock": BedrockBackend(pool), "sagemaker": SageMakerBackend(pool), "openai": OpenAICompatBackend(pool)}
    )
    return h, maker, pool


def test_warm_builds_each_first_attempt_client_once(table_doc: dict[str, Any]) -> None:
    h, maker, pool = _wired(table_doc)
    try:
        warmed = h.router.warm()
        table = h.router.current()[0].table
        assert table is not None
        tiers = {tier_for(f.attempt_max_ms / 1000.0) for f in table.features.values()}
        services = {"bedrock": "bedrock-runtime", "sagemaker": "sagemaker-runtime"}
        pooled = [t for t in table.targets.values() if t.backend.kind in services]  # the boto3 runtimes' targets
        expected = {(services[t.backend.kind], t.region, tier) for t in pooled for tier in tiers}
        assert set(maker.built) == expected
        assert len(maker.built) == len(expected)  # each client once, however many targets share it
        assert warmed == len(pooled) * len({f.attempt_max_ms for f in table.features.values()})
        # A first attempt with a feature's full budget now finds its client built.
        before = len(pool)
        target = next(iter(table.targets.values()))
        pool.client(services[target.backend.kind], target.region, max(tiers))
        assert len(pool) == before
    finally:
        h.handler.set_router(None)


@pytest.mark.parametrize(
    ("environ", "warms"),
    [
        ({}, False),  # tests and local runs: nothing happens at import
        ({"AWS_LAMBDA_FUNCTION_NAME": "spillway-router"}, True),
        ({"AWS_LAMBDA_FUNCTION_NAME": "spillway-router", "SPILLWAY_WARM_AT_INIT": "0"}, False),
    ],
)
def test_warm_at_init_only_in_lambda(
    table_doc: dict[str, Any], monkeypatch: pytest.MonkeyPatch, environ: dict[str, str], warms: bool
) -> None:
    h, maker, _ = _wired(table_doc)
    built: list[Settings] = []

    def build(settings: Settings) -> Router:
        built.append(settings)
        return h.router

    monkeypatch.setattr(h.handler, "build_router", build)
    try:
        h.handler.set_router(None)
        h.handler.init_in_lambda(environ)
        assert bool(maker.built) is warms
        # In Lambda the router is built at init, warmed or not; elsewhere on the first request.
        assert len(built) == ("AWS_LAMBDA_FUNCTION_NAME" in environ)
    finally:
        h.handler.set_router(None)


def test_a_bad_setting_fails_the_init_naming_it(table_doc: dict[str, Any]) -> None:
    environ = {"AWS_LAMBDA_FUNCTION_NAME": "spillway-router", "SPILLWAY_DEADLINE_MARGIN_MS": "half a second"}
    with pytest.raises(SettingsError, match="SPILLWAY_DEADLINE_MARGIN_MS='half a second': not a number"):
        Harness(table_doc).handler.init_in_lambda(environ)


def test_warm_failure_never_breaks_init(table_doc: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(table_doc)
    monkeypatch.setattr(h.handler, "build_router", lambda settings: h.router)

    def broken(service: str, region: str, config: Any) -> object:
        raise RuntimeError("no credentials yet")

    pool = ClientPool(broken)
    h.router.backends.update(
        {"bedrock": BedrockBackend(pool), "sagemaker": SageMakerBackend(pool), "openai": OpenAICompatBackend(pool)}
    )
    try:
        h.handler.init_in_lambda({"AWS_LAMBDA_FUNCTION_NAME": "spillway-router"})  # must not raise
        assert h.converse()["statusCode"] in (503, 504)  # requests meet the failure and answer cleanly
    finally:
        h.handler.set_router(None)
