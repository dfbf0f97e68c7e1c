"""The error taxonomy, checked against botocore's own service models (read from the installed botocore)."""

from __future__ import annotations

import botocore.exceptions  # type: ignore[import-untyped]
import botocore.session  # type: ignore[import-untyped]
import pytest

from spillway.errors import CODES, BackendError, ErrorClass, classify, from_exception

C, U, CL, OURS = ErrorClass.CAPACITY, ErrorClass.UNAVAILABLE, ErrorClass.CLIENT, ErrorClass.OURS

# The class each modelled error shape must get, decided from DESIGN.md's table, shape by shape.
EXPECTED = {
    "bedrock-runtime": {
        "AccessDeniedException": OURS,
        "ConflictException": CL,
        "InternalServerException": U,
        "ModelErrorException": U,
        "ModelNotReadyException": C,
        "ModelStreamErrorException": U,
        "ModelTimeoutException": U,
        "ResourceNotFoundException": OURS,
        "ServiceQuotaExceededException": C,
        "ServiceUnavailableException": U,
        "ThrottlingException": C,
        "ValidationException": CL,
    },
    "sagemaker-runtime": {
        "InternalDependencyException": U,
        "InternalFailure": U,
        "InternalStreamFailure": U,
        "ModelError": U,
        "ModelNotReadyException": C,
        "ModelStreamError": U,
        "ServiceUnavailable": U,
        "ValidationError": CL,
    },
}


def _error_shapes(service: str) -> dict[str, int | None]:
    """Every exception shape of the service model: name (or its explicit code) -> modelled HTTP status."""
    model = botocore.session.get_session().get_service_model(service)
    shapes: dict[str, int | None] = {}
    for name in model.shape_names:
        shape = model.shape_for(name)
        if shape.metadata.get("exception"):
            error = shape.metadata.get("error", {})
            shapes[error.get("code", name)] = error.get("httpStatusCode")
    # Errors that operations declare, including event-stream members, are all among the shapes.
    for op in model.operation_names:
        for shape in model.operation_model(op).error_shapes:
            assert shape.name in shapes or shape.metadata.get("error", {}).get("code") in shapes
    return shapes


@pytest.mark.parametrize("service", sorted(EXPECTED))
def test_every_modelled_error_shape_is_classified_explicitly(service: str) -> None:
    shapes = _error_shapes(service)
    assert shapes, f"botocore has no error shapes for {service}?"
    # A new shape in a botocore upgrade must be decided by a person, not fall through to a status guess.
    assert set(shapes) == set(EXPECTED[service]), "botocore's error shapes changed: update CODES and EXPECTED"
    for code, status in shapes.items():
        assert code in CODES
        assert classify(code, status) is EXPECTED[service][code], code
        assert classify(code, None) is EXPECTED[service][code], code


def test_throttles_are_capacity_not_failures_even_with_400() -> None:
    # ServiceQuotaExceeded is modelled as 400: the code must win over the status.
    assert classify("ServiceQuotaExceededException", 400) is C
    assert classify("SomeNewThrottlingException", 400) is C


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (429, C),
        (500, U),
        (502, U),
        (503, U),
        (504, U),
        (530, U),
        (408, U),
        (401, OURS),
        (403, OURS),
        (404, OURS),
        (400, CL),
        (413, CL),
        (422, CL),
        (None, U),
        (302, U),
    ],
)
def test_unknown_codes_fall_back_to_the_status(status: int | None, expected: ErrorClass) -> None:
    assert classify("NeverSeenBefore", status) is expected
    assert classify(None, status) is expected
    assert classify("", status) is expected


@pytest.mark.parametrize(
    "exc",
    [
        botocore.exceptions.EndpointConnectionError(endpoint_url="https://bedrock-runtime.us-east-1.amazonaws.com"),
        botocore.exceptions.ReadTimeoutError(endpoint_url="https://x"),
        botocore.exceptions.ConnectTimeoutError(endpoint_url="https://x"),
        botocore.exceptions.ConnectionClosedError(endpoint_url="https://x"),
    ],
)
def test_transport_errors_are_unavailable(exc: Exception) -> None:
    error = from_exception(exc)
    assert error.error_class is U
    assert error.code == type(exc).__name__
    assert classify(type(exc).__name__) is U


def test_client_error_keeps_code_status_and_retry_after_but_not_the_message() -> None:
    canary = "CANARY-prompt-text-7f3a"
    exc = botocore.exceptions.ClientError(
        {
            "Error": {"Code": "ThrottlingException", "Message": f"Too many tokens in {canary}"},
            "ResponseMetadata": {"HTTPStatusCode": 429, "HTTPHeaders": {"retry-after": "3"}},
        },
        "Converse",
    )
    error = from_exception(exc)
    assert (error.error_class, error.code, error.http_status, error.retry_after_s) == (
        C,
        "ThrottlingException",
        429,
        3.0,
    )
    for text in (str(error), repr(error), str(error.args)):
        assert canary not in text


def test_client_error_with_unparseable_retry_after() -> None:
    exc = botocore.exceptions.ClientError(
        {
            "Error": {"Code": "ServiceUnavailableException", "Message": "x"},
            "ResponseMetadata": {
                "HTTPStatusCode": 503,
                "HTTPHeaders": {"retry-after": "Wed, 21 Oct 2026 07:28:00 GMT"},
            },
        },
        "Converse",
    )
    error = from_exception(exc)
    assert (error.error_class, error.retry_after_s) == (U, None)


def test_any_other_exception_is_unavailable_and_named_by_type_only() -> None:
    error = from_exception(KeyError("CANARY secret"))
    assert (error.error_class, error.code) == (U, "KeyError")
    assert "CANARY" not in str(error) + repr(error)
    same = BackendError(C, "ThrottlingException")
    assert from_exception(same) is same


def test_backend_error_of_classifies() -> None:
    error = BackendError.of("ModelNotReadyException", 429, retry_after_s=2)
    assert (error.error_class, error.retry_after_s) == (C, 2)
