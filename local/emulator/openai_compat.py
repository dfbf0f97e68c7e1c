"""The OpenAI-compatible Chat Completions wire: a target's path, its error bodies and headers.

A target of kind ``openai`` is served at ``<region endpoint>/openai/<target id>/v1/chat/completions``, so its base URL
(what a routing table's ``base_url`` names) is ``<region endpoint>/openai/<target id>/v1``. Requests and answers are
chat completions JSON (the messages API the SageMaker containers speak too, see wire.sagemaker_prompt/_reply);
capacity, latency and faults are the emulator's, as for every kind. Errors are in OpenAI's shape
(``{"error": {"message", "type", "param", "code"}}``); a 429 carries Retry-After and the x-ratelimit-* headers
that OpenAI-compatible servers send. Fault names are Bedrock's codes (or the shared aliases), each at the status an
OpenAI-compatible server gives that condition.
"""

from __future__ import annotations

from urllib.parse import quote, unquote

__all__ = ["OPENAI_ERRORS", "base_path", "error_body", "headers_for", "target_of", "unauthorized_body"]

PREFIX = "openai"
# Bedrock's error codes (the emulator's fault vocabulary for this kind) -> (HTTP status, OpenAI error type).
OPENAI_ERRORS: dict[str, tuple[int, str]] = {
    "ThrottlingException": (429, "rate_limit_exceeded"),
    "ModelNotReadyException": (503, "server_error"),
    "ServiceUnavailableException": (503, "server_error"),
    "InternalServerException": (500, "server_error"),
    "ModelErrorException": (500, "server_error"),
    "ModelTimeoutException": (504, "timeout"),
    "AccessDeniedException": (403, "permission_error"),
    "ResourceNotFoundException": (404, "not_found_error"),
    "ValidationException": (400, "invalid_request_error"),
    "ConflictException": (409, "invalid_request_error"),
    "ServiceQuotaExceededException": (429, "insufficient_quota"),
}
RETRY_AFTER_S = 1


def base_path(target_id: str) -> str:
    return f"/{PREFIX}/{quote(target_id, safe='')}/v1"  # a model name may hold "/" (google/gemini-2.5-flash)


def target_of(parts: list[str]) -> str | None:
    """The target id of a chat completions path split on "/", else None."""
    if len(parts) == 6 and parts[0] == "" and parts[1] == PREFIX and parts[3:] == ["v1", "chat", "completions"]:
        return unquote(parts[2])
    return None


def status_of(code: str) -> int:
    return OPENAI_ERRORS.get(code, (500, ""))[0]


def error_body(code: str, message: str) -> dict[str, object]:
    kind = OPENAI_ERRORS.get(code, (500, "server_error"))[1]
    return {"error": {"message": message, "type": kind, "param": None, "code": kind}}


def unauthorized_body() -> dict[str, object]:
    """What an OpenAI-compatible server answers (401) to a missing, wrong or expired key or token."""
    message = "Incorrect API key provided."
    return {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}}


def headers_for(status: int) -> dict[str, str]:
    if status != 429:
        return {}
    reset = f"{RETRY_AFTER_S}s"
    return {"retry-after": str(RETRY_AFTER_S), "x-ratelimit-reset-requests": reset, "x-ratelimit-reset-tokens": reset}
