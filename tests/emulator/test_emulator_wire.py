"""Wire compatibility with real boto3 clients: replies, error codes and statuses, ids, malformed bodies."""

from __future__ import annotations

import base64
import json
from typing import Any

import botocore.session
import pytest
from botocore.exceptions import ClientError, ConnectionClosedError

from local.emulator import Emulator, Fault, TargetSpec
from local.emulator.targets import Kind
from local.emulator.wire import BEDROCK_ERRORS, ERROR_ALIASES, SAGEMAKER_ERRORS, status_of
from tests.emulator.conftest import (
    ENDPOINT,
    MODEL,
    PROFILE,
    PT_ARN,
    WEST,
    ClientFactory,
    chat_body,
    converse_kwargs,
    make_factory,
)


def _model_errors(service: str) -> dict[str, int]:
    """code -> HTTP status of every error shape in the installed botocore service model."""
    loader = botocore.session.get_session().get_component("data_loader")
    shapes = loader.load_service_model(service, "service-2")["shapes"]
    return {name: shape["error"]["httpStatusCode"] for name, shape in shapes.items() if shape.get("error")}


def test_error_catalogs_match_botocore_service_models() -> None:
    bedrock = _model_errors("bedrock-runtime")
    sagemaker = _model_errors("sagemaker-runtime")
    for code, status in BEDROCK_ERRORS.items():
        assert bedrock[code] == status, code
    for code, status in SAGEMAKER_ERRORS.items():
        if code in sagemaker:  # InternalStreamFailure and ModelStreamError are stream events, without a status
            assert sagemaker[code] == status, code
    converse = botocore.session.get_session().get_service_model("bedrock-runtime").operation_model("Converse")
    assert {s.name for s in converse.error_shapes} <= set(BEDROCK_ERRORS)
    invoke = botocore.session.get_session().get_service_model("sagemaker-runtime").operation_model("InvokeEndpoint")
    assert {s.name for s in invoke.error_shapes} <= set(SAGEMAKER_ERRORS)


def test_converse_reply_shape(client: ClientFactory) -> None:
    bedrock = client("bedrock-runtime")
    reply = bedrock.converse(**converse_kwargs(PT_ARN, "four words of prompt"))
    assert reply["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert reply["output"]["message"]["role"] == "assistant"
    assert reply["output"]["message"]["content"][0]["text"]
    assert reply["stopReason"] == "end_turn"
    usage = reply["usage"]
    assert usage["outputTokens"] == 16
    assert usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"]
    assert reply["metrics"]["latencyMs"] >= 0
    assert reply["ResponseMetadata"]["RequestId"]


def test_model_ids_arrive_intact_whatever_their_form(client: ClientFactory, emu: Emulator) -> None:
    # A PT ARN (percent-encoded on the wire: ':' and '/'), an inference profile id, a model id and its alias.
    assert client("bedrock-runtime").converse(**converse_kwargs(PT_ARN))["output"]
    assert client("bedrock-runtime").converse(**converse_kwargs(PROFILE))["output"]
    west = client("bedrock-runtime", WEST)
    assert west.converse(**converse_kwargs(MODEL))["output"]
    assert west.converse(**converse_kwargs(f"us.{MODEL}"))["output"]
    assert west.converse(**converse_kwargs(f"arn:aws:bedrock:us-west-2::foundation-model/{MODEL}"))["output"]
    assert emu.target_stats((WEST, "bedrock", MODEL))["served"] == 3


def test_max_tokens_caps_the_reply(client: ClientFactory) -> None:
    reply = client("bedrock-runtime").converse(**converse_kwargs(PT_ARN, inferenceConfig={"maxTokens": 3}))
    assert reply["stopReason"] == "max_tokens"
    assert reply["usage"]["outputTokens"] == 3


def test_echo_returns_the_last_user_text(client: ClientFactory) -> None:
    reply = client("bedrock-runtime").converse(**converse_kwargs(PROFILE, "CANARY-7f3a the prompt"))
    assert reply["output"]["message"]["content"][0]["text"] == "CANARY-7f3a the prompt"
    answer = client("sagemaker-runtime").invoke_endpoint(
        EndpointName=ENDPOINT, Body=chat_body("CANARY-sm"), ContentType="application/json"
    )
    assert json.loads(answer["Body"].read())["choices"][0]["message"]["content"] == "CANARY-sm"


def test_invoke_endpoint_messages_api(client: ClientFactory) -> None:
    answer = client("sagemaker-runtime", WEST).invoke_endpoint(
        EndpointName=ENDPOINT, Body=chat_body("hi", max_tokens=4), ContentType="application/json"
    )
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert answer["ContentType"] == "application/json"
    assert answer["InvokedProductionVariant"] == "AllTraffic"
    body = json.loads(answer["Body"].read())
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 4
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + 4


def test_invoke_endpoint_tgi_inputs(client: ClientFactory) -> None:
    answer = client("sagemaker-runtime", WEST).invoke_endpoint(
        EndpointName=ENDPOINT, Body=json.dumps({"inputs": "hi", "parameters": {"max_new_tokens": 2}})
    )
    assert json.loads(answer["Body"].read())[0]["generated_text"] == "synthetic reply"


def _error(call: Any) -> tuple[str, int, dict[str, Any]]:
    with pytest.raises(ClientError) as info:
        call()
    response = info.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"], response


def test_unknown_targets(client: ClientFactory, emu: Emulator) -> None:
    bedrock = client("bedrock-runtime")
    assert _error(lambda: bedrock.converse(**converse_kwargs("no.such-model")))[:2] == ("ValidationException", 400)
    other_pt = "arn:aws:bedrock:us-east-1:111122223333:provisioned-model/000000000000"
    assert _error(lambda: bedrock.converse(**converse_kwargs(other_pt)))[:2] == ("ResourceNotFoundException", 404)
    # The PT ARN of us-east-1 does not exist in us-west-2.
    west = client("bedrock-runtime", WEST)
    assert _error(lambda: west.converse(**converse_kwargs(PT_ARN)))[:2] == ("ResourceNotFoundException", 404)
    sagemaker = client("sagemaker-runtime")
    code, status, response = _error(lambda: sagemaker.invoke_endpoint(EndpointName="nope", Body=chat_body()))
    assert (code, status) == ("ValidationError", 400)
    assert "nope" in response["Error"]["Message"]
    assert emu.stats()["regions"]["us-east-1"]["unrouted"] == 3


def test_bad_requests(client: ClientFactory) -> None:
    bedrock = client("bedrock-runtime")
    code, status, _ = _error(lambda: bedrock.converse(modelId=PT_ARN, messages=[]))
    assert (code, status) == ("ValidationException", 400)
    sagemaker = client("sagemaker-runtime")
    code, status, response = _error(lambda: sagemaker.invoke_endpoint(EndpointName=ENDPOINT, Body=b"not json"))
    assert (code, status) == ("ModelError", 424)
    assert response["OriginalStatusCode"] == 400


BEDROCK_CASES = [(alias, codes[0]) for alias, codes in ERROR_ALIASES.items()] + [
    (code, code) for code in BEDROCK_ERRORS
]
SAGEMAKER_CASES = [(alias, codes[1]) for alias, codes in ERROR_ALIASES.items()] + [
    (code, code) for code in SAGEMAKER_ERRORS
]


@pytest.mark.parametrize(("error", "code"), BEDROCK_CASES)
def test_every_bedrock_error(client: ClientFactory, emu: Emulator, error: str, code: str) -> None:
    emu.set_fault((WEST, "bedrock", MODEL), Fault.error_response(error, count=1))
    got, status, response = _error(lambda: client("bedrock-runtime", WEST).converse(**converse_kwargs(MODEL)))
    assert (got, status) == (code, status_of(Kind.BEDROCK, code))
    assert response["Error"]["Message"]
    assert response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-errortype"].startswith(code + ":")
    if code == "ModelErrorException":
        assert response["originalStatusCode"] == 500
        assert response["resourceName"]


@pytest.mark.parametrize(("error", "code"), SAGEMAKER_CASES)
def test_every_sagemaker_error(client: ClientFactory, emu: Emulator, error: str, code: str) -> None:
    emu.set_fault((WEST, "sagemaker", ENDPOINT), Fault.error_response(error, count=1))
    sagemaker = client("sagemaker-runtime", WEST)
    got, status, response = _error(lambda: sagemaker.invoke_endpoint(EndpointName=ENDPOINT, Body=chat_body()))
    assert (got, status) == (code, status_of(Kind.SAGEMAKER, code))
    assert response["Error"]["Message"]
    if code == "ModelError":
        assert response["OriginalStatusCode"] in (408, 500)
        assert response["LogStreamArn"].startswith("arn:aws:logs:us-west-2:")


def test_modeled_exceptions_are_raised_as_their_classes(client: ClientFactory, emu: Emulator) -> None:
    bedrock = client("bedrock-runtime", WEST)
    emu.set_fault(WEST, Fault.throttle(count=1))
    with pytest.raises(bedrock.exceptions.ThrottlingException):
        bedrock.converse(**converse_kwargs(MODEL))
    sagemaker = client("sagemaker-runtime", WEST)
    emu.set_fault(WEST, Fault.error_response("model_error", count=1))
    with pytest.raises(sagemaker.exceptions.ModelError):
        sagemaker.invoke_endpoint(EndpointName=ENDPOINT, Body=chat_body())


def test_sagemaker_throttle_shape(client: ClientFactory, emu: Emulator) -> None:
    emu.set_fault((WEST, "sagemaker", ENDPOINT), Fault.throttle(count=1))
    sagemaker = client("sagemaker-runtime", WEST)
    assert _error(lambda: sagemaker.invoke_endpoint(EndpointName=ENDPOINT, Body=chat_body()))[:2] == (
        "ThrottlingException",
        400,
    )


def test_malformed_converse_bodies(client: ClientFactory, emu: Emulator) -> None:
    bedrock = client("bedrock-runtime", WEST)
    # Broken JSON: botocore's rest-json parser does not raise; the reply lacks every required member.
    for variant in ("truncated", "not_json", "empty", "wrong_shape"):
        emu.set_fault(WEST, Fault.malformed_body(variant, count=1))
        reply = bedrock.converse(**converse_kwargs(MODEL))
        assert "output" not in reply, variant
        assert "usage" not in reply, variant
    # Members of the wrong type make botocore raise while parsing.
    emu.set_fault(WEST, Fault.malformed_body("bad_types", count=1))
    with pytest.raises((AttributeError, TypeError, ValueError)):
        bedrock.converse(**converse_kwargs(MODEL))
    assert emu.target_stats((WEST, "bedrock", MODEL))["outcomes"]["malformed"] == 5


def test_malformed_sagemaker_body(client: ClientFactory, emu: Emulator) -> None:
    sagemaker = client("sagemaker-runtime", WEST)
    emu.set_fault(WEST, Fault.malformed_body("truncated", count=1))
    answer = sagemaker.invoke_endpoint(EndpointName=ENDPOINT, Body=chat_body())
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(answer["Body"].read())


def test_reset_drops_the_connection(client: ClientFactory, emu: Emulator) -> None:
    emu.set_fault((WEST, "bedrock", MODEL), Fault.reset(count=1))
    bedrock = client("bedrock-runtime", WEST)
    with pytest.raises(ConnectionClosedError):
        bedrock.converse(**converse_kwargs(MODEL))
    assert bedrock.converse(**converse_kwargs(MODEL))["output"]


def test_botocore_max_attempts_counts_retries(emu: Emulator) -> None:
    """For the router's authors: ``max_attempts: 1`` is one retry (2 calls); ``total_max_attempts: 1`` is none."""
    emu.set_fault(WEST, Fault.error_response("internal", count=1))
    retried = make_factory(emu)("bedrock-runtime", WEST, retries={"max_attempts": 1, "mode": "standard"})
    reply = retried.converse(**converse_kwargs(MODEL))
    assert reply["ResponseMetadata"]["RetryAttempts"] == 1
    assert emu.target_stats((WEST, "bedrock", MODEL))["requests"] == 2


def test_target_dict_round_trip() -> None:
    spec = TargetSpec("eu-west-1", "sagemaker", "ep", max_in_flight=3, echo=True, aliases=("x",))
    assert TargetSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    with pytest.raises(ValueError, match="unknown target field"):
        TargetSpec.from_dict({"region": "r", "kind": "bedrock", "id": "m", "bogus": 1})
    with pytest.raises(ValueError, match="bedrock"):
        TargetSpec.from_dict({"region": "r", "kind": "vertex", "id": "m"})


def test_each_target_records_the_bodies_it_received(client: ClientFactory, emu: Emulator) -> None:
    image = bytes(range(256))
    content = [{"image": {"format": "png", "source": {"bytes": image}}}]
    client("bedrock-runtime").converse(modelId=PROFILE, messages=[{"role": "user", "content": content}])
    client("sagemaker-runtime").invoke_endpoint(EndpointName=ENDPOINT, Body=chat_body("x"))
    (received,) = emu.received(("us-east-1", "bedrock", PROFILE))
    source = json.loads(received)["messages"][0]["content"][0]["image"]["source"]
    assert base64.b64decode(source["bytes"]) == image  # boto3 encoded the raw bytes once
    assert emu.received(("us-east-1", "sagemaker", ENDPOINT)) == [chat_body("x")]
    assert emu.received(("us-east-1", "bedrock", PT_ARN)) == []
    emu.reset_stats()
    assert emu.received(("us-east-1", "bedrock", PROFILE)) == []
