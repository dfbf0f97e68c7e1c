"""Platform files with generated routing knobs render tables that the router's loader and AppConfig's validator
(the JSON Schema rendered from that loader) both accept: a knob the platform file may set cannot pass CI and then be
refused by AppConfig at deploy. The example platform file is the base; hypothesis varies every feature's knobs."""

from __future__ import annotations

from typing import Any

import jsonschema  # type: ignore[import-untyped]
from hypothesis import given, settings
from hypothesis import strategies as st

from spillway.config import DIMENSIONS, MIN_ATTEMPT_MS
from stacks.router import flags_schema, routing_table_schema
from stacks.routing import render_routing_table
from tests.infra.config_documents import example, parse
from tests.unit.test_schema import breakers

SCHEMA = jsonschema.Draft4Validator(routing_table_schema())
FLAGS = jsonschema.Draft4Validator(flags_schema())


@st.composite
def routing_knobs(draw: Any, deadline_ms: float, first_capacity: str) -> dict[str, Any]:
    knobs: dict[str, Any] = {}
    if draw(st.booleans()):
        low = draw(st.integers(min_value=int(MIN_ATTEMPT_MS), max_value=int(deadline_ms)))
        knobs["attempt_timeout_ms"] = {"min": low, "max": draw(st.integers(min_value=low, max_value=120_000))}
    if draw(st.booleans()):
        knobs["breaker"] = draw(breakers())
    if draw(st.booleans()):
        knobs["fallback_on_context_overflow"] = draw(st.booleans())
    if draw(st.booleans()):
        # A provisioned-first feature reaches its on-demand-only models by spilling; an on-demand-first one never
        # spills: the platform's own rules, not the schema's.
        order = list(draw(st.permutations(DIMENSIONS)))
        if first_capacity == "on_demand":
            order.remove("spill")
        knobs["order"] = order
    return knobs


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_generated_platform_files_render_tables_appconfig_accepts(data: st.DataObject) -> None:
    document = example()
    for feature in document["features"].values():
        feature["routing"] = data.draw(routing_knobs(feature["deadline_ms"], feature["first_capacity"]))
    platform = parse(document)
    for region in platform.region_names:
        table = render_routing_table(platform, region)  # validated by the router's loader as it renders
        SCHEMA.validate(table)


def test_a_feature_without_attempt_timeouts_gets_the_floor() -> None:
    document = example()
    del document["features"]["nightly-recap"]["routing"]["attempt_timeout_ms"]
    table = render_routing_table(parse(document), "us-west-2")
    assert table["features"]["nightly-recap"]["attempt_timeout_ms"]["min"] == MIN_ATTEMPT_MS
    SCHEMA.validate(table)


def test_the_stack_serves_the_router_schemas() -> None:
    FLAGS.validate({"canary": {"summarize-thread": {"model": "nova-lite", "share": 0.1, "enabled": False}}})
    assert SCHEMA.schema["properties"]["version"] == {"enum": [1]}
