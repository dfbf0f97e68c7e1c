"""Workload identity federation end to end on loopback: a real boto3 STS client asks the stand-in for a web identity
token (botocore's STS model parses the answer), the stand-in's Google-style exchange turns it into an access token,
and the emulator's OpenAI-compatible target serves only requests carrying a valid one."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from local.emulator import Emulator, TargetSpec
from local.emulator.openai_compat import base_path
from local.emulator.targets import Kind
from local.localrun.identity import IdentityStandIns
from spillway.backends.kinds import OpenAIRef
from spillway.backends.openai_compat import OpenAICompatBackend, StaticKeys
from spillway.backends.workload_identity import (
    REFRESH_MARGIN_S,
    FederatedTokens,
    exchange_form,
    jwt_audience,
)
from spillway.config import Target
from spillway.errors import BackendError, ErrorClass
from tests.fakes import FakeClock

AUDIENCE = "//iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/spillway/providers/aws"
WIRE_MODEL = "google/gemini-2.5-flash"
REGION = "us-east-1"


@pytest.fixture
def stand_ins() -> Iterator[IdentityStandIns]:
    with IdentityStandIns(AUDIENCE) as running:
        yield running


@pytest.fixture
def emulator(stand_ins: IdentityStandIns) -> Iterator[Emulator]:
    emu = Emulator([TargetSpec(REGION, Kind.OPENAI, WIRE_MODEL, echo=True)]).start()
    emu.require_bearer((REGION, "openai", WIRE_MODEL), stand_ins.valid)
    yield emu
    emu.stop()


def _sts(stand_ins: IdentityStandIns) -> Any:
    return boto3.client(
        "sts",
        region_name=REGION,
        endpoint_url=stand_ins.sts_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _ref(emu: Emulator, stand_ins: IdentityStandIns, audience: str = AUDIENCE) -> OpenAIRef:
    base = emu.endpoint_url(REGION).rstrip("/") + base_path(WIRE_MODEL)
    return OpenAIRef(base, WIRE_MODEL, "workload_identity", audience=audience, token_url=stand_ins.token_url)


def _target(ref: OpenAIRef) -> Target:
    return Target("gemini/on_demand/us-east-1", "gemini", "on_demand", REGION, ref)


def _request(text: str = "hello") -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": [{"text": text}]}]}


def test_the_stand_in_speaks_stss_contract_to_boto3(stand_ins: IdentityStandIns) -> None:
    answer = _sts(stand_ins).get_web_identity_token(
        Audience=[jwt_audience(AUDIENCE)], DurationSeconds=300, SigningAlgorithm="RS256"
    )
    assert answer["WebIdentityToken"].count(".") == 2
    assert answer["Expiration"].tzinfo is not None  # botocore parsed STS's timestamp
    with pytest.raises(ClientError) as refused:  # botocore read STS's error document
        _sts(stand_ins).get_web_identity_token(
            Audience=[jwt_audience(AUDIENCE)], DurationSeconds=300, SigningAlgorithm="HS256"
        )
    assert refused.value.response["Error"]["Code"] == "ValidationError"


def test_a_federated_target_serves_with_a_token_from_the_role_and_caches_it(
    emulator: Emulator, stand_ins: IdentityStandIns
) -> None:
    tokens = FederatedTokens(lambda region: _sts(stand_ins))
    backend = OpenAICompatBackend(keys=StaticKeys({}), tokens=tokens)
    target = _target(_ref(emulator, stand_ins))
    for i in range(3):
        reply = backend.invoke(target, _request(f"call {i}"), 5.0)
        assert reply.response["output"]["message"]["content"][0]["text"] == f"call {i}"
    assert (stand_ins.web_identity_tokens, stand_ins.exchanges) == (1, 1)  # one exchange for the three calls


def test_a_revoked_token_is_replaced_within_the_attempt(emulator: Emulator, stand_ins: IdentityStandIns) -> None:
    tokens = FederatedTokens(lambda region: _sts(stand_ins))
    backend = OpenAICompatBackend(keys=StaticKeys({}), tokens=tokens)
    target = _target(_ref(emulator, stand_ins))
    backend.invoke(target, _request(), 5.0)
    stand_ins.expire_all()  # the provider revokes every token: a 401, a fresh exchange, the same attempt serves
    backend.invoke(target, _request(), 5.0)
    assert stand_ins.exchanges == 2


def test_a_token_refused_twice_is_ours(emulator: Emulator, stand_ins: IdentityStandIns) -> None:
    emulator.require_bearer((REGION, "openai", WIRE_MODEL), lambda token: False)  # the pool's trust is broken
    backend = OpenAICompatBackend(keys=StaticKeys({}), tokens=FederatedTokens(lambda region: _sts(stand_ins)))
    with pytest.raises(BackendError) as refused:
        backend.invoke(_target(_ref(emulator, stand_ins)), _request(), 5.0)
    assert (refused.value.error_class, refused.value.code) == (ErrorClass.OURS, "OpenAIHttp401")
    assert stand_ins.exchanges == 2  # one fresh token was tried, then given up


def test_the_token_is_refreshed_before_it_expires(emulator: Emulator, stand_ins: IdentityStandIns) -> None:
    clock = FakeClock()
    tokens = FederatedTokens(lambda region: _sts(stand_ins), clock=clock)
    ref = _ref(emulator, stand_ins)
    first = tokens.token(ref, REGION)
    clock.advance(stand_ins.access_lifetime_s - REFRESH_MARGIN_S - 1)
    assert tokens.token(ref, REGION) == first
    clock.advance(2)
    assert tokens.token(ref, REGION) != first


def test_a_wrong_audience_is_ours_and_an_exchange_outage_is_unavailable(
    emulator: Emulator, stand_ins: IdentityStandIns
) -> None:
    tokens = FederatedTokens(lambda region: _sts(stand_ins))
    other = AUDIENCE.replace("providers/aws", "providers/other")
    with pytest.raises(BackendError) as wrong:
        tokens.token(_ref(emulator, stand_ins, other), REGION)
    assert (wrong.value.error_class, wrong.value.code) == (ErrorClass.OURS, "TokenExchangeHttp400")
    stand_ins.down()
    with pytest.raises(BackendError) as down:
        tokens.token(_ref(emulator, stand_ins), REGION)
    assert down.value.error_class is ErrorClass.UNAVAILABLE


def test_sts_refusing_the_role_is_ours_with_no_message_kept(emulator: Emulator, stand_ins: IdentityStandIns) -> None:
    class Refusing:
        def get_web_identity_token(self, **_: Any) -> Mapping[str, Any]:
            raise RuntimeError("AccessDenied: secret detail")

    tokens = FederatedTokens(lambda region: Refusing())
    with pytest.raises(BackendError) as refused:
        tokens.token(_ref(emulator, stand_ins), REGION)
    assert (refused.value.error_class, refused.value.code) == (ErrorClass.OURS, "WebIdentityTokenUnavailable")
    assert "secret detail" not in str(refused.value)


def test_a_malformed_exchange_answer_is_unavailable(emulator: Emulator, stand_ins: IdentityStandIns) -> None:
    for body in (b"not json", json.dumps({"token_type": "Bearer"}).encode(), json.dumps({"access_token": 5}).encode()):
        tokens = FederatedTokens(lambda region: _sts(stand_ins), post=lambda url, form, timeout, b=body: (200, b))
        with pytest.raises(BackendError) as broken:
            tokens.token(_ref(emulator, stand_ins), REGION)
        assert broken.value.code == "MalformedTokenExchange"


def test_the_exchange_form_is_rfc_8693_as_google_takes_it() -> None:
    form = exchange_form(AUDIENCE, "jwt")
    assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:token-exchange"
    assert form["subject_token_type"] == "urn:ietf:params:oauth:token-type:jwt"
    assert form["requested_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    assert form["audience"] == AUDIENCE
    assert jwt_audience(AUDIENCE).startswith("https://iam.googleapis.com/")
