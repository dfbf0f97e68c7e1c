"""The fleet store of each cell (stacks/constructs/fleet_store.py), asserted on the session's templates: subnets,
security groups, encryption, IAM authentication, the exact-ARN grant and what the router reads; and the
`router.fleet_store` schema of the platform file."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from stacks.constructs.fleet_store import ACCESS_STRING, ENV_CACHE, ENV_URL, ENV_USER, PORT
from stacks.platform import Platform, fleet_ecpu_per_request
from tests.infra.config_documents import assert_names_key, example, parse, rejects
from tests.infra.conftest import Template, resources_of


@pytest.fixture(scope="module")
def cells(platform: Platform, templates: Mapping[str, Template]) -> dict[str, tuple[Template, Template]]:
    """Per region: (router template, network template)."""
    return {
        region: (templates[f"{platform.name}-router-{region}"], templates[f"{platform.name}-network-{region}"])
        for region in platform.region_names
    }


def _one(template: Template, resource_type: str) -> tuple[str, Mapping[str, Any]]:
    found = resources_of(template, resource_type)
    assert len(found) == 1, f"{resource_type}: {sorted(found)}"
    logical_id, resource = next(iter(found.items()))
    return logical_id, resource["Properties"]


def _exported(network: Template, value: Any) -> Any:
    """What an Fn::ImportValue of the network stack refers to there (a Ref or Fn::GetAtt), or None."""
    if not (isinstance(value, Mapping) and "Fn::ImportValue" in value):
        return None
    name = value["Fn::ImportValue"]
    (output,) = [o for o in network["Outputs"].values() if o.get("Export", {}).get("Name") == name]
    return output["Value"]


def _getatt_id(value: Any, attribute: str) -> str | None:
    if isinstance(value, Mapping) and "Fn::GetAtt" in value and value["Fn::GetAtt"][1] == attribute:
        return str(value["Fn::GetAtt"][0])
    return None


def _router_group_id(network: Template) -> str:
    (logical_id,) = [
        k
        for k, r in resources_of(network, "AWS::EC2::SecurityGroup").items()
        if r["Properties"]["GroupDescription"].startswith("Router Lambda")
    ]
    return logical_id


# --- placement -------------------------------------------------------------------------------------------------


def test_cache_is_valkey_in_the_cells_isolated_subnets(platform: Platform, cells: Mapping[str, Any]) -> None:
    for region, (router, network) in cells.items():
        _, cache = _one(router, "AWS::ElastiCache::ServerlessCache")
        assert cache["Engine"] == "valkey"
        assert cache.get("ConnectionType", "vpc") == "vpc"  # never "public"
        subnets = [_exported(network, s) for s in cache["SubnetIds"]]
        network_subnets = resources_of(network, "AWS::EC2::Subnet")
        assert len(subnets) == len(platform.regions[region].availability_zones)
        assert {s["Ref"] for s in subnets} == set(network_subnets)  # every isolated subnet, nothing else
        for subnet in network_subnets.values():
            assert subnet["Properties"]["MapPublicIpOnLaunch"] is False


def test_no_snapshots_of_state_that_expires_in_minutes(cells: Mapping[str, Any]) -> None:
    for router, _ in cells.values():
        _, cache = _one(router, "AWS::ElastiCache::ServerlessCache")
        assert cache["SnapshotRetentionLimit"] == 0
        assert not {"DailySnapshotTime", "FinalSnapshotName", "SnapshotArnsToRestore"} & set(cache)


def test_usage_limits_come_from_the_platform_file(platform: Platform, cells: Mapping[str, Any]) -> None:
    settings = platform.router.fleet_store
    for router, _ in cells.values():
        _, cache = _one(router, "AWS::ElastiCache::ServerlessCache")
        assert cache["CacheUsageLimits"] == {
            "DataStorage": {"Maximum": settings.max_data_storage_gb, "Unit": "GB"},
            "ECPUPerSecond": {"Maximum": settings.max_ecpu_per_second},
        }


# --- network ---------------------------------------------------------------------------------------------------


def test_cache_port_only_from_the_router_function_and_router_egress_only_to_the_cache(
    cells: Mapping[str, Any],
) -> None:
    for router, network in cells.values():
        _, cache = _one(router, "AWS::ElastiCache::ServerlessCache")
        (group_ref,) = cache["SecurityGroupIds"]
        cache_group = _getatt_id(group_ref, "GroupId")
        assert cache_group in resources_of(router, "AWS::EC2::SecurityGroup")
        router_group = _router_group_id(network)
        function = _one(router, "AWS::Lambda::Function")[1]
        function_groups = function["VpcConfig"]["SecurityGroupIds"]
        assert [_getatt_id(_exported(network, g), "GroupId") for g in function_groups] == [router_group]

        group = router["Resources"][cache_group]["Properties"]
        assert not group.get("SecurityGroupIngress")  # inline rules would be from anywhere the author chose
        assert all(rule["CidrIp"] == "255.255.255.255/32" for rule in group["SecurityGroupEgress"])  # none
        ingress = [
            r["Properties"]
            for r in resources_of(router, "AWS::EC2::SecurityGroupIngress").values()
            if _getatt_id(r["Properties"]["GroupId"], "GroupId") == cache_group
        ]
        assert len(ingress) == 1
        (rule,) = ingress
        assert (rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) == ("tcp", PORT, PORT)
        assert "CidrIp" not in rule
        assert "CidrIpv6" not in rule
        assert _getatt_id(_exported(network, rule["SourceSecurityGroupId"]), "GroupId") == router_group

        # The router's only way to the cache port: egress to the cache's group, in either template.
        egress = [
            r["Properties"]
            for template in (router, network)
            for r in resources_of(template, "AWS::EC2::SecurityGroupEgress").values()
            if r["Properties"].get("FromPort", 0) <= PORT <= r["Properties"].get("ToPort", -1)
        ]
        assert len(egress) == 1
        (out,) = egress
        assert _getatt_id(_exported(network, out["GroupId"]), "GroupId") == router_group
        assert _getatt_id(out["DestinationSecurityGroupId"], "GroupId") == cache_group
        assert "CidrIp" not in out
        inline = network["Resources"][router_group]["Properties"]["SecurityGroupEgress"]
        assert all(not (r["FromPort"] <= PORT <= r["ToPort"]) for r in inline)


# --- encryption ------------------------------------------------------------------------------------------------


def test_cache_encrypted_with_its_own_rotating_key_usable_only_through_elasticache(cells: Mapping[str, Any]) -> None:
    for region, (router, _) in cells.items():
        _, cache = _one(router, "AWS::ElastiCache::ServerlessCache")
        key_id = _getatt_id(cache["KmsKeyId"], "Arn")
        assert key_id is not None
        key = router["Resources"][key_id]
        assert key["Type"] == "AWS::KMS::Key"
        assert key["Properties"]["EnableKeyRotation"] is True
        assert key["DeletionPolicy"] == "Retain"
        statements = key["Properties"]["KeyPolicy"]["Statement"]
        # Administration apart from use: every statement that can use the key (or names a wildcard) holds only
        # through ElastiCache of this region; nobody holds kms:*.
        use = ("kms:encrypt", "kms:decrypt", "kms:reencrypt", "kms:generatedatakey", "kms:creategrant")
        via = f"elasticache.{region}.amazonaws.com"
        users_of_key = 0
        for statement in statements:
            actions = [a.lower() for a in _listed(statement["Action"])]
            assert not {"kms:*", "*"} & set(actions)
            if any("*" in a or a.startswith(use) for a in actions):
                users_of_key += 1
                assert _listed(statement["Condition"]["StringEquals"]["kms:ViaService"]) == [via], statement
        assert users_of_key >= 1
        # The key is the cache's alone: no other resource of the stack names it.
        users = {
            r["Type"] for k, r in router["Resources"].items() if k != key_id and key_id in str(r.get("Properties"))
        }
        assert users == {"AWS::ElastiCache::ServerlessCache", "AWS::KMS::Alias"}


# --- authentication --------------------------------------------------------------------------------------------


def test_iam_authentication_only_no_default_user_no_password(templates: Mapping[str, Template]) -> None:
    for template in templates.values():
        for user in resources_of(template, "AWS::ElastiCache::User").values():
            props = user["Properties"]
            assert props["AuthenticationMode"] == {"Type": "iam"}
            assert props["UserId"] == props["UserName"]  # what IAM authentication requires
            assert props["UserName"] != "default"
            assert not {"Passwords", "NoPasswordRequired"} & set(props)


def test_cache_uses_a_group_holding_only_the_iam_user(cells: Mapping[str, Any]) -> None:
    for router, _ in cells.values():
        _, cache = _one(router, "AWS::ElastiCache::ServerlessCache")
        _, group = _one(router, "AWS::ElastiCache::UserGroup")
        _, user = _one(router, "AWS::ElastiCache::User")
        assert cache["UserGroupId"] == group["UserGroupId"]
        assert group["UserIds"] == [user["UserId"]]
        assert group["Engine"] == user["Engine"] == "valkey"


def test_grant_is_connect_on_the_exact_cache_and_user(cells: Mapping[str, Any]) -> None:
    for region, (router, _) in cells.items():
        _, cache = _one(router, "AWS::ElastiCache::ServerlessCache")
        _, user = _one(router, "AWS::ElastiCache::User")
        account = "111122223333"
        expected = {
            f"arn:aws:elasticache:{region}:{account}:serverlesscache:{cache['ServerlessCacheName']}",
            f"arn:aws:elasticache:{region}:{account}:user:{user['UserId']}",
        }
        grants = [
            (logical_id, statement)
            for logical_id, policy in resources_of(router, "AWS::IAM::ManagedPolicy").items()
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]
            if any(str(a).startswith("elasticache:") for a in _listed(statement["Action"]))
        ]
        assert len(grants) == 1
        ((policy_id, statement),) = grants
        assert statement["Effect"] == "Allow"
        assert _listed(statement["Action"]) == ["elasticache:Connect"]
        assert set(_listed(statement["Resource"])) == expected
        roles = resources_of(router, "AWS::IAM::Role")
        function_role = _getatt_id(_one(router, "AWS::Lambda::Function")[1]["Role"], "Arn")
        assert {"Ref": policy_id} in roles[function_role]["Properties"]["ManagedPolicyArns"]


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# --- what the router reads -------------------------------------------------------------------------------------


def test_router_environment_names_the_store(cells: Mapping[str, Any]) -> None:
    for router, _ in cells.values():
        cache_id, cache = _one(router, "AWS::ElastiCache::ServerlessCache")
        _, user = _one(router, "AWS::ElastiCache::User")
        variables = _one(router, "AWS::Lambda::Function")[1]["Environment"]["Variables"]
        assert variables[ENV_URL] == {
            "Fn::Join": [
                "",
                ["rediss://", {"Fn::GetAtt": [cache_id, "Endpoint.Address"]}, ":",
                 {"Fn::GetAtt": [cache_id, "Endpoint.Port"]}],
            ]
        }  # fmt: skip
        assert variables[ENV_USER] == user["UserId"]
        assert variables[ENV_CACHE] == cache["ServerlessCacheName"]


# --- the user's access string, checked by a real server's ACL parser ------------------------------------------


# What the router's store scripts call (lambdas/router/spillway/fleet_store.py): ACLs apply inside EVAL too.
SCRIPT_COMMANDS = (
    ("DEL", "k"), ("EXISTS", "k"), ("EXPIRE", "k", "1"), ("PEXPIRE", "k", "1"), ("PTTL", "k"), ("HGET", "k", "f"),
    ("HMGET", "k", "f"), ("HSET", "k", "f", "v"), ("ZCARD", "k"), ("ZCOUNT", "k", "0", "1"), ("ZREM", "k", "m"),
    ("ZREMRANGEBYSCORE", "k", "0", "1"), ("TIME",), ("SELECT", "0"),
)  # fmt: skip


@pytest.fixture(scope="module")
def acl_server() -> Iterator[int]:
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=5)


def _command(port: int, *args: str) -> bytes:
    payload = f"*{len(args)}\r\n".encode() + b"".join(f"${len(a.encode())}\r\n{a}\r\n".encode() for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=2) as connection:
        connection.sendall(payload)
        return connection.recv(4096)


@pytest.mark.parametrize(
    ("command", "allowed"),
    [
        (("GET", "k"), True),
        (("SET", "k", "v", "PX", "1000"), True),
        (("MGET", "a", "b"), True),
        (("EVALSHA", "0" * 40, "1", "k"), True),
        (("EVAL", "return 1", "0"), True),
        (("ZADD", "k", "1", "m"), True),
        (("HINCRBY", "k", "f", "1"), True),
        *(((name, *args), True) for name, *args in SCRIPT_COMMANDS),
        (("FLUSHALL",), False),
        (("KEYS", "*"), False),
        (("CONFIG", "GET", "maxmemory"), False),
        (("DEBUG", "SLEEP", "0"), False),
    ],
)
def test_access_string_allows_the_store_and_refuses_the_dangerous(
    acl_server: int, command: tuple[str, ...], allowed: bool
) -> None:
    assert _command(acl_server, "ACL", "SETUSER", "router", "reset", *ACCESS_STRING.split()) == b"+OK\r\n"
    answer = _command(acl_server, "ACL", "DRYRUN", "router", *command)
    assert (answer == b"+OK\r\n") is allowed, answer


def test_the_routers_store_runs_every_script_as_the_iam_user(acl_server: int) -> None:
    """The router's own store (lambdas/router/spillway/fleet_store.py), authenticated as a user with exactly the
    construct's access string: every operation goes through (an ACL refusal inside a script raises
    FleetUnavailable), and the same user cannot FLUSHALL."""
    from spillway.fleet import Change, Report  # noqa: PLC0415 (stacks.routing puts the router on the path)
    from spillway.fleet_store import ValkeyFleetStore  # noqa: PLC0415
    from spillway.health import Verdict  # noqa: PLC0415

    assert _command(acl_server, "ACL", "SETUSER", "router", "reset", *ACCESS_STRING.split(), ">pw") == b"+OK\r\n"
    store = ValkeyFleetStore.from_url(
        f"redis://127.0.0.1:{acl_server}/0", connect_timeout_s=2, read_timeout_s=2, credentials=lambda: ("router", "pw")
    )
    target = "claude-sonnet/provisioned/us-east-1"
    try:
        snapshot = store.read([target], 10.0)
        epoch = snapshot.targets[target].epoch
        assert store.acquire_lease(target, "lease-1", 8, 30.0, force=False) == 1
        store.report(target, Report(epoch=epoch, verdict=Verdict.FAILURE, window_s=10.0, lease="lease-1", level=1))
        assert store.transition(target, epoch=epoch, change=Change("open", cooldown_s=0.001)) is True
        time.sleep(0.01)
        store.acquire_probe(target, "probe-1", 1.0)
        assert store.errors == 0, store.last_error
        with pytest.raises(Exception, match="NOPERM"):
            store._conn.call("FLUSHALL")  # the same authenticated connection
    finally:
        store.close()


# --- the platform file -----------------------------------------------------------------------------------------


def test_default_limit_is_the_burst_at_the_longest_plans_budget() -> None:
    document = example()
    del document["router"]["fleet_store"]
    platform = parse(document)
    per_request = fleet_ecpu_per_request(max(f.max_attempts for f in platform.features.values()))
    burst = platform.router.burst_limit
    assert platform.router.fleet_store.max_ecpu_per_second == -(-burst * per_request // 1000) * 1000
    assert platform.router.fleet_store.max_data_storage_gb == 1


def test_a_limit_below_what_the_api_admits_is_refused() -> None:
    def low(document: dict[str, Any]) -> None:
        # 100 requests/s x 16 ECPUs (4 attempts) = 1,600 per second, over the 1,000 allowed here.
        document["router"]["api"].update(rate_limit=100, burst_limit=200)
        document["router"]["fleet_store"]["max_ecpu_per_second"] = 1000

    assert_names_key(rejects(low), "router.fleet_store.max_ecpu_per_second", "below what the API admits")


def test_limits_outside_elasticaches_ranges_are_refused() -> None:
    def storage(document: dict[str, Any]) -> None:
        document["router"]["fleet_store"]["max_data_storage_gb"] = 5001

    def ecpu(document: dict[str, Any]) -> None:
        document["router"]["fleet_store"]["max_ecpu_per_second"] = 15_000_001

    assert_names_key(rejects(storage), "router.fleet_store.max_data_storage_gb", "out of range")
    assert_names_key(rejects(ecpu), "router.fleet_store.max_ecpu_per_second", "out of range")


def test_unknown_fleet_store_field_and_too_long_a_cache_name_are_refused() -> None:
    def unknown(document: dict[str, Any]) -> None:
        document["router"]["fleet_store"]["snapshots"] = 7

    def long_name(document: dict[str, Any]) -> None:
        # Without an escrow model there are no model buckets, whose own 63-character limit would speak first.
        del document["models"]["llama-escrow"], document["features"]["redact-escrow"]
        document["platform"]["name"] = "a" * 30

    assert_names_key(rejects(unknown), "router.fleet_store.snapshots", "unknown field")
    assert_names_key(rejects(long_name), "platform.name", "fleet store's cache name")
