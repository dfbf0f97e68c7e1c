"""One test per error code: every code of both services' botocore models and AWS's common errors, spoken by the
emulator, raised by boto3 as its modelled class, classed by the router as errors.GROUPS documents, and answered to
the caller as docs/calling-the-router.md says (400 with the code for the caller's errors; otherwise the router moves
on to every other target and, when all of them fail the same way, answers 503 NoCapacity with Retry-After)."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from typing import Any

import boto3
import botocore.session
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

import handler
from local.emulator import Emulator, Fault
from local.emulator.targets import Kind
from local.emulator.wire import COMMON_ERRORS, status_of
from spillway.backends import ClientPool
from spillway.errors import COMMON, GROUPS, ErrorClass, from_exception
from tests.router.conftest import (
    LambdaContext,
    api_event,
    body_of,
    converse_body,
    emulated_router,
    emulator_environment,
    header,
)

SERVICES = {Kind.BEDROCK: "bedrock-runtime", Kind.SAGEMAKER: "sagemaker-runtime"}
FEATURES = {Kind.BEDROCK: "summarize-thread", Kind.SAGEMAKER: "redact-escrow"}


def _modelled(service: str) -> list[str]:
    model = botocore.session.get_session().get_service_model(service)
    return sorted(name for name in model.shape_names if model.shape_for(name).metadata.get("exception"))


CASES = [
    *((kind, code) for kind, service in SERVICES.items() for code in _modelled(service)),
    *((kind, code) for kind in SERVICES for code in sorted(COMMON) if code not in _modelled(SERVICES[kind])),
]


def documented_class(kind: Kind, code: str) -> ErrorClass:
    group = GROUPS[SERVICES[kind]]
    return group[code][0] if code in group else COMMON[code][0]


def test_the_emulator_speaks_every_common_error_the_router_classes() -> None:
    assert set(COMMON_ERRORS) == set(COMMON)


@pytest.fixture(scope="module")
def world(table_doc: dict[str, Any]) -> Iterator[tuple[Emulator, ClientPool]]:
    """One emulator and one client pool for the module (building clients is the slow part)."""
    with pytest.MonkeyPatch.context() as patch, emulated_router(table_doc, patch) as emu:
        yield emu, ClientPool()


@pytest.fixture
def emulated(world: tuple[Emulator, ClientPool], monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    """The module's emulator with no faults and every target, and a fresh router (fresh breakers) per test."""
    emu, pool = world
    monkeypatch.setattr(handler, "ClientPool", lambda **_: pool)
    for name, value in emulator_environment(emu).items():
        monkeypatch.setenv(name, value)
    handler.set_router(None)
    yield emu
    emu.clear_faults()
    handler.set_router(None)


@cache
def _client(kind: Kind, region: str, url: str) -> Any:
    config = Config(retries={"total_max_attempts": 1, "mode": "standard"})
    return boto3.client(SERVICES[kind], region_name=region, endpoint_url=url, config=config)


def _direct_call(emulated: Emulator, kind: Kind, table: dict[str, Any]) -> Any:
    """Call one of the feature's targets with boto3 directly, as the router's backend does."""
    target = next(t for t in table["targets"].values() if t["backend"]["kind"] == kind.value)
    client = _client(kind, target["region"], emulated.endpoint_url(target["region"]))
    if kind is Kind.BEDROCK:
        return client, lambda: client.converse(modelId=target["backend"]["model_id"], **converse_body("hi"))
    name = target["backend"]["endpoint_name"]
    return client, lambda: client.invoke_endpoint(
        EndpointName=name, Body=b'{"messages":[{"role":"user","content":"hi"}]}'
    )


@pytest.mark.parametrize(("kind", "code"), CASES, ids=[f"{k.value}-{c}" for k, c in CASES])
def test_each_code_is_raised_classed_and_answered_as_documented(
    emulated: Emulator, table_doc: dict[str, Any], kind: Kind, code: str
) -> None:
    emulated.set_fault("*", Fault.error_response(code))  # every target of the feature answers with it
    # boto3 raises the modelled class (a ClientError with the code for the common errors) with the right status.
    client, call = _direct_call(emulated, kind, table_doc)
    modelled = getattr(client.exceptions, code, ClientError)
    with pytest.raises(ClientError) as raised:
        call()
    assert isinstance(raised.value, modelled)
    assert raised.value.response["Error"]["Code"] == code
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == status_of(kind, code)
    # The router classes it as documented.
    expected = documented_class(kind, code)
    assert from_exception(raised.value).error_class is expected
    # The caller sees the documented answer, and the route says what each target did.
    event = api_event("POST", f"/v1/features/{FEATURES[kind]}/converse", body=converse_body("hi"))
    response = handler.lambda_handler(event, LambdaContext())
    error = body_of(response)["error"]
    # The targets of this kind (another kind's targets answer the same fault at their own wire's status).
    of_kind = {tid for tid, t in table_doc["targets"].items() if t["backend"]["kind"] == kind.value}
    route = [part.rsplit("=", 1) for part in str(header(response, "x-spillway-route")).split(",")]
    outcomes = {outcome for target, outcome in route if target in of_kind}
    if expected is ErrorClass.CLIENT:
        assert (response["statusCode"], error["code"]) == (400, code)
        assert header(response, "x-spillway-attempts") == "1"  # no retry of the caller's own error
    else:
        assert (response["statusCode"], error["code"]) == (503, "NoCapacity")
        assert header(response, "Retry-After") is not None
        assert outcomes == {expected.value}


@pytest.mark.parametrize("kind", list(SERVICES))
@pytest.mark.parametrize(
    ("original", "status", "outcome"),
    [(400, 400, "client"), (404, 400, "client"), (422, 400, "client"), (408, 503, "unavailable"),
     (429, 503, "capacity"), (500, 503, "unavailable"), (503, 503, "unavailable")],
)  # fmt: skip
def test_any_wrapped_status(emulated: Emulator, kind: Kind, original: int, status: int, outcome: str) -> None:
    emulated.set_fault("*", Fault.error_response("model_error", status=original))
    event = api_event("POST", f"/v1/features/{FEATURES[kind]}/converse", body=converse_body("hi"))
    response = handler.lambda_handler(event, LambdaContext())
    assert response["statusCode"] == status
    assert str(header(response, "x-spillway-route")).split(",")[0].endswith(f"={outcome}")


@pytest.mark.parametrize("kind", list(SERVICES))
def test_a_target_that_does_not_exist_is_ours_and_the_next_one_serves(
    emulated: Emulator, table_doc: dict[str, Any], kind: Kind
) -> None:
    feature = table_doc["features"][FEATURES[kind]]
    first = table_doc["targets"][f"{feature['models'][0]}/{feature['first_capacity']}/{feature['home_region']}"]
    wire_id = first["backend"].get("model_id") or first["backend"]["endpoint_name"]
    (spec,) = [t for t in emulated.targets() if (t.region, t.kind, t.id) == (first["region"], kind, wire_id)]
    emulated.remove_target(spec)  # "Endpoint ... not found" / no such provisioned model
    try:
        event = api_event("POST", f"/v1/features/{FEATURES[kind]}/converse", body=converse_body("hi"))
        response = handler.lambda_handler(event, LambdaContext())
    finally:
        emulated.add_target(spec)
    route = str(header(response, "x-spillway-route")).split(",")
    assert route[0].endswith("=ours")
    assert response["statusCode"] == 200
