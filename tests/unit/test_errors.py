"""The error taxonomy, checked against botocore's own service models (read from the installed botocore)."""

from __future__ import annotations

from pathlib import Path

import botocore.exceptions  # type: ignore[import-untyped]
import botocore.session  # type: ignore[import-untyped]
import pytest

from spillway.errors import CODES, GROUPS, BackendError, ErrorClass, classify, classify_error, from_exception
from tools import doc_tables

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
    assert set(shapes) == set(EXPECTED[service]) == set(GROUPS[service]), "botocore's error shapes changed"
    for code, status in shapes.items():
        assert GROUPS[service][code][0] is EXPECTED[service][code], code
        assert classify(code, status) is EXPECTED[service][code], code
        assert classify(code, None) is EXPECTED[service][code], code


def test_a_code_in_two_groups_has_one_class() -> None:
    for group in GROUPS.values():
        for code, (error_class, why) in group.items():
            assert CODES[code] is error_class, code
            assert why, code


@pytest.mark.parametrize(
    "code",
    ["AccessDeniedException", "AccessDenied", "IncompleteSignature", "NotAuthorized", "RequestExpired",
     "UnrecognizedClientException", "ExpiredTokenException", "ExpiredToken", "InvalidSignatureException",
     "InvalidClientTokenId", "MissingAuthenticationToken", "OptInRequired", "ResourceNotFoundException"],
)  # fmt: skip
def test_bad_credentials_signatures_and_access_are_ours_whatever_the_status(code: str) -> None:
    for status in (400, 403, 404, None):
        assert classify(code, status) is OURS


# Documented forms: the model id is wrong, needs an inference profile, has no on-demand throughput, is retired;
# the SageMaker endpoint does not exist.
DEPLOYMENT_FAULTS = [
    ("ValidationException", "The provided model identifier is invalid."),
    (
        "ValidationException",
        "Invocation of model ID anthropic.claude-3-5-sonnet-20241022-v2:0 with on-demand throughput isn\u2019t "
        "supported. Retry your request with the ID or ARN of an inference profile that contains this model.",
    ),
    ("ValidationException", "Invocation of model ID x with on-demand throughput isn't supported."),
    ("ValidationException", "The provided model doesn't support on-demand throughput."),
    ("ValidationException", "This model version has reached the end of its life."),
    ("ValidationError", "Endpoint llama-escrow of account 111122223333 not found."),
    ("ValidationError", "Inference Component ic-1 of account 111122223333 not found."),
]
REQUEST_FAULTS = [
    ("ValidationException", "messages.0.content: at least one content block is required"),
    ("ValidationException", "The model returned the following errors: temperature: range: 0..1"),
    ("ValidationException", "A conversation must start with a user message."),
    ("ValidationError", "1 validation error detected: Value at 'body' failed to satisfy constraint"),
]


@pytest.mark.parametrize(("code", "message"), DEPLOYMENT_FAULTS)
def test_a_validation_error_about_the_model_or_endpoint_is_ours(code: str, message: str) -> None:
    assert classify_error(code, 400, message=message) is OURS


@pytest.mark.parametrize(("code", "message"), REQUEST_FAULTS)
def test_a_validation_error_about_the_request_is_the_callers(code: str, message: str) -> None:
    assert classify_error(code, 400, message=message) is CL


@pytest.mark.parametrize("code", ["ModelError", "ModelErrorException", "ModelStreamErrorException"])
@pytest.mark.parametrize(
    ("original", "expected"),
    [(400, CL), (404, CL), (413, CL), (422, CL), (429, C), (408, U), (500, U), (502, U), (503, U), (504, U)],
)
def test_a_wrapped_status_decides_on_both_services(code: str, original: int, expected: ErrorClass) -> None:
    assert classify_error(code, 424, original_status=original) is expected


@pytest.mark.parametrize(
    ("member", "code"), [("OriginalStatusCode", "ModelError"), ("originalStatusCode", "ModelErrorException")]
)
def test_from_exception_reads_each_services_original_status(member: str, code: str) -> None:
    def raised(original: int) -> BackendError:
        exc = botocore.exceptions.ClientError(
            {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": 424}, member: original},
            "Converse",
        )
        return from_exception(exc)

    assert (raised(400).error_class, raised(400).http_status) == (CL, 400)
    assert (raised(429).error_class, raised(429).http_status) == (C, 429)
    assert (raised(408).error_class, raised(408).http_status) == (U, 424)
    assert raised(500).error_class is U


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


def test_the_design_notes_table_is_current_and_complete() -> None:
    path, render = doc_tables.TABLES["error-table"]
    text = path.read_text()
    assert doc_tables.render_doc(text, "error-table", render()) == text, "run `python -m tools.doc_tables`"
    for group in GROUPS.values():
        for code, (error_class, _) in group.items():
            assert f"| `{code}` | {error_class.value} |" in text


def test_the_table_check_fails_on_a_stale_copy(tmp_path: Path) -> None:
    stale = tmp_path / "notes.md"
    start, end = doc_tables.markers("error-table")
    stale.write_text(f"# notes\n{start}\n| old |\n{end}\n")
    args = ["--only", "error-table", "--doc", str(stale)]
    assert doc_tables.main(["--check", *args]) == 1
    assert doc_tables.main(args) == 0
    assert doc_tables.main(["--check", *args]) == 0
