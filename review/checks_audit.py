"""Checks of what gets recorded and watched: flow logs, API access logs, data trace, alarms, the compliance gate."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from review import inventory as inv
from review.cfn import CloudAssembly, Resource, as_list
from review.check import Check, predicate, simple, where


@predicate
def flow_logs_all_vpcs(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """Every VPC has a flow log of ALL traffic."""

    def good(v: Resource) -> bool:
        return any(f.properties.get("TrafficType", "ALL") == "ALL" for f in inv.flow_logs_of(a, v))

    return simple(
        "flow_logs_all_vpcs",
        list(a.resources("AWS::EC2::VPC")),
        good,
        lambda v: (
            f"{where(v)}: flow log {', '.join(f.logical_id for f in inv.flow_logs_of(a, v)) or 'NONE'} "
            f"(traffic {', '.join(str(f.properties.get('TrafficType', 'ALL')) for f in inv.flow_logs_of(a, v)) or '-'})"
        ),
    )


def _access_logging(r: Resource) -> bool:
    return bool(r.properties.get("AccessLogSetting") or r.properties.get("AccessLogSettings"))


@predicate
def api_access_logs(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """Every API stage writes access logs."""
    return simple(
        "api_access_logs",
        list(a.resources("AWS::ApiGateway::Stage", "AWS::ApiGatewayV2::Stage")),
        _access_logging,
        lambda r: f"{where(r)}: access logging {'on' if _access_logging(r) else 'OFF'}",
    )


@predicate
def no_data_trace(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """No API stage logs full requests and responses (data trace off)."""

    def good(r: Resource) -> bool:
        return not any(m.get("DataTraceEnabled") for m in as_list(r.properties.get("MethodSettings")))

    return simple(
        "no_data_trace",
        list(a.resources("AWS::ApiGateway::Stage")),
        good,
        lambda r: f"{where(r)}: data trace (full request/response logging) {'off' if good(r) else 'ON'}",
    )


@predicate
def alarms_present(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """CloudWatch alarms watch the workload, and each one notifies someone (an alarm action)."""
    return simple(
        "alarms_present",
        list(a.resources("AWS::CloudWatch::Alarm", "AWS::CloudWatch::CompositeAlarm")),
        lambda r: bool(r.properties.get("AlarmActions")),
        lambda r: (
            f"{where(r)}: {r.properties.get('MetricName', 'composite/math')}, "
            f"{len(as_list(r.properties.get('AlarmActions')))} actions"
        ),
    )


@predicate
def compliance_gate_clean(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """cdk-nag (AwsSolutions + NIST 800-53 rev 5) has no open error; every acknowledgement has a reason. Whether
    each reason is true of the template is for the reader of the acknowledgement table."""
    if not a.report_found and not a.acknowledgements:
        return Check("compliance_gate_clean", None)
    errors = [f for f in a.findings if f.severity == "error"]
    return Check(
        "compliance_gate_clean",
        not errors,
        [
            f"cdk-nag AwsSolutions + NIST 800-53 rev 5 on every stack: {len(errors)} open errors, "
            f"{len(a.acknowledgements)} acknowledgements each with its reason"
        ],
        [f"open {f.rule} on {f.stack}/{f.logical_id} ({f.path})" for f in errors],
    )
