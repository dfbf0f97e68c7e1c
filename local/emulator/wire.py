"""The wire formats: error catalogs and bodies, read from botocore's service models.

Bedrock Runtime (bedrock-runtime 2023-09-30) and SageMaker Runtime (sagemaker-runtime 2017-05-13) are both
``rest-json``. botocore's RestJSONParser takes the error code from the ``x-amzn-ErrorType`` header (the part
before ``:``), else from a body ``code``/``Code``; the message from a body ``message``/``Message``. Modeled
error members (``ModelErrorException.originalStatusCode``, ``ModelError.OriginalStatusCode``...) are read from
the JSON body. The HTTP statuses below are the ``error.httpStatusCode`` of each shape in those models; a test
checks them against the installed botocore.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from local.emulator import openai_compat
from local.emulator.targets import Kind

__all__ = [
    "BEDROCK_ERRORS",
    "COMMON_ERRORS",
    "ERROR_ALIASES",
    "SAGEMAKER_ERRORS",
    "WireError",
    "bedrock_error",
    "converse_reply",
    "estimate_tokens",
    "malformed_body",
    "resolve_error",
    "sagemaker_error",
    "sagemaker_reply",
    "status_of",
]

# code -> HTTP status, from the service models (every error shape; the stream-only ones have no status there and
# get the status of their non-stream twin). A test checks them against the installed botocore.
BEDROCK_ERRORS: dict[str, int] = {
    "AccessDeniedException": 403,
    "ConflictException": 400,
    "InternalServerException": 500,
    "ModelErrorException": 424,
    "ModelNotReadyException": 429,
    "ModelStreamErrorException": 424,
    "ModelTimeoutException": 408,
    "ResourceNotFoundException": 404,
    "ServiceQuotaExceededException": 400,
    "ServiceUnavailableException": 503,
    "ThrottlingException": 429,
    "ValidationException": 400,
}
SAGEMAKER_ERRORS: dict[str, int] = {
    "InternalDependencyException": 530,
    "InternalFailure": 500,
    "InternalStreamFailure": 500,
    "ModelError": 424,
    "ModelNotReadyException": 429,
    "ModelStreamError": 424,
    "ServiceUnavailable": 503,
    "ValidationError": 400,
}
# An openai target's faults are named in Bedrock's vocabulary (local/emulator/openai_compat.py gives their statuses).
MODELED = {Kind.BEDROCK: BEDROCK_ERRORS, Kind.SAGEMAKER: SAGEMAKER_ERRORS, Kind.OPENAI: BEDROCK_ERRORS}
# AWS's common errors (the "Common Errors" page of the services' API references, with its statuses) and the
# protocol errors AWS's front ends answer JSON services with (authentication, throttling, timeouts). A service's
# own model wins where a code is in both (ThrottlingException is 429 on Bedrock, the common 400 on SageMaker).
COMMON_ERRORS: dict[str, int] = {
    "AccessDenied": 403,
    "AccessDeniedException": 400,
    "ExpiredToken": 403,
    "ExpiredTokenException": 403,
    "IncompleteSignature": 400,
    "InternalError": 500,
    "InternalFailureException": 500,
    "InvalidAction": 400,
    "InvalidClientTokenId": 403,
    "InvalidParameterCombination": 400,
    "InvalidParameterValue": 400,
    "InvalidQueryParameter": 400,
    "InvalidSignatureException": 403,
    "LimitExceededException": 400,
    "MalformedQueryString": 404,
    "MissingAction": 400,
    "MissingAuthenticationToken": 403,
    "MissingParameter": 400,
    "NotAuthorized": 400,
    "OptInRequired": 403,
    "ProvisionedThroughputExceededException": 400,
    "RequestExpired": 400,
    "RequestLimitExceeded": 503,
    "RequestThrottled": 400,
    "RequestThrottledException": 400,
    "RequestTimeout": 408,
    "RequestTimeoutException": 408,
    "SerializationException": 400,
    "ServiceUnavailable": 503,
    "SignatureDoesNotMatch": 403,
    "SlowDown": 503,
    "ThrottledException": 400,
    "Throttling": 400,
    "ThrottlingException": 400,
    "TooManyRequestsException": 429,
    "UnknownOperationException": 404,
    "UnrecognizedClientException": 403,
    "ValidationError": 400,
}
WRAPPING_CODES = frozenset({"ModelErrorException", "ModelStreamErrorException", "ModelError"})


def status_of(kind: Kind, code: str) -> int:
    """The HTTP status `code` answers with on a `kind` target: its service's model, else the common errors."""
    return MODELED[kind].get(code) or COMMON_ERRORS[code]


# alias -> (bedrock code, sagemaker code): one vocabulary for faults on either kind of target.
ERROR_ALIASES: dict[str, tuple[str, str]] = {
    "internal": ("InternalServerException", "InternalFailure"),
    "unavailable": ("ServiceUnavailableException", "ServiceUnavailable"),
    "model_error": ("ModelErrorException", "ModelError"),
    "timeout": ("ModelTimeoutException", "ModelError"),
    "not_ready": ("ModelNotReadyException", "ModelNotReadyException"),
    "access_denied": ("AccessDeniedException", "AccessDeniedException"),
    "validation": ("ValidationException", "ValidationError"),
    "not_found": ("ResourceNotFoundException", "ValidationError"),
    "quota": ("ServiceQuotaExceededException", "ThrottlingException"),
    "dependency": ("InternalServerException", "InternalDependencyException"),
    "throttling": ("ThrottlingException", "ThrottlingException"),
    "conflict": ("ConflictException", "ValidationError"),
    "bad_credentials": ("UnrecognizedClientException", "UnrecognizedClientException"),
    "expired_credentials": ("ExpiredTokenException", "ExpiredTokenException"),
    "stream_error": ("ModelStreamErrorException", "ModelStreamError"),
    "stream_failure": ("InternalServerException", "InternalStreamFailure"),
}
_CODE_TO_ALIAS: dict[str, str] = {}
for _alias, (_b, _s) in ERROR_ALIASES.items():
    _CODE_TO_ALIAS.setdefault(_b, _alias)
    _CODE_TO_ALIAS.setdefault(_s, _alias)

_NAMESPACE = {
    Kind.BEDROCK: "http://internal.amazon.com/coral/com.amazon.bedrock/",
    Kind.SAGEMAKER: "http://internal.amazon.com/coral/com.amazon.sagemaker.runtime/",
}
_COMMON_NAMESPACE = "http://internal.amazon.com/coral/com.amazon.coral.service/"


def validate_error_name(name: str) -> None:
    """Raise ValueError unless ``name`` is an alias or an error code of either service or AWS's common ones."""
    if name not in ERROR_ALIASES and name not in _CODE_TO_ALIAS and name not in COMMON_ERRORS:
        known = sorted(set(ERROR_ALIASES) | set(BEDROCK_ERRORS) | set(SAGEMAKER_ERRORS) | set(COMMON_ERRORS))
        raise ValueError(f"unknown error {name!r}; one of: {', '.join(known)}")


def resolve_error(name: str | None, kind: Kind) -> str:
    """The error code a ``Fault.error`` name means on a ``kind`` target."""
    name = name or "internal"
    if name in MODELED[kind] or name in COMMON_ERRORS:
        return name
    validate_error_name(name)
    alias = name if name in ERROR_ALIASES else _CODE_TO_ALIAS[name]
    bedrock, sagemaker = ERROR_ALIASES[alias]
    return sagemaker if kind is Kind.SAGEMAKER else bedrock


@dataclass(frozen=True)
class WireError:
    status: int
    code: str
    body: dict[str, Any]

    def headers(self, kind: Kind) -> dict[str, str]:
        if kind is Kind.OPENAI:
            return openai_compat.headers_for(self.status)
        namespace = _NAMESPACE[kind] if self.code in MODELED[kind] else _COMMON_NAMESPACE
        return {"x-amzn-ErrorType": f"{self.code}:{namespace}"}


_DEFAULT_MESSAGES = {
    "ThrottlingException": "Too many requests, please wait before trying again.",
    "InternalServerException": "The system encountered an unexpected error during processing. Try your request again.",
    "InternalFailure": "An internal failure occurred.",
    "ServiceUnavailableException": "The service isn't currently available. Try again later.",
    "ServiceUnavailable": "The service is unavailable. Try your call again.",
    "ModelTimeoutException": "Model has timed out in processing the request. Try your request again.",
    "ModelNotReadyException": "The model is not ready to serve inference requests. Try again later.",
    "AccessDeniedException": "You don't have access to the model with the specified model ID.",
    "ValidationException": "The provided request is not valid.",
    "ValidationError": "The provided request is not valid.",
    "ResourceNotFoundException": "The requested resource could not be found.",
    "ServiceQuotaExceededException": "Your request exceeds the service quota for your account.",
    "InternalDependencyException": "Your request caused an exception with an internal dependency.",
    "ConflictException": "The request conflicts with the current state of the resource.",
    "UnrecognizedClientException": "The security token included in the request is invalid.",
    "ExpiredTokenException": "The security token included in the request is expired",
    "ExpiredToken": "The security token included in the request is expired",
    "InvalidSignatureException": (
        "The request signature we calculated does not match the signature you provided. Check your AWS Secret "
        "Access Key and signing method."
    ),
    "IncompleteSignature": "The request signature does not conform to AWS standards.",
    "RequestExpired": "Signature expired: the request reached AWS more than 15 minutes after its date stamp.",
    "NotAuthorized": "You do not have permission to perform this action.",
    "TooManyRequestsException": "Rate exceeded",
    "RequestTimeout": "Your socket connection to the server was not read from or written to within the timeout.",
    "UnknownOperationException": "Unknown operation",
}


def bedrock_error(
    code: str, message: str | None = None, resource: str = "", *, original_status: int | None = None
) -> WireError:
    status = status_of(Kind.BEDROCK, code)
    msg = message or _DEFAULT_MESSAGES.get(code, "The model returned an error.")
    body: dict[str, Any] = {"message": msg}
    if code not in BEDROCK_ERRORS:
        body["__type"] = code  # AWS's front end names the error in the body too
    if code == "ModelErrorException":
        body.update(originalStatusCode=original_status or 500, resourceName=resource or "model")
    if code == "ModelStreamErrorException":
        body.update(originalStatusCode=original_status or 500, originalMessage="model failure")
    return WireError(status, code, body)


def sagemaker_error(
    code: str, message: str | None = None, endpoint: str = "", region: str = "", *, original_status: int | None = None
) -> WireError:
    status = status_of(Kind.SAGEMAKER, code)
    if code == "ModelError":
        original = original_status or 500
        side = "client" if 400 <= original < 500 else "server"
        msg = message or f'Received {side} error ({original}) from primary with message "model failure".'
        body: dict[str, Any] = {
            "ErrorCode": f"{side.upper()}_ERROR_FROM_MODEL",
            "Message": msg,
            "OriginalStatusCode": original,
            "OriginalMessage": "model failure",
            "LogStreamArn": (f"arn:aws:logs:{region}:111122223333:log-group:/aws/sagemaker/Endpoints/{endpoint}"),
        }
        return WireError(status, code, body)
    body = {"Message": message or _DEFAULT_MESSAGES.get(code, code)}
    if code == "ModelStreamError":
        body["ErrorCode"] = "ModelStreamError"
    if code not in SAGEMAKER_ERRORS:
        body["__type"] = code
    return WireError(status, code, body)


def openai_error(code: str, message: str | None = None) -> WireError:
    msg = message or _DEFAULT_MESSAGES.get(code, "The model returned an error.")
    return WireError(openai_compat.status_of(code), code, openai_compat.error_body(code, msg))


def error_for(
    kind: Kind, code: str, message: str | None, target_id: str, region: str, *, original_status: int | None = None
) -> WireError:
    if kind is Kind.OPENAI:
        return openai_error(code, message)
    if kind is Kind.BEDROCK:
        return bedrock_error(code, message, target_id, original_status=original_status)
    return sagemaker_error(code, message, target_id, region, original_status=original_status)


def timeout_error(kind: Kind, target_id: str, region: str) -> WireError:
    """What the service says after a request hung (if the client is still listening)."""
    if kind is Kind.OPENAI:
        return openai_error("ModelTimeoutException")
    if kind is Kind.BEDROCK:
        return bedrock_error("ModelTimeoutException")
    err = sagemaker_error("ModelError", endpoint=target_id, region=region)
    body = dict(err.body)
    body.update(
        ErrorCode="MODEL_INVOCATION_TIMEOUT",
        OriginalStatusCode=408,
        OriginalMessage="timeout",
        Message="Your invocation timed out while waiting for a response from container primary.",
    )
    return WireError(err.status, err.code, body)


# Token estimates and replies ------------------------------------------------------------------


def estimate_tokens(text: str) -> int:
    """A rough token count (about four characters a token), at least 1 for non-empty text."""
    return max(1, math.ceil(len(text) / 4)) if text else 0


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts: list[str] = []
    if isinstance(content, list):
        for block in content:
            if isinstance(block, Mapping):
                text = block.get("text")
                if isinstance(text, str):
                    parts.append(text)
            elif isinstance(block, str):
                parts.append(block)
    return "\n".join(parts)


@dataclass(frozen=True)
class Prompt:
    """What the emulator needs from a request: its size, its last user text, its token cap."""

    input_text: str
    last_user_text: str
    max_tokens: int | None
    service_tier: str = "default"  # Converse: the tier asked for, which the answer says served


def converse_prompt(body: Mapping[str, Any]) -> Prompt:
    """Read a Converse request body; raise ValueError with a ValidationException-style message."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("The model requires at least one message in the messages field.")
    texts: list[str] = []
    last_user = ""
    for message in messages:
        if not isinstance(message, Mapping) or message.get("role") not in ("user", "assistant", "system"):
            raise ValueError("Each message needs a role of user, assistant or system and a content list.")
        text = _text_of(message.get("content"))
        texts.append(text)
        if message.get("role") == "user":
            last_user = text
    for block in body.get("system") or []:
        if isinstance(block, Mapping) and isinstance(block.get("text"), str):
            texts.append(block["text"])
    config = body.get("inferenceConfig") or {}
    max_tokens = config.get("maxTokens") if isinstance(config, Mapping) else None
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise ValueError("inferenceConfig.maxTokens must be a positive integer.")
    tier = body.get("serviceTier")
    tier_type = tier.get("type") if isinstance(tier, Mapping) else None
    if tier_type is not None and tier_type not in ("priority", "default", "flex", "reserved"):
        raise ValueError("serviceTier.type must be one of priority, default, flex, reserved.")
    return Prompt("\n".join(texts), last_user, max_tokens, tier_type or "default")


def sagemaker_prompt(body: Any) -> tuple[Prompt, str]:
    """Read a serving container payload: the messages API (chat completions) or TGI ``inputs``.

    Returns the prompt and the style ("messages" or "inputs"). Raises ValueError when the payload is
    neither (the container would answer 4xx, which SageMaker wraps as ModelError).
    """
    if isinstance(body, Mapping) and isinstance(body.get("messages"), list) and body["messages"]:
        texts: list[str] = []
        last_user = ""
        for message in body["messages"]:
            if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
                raise ValueError("each message needs a role and content")
            text = _text_of(message.get("content"))
            texts.append(text)
            if message["role"] == "user":
                last_user = text
        max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            raise ValueError("max_tokens must be a positive integer")
        return Prompt("\n".join(texts), last_user, max_tokens), "messages"
    if isinstance(body, Mapping) and isinstance(body.get("inputs"), str):
        params = body.get("parameters") or {}
        max_new = params.get("max_new_tokens") if isinstance(params, Mapping) else None
        if max_new is not None and (not isinstance(max_new, int) or max_new < 1):
            raise ValueError("max_new_tokens must be a positive integer")
        return Prompt(body["inputs"], body["inputs"], max_new), "inputs"
    raise ValueError("expected a JSON object with 'messages' (chat completions) or 'inputs'")


_WORDS = ("synthetic", "reply", "from", "the", "spillway", "emulator")


def reply_text(prompt: Prompt, output_tokens: int, echo: bool) -> str:
    if echo:
        return prompt.last_user_text
    return " ".join(_WORDS[i % len(_WORDS)] for i in range(max(1, output_tokens)))


def output_tokens_for(prompt: Prompt, configured: int) -> tuple[int, bool]:
    """Tokens the reply has, and whether the request's cap cut it short."""
    if prompt.max_tokens is not None and prompt.max_tokens < configured:
        return prompt.max_tokens, True
    return configured, False


def converse_reply(prompt: Prompt, output_tokens: int, capped: bool, echo: bool, latency_ms: int) -> dict[str, Any]:
    input_tokens = estimate_tokens(prompt.input_text)
    return {
        "output": {
            "message": {
                "role": "assistant",
                "content": [{"text": reply_text(prompt, output_tokens, echo)}],
            }
        },
        "stopReason": "max_tokens" if capped else "end_turn",
        "usage": {
            "inputTokens": input_tokens,
            "outputTokens": output_tokens,
            "totalTokens": input_tokens + output_tokens,
        },
        "metrics": {"latencyMs": latency_ms},
        "serviceTier": {"type": prompt.service_tier},
    }


def sagemaker_reply(prompt: Prompt, style: str, endpoint: str, output_tokens: int, *, capped: bool, echo: bool) -> Any:
    text = reply_text(prompt, output_tokens, echo)
    if style == "inputs":
        return [{"generated_text": text}]
    input_tokens = estimate_tokens(prompt.input_text)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": endpoint,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "length" if capped else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": input_tokens,
            "completion_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
        },
    }


def malformed_body(variant: str, good: Any) -> tuple[bytes, str]:
    """A broken 200 body and its content type, derived from the good reply ``good``."""
    encoded = json.dumps(good).encode()
    if variant == "truncated":
        return encoded[: max(1, len(encoded) // 2)], "application/json"
    if variant == "not_json":
        return b"<html><body>upstream sent garbage</body></html>", "text/html"
    if variant == "empty":
        return b"", "application/json"
    if variant == "wrong_shape":
        return b'{"unexpected": ["shape"]}', "application/json"
    if variant == "bad_types":
        if isinstance(good, Mapping) and "output" in good:
            bad = dict(good)
            bad["usage"] = {"inputTokens": "many", "outputTokens": "lots", "totalTokens": None}
            bad["output"] = {"message": {"role": "assistant", "content": "not-a-list"}}
            return json.dumps(bad).encode(), "application/json"
        return b'{"choices": "none", "usage": {"prompt_tokens": "many"}}', "application/json"
    raise ValueError(f"unknown malformed variant {variant!r}")


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
