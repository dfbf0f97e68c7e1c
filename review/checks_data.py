"""Checks of data at rest and of audit records: keys and their policies, encryption, log groups (declared and
implicit), retention, backups, TLS-only buckets."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from review import inventory as inv
from review import policy as pol
from review.cfn import CloudAssembly, Resource, as_list, references
from review.check import Check, judge, predicate, simple, where

# Actions that use a key to protect or reveal data (as opposed to administering it).
KEY_USE = ("kms:encrypt", "kms:decrypt", "kms:reencrypt", "kms:generatedatakey", "kms:creategrant", "kms:*", "*")
# Conditions that confine a key's use to one service's requests or one resource's data.
KEY_USE_SCOPE = (
    "kms:viaservice",
    "kms:encryptioncontext",
    "kms:encryptioncontextkeys",
    "kms:grantisforawsresource",
    *pol.SOURCE_SCOPE,
)


def _uses_key(actions: list[str]) -> bool:
    return any(x.lower().startswith(KEY_USE) or x.lower() in ("*", "kms:*") for x in actions)


def key_policy_reasons(key: Resource) -> list[str]:
    document = key.properties.get("KeyPolicy")
    if not isinstance(document, Mapping):
        return ["no key policy: the default grants the account root kms:* without conditions"]
    reasons = []
    for statement in as_list(document.get("Statement")):
        if not isinstance(statement, Mapping) or not pol.is_allow(statement):
            continue
        actions = pol.actions(statement)
        conditioned = bool(statement.get("Condition"))
        for kind, value in pol.principals(statement):
            who = "any principal" if kind == "*" else value
            if any(pol.every_action(x) for x in actions) and not conditioned:
                root = " (every principal IAM allows may use and administer it)" if pol.is_account_root(value) else ""
                reasons.append(f"grants {', '.join(actions)} to {who} without conditions{root}")
            elif _uses_key(actions) and not pol.has_condition(statement, KEY_USE_SCOPE):
                reasons.append(f"lets {who} use the key without kms:ViaService, an encryption context or a source")
    return reasons


@predicate
def kms_key_policies_least(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """Every key policy separates administration from use: nobody holds kms:* unconditionally (the account root
    included), and every grant of use is confined by kms:ViaService, an encryption context or the calling source."""
    return judge("kms_key_policies_least", list(a.resources("AWS::KMS::Key")), key_policy_reasons, where)


@predicate
def kms_rotation(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """Every symmetric customer-managed key rotates automatically."""
    symmetric = [
        r
        for r in a.resources("AWS::KMS::Key")
        if r.properties.get("KeySpec", "SYMMETRIC_DEFAULT") == "SYMMETRIC_DEFAULT"
    ]
    return simple(
        "kms_rotation",
        symmetric,
        lambda r: bool(r.properties.get("EnableKeyRotation")),
        lambda r: f"{where(r)}: rotation {'on' if r.properties.get('EnableKeyRotation') else 'OFF'}",
    )


@predicate
def kms_retained(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """Every key is retained when its stack is deleted."""
    return simple(
        "kms_retained",
        list(a.resources("AWS::KMS::Key")),
        lambda r: r.raw.get("DeletionPolicy") == "Retain",
        lambda r: f"{where(r)}: DeletionPolicy {r.raw.get('DeletionPolicy', 'Delete')}",
    )


@predicate
def kms_in_use(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """Customer-managed KMS keys (FIPS 140-3 validated HSMs) protect the data at rest: every key protects something."""
    keys = list(a.resources("AWS::KMS::Key"))
    users: dict[tuple[str, str], int] = {}
    for e in inv.encryption(a):
        if e.key_resource is not None:
            users[e.key_resource.key] = users.get(e.key_resource.key, 0) + 1
    return simple(
        "kms_in_use",
        keys,
        lambda k: users.get(k.key, 0) > 0,
        lambda k: f"{where(k)}: protects {users.get(k.key, 0)} resources",
    )


def _stores(a: CloudAssembly) -> list[inv.Encrypted]:
    skip = {"AWS::SageMaker::Model", "AWS::SSM::Parameter", "AWS::Logs::LogGroup"}
    return [e for e in inv.encryption(a) if e.resource.type not in skip]


def _log_key(a: CloudAssembly, d: inv.LogDestination) -> tuple[str, bool]:
    if d.group is None:
        return "AWS owned key (implicit group)", False
    found = next((e for e in inv.encryption(a) if e.resource.key == d.group.key), None)
    return (found.key, found.customer_managed) if found else ("AWS owned key", False)


def describe_log(d: inv.LogDestination) -> str:
    if d.group is not None:
        return f"{where(d.group)} {d.name}"
    writers = ", ".join(f"{w.stack}/{w.logical_id}" for w in d.writers)
    return f"implicit {d.name} (written by {writers}; declared in no template)"


@predicate
def logs_cmk(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """Every log group, declared or implicit, is encrypted with a customer-managed KMS key."""
    return judge(
        "logs_cmk",
        inv.log_destinations(a),
        lambda d: [] if _log_key(a, d)[1] else [f"key: {_log_key(a, d)[0]}"],
        describe_log,
    )


@predicate
def log_retention_min(a: CloudAssembly, params: Mapping[str, Any]) -> Check:
    """Every log group, declared or implicit, keeps its records at least the minimum retention, and not forever."""
    days = int(params.get("min_days", 365))

    def reasons(d: inv.LogDestination) -> list[str]:
        if d.retention is None:
            return ["never expires (no RetentionInDays)"]
        return [] if d.retention >= days else [f"{d.retention} days, under the floor of {days}"]

    return judge("log_retention_min", inv.log_destinations(a), reasons, describe_log)


@predicate
def logs_retained_on_delete(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """Every log group is declared and retained when its stack is deleted."""

    def reasons(d: inv.LogDestination) -> list[str]:
        if d.group is None:
            return ["not managed by any stack"]
        policy = d.group.raw.get("DeletionPolicy", "Delete")
        return [] if policy == "Retain" else [f"DeletionPolicy {policy}"]

    return judge("logs_retained_on_delete", inv.log_destinations(a), reasons, describe_log)


@predicate
def function_logs_declared(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """Every Lambda function (CDK's helpers included) logs to a log group declared in these stacks, through its
    LoggingConfig or the group's name, and that group has a KMS key and a retention."""
    implicit = {w.key: d for d in inv.log_destinations(a) if d.group is None for w in d.writers}
    declared_by_name = {(g.region, d.name): g for d in inv.log_destinations(a) if (g := d.group) is not None}

    def group_of(fn: Resource) -> Resource | None:
        target = a.resolve(fn.stack, (fn.properties.get("LoggingConfig") or {}).get("LogGroup"))
        if target is not None and target.type == "AWS::Logs::LogGroup":
            return target
        name = fn.properties.get("FunctionName")
        return declared_by_name.get((fn.region, f"/aws/lambda/{pol.text(name)}")) if name else None

    def reasons(fn: Resource) -> list[str]:
        if fn.key in implicit:
            return [f"logs to the implicit group {implicit[fn.key].name} (no CMK, never expires)"]
        group = group_of(fn)
        if group is None:
            return ["its log group is not declared in these stacks"]
        missing = [p for p in ("KmsKeyId", "RetentionInDays") if not group.properties.get(p)]
        return [f"{where(group)} has no {' and no '.join(missing)}"] if missing else []

    def describe(fn: Resource) -> str:
        group = group_of(fn)
        return f"{where(fn)} -> {where(group) if group else 'no declared group'}"

    return judge("function_logs_declared", list(a.resources("AWS::Lambda::Function")), reasons, describe)


@predicate
def data_at_rest_cmk(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """Every data store (tables, buckets, topics, queues, function environments, endpoint volumes, state machines,
    configuration) is encrypted with a customer-managed KMS key."""
    log_targets = {
        target.key
        for bucket in a.resources("AWS::S3::Bucket")
        if (
            target := a.resolve(
                bucket.stack, (bucket.properties.get("LoggingConfiguration") or {}).get("DestinationBucketName")
            )
        )
    }

    def describe(e: inv.Encrypted) -> str:
        note = ""
        if not e.customer_managed and e.resource.key in log_targets:
            note = (
                " (an S3 server access log destination, which accepts only SSE-S3: CloudTrail data events "
                "under a CMK would meet this instead)"
            )
        return f"{where(e.resource)} {e.what}: {e.key}{note}"

    return simple("data_at_rest_cmk", _stores(a), lambda e: e.customer_managed, describe)


@predicate
def backups_enabled(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """Every table has point-in-time recovery, every bucket versioning."""
    subjects = list(a.resources("AWS::DynamoDB::Table", "AWS::DynamoDB::GlobalTable", "AWS::S3::Bucket"))

    def good(r: Resource) -> bool:
        if r.type == "AWS::S3::Bucket":
            return bool(r.properties.get("VersioningConfiguration", {}).get("Status") == "Enabled")
        specs = [r.properties.get("PointInTimeRecoverySpecification") or {}]
        if r.type == "AWS::DynamoDB::GlobalTable":
            specs = [x.get("PointInTimeRecoverySpecification") or {} for x in as_list(r.properties.get("Replicas"))]
        return bool(specs) and all(spec.get("PointInTimeRecoveryEnabled") for spec in specs)

    return simple(
        "backups_enabled",
        subjects,
        good,
        lambda r: f"{where(r)}: {'point-in-time recovery / versioning on' if good(r) else 'NO backup setting'}",
    )


@predicate
def buckets_tls_only(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """Every bucket denies requests without TLS."""
    policies = list(a.resources("AWS::S3::BucketPolicy"))

    def good(bucket: Resource) -> bool:
        for p in policies:
            if p.stack == bucket.stack and bucket.logical_id in references(p.properties.get("Bucket")):
                for s in as_list(p.properties.get("PolicyDocument", {}).get("Statement")):
                    if s.get("Effect") == "Deny" and "aws:SecureTransport" in str(s.get("Condition")):
                        return True
        return False

    return simple(
        "buckets_tls_only",
        list(a.resources("AWS::S3::Bucket")),
        good,
        lambda b: f"{where(b)}: {'denies' if good(b) else 'does NOT deny'} requests without TLS",
    )
