"""The fleet store of one cell: ElastiCache Serverless (Valkey) holding fleet-wide breaker evidence, probe leases and
Provisioned Throughput leases for every execution environment of the router (docs/router-infra.md).

What it builds, and why each piece is shaped so
-----------------------------------------------
- **The cache** (`AWS::ElastiCache::ServerlessCache`, engine valkey): in the cell's isolated subnets (serverless is
  multi-AZ by itself), reached only inside the VPC, TLS always on (serverless refuses plain connections), encrypted
  at rest with its own rotating customer-managed key (its policy keeps administration apart from use, which only
  ElastiCache of the region may make), usage limits from ``router.fleet_store`` (stacks/platform.py sizes
  them from the API's rate and the longest plan). **No snapshots**: everything it holds expires within seconds to
  minutes (evidence windows, cooldowns, leases), and a restored snapshot would bring back leases and breaker states
  that no longer hold, so retention is 0 and there is no daily snapshot or final snapshot.
- **Authentication** is IAM only: one `AWS::ElastiCache::User` with authentication mode ``iam`` (its user id and
  name are the same, as IAM authentication requires) in a valkey user group of its own, the group the cache uses.
  There is no default user and no password anywhere; the router signs a short-lived token for ElastiCache's
  ``connect`` action with its role's credentials. The user's access string allows the read, write, scripting and
  connection command categories and TIME, and removes the dangerous ones (FLUSHALL, CONFIG, KEYS, DEBUG, ...).
- **Network**: its own security group, admitting the cache port only from the router function's security group;
  the router's group gets the matching egress rule to this group only (both rules live in the router stack).
- **Grant**: a customer-managed policy (`connect_policy`, which RouterFunction attaches to the router's role),
  ``elasticache:Connect`` on this cache's ARN and this user's ARN, nothing else.
- **What the router reads** (`environment`): ``SPILLWAY_FLEET_STORE_URL`` (``rediss://<endpoint>:<port>``),
  ``SPILLWAY_FLEET_STORE_USER`` (the user id the token is signed for) and ``SPILLWAY_FLEET_STORE_CACHE`` (the cache
  name, the host of the signed request).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_elasticache as elasticache
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

from spillway.fleet_store import ACCESS_STRING as STORE_ACCESS_STRING
from stacks.constructs.key_policy import ServiceUse, restrict_key_policy
from stacks.constructs.private_endpoint import ec2_description
from stacks.naming import partition_of
from stacks.platform import FleetStoreSettings, fleet_cache_name

ENGINE = "valkey"
MAJOR_ENGINE_VERSION = "8"
PORT = 6379  # a serverless cache's endpoint port (its reader endpoint, 6380, is not used: the router reads its writes)
# What the router's store needs (its commands, as an ACL access string) is the router's to say. Keys are not
# restricted: the cache is this router's alone and holds nothing else.
ACCESS_STRING = STORE_ACCESS_STRING
ENV_URL = "SPILLWAY_FLEET_STORE_URL"
ENV_USER = "SPILLWAY_FLEET_STORE_USER"
ENV_CACHE = "SPILLWAY_FLEET_STORE_CACHE"


def cache_arn(platform: str, account: str, region: str) -> str:
    name = fleet_cache_name(platform, region)
    return f"arn:{partition_of(region)}:elasticache:{region}:{account}:serverlesscache:{name}"


def user_arn(platform: str, account: str, region: str) -> str:
    return f"arn:{partition_of(region)}:elasticache:{region}:{account}:user:{fleet_cache_name(platform, region)}"


class FleetStore(Construct):
    """One cell's ElastiCache Serverless (Valkey) fleet store, reachable by the router function only."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        platform: str,
        account: str,
        region: str,
        settings: FleetStoreSettings,
        vpc: ec2.IVpc,
        subnets: Sequence[ec2.ISubnet],
        router_security_group: ec2.ISecurityGroup,
    ) -> None:
        super().__init__(scope, construct_id)
        self.cache_name = fleet_cache_name(platform, region)
        self.user_id = self.cache_name  # IAM authentication: user id and user name are one and the same
        self.cache_arn = cache_arn(platform, account, region)
        self.user_arn = user_arn(platform, account, region)

        self.key = kms.Key(
            self,
            "Key",
            alias=f"alias/{self.cache_name}",
            description=f"{platform} fleet store in {region}: ElastiCache Serverless data at rest",
            enable_key_rotation=True,
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        # Administration apart from use (stacks/constructs/key_policy.py): its only use is ElastiCache of this region
        # working for callers of this account, through the grants ElastiCache creates.
        restrict_key_policy(self.key, uses=[ServiceUse("elasticache")])

        self.security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=vpc,
            description=ec2_description(f"{self.cache_name}: Valkey {PORT} from the router function only"),
            allow_all_outbound=False,  # a cache never initiates connections
        )
        # Ingress here from the router's group, and egress on the router's group to this group only.
        self.security_group.connections.allow_from(
            router_security_group, ec2.Port.tcp(PORT), "Valkey (TLS, IAM auth): the router function to its fleet store"
        )

        self.user = elasticache.CfnUser(
            self,
            "User",
            engine=ENGINE,
            user_id=self.user_id,
            user_name=self.user_id,
            authentication_mode={"Type": "iam"},
            access_string=ACCESS_STRING,
        )
        self.user_group = elasticache.CfnUserGroup(
            self, "UserGroup", engine=ENGINE, user_group_id=self.cache_name, user_ids=[self.user_id]
        )
        self.user_group.add_resource_dependency(self.user)

        self.cache = elasticache.CfnServerlessCache(
            self,
            "Cache",
            serverless_cache_name=self.cache_name,
            description=f"{platform} router fleet state in {region}: breaker evidence, probe and PT leases",
            engine=ENGINE,
            major_engine_version=MAJOR_ENGINE_VERSION,
            # ConnectionType stays at its default, vpc: aws-cdk-lib 2.275's built-in CloudFormation validation does
            # not know the property yet (F3002). tests/infra/test_fleet_store.py refuses "public".
            network_type="ipv4",
            subnet_ids=[subnet.subnet_id for subnet in subnets],
            security_group_ids=[self.security_group.security_group_id],
            kms_key_id=self.key.key_arn,
            user_group_id=self.user_group.user_group_id,
            snapshot_retention_limit=0,  # nothing in it outlives a few minutes; a restore would resurrect stale leases
            cache_usage_limits=elasticache.CfnServerlessCache.CacheUsageLimitsProperty(
                data_storage=elasticache.CfnServerlessCache.DataStorageProperty(
                    unit="GB", maximum=settings.max_data_storage_gb
                ),
                ecpu_per_second=elasticache.CfnServerlessCache.ECPUPerSecondProperty(
                    maximum=settings.max_ecpu_per_second
                ),
            ),
        )
        self.cache.add_resource_dependency(self.user_group)

        self.connect_policy = iam.ManagedPolicy(
            self,
            "ConnectPolicy",
            description=f"The router connects to its fleet store {self.cache_name} as its IAM-authenticated user",
            statements=[
                iam.PolicyStatement(
                    sid="FleetStoreConnect",
                    actions=["elasticache:Connect"],
                    resources=[self.cache_arn, self.user_arn],
                )
            ],
        )

    @property
    def environment(self) -> Mapping[str, str]:
        """The function's environment variables for the store (lambdas/router reads them)."""
        return {
            ENV_URL: f"rediss://{self.cache.attr_endpoint_address}:{self.cache.attr_endpoint_port}",
            ENV_USER: self.user_id,
            ENV_CACHE: self.cache_name,
        }
