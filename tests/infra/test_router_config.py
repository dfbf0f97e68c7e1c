"""The `router:` section of the platform file: defaults, and one clear error per mistake, naming its key."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from stacks.platform import PlatformConfigError
from tests.infra.config_documents import SOURCE, assert_names_key, example, parse

EAST = "arn:aws:lambda:us-east-1:027255383542:layer:AWS-AppConfig-Extension-Arm64:207"


def _with_router(**changes: Any) -> dict[str, Any]:
    document = example()
    router = copy.deepcopy(document["router"])
    for dotted, value in changes.items():
        node = router
        *path, last = dotted.split("__")
        for part in path:
            node = node.setdefault(part, {})
        if value is _DELETE:
            node.pop(last, None)
        else:
            node[last] = value
    document["router"] = router
    return document


_DELETE = object()


def test_example_router_section() -> None:
    settings = parse(example()).router
    assert settings.configured
    assert settings.endpoint_type == "private"
    assert settings.allowed_callers == (
        "arn:aws:iam::111122223333:role/support-desk-router-caller",
        "arn:aws:iam::111122223333:role/recap-batch-router-caller",
        "arn:aws:iam::444455556666:role/support-summarizer",
    )
    assert set(settings.calling_services) == {"support-desk", "recap-batch"}
    assert settings.calling_services["support-desk"].quota_per_day == 500_000
    assert settings.reserved_concurrency == 600
    assert settings.appconfig_extension_layer_arns["us-east-1"] == EAST


def test_router_section_is_optional_but_the_stack_needs_it() -> None:
    document = example()
    del document["router"]
    platform = parse(document)
    assert not platform.router.configured
    with pytest.raises(PlatformConfigError, match=rf"^{SOURCE}: router: the router of us-east-1 needs"):
        platform.router.extension_layer_arn(platform.source, "us-east-1")


@pytest.mark.parametrize(
    ("changes", "key", "message"),
    [
        ({"api__endpoint_type": "edge"}, "router.api.endpoint_type", "expected 'private' or 'regional'"),
        ({"api__rate_limit": 0}, "router.api.rate_limit", "out of range"),
        ({"api__burst_limit": 5}, "router.api.burst_limit", "below rate_limit 10"),
        ({"api__burst_limit": 601}, "router.api.burst_limit", "over router.reserved_concurrency 600"),
        ({"api__rate_limit": 11}, "router.reserved_concurrency", "rate x deadline = 660 executions"),
        ({"reserved_concurrency": 599}, "router.reserved_concurrency", "Little's law"),
        ({"calling_services__support-desk__rate_limit": 7}, "router.calling_services", "add up to 11 requests/s"),
        (
            {"api__endpoint_type": "regional", "api__caller_vpc_endpoints": {"us-east-1": ["vpce-0123456789abcdef0"]}},
            "router.api.caller_vpc_endpoints",
            "only a private API",
        ),
        (
            {"api__caller_vpc_endpoints": {"us-east-1": ["vpc-123"]}},
            "router.api.caller_vpc_endpoints.us-east-1[0]",
            "VPC endpoint id",
        ),
        (
            {"api__caller_vpc_endpoints": {"eu-west-1": ["vpce-0123456789abcdef0"]}},
            "router.api.caller_vpc_endpoints.eu-west-1",
            "has no cell",
        ),
        ({"api__caller_cidrs": {"us-east-1": ["10.40.0.0/24"]}}, "router.api.caller_cidrs.us-east-1[0]", "free of"),
        ({"api__caller_cidrs": {"us-east-1": ["10.41.128.0/24"]}}, "router.api.caller_cidrs.us-east-1[0]", "not in"),
        ({"api__caller_cidrs": {"eu-west-1": ["10.9.0.0/24"]}}, "router.api.caller_cidrs.eu-west-1", "has no cell"),
        ({"allowed_callers": []}, "router.allowed_callers", "at least 1"),
        ({"allowed_callers": ["*"]}, "router.allowed_callers[0]", "an exact IAM role ARN"),
        ({"allowed_callers": ["111122223333"]}, "router.allowed_callers[0]", "would admit its every principal"),
        ({"allowed_callers": ["arn:aws:iam::111122223333:role/*"]}, "router.allowed_callers[0]", "exact IAM role"),
        ({"allowed_callers": ["arn:aws:iam::111122223333:user/alice"]}, "router.allowed_callers[0]", "exact IAM"),
        ({"allowed_callers": _DELETE}, "router.allowed_callers", "missing required field"),
        (
            {"calling_services__support-desk__rate_limit": 500},
            "router.calling_services.support-desk.rate_limit",
            "out of range",
        ),
        (
            {"calling_services__support-desk__burst_limit": 5},
            "router.calling_services.support-desk.burst_limit",
            "below rate_limit",
        ),
        (
            {"calling_services__support-desk__quota_per_day": 0},
            "router.calling_services.support-desk.quota_per_day",
            "out of range",
        ),
        ({"calling_services__Bad_Name": {"rate_limit": 1}}, "router.calling_services.Bad_Name", "service name"),
        ({"calling_services__x1__burst_limit": 3}, "router.calling_services.x1.rate_limit", "missing required field"),
        ({"reserved_concurrency": 0}, "router.reserved_concurrency", "out of range"),
        ({"memory_mb": 64}, "router.memory_mb", "out of range"),
        ({"timeout": 3}, "router.timeout", "unknown field"),
        (
            {"appconfig_extension_layer_arns__us-west-2": _DELETE},
            "router.appconfig_extension_layer_arns.us-west-2",
            "missing",
        ),
        (
            {"appconfig_extension_layer_arns__us-west-2": EAST},
            "router.appconfig_extension_layer_arns.us-west-2",
            "the layer is in us-east-1",
        ),
        (
            {"appconfig_extension_layer_arns__us-east-1": EAST.replace("-Arm64", "")},
            "router.appconfig_extension_layer_arns.us-east-1",
            "arm64",
        ),
        (
            {"appconfig_extension_layer_arns__us-east-1": "AWS-AppConfig-Extension-Arm64"},
            "router.appconfig_extension_layer_arns.us-east-1",
            "Lambda layer version ARN",
        ),
        (
            {"appconfig_extension_layer_arns__eu-west-1": EAST.replace("us-east-1", "eu-west-1")},
            "router.appconfig_extension_layer_arns.eu-west-1",
            "has no cell",
        ),
    ],
)
def test_router_errors_name_the_key(changes: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(PlatformConfigError) as caught:
        parse(_with_router(**changes))
    assert_names_key(caught.value, key, message)


def test_defaults_when_optional_keys_are_left_out() -> None:
    document = example()
    document["router"] = {
        "allowed_callers": ["arn:aws:iam::111122223333:role/caller"],
        "appconfig_extension_layer_arns": document["router"]["appconfig_extension_layer_arns"],
    }
    settings = parse(document).router
    # One setting: the stage's rate is derived from the reserved concurrency and the longest deadline (60 s).
    assert (settings.endpoint_type, settings.rate_limit, settings.burst_limit) == ("private", 1, 2)
    assert settings.calling_services == {}
    assert (settings.reserved_concurrency, settings.memory_mb) == (60, 1024)  # 1/s for the 60 s deadline
