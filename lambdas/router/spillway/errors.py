"""The error taxonomy of DESIGN.md: botocore error codes and HTTP statuses to router classes.

`classify` is pure (strings and ints in, a class out) so the backends, the tests and the emulator can share it
without importing botocore. The code table covers every error shape of botocore's own service models for
bedrock-runtime (2023-09-30) and sagemaker-runtime (2017-05-13); tests/unit/test_errors.py walks those models so
a new shape in a botocore upgrade fails the build instead of falling through to a guess.

Zero knowledge: a BackendError carries a code, a class and a status, never the service's message (which may
echo the prompt).
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any


class ErrorClass(StrEnum):
    CAPACITY = "capacity"  # throttled or not ready: try the next target now; short cooldown; not a failure
    UNAVAILABLE = "unavailable"  # 5xx, timeouts, connection errors: next target; feeds the breaker
    SLOW = "slow"  # served, but over the latency or time-to-first-token limit: feeds the breaker
    CLIENT = "client"  # the request is bad: no retry, 4xx to the caller
    OURS = "ours"  # access denied / not found on a configured target: a deployment bug; next target
    EXHAUSTED = "exhausted"  # deadline spent or no target left (a router outcome, never a backend's)


_C, _U, _CL, _O = ErrorClass.CAPACITY, ErrorClass.UNAVAILABLE, ErrorClass.CLIENT, ErrorClass.OURS

# Every code the router may meet, by where it comes from, with its class and why. Codes are as botocore reports
# them (`ClientError.response["Error"]["Code"]`: the shape name unless the model gives a code) or, for failures
# raised inside botocore, its exception class name. docs/design-notes.md renders this table (tools/error_table.py);
# tests/unit/test_errors.py checks the service groups against the installed botocore's models.
BEDROCK_RUNTIME: dict[str, tuple[ErrorClass, str]] = {
    "AccessDeniedException": (_O, "the router's role may not invoke this model: a deployment fault; alarm"),
    "ConflictException": (_CL, "the request conflicts with a resource's state; another target would agree"),
    "InternalServerException": (_U, "a service fault: another target may serve"),
    "ModelErrorException": (
        _U,
        "the model failed: by its originalStatusCode, a wrapped 4xx is the caller's (429: capacity), a wrapped "
        "408 or 5xx unavailable",
    ),
    "ModelNotReadyException": (_C, "the model is loading or scaling: try the next target now, not a failure"),
    "ModelStreamErrorException": (_U, "an error inside a stream, by originalStatusCode like ModelErrorException"),
    "ModelTimeoutException": (_U, "the model took too long: another target may not"),
    "ResourceNotFoundException": (_O, "a configured model, profile or PT does not exist: a deployment fault"),
    "ServiceQuotaExceededException": (_C, "over the account's quota (modelled as 400): capacity, not the caller"),
    "ServiceUnavailableException": (_U, "the service is unavailable: another target may serve"),
    "ThrottlingException": (_C, "throttled: spill to the next target now"),
    "ValidationException": (
        _CL,
        "the request is invalid; ours when the message says the model id is (invalid id, needs an inference "
        "profile, no on-demand throughput, end of life)",
    ),
}
SAGEMAKER_RUNTIME: dict[str, tuple[ErrorClass, str]] = {
    "InternalDependencyException": (_U, "a dependency of the service failed (530)"),
    "InternalFailure": (_U, "a service fault"),
    "InternalStreamFailure": (_U, "a service fault inside a stream"),
    "ModelError": (
        _U,
        "the container failed: by its OriginalStatusCode, a wrapped 4xx is the caller's (429: capacity), a "
        "wrapped 408 (the model timed out) or 5xx unavailable",
    ),
    "ModelNotReadyException": (_C, "the model is loading or scaling: try the next target now, not a failure"),
    "ModelStreamError": (_U, "the container failed inside a stream"),
    "ServiceUnavailable": (_U, "the service is unavailable"),
    "ValidationError": (
        _CL,
        "the request is invalid; ours when the message says the endpoint does not exist ('Endpoint ... not found')",
    ),
}
# AWS's common errors (the "Common Errors" page of each service's API reference) and the protocol-level errors
# JSON services answer with (authentication, throttling, timeouts).
COMMON: dict[str, tuple[ErrorClass, str]] = {
    "AccessDenied": (_O, "the router's role lacks a permission: a deployment fault"),
    "AccessDeniedException": (_O, "the router's role lacks a permission: a deployment fault"),
    "ExpiredToken": (_O, "the router's credentials expired: a deployment fault"),
    "ExpiredTokenException": (_O, "the router's credentials expired: a deployment fault"),
    "IncompleteSignature": (_O, "the router's request signature is incomplete: a deployment fault"),
    "InternalError": (_U, "a service fault"),
    "InternalFailureException": (_U, "a service fault"),
    "InvalidAction": (_O, "the endpoint has no such operation: the router's endpoint or SDK is wrong"),
    "InvalidClientTokenId": (_O, "the router's access key is unknown: a deployment fault"),
    "InvalidParameterCombination": (_CL, "the request's parameters do not go together"),
    "InvalidParameterValue": (_CL, "a parameter of the request is invalid"),
    "InvalidQueryParameter": (_CL, "a parameter of the request is invalid"),
    "InvalidSignatureException": (_O, "the router's signature is wrong: a deployment fault"),
    "LimitExceededException": (_C, "a limit was reached: capacity"),
    "MalformedQueryString": (_O, "the router sends no query string: its endpoint or SDK is wrong"),
    "MissingAction": (_O, "the endpoint got no operation: the router's endpoint or SDK is wrong"),
    "MissingAuthenticationToken": (_O, "the request was not signed: a deployment fault"),
    "MissingParameter": (_CL, "the request lacks a required parameter"),
    "NotAuthorized": (_O, "the router's role is not authorized: a deployment fault"),
    "OptInRequired": (_O, "the account is not subscribed to the service: a deployment fault"),
    "ProvisionedThroughputExceededException": (_C, "throttled: capacity"),
    "RequestExpired": (_O, "the router's request is past its signature's time (clock skew): a deployment fault"),
    "RequestLimitExceeded": (_C, "throttled: capacity"),
    "RequestThrottled": (_C, "throttled: capacity"),
    "RequestThrottledException": (_C, "throttled: capacity"),
    "RequestTimeout": (_U, "the service timed out reading or answering"),
    "RequestTimeoutException": (_U, "the service timed out reading or answering"),
    "SerializationException": (_CL, "the request body could not be read"),
    "ServiceUnavailable": (_U, "the service is unavailable"),
    "SignatureDoesNotMatch": (_O, "the router's signature is wrong: a deployment fault"),
    "SlowDown": (_C, "throttled: capacity"),
    "ThrottledException": (_C, "throttled: capacity"),
    "Throttling": (_C, "throttled: capacity"),
    "ThrottlingException": (_C, "throttled: capacity (AWS's common errors give it HTTP 400)"),
    "TooManyRequestsException": (_C, "throttled: capacity"),
    "UnknownOperationException": (_O, "the endpoint has no such operation: the router's endpoint or SDK is wrong"),
    "UnrecognizedClientException": (_O, "the router's credentials are not recognised: a deployment fault"),
    "ValidationError": (_CL, "the request is invalid"),
}
# Failures raised inside botocore before or instead of an answer, by exception class name.
BOTOCORE: dict[str, tuple[ErrorClass, str]] = {
    "NoCredentialsError": (_O, "the router has no credentials: its role, not the target's health"),
    "PartialCredentialsError": (_O, "the router's credentials are incomplete"),
    "CredentialRetrievalError": (_O, "the router's credentials could not be fetched"),
    "ParamValidationError": (_CL, "botocore refused the request against the service model: every target would"),
    "EndpointConnectionError": (_U, "no connection to the endpoint"),
    "ConnectTimeoutError": (_U, "no connection in time"),
    "ReadTimeoutError": (_U, "no answer in the attempt's time"),
    "ConnectionClosedError": (_U, "the connection dropped"),
    "ConnectionError": (_U, "the connection failed"),
    "HTTPClientError": (_U, "the HTTP exchange failed"),
    "ProxyConnectionError": (_U, "the proxy failed"),
    "SSLError": (_U, "TLS failed"),
    "ResponseStreamingError": (_U, "the answer's stream broke"),
    "IncompleteReadError": (_U, "the answer was cut short"),
    "EventStreamError": (_U, "an error inside an event stream"),
}
GROUPS: dict[str, dict[str, tuple[ErrorClass, str]]] = {
    "bedrock-runtime": BEDROCK_RUNTIME,
    "sagemaker-runtime": SAGEMAKER_RUNTIME,
    "common": COMMON,
    "botocore": BOTOCORE,
}
CODES: dict[str, ErrorClass] = {
    code: rule[0] for group in reversed(GROUPS.values()) for code, rule in group.items()
}  # a service's own model wins where a code is in two groups (they agree; a test checks)

# Messages that turn a request error into a deployment fault, in the services' documented forms. The message is
# read for this match only and never kept.
DEPLOYMENT_FAULT_MESSAGES: dict[str, re.Pattern[str]] = {
    "ValidationException": re.compile(
        r"model identifier is invalid|with on-demand throughput isn.t supported|"
        r"doesn.t support on-demand throughput|inference profile that contains this model|"
        r"reached the end of its life",
        re.IGNORECASE,
    ),
    "ValidationError": re.compile(r"\b(endpoint|inference component) \S.* not found", re.IGNORECASE),
}
# Codes that wrap the model's own status (originalStatusCode on Bedrock, OriginalStatusCode on SageMaker).
WRAPPING = frozenset({"ModelErrorException", "ModelStreamErrorException", "ModelError"})


def classify(code: str | None, http_status: int | None = None) -> ErrorClass:
    """The class of one backend error. Pure: the code decides when known, else the HTTP status.

    Unknown shapes default to unavailable: trying the next target is the safe reaction to a surprise.
    """
    if code:
        known = CODES.get(code)
        if known is None and "Throttl" in code:
            known = _C
        if known is not None:
            return known
    return _by_status(http_status)


def _by_status(status: int | None) -> ErrorClass:
    if status is None or status == 408 or status >= 500:
        return _U
    if status == 429:
        return _C
    if status in (401, 403, 404):
        return _O
    return _CL if 400 <= status < 500 else _U


# Client errors the router finds itself in a request that passed api.py (their messages live in api.MESSAGES).
INVALID_BASE64 = "InvalidBase64"


def classify_error(
    code: str | None, http_status: int | None = None, *, message: str = "", original_status: int | None = None
) -> ErrorClass:
    """`classify`, refined by what the answer says: the wrapped status of a model error, and a validation error
    whose message is a documented deployment-fault form. Pure; `message` is matched, never kept."""
    if code in WRAPPING and original_status is not None:
        return wrapped(original_status)
    pattern = DEPLOYMENT_FAULT_MESSAGES.get(code or "")
    if pattern is not None and pattern.search(message):
        return _O
    return classify(code, http_status)


def wrapped(original_status: int) -> ErrorClass:
    """The class of a status a model answered with, as a runtime wrapped it: 429 is capacity, 408 (the model timed
    out) and 5xx are unavailable, other 4xx are the caller's request."""
    if original_status == 429:
        return _C
    if 400 <= original_status < 500 and original_status != 408:
        return _CL
    return _U


class BackendError(Exception):
    """A failed attempt, as a backend reports it to the engine. Carries no service message by design."""

    __slots__ = ("code", "context_overflow", "error_class", "http_status", "retry_after_s")

    def __init__(
        self,
        error_class: ErrorClass,
        code: str,
        http_status: int | None = None,
        retry_after_s: float | None = None,
        *,
        context_overflow: bool = False,
    ) -> None:
        super().__init__(code)
        self.error_class = error_class
        self.code = code
        self.http_status = http_status
        self.retry_after_s = retry_after_s
        # The input exceeds this model's context window: the engine may fall back to the next model.
        self.context_overflow = context_overflow

    @classmethod
    def of(cls, code: str, http_status: int | None = None, retry_after_s: float | None = None) -> BackendError:
        return cls(classify(code, http_status), code, http_status, retry_after_s)

    def __str__(self) -> str:
        return f"{self.code} ({self.error_class}, http {self.http_status})"

    def __repr__(self) -> str:
        return (
            f"BackendError({self.error_class.value!r}, {self.code!r}, {self.http_status!r}, "
            f"retry_after_s={self.retry_after_s!r})"
        )


# Codes of an attempt that never connected (refused, timed out or unresolvable: botocore's, and the OpenAI-compatible
# backend's): its endpoint is unreachable, so every target behind the same endpoint would wait out the same connect.
NO_CONNECTION: frozenset[str] = frozenset(
    {"EndpointConnectionError", "ConnectTimeoutError", "ConnectTimeout", "ConnectionRefusedError", "gaierror"}
)


def from_exception(exc: BaseException) -> BackendError:
    """Translate any exception a runtime client raised, by duck typing (no botocore import).

    A botocore ClientError has `.response` with Error.Code and ResponseMetadata, and a modelled error's members at
    its top level (OriginalStatusCode, originalStatusCode, OriginalMessage); transport errors are known by their
    class name or a base class name. Only codes, classes and statuses are kept: the service's message is read to
    classify (a deployment-fault form, a context-window overflow) and dropped.
    """
    if isinstance(exc, BackendError):
        return exc
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return _from_response(response, type(exc).__name__)
    for klass in type(exc).__mro__:
        known = CODES.get(klass.__name__)
        if known is not None:
            return BackendError(known, klass.__name__)
    # Anything else (socket errors, a bug in a backend): unavailable for this attempt, named by its type only.
    return BackendError(_U, type(exc).__name__)


def _from_response(response: dict[str, Any], exc_name: str) -> BackendError:
    error = response.get("Error") or {}
    meta = response.get("ResponseMetadata") or {}
    code = str(error.get("Code") or exc_name)
    status = meta.get("HTTPStatusCode")
    status = status if isinstance(status, int) else None
    retry_after = _retry_after((meta.get("HTTPHeaders") or {}).get("retry-after"))
    original = response.get("OriginalStatusCode", response.get("originalStatusCode"))
    original = original if isinstance(original, int) and not isinstance(original, bool) else None
    message = str(error.get("Message") or "")
    error_class = classify_error(code, status, message=message, original_status=original)
    if code in WRAPPING and original is not None and error_class in (_C, _CL):
        status = 429 if error_class is _C else 400  # the model's own answer; the runtime's 424 is not the caller's
    if error_class is _CL or code in WRAPPING:
        original_message = response.get("OriginalMessage", response.get("originalMessage"))
        text = f"{message} {original_message}" if isinstance(original_message, str) else message
        if _OVERFLOW.search(text):  # the caller's input is over this model's context window: a larger one may do
            return BackendError(_CL, code, 400, retry_after, context_overflow=True)
    return BackendError(error_class, code, status, retry_after)


# A message saying the input is over the model's context window. Only this boolean survives.
_OVERFLOW = re.compile(
    r"too many (input )?tokens|input is too long|prompt is too long|too long for|context (length|window)|"
    r"maximum context|exceeds? the (maximum|max)[^.]{0,40}(tokens|length)|max_model_len|input length",
    re.IGNORECASE,
)


def _retry_after(value: object) -> float | None:
    try:
        seconds = float(str(value))
    except ValueError:
        return None  # an HTTP date or garbage: the capacity cooldown applies instead
    return seconds if seconds >= 0 else None
