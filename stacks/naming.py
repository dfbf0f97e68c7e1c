"""Every physical name and name-derived ARN the stacks give a resource, in one module.

Names are deterministic so that one stack can name another's resource without a cross-stack (or cross-region)
reference: the router's role names its function, a router attaches the models stacks' invoke policies by name. The
S3 gateway endpoint (stacks/network.py) allows only the bucket names built here.

- Stacks:           ``<platform>-<kind>-<region>`` (`stack_name`).
- S3 buckets:       ``<platform>-<purpose>-<account>-<region>`` (`bucket_name`, length-checked: stacks/platform.py
                    validates the config's artifact and access-log bucket names with it).
- Router resources: ``<platform>-router-<region>`` for the function, API, web ACL, dashboard and alarm prefix
                    (`router_name`); the key alias ``alias/<platform>-router-<region>``.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # stacks/platform.py validates the config's names with the helpers below: no runtime cycle
    from stacks.platform import Platform


def partition_of(region: str) -> str:
    return "aws-us-gov" if region.startswith("us-gov-") else "aws"


S3_BUCKET_NAME_MAX = 63
ACCESS_LOGS_PURPOSE = "model-access-logs"  # the models stack's server-access-log bucket, in every escrow region


class BucketNameTooLong(ValueError):
    """A bucket name over S3's 63 characters; the schema turns it into a PlatformConfigError naming the key."""


def bucket_name(platform: str, purpose: str, account: str, region: str) -> str:
    """Every project bucket's name: ``<platform>-<purpose>-<account>-<region>``, the S3 gateway endpoint's convention
    (stacks/network.py). Longer than S3's 63 characters is a BucketNameTooLong, never a jsii traceback."""
    name = f"{platform}-{purpose}-{account}-{region}"
    if len(name) > S3_BUCKET_NAME_MAX and purpose != "*":
        raise BucketNameTooLong(f"the bucket name {name!r} is {len(name)} characters, over S3's {S3_BUCKET_NAME_MAX}")
    return name


def artifact_bucket_name(platform: str, model: str, account: str, region: str) -> str:
    """The S3 bucket the models stack creates for one escrow model's artifacts in one region."""
    return bucket_name(platform, model, account, region)


def access_logs_bucket_name(platform: str, account: str, region: str) -> str:
    """The S3 bucket the models stack creates for its artifact buckets' server access logs in one region."""
    return bucket_name(platform, ACCESS_LOGS_PURPOSE, account, region)


def provider_secret_name(platform: str, provider: str) -> str:
    """The Secrets Manager secret holding an OpenAI-compatible provider's key, in each cell that reaches it."""
    return f"{platform}/providers/{provider}/api-key"


def provisioned_model_name(platform: str, model: str, region: str) -> str:
    """The name a purchased Provisioned Throughput gets in Bedrock (unique per account and region)."""
    return f"{platform}-{model}-{region}"


PT_HANDLER_ENTRIES = {"on_event": "event", "is_complete": "check"}


def stack_name(platform: Platform, kind: str, region: str) -> str:
    return f"{platform.name}-{kind}-{region}"


# --- the router -------------------------------------------------------------------------------------------------


def router_name(platform: Platform, region: str) -> str:
    """The router's function, API, web ACL and dashboard of one cell, and its alarms' prefix."""
    return f"{platform.name}-router-{region}"


def function_name(platform: Platform, region: str) -> str:
    return router_name(platform, region)


def api_name(platform: Platform, region: str) -> str:
    return router_name(platform, region)


def function_arn(platform: Platform, region: str) -> str:
    """Built from the name: the role's policy cannot refer to the function it serves (a cycle)."""
    return f"arn:{partition_of(region)}:lambda:{region}:{platform.account}:function:{function_name(platform, region)}"


def router_key_alias(platform: Platform, region: str) -> str:
    return f"alias/{platform.name}-router-{region}"


def appconfig_application_name(platform: Platform) -> str:
    return f"{platform.name}-router"


def alarm_topic_name(platform: Platform, region: str) -> str:
    return f"{platform.name}-router-alarms-{region}"


def access_log_group_name(platform: Platform, region: str) -> str:
    return f"/{platform.name}/{region}/router-api-access"


# --- the models -------------------------------------------------------------------------------------------------


def endpoint_name(platform: Platform, model: str) -> str:
    """The SageMaker endpoint name of an escrow model; the same in every region."""
    return f"{platform.name}-{model}"


def pt_handler_name(platform: Platform, region: str, entry: str) -> str:
    """The Provisioned Throughput handler's function name: at most 40 + 4 + 5 + 1 + 14 = 64 characters."""
    return f"{platform.name}-pt-{PT_HANDLER_ENTRIES[entry]}-{region}"


def router_policy_name(platform: Platform, router_region: str, located_in: str | None = None) -> str:
    """The managed policy holding a router's invoke grants on the targets located in one region."""
    if located_in is None or located_in == router_region:
        return f"{platform.name}-router-invoke-{router_region}"
    return f"{platform.name}-router-invoke-{router_region}-in-{located_in}"


def application_profile_name(platform: Platform, feature: str, model: str) -> str:
    """Unique per account and region; at most 64 characters ([0-9a-zA-Z][ _-]?)."""
    name = f"{platform.name}-{feature}-{model}"
    if len(name) <= 64:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[:55]}-{digest}"


def guardrail_name(platform: Platform, guardrail: str) -> str:
    """A Bedrock guardrail's name: unique per account and region; at most 50 characters ([0-9a-zA-Z_-])."""
    name = f"{platform.name}-{guardrail}"
    if len(name) <= 50:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[:41]}-{digest}"
