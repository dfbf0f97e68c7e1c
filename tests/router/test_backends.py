"""Bedrock and SageMaker backends against botocore's Stubber: parameters, answers, and the error taxonomy."""

from __future__ import annotations

import io
import json
from typing import Any

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError, ReadTimeoutError
from botocore.response import StreamingBody
from botocore.stub import Stubber

from spillway.backends import ClientPool, connect_timeout_for, endpoint_url_for, tier_for
from spillway.backends.bedrock import BedrockBackend
from spillway.backends.chat import from_chat, to_chat
from spillway.backends.kinds import BedrockRef, SageMakerRef
from spillway.backends.sagemaker import SageMakerBackend
from spillway.config import Target
from spillway.errors import BackendError, ErrorClass
from spillway.errors import from_exception as backend_error
from tests.router.conftest import BEDROCK_META

PT_ARN = "arn:aws:bedrock:us-east-1:111122223333:provisioned-model/sonnetuse1pt01"
BEDROCK_TARGET = Target("claude-sonnet/provisioned/us-east-1", "claude-sonnet", "provisioned", "us-east-1",
                        BedrockRef(PT_ARN))  # fmt: skip
SM_TARGET = Target("llama-escrow/provisioned/us-east-1", "llama-escrow", "provisioned", "us-east-1",
                   SageMakerRef("spillway-llama-escrow"))  # fmt: skip
SECRET = "CANARY-7f3a-prompt-text"
REQUEST = {
    "messages": [{"role": "user", "content": [{"text": "hello"}]}],
    "system": [{"text": "be brief"}],
    "inferenceConfig": {"maxTokens": 32},
}
CONVERSE_OK = {
    "output": {"message": {"role": "assistant", "content": [{"text": "hi there"}]}},
    "stopReason": "end_turn",
    "usage": {"inputTokens": 12, "outputTokens": 3, "totalTokens": 15},
    "metrics": {"latencyMs": 120},
}


_SESSION = boto3.session.Session()  # one session: its loaded service models are shared by every client


class StubbedPool(ClientPool):
    """Real boto3 clients (configured as the router configures them), each wrapped in a Stubber."""

    def __init__(self, home_region: str = "us-west-2") -> None:
        self.configs: list[Any] = []
        self.stubbers: dict[str, Stubber] = {}
        super().__init__(self._make, home_region=home_region)

    def _make(self, service: str, region: str, config: Any) -> Any:
        self.configs.append(config)
        client = _SESSION.client(service, region_name=region, config=config)
        stubber = Stubber(client)
        stubber.activate()
        self.stubbers[f"{service}:{config.read_timeout}"] = stubber
        return client

    def stub(self, service: str, timeout_s: float) -> Stubber:
        _, tier = self.client(service, "us-east-1", timeout_s)
        return self.stubbers[f"{service}:{tier}"]


@pytest.fixture
def pool() -> StubbedPool:
    return StubbedPool()


def _raises(call: Any) -> BackendError:
    with pytest.raises(BackendError) as info:
        call()
    error = info.value
    assert info.value.__cause__ is None  # raised `from None`: the service's exception is not chained
    assert SECRET not in str(error)
    assert SECRET not in repr(error)
    return error


# -- Bedrock ------------------------------------------------------------------------------------------------------


def test_bedrock_converse_passes_the_request_and_the_pt_arn_unchanged(pool: StubbedPool) -> None:
    stub = pool.stub("bedrock-runtime", 5.0)
    stub.add_response("converse", {**CONVERSE_OK}, {"modelId": PT_ARN, **REQUEST})
    reply = BedrockBackend(pool).invoke(BEDROCK_TARGET, REQUEST, 5.0)
    stub.assert_no_pending_responses()
    assert reply.response["output"] == CONVERSE_OK["output"]
    assert reply.response["stopReason"] == "end_turn"
    assert "ResponseMetadata" not in reply.response
    assert reply.usage is not None
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (12, 3)
    assert reply.latency_ms == 120.0


def test_clients_are_reused_with_retries_off_and_timeouts_from_the_budget(pool: StubbedPool) -> None:
    backend = BedrockBackend(pool)
    for budget in (5.0, 5.3, 5.9):
        pool.stub("bedrock-runtime", budget).add_response("converse", CONVERSE_OK)
        backend.invoke(BEDROCK_TARGET, REQUEST, budget)
    assert len(pool) == 1  # one client for the region and tier, reused
    config = pool.configs[0]
    assert config.retries == {"total_max_attempts": 1, "mode": "standard"}
    assert config.read_timeout == 5.0
    assert config.connect_timeout == 2.0  # us-east-1 from a function in us-west-2: another region
    pool.stub("bedrock-runtime", 0.35).add_response("converse", CONVERSE_OK)
    backend.invoke(BEDROCK_TARGET, REQUEST, 0.35)
    assert len(pool) == 2
    assert (pool.configs[1].read_timeout, pool.configs[1].connect_timeout) == (0.3, 0.3)


def test_a_connect_in_the_functions_own_region_times_out_sooner() -> None:
    home = StubbedPool(home_region="us-east-1")
    home.stub("bedrock-runtime", 5.0).add_response("converse", CONVERSE_OK)
    BedrockBackend(home).invoke(BEDROCK_TARGET, REQUEST, 5.0)
    assert (home.configs[0].read_timeout, home.configs[0].connect_timeout) == (5.0, 0.5)
    assert connect_timeout_for("us-east-1", 0.3, "us-east-1") == 0.3  # never over the read timeout
    assert connect_timeout_for("us-west-2", 8.0, None) == 2.0  # no AWS_REGION: every region is another


@pytest.mark.parametrize("budget", [0.01, 0.25, 0.31, 1.0, 7.99, 8.0, 19.0, 1000.0])
def test_tier_never_exceeds_the_budget_and_loses_at_most_a_fifth(budget: float) -> None:
    tier = tier_for(budget)
    if budget >= 0.25:
        assert tier <= budget
    if 0.25 <= budget <= 900:
        assert tier >= budget * 0.78


@pytest.mark.parametrize(
    ("code", "status", "klass"),
    [
        ("ThrottlingException", 429, ErrorClass.CAPACITY),
        ("ServiceQuotaExceededException", 400, ErrorClass.CAPACITY),
        ("ModelNotReadyException", 429, ErrorClass.CAPACITY),
        ("ModelTimeoutException", 408, ErrorClass.UNAVAILABLE),
        ("InternalServerException", 500, ErrorClass.UNAVAILABLE),
        ("ServiceUnavailableException", 503, ErrorClass.UNAVAILABLE),
        ("ModelErrorException", 424, ErrorClass.UNAVAILABLE),
        ("ValidationException", 400, ErrorClass.CLIENT),
        ("AccessDeniedException", 403, ErrorClass.OURS),
        ("ResourceNotFoundException", 404, ErrorClass.OURS),
    ],
)
def test_bedrock_errors_are_classified_without_their_message(
    pool: StubbedPool, code: str, status: int, klass: ErrorClass
) -> None:
    pool.stub("bedrock-runtime", 5.0).add_client_error(
        "converse", service_error_code=code, service_message=f"bad input near '{SECRET}'", http_status_code=status
    )
    error = _raises(lambda: BedrockBackend(pool).invoke(BEDROCK_TARGET, REQUEST, 5.0))
    assert (error.error_class, error.code, error.http_status) == (klass, code, status)
    assert not error.context_overflow


def test_retry_after_header_is_kept(pool: StubbedPool) -> None:
    pool.stub("bedrock-runtime", 5.0).add_client_error(
        "converse", "ThrottlingException", "slow down", 429, response_meta={"HTTPHeaders": {"retry-after": "7"}}
    )
    error = _raises(lambda: BedrockBackend(pool).invoke(BEDROCK_TARGET, REQUEST, 5.0))
    assert error.retry_after_s == 7.0


@pytest.mark.parametrize(
    "message",
    [
        "Input is too long for requested model.",
        "The model returned the following errors: prompt is too long: 250000 tokens > 200000 maximum",
        "Too many input tokens. Max input tokens: 8192, request input token count: 9000",
    ],
)
def test_context_window_overflow_is_a_client_error_that_may_fall_back(pool: StubbedPool, message: str) -> None:
    pool.stub("bedrock-runtime", 5.0).add_client_error("converse", "ValidationException", message, 400)
    error = _raises(lambda: BedrockBackend(pool).invoke(BEDROCK_TARGET, REQUEST, 5.0))
    assert error.error_class is ErrorClass.CLIENT
    assert error.context_overflow


class _RaisingClient:
    meta = BEDROCK_META

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def converse(self, **_: Any) -> Any:
        raise self.exc

    def invoke_endpoint(self, **_: Any) -> Any:
        raise self.exc


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (ReadTimeoutError(endpoint_url="https://bedrock-runtime.us-east-1.amazonaws.com"), "ReadTimeoutError"),
        (EndpointConnectionError(endpoint_url="https://bedrock-runtime.us-east-1.amazonaws.com"),
         "EndpointConnectionError"),
        (ConnectionResetError(SECRET), "ConnectionError"),  # by its builtin base class
    ],
)  # fmt: skip
def test_transport_errors_are_unavailable(exc: BaseException, code: str) -> None:
    pool = ClientPool(lambda service, region, config: _RaisingClient(exc))
    error = _raises(lambda: BedrockBackend(pool).invoke(BEDROCK_TARGET, REQUEST, 5.0))
    assert (error.error_class, error.code) == (ErrorClass.UNAVAILABLE, code)


class _AnswerClient:
    meta = BEDROCK_META

    def __init__(self, answer: Any) -> None:
        self.answer = answer

    def converse(self, **_: Any) -> Any:
        return self.answer

    def invoke_endpoint(self, **_: Any) -> Any:
        return {"Body": io.BytesIO(self.answer)}


@pytest.mark.parametrize(
    "answer", [{}, {"output": {"message": {"content": "x"}}, "stopReason": "end_turn"}, {"output": None}, []]
)
def test_malformed_converse_answer_is_unavailable(answer: Any) -> None:
    pool = ClientPool(lambda service, region, config: _AnswerClient(answer))
    error = _raises(lambda: BedrockBackend(pool).invoke(BEDROCK_TARGET, REQUEST, 5.0))
    assert (error.error_class, error.code) == (ErrorClass.UNAVAILABLE, "MalformedConverseResponse")


def test_wrong_backend_kind_is_ours() -> None:
    error = _raises(lambda: BedrockBackend(ClientPool(lambda *a: None)).invoke(SM_TARGET, REQUEST, 5.0))
    assert error.error_class is ErrorClass.OURS


def test_endpoint_url_override_per_region() -> None:
    env = {"SPILLWAY_ENDPOINT_URL_US_EAST_1": "http://127.0.0.1:9001", "SPILLWAY_ENDPOINT_URL": "http://x:1"}
    assert endpoint_url_for("us-east-1", env) == "http://127.0.0.1:9001"
    assert endpoint_url_for("us-west-2", env) == "http://x:1"
    assert endpoint_url_for("us-west-2", {}) is None
    pool = ClientPool(environ={"SPILLWAY_ENDPOINT_URL_US_WEST_2": "http://127.0.0.1:9002"})
    client, _ = pool.client("bedrock-runtime", "us-west-2", 3.0)
    assert client.meta.endpoint_url == "http://127.0.0.1:9002"
    assert client.meta.config.retries["total_max_attempts"] == 1


# -- SageMaker ----------------------------------------------------------------------------------------------------


def _chat_answer(**message: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 4, "total_tokens": 24},
    }


def _body(payload: Any) -> StreamingBody:
    raw = json.dumps(payload).encode()
    return StreamingBody(io.BytesIO(raw), len(raw))


def test_sagemaker_sends_chat_completions_and_answers_converse(pool: StubbedPool) -> None:
    stub = pool.stub("sagemaker-runtime", 5.0)
    expected_payload = {
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}],
        "max_tokens": 32,
    }
    stub.add_response(
        "invoke_endpoint",
        {"Body": _body(_chat_answer(content="hi there")), "ContentType": "application/json"},
        {
            "EndpointName": "spillway-llama-escrow",
            "ContentType": "application/json",
            "Accept": "application/json",
            "Body": json.dumps(expected_payload, separators=(",", ":")).encode(),
        },
    )
    reply = SageMakerBackend(pool).invoke(SM_TARGET, REQUEST, 5.0)
    stub.assert_no_pending_responses()
    assert reply.response["output"] == {"message": {"role": "assistant", "content": [{"text": "hi there"}]}}
    assert reply.response["stopReason"] == "end_turn"
    assert reply.response["usage"] == {"inputTokens": 20, "outputTokens": 4, "totalTokens": 24}
    assert set(reply.response) == {"output", "stopReason", "usage", "metrics"}


def test_translation_of_inference_config_and_tools() -> None:
    request = {
        "messages": [
            {"role": "user", "content": [{"text": "weather?"}]},
            {
                "role": "assistant",
                "content": [{"toolUse": {"toolUseId": "t1", "name": "wx", "input": {"c": "Oslo"}}}],
            },
            {"role": "user", "content": [{"toolResult": {"toolUseId": "t1", "content": [{"json": {"t": 3}}]}}]},
        ],
        "inferenceConfig": {"maxTokens": 10, "temperature": 0.5, "topP": 0.9, "stopSequences": ["END"]},
        "toolConfig": {
            "tools": [
                {"toolSpec": {"name": "wx", "description": "weather", "inputSchema": {"json": {"type": "object"}}}}
            ],
            "toolChoice": {"any": {}},
        },
    }
    payload = to_chat(request)
    assert (payload["max_tokens"], payload["temperature"], payload["top_p"]) == (10, 0.5, 0.9)
    assert payload["stop"] == ["END"]
    assert payload["tools"] == [
        {"type": "function", "function": {"name": "wx", "parameters": {"type": "object"}, "description": "weather"}}
    ]
    assert payload["tool_choice"] == "required"
    assert payload["messages"][1]["tool_calls"][0]["function"] == {"name": "wx", "arguments": '{"c": "Oslo"}'}
    assert payload["messages"][2] == {"role": "tool", "tool_call_id": "t1", "content": '{"t": 3}'}


def test_tool_calls_and_finish_reasons_come_back_as_converse() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "wx", "arguments": '{"c": "Oslo"}'}}
    answer = _chat_answer(content=None, tool_calls=[call])
    answer["choices"][0]["finish_reason"] = "tool_calls"
    reply = from_chat(answer, 10.0)
    assert reply.response["stopReason"] == "tool_use"
    assert reply.response["output"]["message"]["content"] == [
        {"toolUse": {"toolUseId": "c1", "name": "wx", "input": {"c": "Oslo"}}}
    ]
    answer = _chat_answer(content="cut")
    answer["choices"][0]["finish_reason"] = "length"
    assert from_chat(answer, 1.0).response["stopReason"] == "max_tokens"


def test_image_blocks_are_a_client_error_for_a_text_endpoint() -> None:
    request = {"messages": [{"role": "user", "content": [{"image": {"format": "png", "source": {"bytes": b"x"}}}]}]}
    error = _raises(lambda: SageMakerBackend(ClientPool(lambda *a: None)).invoke(SM_TARGET, request, 5.0))
    assert (error.error_class, error.code) == (ErrorClass.CLIENT, "UnsupportedContentBlock")


@pytest.mark.parametrize(
    ("code", "status", "klass"),
    [
        ("ModelError", 424, ErrorClass.UNAVAILABLE),
        ("InternalFailure", 500, ErrorClass.UNAVAILABLE),
        ("ServiceUnavailable", 503, ErrorClass.UNAVAILABLE),
        ("ValidationError", 400, ErrorClass.CLIENT),
        ("ThrottlingException", 400, ErrorClass.CAPACITY),
        ("ModelNotReadyException", 429, ErrorClass.CAPACITY),
    ],
)
def test_sagemaker_errors_are_classified(pool: StubbedPool, code: str, status: int, klass: ErrorClass) -> None:
    pool.stub("sagemaker-runtime", 5.0).add_client_error("invoke_endpoint", code, f"container said '{SECRET}'", status)
    error = _raises(lambda: SageMakerBackend(pool).invoke(SM_TARGET, REQUEST, 5.0))
    assert (error.error_class, error.code) == (klass, code)


def test_model_error_with_a_context_overflow_falls_back(pool: StubbedPool) -> None:
    pool.stub("sagemaker-runtime", 5.0).add_client_error(
        "invoke_endpoint",
        "ModelError",
        "Received client error (400) from primary",
        424,
        modeled_fields={"OriginalStatusCode": 400, "OriginalMessage": "This model's maximum context length is 8192"},
    )
    error = _raises(lambda: SageMakerBackend(pool).invoke(SM_TARGET, REQUEST, 5.0))
    assert error.error_class is ErrorClass.CLIENT
    assert error.context_overflow


@pytest.mark.parametrize("raw", [b"<html>", b"", b'{"choices": "none"}', b'{"unexpected": ["shape"]}'])
def test_malformed_sagemaker_answer_is_unavailable(raw: bytes) -> None:
    pool = ClientPool(lambda service, region, config: _AnswerClient(raw))
    error = _raises(lambda: SageMakerBackend(pool).invoke(SM_TARGET, REQUEST, 5.0))
    assert (error.error_class, error.code) == (ErrorClass.UNAVAILABLE, "MalformedSageMakerResponse")


def test_backend_error_keeps_an_existing_backend_error() -> None:
    original = BackendError.of("ThrottlingException", 429)
    assert backend_error(original) is original


@pytest.mark.parametrize(
    ("original", "klass", "status"),
    [(400, ErrorClass.CLIENT, 400), (413, ErrorClass.CLIENT, 400), (429, ErrorClass.CAPACITY, 429)],
)
def test_a_container_refusing_the_request_is_not_an_unhealthy_endpoint(
    pool: StubbedPool, original: int, klass: ErrorClass, status: int
) -> None:
    """ModelError with the container's 4xx: the request was refused (or the container is full), the endpoint is
    fine; only a 5xx from the container counts against its breaker."""
    pool.stub("sagemaker-runtime", 5.0).add_client_error(
        "invoke_endpoint",
        "ModelError",
        f"Received client error ({original}) from primary",
        424,
        modeled_fields={"OriginalStatusCode": original, "OriginalMessage": f"bad request '{SECRET}'"},
    )
    error = _raises(lambda: SageMakerBackend(pool).invoke(SM_TARGET, REQUEST, 5.0))
    assert (error.error_class, error.http_status) == (klass, status)
    assert SECRET not in repr(error) + str(error)


def test_context_overflow_answers_400_not_the_gateway_424(pool: StubbedPool) -> None:
    pool.stub("sagemaker-runtime", 5.0).add_client_error(
        "invoke_endpoint",
        "ModelError",
        "Received client error (400) from primary",
        424,
        modeled_fields={"OriginalStatusCode": 400, "OriginalMessage": "This model's maximum context length is 8192"},
    )
    error = _raises(lambda: SageMakerBackend(pool).invoke(SM_TARGET, REQUEST, 5.0))
    assert (error.http_status, error.context_overflow) == (400, True)


def test_a_request_the_container_api_cannot_express_is_a_client_error() -> None:
    """It passed the router's validation (a tool's inputSchema that is not an object), but the chat translation
    cannot carry it: the caller's request, not the endpoint's health."""
    request = {
        "messages": [{"role": "user", "content": [{"text": "hi"}]}],
        "toolConfig": {"tools": [{"toolSpec": {"name": "x", "inputSchema": "bad"}}]},
    }
    error = _raises(lambda: SageMakerBackend(ClientPool(lambda *a: None)).invoke(SM_TARGET, request, 5.0))
    assert (error.error_class, error.code, error.http_status) == (ErrorClass.CLIENT, "InvalidRequestForTarget", 400)


@pytest.mark.parametrize("name", ["NoCredentialsError", "CredentialRetrievalError", "PartialCredentialsError"])
def test_missing_credentials_are_ours_not_the_targets(name: str) -> None:
    error = backend_error(type(name, (Exception,), {})())
    assert error.error_class is ErrorClass.OURS


def test_the_handler_builds_its_clients_knowing_its_own_region() -> None:
    import handler  # noqa: PLC0415 (the composition root, only here)
    from spillway.settings import Settings  # noqa: PLC0415

    built = handler.backends(Settings(region="eu-west-1"))
    assert built["bedrock"].pool.home_region == "eu-west-1"  # type: ignore[attr-defined]
