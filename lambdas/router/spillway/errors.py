"""The error taxonomy of DESIGN.md: botocore error codes and HTTP statuses to router classes.

`classify` is pure (strings and ints in, a class out) so the backends, the tests and the emulator can share it
without importing botocore. The code table covers every error shape of botocore's own service models for
bedrock-runtime (2023-09-30) and sagemaker-runtime (2017-05-13); tests/unit/test_errors.py walks those models so
a new shape in a botocore upgrade fails the build instead of falling through to a guess.

Zero knowledge: a BackendError carries a code, a class and a status, never the service's message (which may
echo the prompt).
"""

from __future__ import annotations

from enum import StrEnum


class ErrorClass(StrEnum):
    CAPACITY = "capacity"  # throttled or not ready: try the next target now; short cooldown; not a failure
    UNAVAILABLE = "unavailable"  # 5xx, timeouts, connection errors: next target; feeds the breaker
    SLOW = "slow"  # served, but over the latency or time-to-first-token limit: feeds the breaker
    CLIENT = "client"  # the request is bad: no retry, 4xx to the caller
    OURS = "ours"  # access denied / not found on a configured target: a deployment bug; next target
    EXHAUSTED = "exhausted"  # deadline spent or no target left (a router outcome, never a backend's)


_C, _U, _CL, _O = ErrorClass.CAPACITY, ErrorClass.UNAVAILABLE, ErrorClass.CLIENT, ErrorClass.OURS

# Codes as botocore reports them (`ClientError.response["Error"]["Code"]`, which is the shape name when the
# model gives no explicit code) and botocore exception class names for transport failures.
CODES: dict[str, ErrorClass] = {
    # bedrock-runtime 2023-09-30
    "ThrottlingException": _C,
    "ServiceQuotaExceededException": _C,
    "ModelNotReadyException": _C,  # also sagemaker-runtime: the model is scaling or loading
    "InternalServerException": _U,
    "ServiceUnavailableException": _U,
    "ModelTimeoutException": _U,
    "ModelErrorException": _U,  # 424: the model failed while processing; another target may not
    "ModelStreamErrorException": _U,  # an error inside a stream is a reason to fall back, not to give up
    "ValidationException": _CL,
    "ConflictException": _CL,
    "AccessDeniedException": _O,
    "ResourceNotFoundException": _O,
    # sagemaker-runtime 2017-05-13
    "InternalFailure": _U,
    "InternalDependencyException": _U,
    "InternalStreamFailure": _U,
    "ServiceUnavailable": _U,
    "ModelError": _U,
    "ModelStreamError": _U,
    "ValidationError": _CL,
    # generic AWS protocol errors seen on any service
    "Throttling": _C,
    "ThrottledException": _C,
    "TooManyRequestsException": _C,
    "RequestLimitExceeded": _C,
    "RequestThrottled": _C,
    "RequestThrottledException": _C,
    "ProvisionedThroughputExceededException": _C,
    "LimitExceededException": _C,
    "SlowDown": _C,
    "InternalError": _U,
    "InternalFailureException": _U,
    "RequestTimeout": _U,
    "RequestTimeoutException": _U,
    "AccessDenied": _O,
    "UnrecognizedClientException": _O,
    "InvalidSignatureException": _O,
    "InvalidClientTokenId": _O,
    "SignatureDoesNotMatch": _O,
    "MissingAuthenticationToken": _O,
    "ExpiredToken": _O,
    "ExpiredTokenException": _O,
    # botocore credential exceptions, by class name: a deployment problem (the role), not the target's health.
    "NoCredentialsError": _O,
    "PartialCredentialsError": _O,
    "CredentialRetrievalError": _O,
    "SerializationException": _CL,
    "InvalidParameterValue": _CL,
    "MalformedQueryString": _CL,
    # botocore client-side exceptions, by class name. ParamValidationError: botocore refused the request against
    # the service model before sending it (e.g. an empty audio block); every target would refuse it the same way.
    "ParamValidationError": _CL,
    # botocore transport exceptions, by class name
    "EndpointConnectionError": _U,
    "ConnectTimeoutError": _U,
    "ReadTimeoutError": _U,
    "ConnectionClosedError": _U,
    "ConnectionError": _U,
    "HTTPClientError": _U,
    "ProxyConnectionError": _U,
    "SSLError": _U,
    "ResponseStreamingError": _U,
    "IncompleteReadError": _U,
    "EventStreamError": _U,
}


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


def from_exception(exc: BaseException) -> BackendError:
    """Translate any exception a runtime client raised, by duck typing (no botocore import).

    A botocore ClientError has `.response` with Error.Code and ResponseMetadata; transport errors are known by
    their class name or a base class name. Only codes and statuses are kept, never messages.
    """
    if isinstance(exc, BackendError):
        return exc
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error") or {}
        meta = response.get("ResponseMetadata") or {}
        code = str(error.get("Code") or type(exc).__name__)
        status = meta.get("HTTPStatusCode")
        status = status if isinstance(status, int) else None
        headers = meta.get("HTTPHeaders") or {}
        return BackendError(classify(code, status), code, status, _retry_after(headers.get("retry-after")))
    for klass in type(exc).__mro__:
        known = CODES.get(klass.__name__)
        if known is not None:
            return BackendError(known, klass.__name__)
    # Anything else (socket errors, a bug in a backend): unavailable for this attempt, named by its type only.
    return BackendError(_U, type(exc).__name__)


def _retry_after(value: object) -> float | None:
    try:
        seconds = float(str(value))
    except ValueError:
        return None  # an HTTP date or garbage: the capacity cooldown applies instead
    return seconds if seconds >= 0 else None
