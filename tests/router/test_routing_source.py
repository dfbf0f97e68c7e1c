"""Config delivery: AppConfig extension, last known good, bundled table; and the canary flag."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import handler
from local.emulator import AppConfigExtension, Fault
from spillway.errors import BackendError
from spillway.routing_source import CANARY_SUFFIX, RoutingSource, bucket
from tests.router.conftest import FakeClock, Harness, LambdaContext, ScriptedBackend, api_event, body_of, header

APP, ENV, PROFILE, FLAGS = "spillway", "us-east-1", "routing", "flags"


class FakeExtension:
    def __init__(self, doc: dict[str, Any] | None) -> None:
        self.doc = doc
        self.flags: dict[str, Any] | None = None
        self.fail: BaseException | None = None
        self.status = 200
        self.calls: list[str] = []

    def __call__(self, url: str, timeout_s: float) -> tuple[int, bytes, str | None]:
        self.calls.append(url)
        if self.fail is not None:
            raise self.fail
        if url.endswith(f"/{FLAGS}"):
            return (200, json.dumps(self.flags).encode(), "f") if self.flags is not None else (404, b"", None)
        if self.status != 200:
            return self.status, b"InternalServerException", None
        return 200, json.dumps(self.doc).encode() if self.doc is not None else b"{", "3"


def _source(ext: FakeExtension, clock: FakeClock, bundled: Path | None = None, **kw: Any) -> RoutingSource:
    return RoutingSource(
        application=APP,
        environment=ENV,
        profile=PROFILE,
        flags_profile=FLAGS,
        bundled_path=bundled,
        fetch=ext,
        clock=clock,
        ttl_s=5.0,
        **kw,
    )


def test_appconfig_table_is_cached_for_the_ttl(table_doc: dict[str, Any], clock: FakeClock) -> None:
    ext = FakeExtension(table_doc)
    source = _source(ext, clock)
    snap = source.get()
    assert snap.table is not None
    assert (snap.source, snap.version) == ("appconfig", "3")
    assert ext.calls[0] == f"http://localhost:2772/applications/{APP}/environments/{ENV}/configurations/{PROFILE}"
    calls = len(ext.calls)
    clock.advance(4.9)
    assert source.get() is snap
    assert len(ext.calls) == calls
    clock.advance(0.2)
    source.get()
    assert len(ext.calls) == 2 * calls


@pytest.mark.parametrize("failure", ["refused", "http_500", "invalid", "not_json"])
def test_a_bad_fetch_keeps_the_last_known_good(table_doc: dict[str, Any], clock: FakeClock, failure: str) -> None:
    ext = FakeExtension(table_doc)
    events: list[tuple[str, str]] = []
    source = _source(ext, clock, on_event=lambda kind, detail: events.append((kind, detail)))
    good = source.get()
    if failure == "refused":
        ext.fail = ConnectionRefusedError()
    elif failure == "http_500":
        ext.status = 500
    elif failure == "invalid":
        ext.doc = {**table_doc, "version": 2}
    else:
        ext.doc = None
    clock.advance(5)
    snap = source.get()
    assert snap.source == "last_known_good"
    assert snap.table is not None
    assert good.table is not None
    assert snap.table.features.keys() == good.table.features.keys()
    assert ("config_fallback", "last_known_good") in events
    ext.fail, ext.status, ext.doc = None, 200, table_doc
    clock.advance(5)
    assert source.get().source == "appconfig"


def test_bundled_table_when_appconfig_never_answered(
    table_doc: dict[str, Any], clock: FakeClock, tmp_path: Path
) -> None:
    bundled = tmp_path / "routing.json"
    bundled.write_text(json.dumps(table_doc))
    ext = FakeExtension(table_doc)
    ext.fail = TimeoutError()
    snap = _source(ext, clock, bundled).get()
    assert snap.source == "bundled"
    assert snap.table is not None


def test_nothing_at_all_is_no_table(clock: FakeClock, tmp_path: Path) -> None:
    ext = FakeExtension(None)
    ext.fail = ConnectionRefusedError()
    snap = _source(ext, clock, tmp_path / "missing.json").get()
    assert snap.table is None
    assert snap.source == "none"


def test_without_appconfig_settings_only_the_bundled_table_is_read(
    table_doc: dict[str, Any], clock: FakeClock, tmp_path: Path
) -> None:
    bundled = tmp_path / "routing.json"
    bundled.write_text(json.dumps(table_doc))
    ext = FakeExtension(table_doc)
    source = RoutingSource(application=None, environment=None, profile=None, bundled_path=bundled, fetch=ext)
    assert source.get().source == "bundled"
    assert ext.calls == []


def test_a_table_that_declares_a_canary_name_is_rejected(table_doc: dict[str, Any], clock: FakeClock) -> None:
    doc = json.loads(json.dumps(table_doc))
    doc["features"]["summarize-thread" + CANARY_SUFFIX] = doc["features"]["summarize-thread"]
    assert _source(FakeExtension(doc), clock).get().table is None


# -- canary -------------------------------------------------------------------------------------------------------


def test_bucketing_is_deterministic_and_uniform() -> None:
    assert bucket("req-1") == bucket("req-1")
    values = [bucket(f"req-{i}") for i in range(20000)]
    assert all(0 <= v < 1 for v in values)
    share = sum(v < 0.1 for v in values) / len(values)
    assert 0.09 < share < 0.11


def test_canary_moves_a_share_and_back_within_the_ttl(table_doc: dict[str, Any]) -> None:
    h = Harness(table_doc, flags={"canary": {"summarize-thread": {"model": "nova-lite", "share": 0.25}}})
    try:
        ids = [f"rid-{i}" for i in range(400)]
        expected = {rid for rid in ids if bucket(rid) < 0.25}
        targets = {rid: header(h.converse(request_id=rid), "x-spillway-target") for rid in ids}
        canaried = {rid for rid, t in targets.items() if t == "nova-lite/on_demand/us-east-1"}
        assert canaried == expected
        assert 0.2 < len(canaried) / len(ids) < 0.3
        assert {targets[rid] for rid in ids if rid not in expected} == {"claude-sonnet/provisioned/us-east-1"}
        listed = body_of(h.call(api_event("GET", "/v1/features", content_type=None)))["features"]
        assert {f["name"]: f["canary"] for f in listed}["summarize-thread"] == {"model": "nova-lite", "share": 0.25}
        # Take the canary out: still in effect until the cache TTL passes, gone after it.
        h.flags = {"canary": {}}
        rid = next(iter(expected))
        assert header(h.converse(request_id=rid), "x-spillway-target") == "nova-lite/on_demand/us-east-1"
        h.clock.advance(5.0)
        assert header(h.converse(request_id=rid), "x-spillway-target") == "claude-sonnet/provisioned/us-east-1"
    finally:
        h.handler.set_router(None)


def test_canary_variant_falls_back_along_the_rest_of_the_hierarchy(table_doc: dict[str, Any]) -> None:
    h = Harness(table_doc, flags={"canary": {"summarize-thread": {"model": "nova-lite", "share": 1.0}}})
    try:
        h.bedrock.plan["nova-lite/on_demand/us-east-1"] = BackendError.of("ServiceUnavailableException", 503)
        h.bedrock.plan["nova-lite/on_demand/us-west-2"] = BackendError.of("ServiceUnavailableException", 503)
        response = h.converse()
        assert response["statusCode"] == 200
        assert header(
            response,
            "x-spillway-target",
        ).startswith("claude-sonnet/")  # type: ignore[union-attr]
    finally:
        h.handler.set_router(None)


@pytest.mark.parametrize(
    "flags",
    [
        {"canary": {"summarize-thread": {"model": "no-such-model", "share": 0.5}}},
        {"canary": {"summarize-thread": {"model": "nova-lite", "share": 1.5}}},
        {"canary": {"no-such-feature": {"model": "nova-lite", "share": 0.5}}},
        {"canary": {"summarize-thread": {"model": "nova-lite", "share": 0.5, "enabled": False}}},
        {"canary": "everything"},
    ],
)
def test_invalid_or_disabled_canaries_change_nothing(
    table_doc: dict[str, Any], clock: FakeClock, flags: dict[str, Any]
) -> None:
    ext = FakeExtension(table_doc)
    ext.flags = flags
    snap = _source(ext, clock).get()
    assert snap.table is not None
    assert snap.canaries == {}
    assert all(snap.route_name("summarize-thread", f"r{i}") == "summarize-thread" for i in range(50))


# -- the real extension interface, over HTTP -----------------------------------------------------------------------


@pytest.fixture
def extension() -> Iterator[AppConfigExtension]:
    ext = AppConfigExtension(clock=time.monotonic)
    ext.start()
    yield ext
    ext.stop()


def test_reads_the_extension_over_http(table_doc: dict[str, Any], extension: AppConfigExtension) -> None:
    extension.set_configuration(APP, ENV, PROFILE, table_doc, version="12")
    flags = {"canary": {"summarize-thread": {"model": "nova-lite", "share": 0.5}}}
    extension.set_configuration(APP, ENV, FLAGS, flags)
    clock = FakeClock()
    source = RoutingSource(
        application=APP, environment=ENV, profile=PROFILE, flags_profile=FLAGS, base_url=extension.url, clock=clock
    )
    snap = source.get()
    assert (snap.source, snap.version) == ("appconfig", "12")
    assert snap.canaries["summarize-thread"].share == 0.5
    extension.set_fault(Fault.malformed_body())
    clock.advance(10)
    assert source.get().source == "last_known_good"


def test_handler_survives_a_dead_extension_on_the_bundled_table(
    table_doc: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundled = tmp_path / "routing.json"
    bundled.write_text(json.dumps(table_doc))
    monkeypatch.setenv("SPILLWAY_APPCONFIG_APPLICATION", APP)
    monkeypatch.setenv("SPILLWAY_APPCONFIG_ENVIRONMENT", ENV)
    monkeypatch.setenv("SPILLWAY_APPCONFIG_PROFILE", PROFILE)
    monkeypatch.setenv("SPILLWAY_APPCONFIG_URL", "http://127.0.0.1:9")  # refuses
    monkeypatch.setenv("SPILLWAY_BUNDLED_TABLE", str(bundled))
    monkeypatch.setenv("SPILLWAY_FLEET_STORE_URL", "redis://127.0.0.1:9/0")  # refuses too
    handler.set_router(None)
    try:
        router = handler.get_router()
        assert router.fleet is not None
        router.backends.update({"bedrock": ScriptedBackend(), "sagemaker": ScriptedBackend()})
        response = handler.lambda_handler(
            api_event("POST", "/v1/features/summarize-thread/converse", body={"messages": [
                {"role": "user", "content": [{"text": "hi"}]}]}), LambdaContext(),
        )  # fmt: skip
        assert response["statusCode"] == 200
        health = body_of(handler.lambda_handler(api_event("GET", "/v1/health", content_type=None), LambdaContext()))
        assert health["config"]["source"] == "bundled"
        assert health["store"]["last_error"] == "ConnectionRefusedError"  # the store failed open: still served
    finally:
        handler.set_router(None)
