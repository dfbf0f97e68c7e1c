"""Every physical name and name-derived ARN the stacks give a resource, in one module.

Names are deterministic so that one stack can name another's resource without a cross-stack (or cross-region)
reference: the router's role names its function, the health table's owner names the other cells' keys by alias,
a router attaches the models stacks' invoke policies by name. The gateway endpoints (stacks/network.py) allow only
the table and bucket names built here.

- Stacks:           ``<platform>-<kind>-<region>`` (`stack_name`).
- DynamoDB tables:  ``<platform>-<purpose>`` (`table_name`); the DynamoDB gateway allows ``table/<platform>-*``.
- S3 buckets:       ``<platform>-<purpose>-<account>-<region>`` (`bucket_name`, length-checked in stacks/platform.py,
                    which also validates the artifact and access-log bucket names of the config).
- Router resources: ``<platform>-router-<region>`` for the function, API, web ACL, dashboard, backup vault and plan
                    and alarm prefix (`router_name`); the key alias ``alias/<platform>-router-<region>``.
"""

from __future__ import annotations

import hashlib

from stacks.platform import (
    Platform,
    access_logs_bucket_name,
    artifact_bucket_name,
    partition_of,
    provisioned_model_name,
)
from stacks.platform import bucket_name as _platform_bucket_name

# Bucket and PT names are built (and length-checked) by the platform schema; exported here with the others.
__all__ = [
    "access_logs_bucket_name",
    "artifact_bucket_name",
    "provisioned_model_name",
]

HEALTH_PURPOSE = "health"
PT_HANDLER_ENTRIES = {"on_event": "event", "is_complete": "check"}


def stack_name(platform: Platform, kind: str, region: str) -> str:
    return f"{platform.name}-{kind}-{region}"


def table_name(platform: Platform, purpose: str) -> str:
    """The name a project table must have to pass the DynamoDB gateway endpoint of its region."""
    return f"{platform.name}-{purpose}"


def bucket_name(platform: Platform, region: str, purpose: str) -> str:
    """The name a project bucket must have to pass the S3 gateway endpoint of its region."""
    return _platform_bucket_name(platform.name, purpose, platform.account, region)


# --- the router -------------------------------------------------------------------------------------------------


def router_name(platform: Platform, region: str) -> str:
    """The router's function, API, web ACL, dashboard, backup vault and plan of one cell, and its alarms' prefix."""
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


def router_key_alias_arn(platform: Platform, region: str) -> str:
    return f"arn:{partition_of(region)}:kms:{region}:{platform.account}:{router_key_alias(platform, region)}"


def health_table_name(platform: Platform) -> str:
    return table_name(platform, HEALTH_PURPOSE)


def health_table_arn(platform: Platform, region: str) -> str:
    name = health_table_name(platform)
    return f"arn:{partition_of(region)}:dynamodb:{region}:{platform.account}:table/{name}"


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
