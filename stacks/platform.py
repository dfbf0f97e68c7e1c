"""The platform config schema: config/platform.yaml, read and validated once, before any construct exists.

Every problem is reported as one PlatformConfigError that names the file and the dotted key
(`config/platform.yaml: features.summarize-thread.models[1]: unknown model 'nova-pro'`), so a platform engineer
never reads a Python or jsii traceback to find a typo. The dataclasses below are the only view of the config
that stacks get: frozen, typed, and already cross-checked (references resolve, CIDRs do not overlap).
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from stacks.naming import (
    BucketNameTooLong,
    access_logs_bucket_name,
    artifact_bucket_name,
    partition_of,
    provisioned_model_name,
)
from stacks.providers import OpenAIModel, Provider, parse_openai_model, parse_providers

Capacity = Literal["provisioned", "on_demand"]
CAPACITIES: tuple[Capacity, ...] = ("provisioned", "on_demand")
ModelKind = Literal["bedrock", "sagemaker", "openai"]

# Regions a cell may be placed in: AWS commercial regions with Bedrock runtime and SageMaker, plus GovCloud.
KNOWN_REGIONS: frozenset[str] = frozenset(
    {
        "us-east-1", "us-east-2", "us-west-1", "us-west-2", "ca-central-1", "sa-east-1",
        "eu-west-1", "eu-west-2", "eu-west-3", "eu-central-1", "eu-central-2", "eu-north-1", "eu-south-1",
        "eu-south-2", "ap-northeast-1", "ap-northeast-2", "ap-northeast-3", "ap-south-1", "ap-south-2",
        "ap-southeast-1", "ap-southeast-2", "ap-southeast-3", "ap-southeast-4", "me-central-1",
        "us-gov-west-1", "us-gov-east-1",
    }
)  # fmt: skip

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,38}[a-z0-9]$")
_ACCOUNT = re.compile(r"^[0-9]{12}$")
_PROVISIONED_ARN = re.compile(
    r"^arn:aws(-us-gov)?:bedrock:(?P<region>[a-z0-9-]+):(?P<account>[0-9]{12}):provisioned-model/[a-z0-9]{1,64}$"
)
_MODEL_ID = re.compile(r"^[a-z0-9][a-z0-9.:-]{2,127}$")
_IMAGE_URI = re.compile(r"^[0-9]{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com/[a-z0-9._/-]+[:@][A-Za-z0-9._:-]+$")
_S3_URI = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/.+$")
_INSTANCE_TYPE = re.compile(r"^ml\.(?P<family>[a-z0-9-]+)\.[a-z0-9]+$")
# Instance families with local NVMe storage: SageMaker refuses a KMS key on their endpoint config (the local volume
# is encrypted by the instance's hardware module), and this platform requires a customer-managed key on every
# endpoint config. Such a type would fail at deploy time; the schema says so at synth time instead.
_LOCAL_STORAGE_FAMILIES = frozenset(
    {
        "c5d", "m5d", "r5d", "c6id", "m6id", "r6id", "g4dn", "g5", "g6", "g6e", "gr6", "p3dn", "p4d", "p4de",
        "p5", "p5e", "p5en", "trn1", "trn1n", "x2idn",
    }
)  # fmt: skip
# Application Auto Scaling schedule expressions: at(yyyy-mm-ddThh:mm:ss), rate(n unit), cron(6 fields).
_SCHEDULE = re.compile(
    r"^(at\(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\)"
    r"|rate\([1-9][0-9]* (minute|minutes|hour|hours|day|days)\)"
    r"|cron\(\S+ \S+ \S+ \S+ \S+ \S+\))$"
)
_TIMEZONE = re.compile(r"^(UTC|[A-Z][A-Za-z_]+(/[A-Za-z0-9_+-]+){1,2})$")
_COST_CENTER = re.compile(r"^[A-Za-z0-9 _.:/=+@-]{1,256}$")
_PREFIX_LIST = re.compile(r"^pl-[0-9a-f]{8,17}$")
GATEWAY_SERVICES = ("s3",)  # the models' artifacts and image layers; the router uses no gateway
# Bedrock's commitment terms for Provisioned Throughput, as the config spells them, and as the API spells them.
COMMITMENTS: Mapping[str, str | None] = {"NO_COMMITMENT": None, "ONE_MONTH": "OneMonth", "SIX_MONTHS": "SixMonths"}
_RETENTION_DAYS = frozenset(
    {1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653}
)


class PlatformConfigError(ValueError):
    """One clear message naming the file and the key; raised before any construct exists."""

    def __init__(self, source: str, key: str, message: str) -> None:
        self.source, self.key, self.detail = source, key, message
        where = f"{source}: {key}: " if key else f"{source}: "
        super().__init__(where + message)


def purchase_sentence(model_units: int, commitment: str, model_id: str, region: str) -> str:
    """What `acknowledge_cost` must say, word for word: a change of units, term, model or region invalidates it."""
    term = "no commitment (billed hourly)" if commitment == "NO_COMMITMENT" else commitment
    return (
        f"I accept a paid Provisioned Throughput of {model_units} model unit(s) of {model_id} in {region}, term {term}"
    )


@dataclass(frozen=True, slots=True)
class Region:
    name: str
    vpc_cidr: str
    availability_zones: tuple[str, ...]
    # AWS-managed prefix list id of each gateway service (s3) in the region: the security groups' egress
    # to the gateway endpoints. Synthesis makes no lookup, so the platform file names them.
    prefix_lists: Mapping[str, str] = field(default_factory=dict)

    @property
    def partition(self) -> str:
        return partition_of(self.name)


@dataclass(frozen=True, slots=True)
class InferenceProfile:
    """A cross-region inference profile and the regions it may route a request to."""

    id: str
    regions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ProvisionedPurchase:
    """Provisioned Throughput the models stack buys: a paid commitment, opted into twice (see `purchase_sentence`)."""

    model_units: int
    commitment: str  # a key of COMMITMENTS
    name: str  # the provisioned model's name in Bedrock: also its idempotency handle

    @property
    def commitment_duration(self) -> str | None:
        """The term as CreateProvisionedModelThroughput spells it; None means no commitment (hourly)."""
        return COMMITMENTS[self.commitment]


@dataclass(frozen=True, slots=True)
class Provisioned:
    """Bedrock Provisioned Throughput: an existing ARN, or a purchase the models stack makes (opt-in, then the
    ARN is only known at deploy time and `arn` is None)."""

    arn: str | None
    max_in_flight: int
    purchase: ProvisionedPurchase | None = None


@dataclass(frozen=True, slots=True)
class ScheduledCapacity:
    """A known peak: Application Auto Scaling moves the endpoint's bounds at `expression`, ahead of the load."""

    name: str
    expression: str
    min_instances: int
    max_instances: int
    timezone: str


@dataclass(frozen=True, slots=True)
class EscrowEndpoint:
    """A SageMaker endpoint we size ourselves, inside the escrow VPC."""

    image_uri: str
    model_data_url: str
    instance_type: str
    min_instances: int
    max_instances: int
    max_in_flight: int
    invocations_per_instance: int = 60
    schedule: tuple[ScheduledCapacity, ...] = ()

    @property
    def artifact_bucket(self) -> str:
        return self.model_data_url.removeprefix("s3://").split("/", 1)[0]

    @property
    def artifact_key(self) -> str:
        return self.model_data_url.removeprefix("s3://").split("/", 1)[1]

    @property
    def artifact_prefix(self) -> str:
        """The folder the execution role may read: the artifact's own, never the bucket."""
        return self.artifact_key.rsplit("/", 1)[0] + "/"


@dataclass(frozen=True, slots=True)
class ModelRegion:
    """What one model offers in one region: its capacities."""

    on_demand: bool
    provisioned: Provisioned | None
    endpoint: EscrowEndpoint | None
    # An openai model's capacity here: on_demand (a managed provider) or provisioned (a self-hosted server we size).
    served_as: Capacity | None = None

    @property
    def purchase(self) -> ProvisionedPurchase | None:
        return self.provisioned.purchase if self.provisioned is not None else None

    @property
    def capacities(self) -> tuple[Capacity, ...]:
        if self.served_as is not None:
            return (self.served_as,)
        offered: list[Capacity] = []
        if self.provisioned is not None or self.endpoint is not None:
            offered.append("provisioned")
        if self.on_demand:
            offered.append("on_demand")
        return tuple(offered)


@dataclass(frozen=True, slots=True)
class Model:
    name: str
    kind: ModelKind
    model_id: str | None
    inference_profile: InferenceProfile | None
    regions: Mapping[str, ModelRegion]
    openai: OpenAIModel | None = None  # kind openai: its provider and the endpoint's model name (stacks/providers.py)


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """A feature as the platform file declares it; rendered to the routing table, where the router reads it as
    spillway.config.Feature (stacks/routing.py)."""

    name: str
    first_capacity: Capacity
    models: tuple[str, ...]
    home_region: str
    failover_regions: tuple[str, ...]
    deadline_ms: int
    max_attempts: int
    # Router knobs (attempt timeouts, expansion order, breaker thresholds), passed through to the routing table
    # and validated there by the router's own loader (stacks/routing.py), so the two schemas cannot drift.
    routing: Mapping[str, Any]
    # What the platform decides of the feature's Bedrock requests: service_tier, latency, and which of them a
    # caller may override (caller_may_override); rendered to the routing table's `converse` (stacks/routing.py).
    converse: Mapping[str, Any] = field(default_factory=dict)

    @property
    def regions(self) -> tuple[str, ...]:
        return (self.home_region, *self.failover_regions)

    @property
    def guardrail(self) -> str | None:
        """The name of the platform guardrail (`guardrails:`) Bedrock applies to this feature's requests, if any."""
        name = self.converse.get("guardrail")
        return str(name) if name is not None else None


@dataclass(frozen=True, slots=True)
class CallingService:
    """One service that calls the router: its own API key and usage plan, i.e. its own throttle and quota."""

    name: str
    rate_limit: int  # steady requests per second
    burst_limit: int  # token-bucket size
    quota_per_day: int | None  # requests per day; None = no quota


# The fleet store's ECPU budget per request (ElastiCache bills 1 ECPU per KB moved; scripts cost more vCPU time):
# one read of the feature's targets, one evidence write per attempt, and a PT lease taken and given back.
FLEET_READ_ECPU = 4
FLEET_WRITE_ECPU = 2
FLEET_LEASE_ECPU = 2
FLEET_CACHE_NAME_MAX = 40  # ElastiCache serverless cache names and user ids: at most 40 characters


def fleet_ecpu_per_request(max_attempts: int) -> int:
    """ECPUs one request may spend on the fleet store: a read, an evidence write per attempt, two lease operations."""
    return FLEET_READ_ECPU + FLEET_WRITE_ECPU * max_attempts + 2 * FLEET_LEASE_ECPU


def fleet_cache_name(platform: str, region: str) -> str:
    """The cell's ElastiCache serverless cache (and its IAM-authenticated user): `<platform>-fleet-<region>`."""
    return f"{platform}-fleet-{region}"


@dataclass(frozen=True, slots=True)
class FleetStoreSettings:
    """`router.fleet_store`: the usage limits of each cell's ElastiCache Serverless (Valkey) fleet store."""

    max_ecpu_per_second: int  # ElastiCache allows 1,000 - 15,000,000
    max_data_storage_gb: int  # 1 - 5,000; the store holds a few KB per target


@dataclass(frozen=True, slots=True)
class RouterSettings:
    """The `router:` section: the API in front of the router Lambda and the Lambda itself (stacks/router.py)."""

    endpoint_type: Literal["private", "regional"] = "private"
    allowed_callers: tuple[str, ...] = ()  # 12-digit account ids or IAM role ARNs, exact
    caller_vpc_endpoints: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # private API only
    # Subnets of callers inside a cell's VPC (its free upper half, never the router and model subnets): the only
    # addresses the cell's execute-api endpoint admits. None: the endpoint admits no one (callers use their own).
    caller_cidrs: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    rate_limit: int = 100  # the stage's throttle, all callers together
    burst_limit: int = 200
    calling_services: Mapping[str, CallingService] = field(default_factory=dict)
    # API Gateway's CloudWatch role is one setting per account and region (AWS::ApiGateway::Account), shared by
    # every REST API there: the router stack sets it only when the platform file says so.
    account_cloudwatch_role: bool = False
    reserved_concurrency: int = 20
    memory_mb: int = 1024
    appconfig_extension_layer_arns: Mapping[str, str] = field(default_factory=dict)
    fleet_store: FleetStoreSettings = field(default_factory=lambda: FleetStoreSettings(7000, 1))
    configured: bool = False  # False when the platform file has no `router:` section

    def extension_layer_arn(self, source: str, region: str) -> str:
        arn = self.appconfig_extension_layer_arns.get(region)
        if arn is None:
            key = "router" if not self.configured else f"router.appconfig_extension_layer_arns.{region}"
            raise PlatformConfigError(
                source, key, f"the router of {region} needs the AWS AppConfig Lambda extension layer (arm64) ARN"
            )
        return arn


@dataclass(frozen=True, slots=True)
class DeniedTopic:
    name: str
    definition: str
    examples: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Guardrail:
    """An AWS::Bedrock::Guardrail of the platform file's `guardrails:` (stacks/constructs/guardrail.py builds it)."""

    name: str
    blocked_input_message: str
    blocked_output_message: str
    content_filters: Mapping[str, str] = field(default_factory=dict)  # filter type -> strength (input and output)
    denied_topics: tuple[DeniedTopic, ...] = ()
    words: tuple[str, ...] = ()
    managed_word_lists: tuple[str, ...] = ()  # PROFANITY
    sensitive_information: Mapping[str, str] = field(default_factory=dict)  # PII entity type -> BLOCK | ANONYMIZE


@dataclass(frozen=True, slots=True)
class Platform:
    source: str
    name: str
    account: str
    log_retention_days: int
    regions: Mapping[str, Region]
    models: Mapping[str, Model]
    features: Mapping[str, FeatureSpec]
    # Buying Provisioned Throughput needs this switch AND a per-model `create` block with the exact sentence.
    allow_provisioned_purchase: bool = False
    cost_center: str = ""
    # The roles that may write escrow model artifacts (the release pipeline); every other principal is denied.
    artifact_publishers: tuple[str, ...] = ()
    router: RouterSettings = field(default_factory=RouterSettings)
    guardrails: Mapping[str, Guardrail] = field(default_factory=dict)
    providers: Mapping[str, Provider] = field(default_factory=dict)  # OpenAI-compatible providers (`providers:`)

    def guardrails_in(self, region: str) -> tuple[str, ...]:
        """The guardrails `region`'s models stack builds: those of the features homed there (a guarded feature has
        no failover region, so its home is the only cell that applies it)."""
        return tuple(sorted({g for f in self.features.values() if f.home_region == region and (g := f.guardrail)}))

    @property
    def region_names(self) -> tuple[str, ...]:
        """Regions in a stable order: the order of deployment and of every generated list."""
        return tuple(sorted(self.regions))

    def features_served_in(self, region: str) -> tuple[FeatureSpec, ...]:
        """A cell serves the features that name its region as home or failover."""
        return tuple(f for f in self.features.values() if region in f.regions)


# --- reading -------------------------------------------------------------------------------------------------

T = TypeVar("T")


class _Reader:
    """Walks the parsed YAML with the dotted path of every value, so each error can name its key."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, message: str) -> PlatformConfigError:
        return PlatformConfigError(self.source, key, message)

    def mapping(self, value: object, key: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(key, f"expected a mapping, got {_type_name(value)}")
        for name in value:
            if not isinstance(name, str):
                raise self.fail(key, f"keys must be strings, got {_type_name(name)} {name!r}")
        return value

    def fields(
        self, value: object, key: str, required: Sequence[str], optional: Sequence[str] = ()
    ) -> Mapping[str, Any]:
        data = self.mapping(value, key)
        for name in required:
            if name not in data or data[name] is None:
                raise self.fail(_join(key, name), "missing required field")
        unknown = sorted(set(data) - set(required) - set(optional))
        if unknown:
            allowed = ", ".join(sorted((*required, *optional)))
            raise self.fail(_join(key, unknown[0]), f"unknown field (allowed here: {allowed})")
        return data

    def string(self, value: object, key: str, pattern: re.Pattern[str] | None = None, what: str = "") -> str:
        if not isinstance(value, str):
            raise self.fail(key, f"expected a string, got {_type_name(value)}")
        if pattern is not None and not pattern.match(value):
            raise self.fail(key, f"{value!r} is not a valid {what or 'value'}")
        return value

    def integer(self, value: object, key: str, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"expected an integer, got {_type_name(value)}")
        if not low <= value <= high:
            raise self.fail(key, f"{value} is out of range [{low}, {high}]")
        return value

    def boolean(self, value: object, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, f"expected true or false, got {_type_name(value)}")
        return value

    def strings(
        self, value: object, key: str, item: Callable[[object, str], str], *, min_items: int = 0
    ) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise self.fail(key, f"expected a list, got {_type_name(value)}")
        if len(value) < min_items:
            raise self.fail(key, f"needs at least {min_items} item(s), got {len(value)}")
        items = tuple(item(v, f"{key}[{i}]") for i, v in enumerate(value))
        for i, v in enumerate(items):
            if v in items[:i]:
                raise self.fail(f"{key}[{i}]", f"duplicate {v!r}")
        return items

    def region(self, value: object, key: str) -> str:
        name = self.string(value, key)
        if name not in KNOWN_REGIONS:
            raise self.fail(key, f"unknown region {name!r}")
        return name


def _type_name(value: object) -> str:
    return "nothing" if value is None else type(value).__name__


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def load_platform(path: str | Path) -> Platform:
    """Read and validate a platform file; every problem is a PlatformConfigError naming the file and key."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise PlatformConfigError(source, "", f"cannot read the file ({error.strerror})") from None
    return parse_platform(text, source)


def parse_platform(text: str, source: str = "<platform>") -> Platform:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(error, "problem", None) or "invalid YAML"
        raise PlatformConfigError(source, "", f"{where}{problem}") from None
    _reject_duplicate_keys(text, source)
    read = _Reader(source)
    top = read.fields(
        document,
        "",
        required=("platform", "regions", "models", "features"),
        optional=("router", "guardrails", "providers"),
    )
    settings = read.fields(top["platform"], "platform", ("name", "account"),
                           ("log_retention_days", "allow_provisioned_purchase", "cost_center",
                            "artifact_publishers"))  # fmt: skip
    name = read.string(settings["name"], "platform.name", _NAME, "name (lowercase letters, digits, dashes)")
    account = read.string(settings["account"], "platform.account", _ACCOUNT, "12-digit account id")
    retention = read.integer(settings.get("log_retention_days", 365), "platform.log_retention_days", 1, 3653)
    if retention not in _RETENTION_DAYS:
        raise read.fail("platform.log_retention_days", f"{retention} is not a CloudWatch Logs retention period")

    allow_purchase = read.boolean(
        settings.get("allow_provisioned_purchase", False), "platform.allow_provisioned_purchase"
    )
    cost_center = read.string(
        settings.get("cost_center", name), "platform.cost_center", _COST_CENTER, "cost-center tag"
    )

    publishers = read.strings(
        settings.get("artifact_publishers", []),
        "platform.artifact_publishers",
        lambda v, k: read.string(v, k, _CALLER, "publisher: an exact IAM role ARN"),
    )

    regions = _regions(read, top["regions"])
    providers = parse_providers(read, top.get("providers") or {}, regions, account)
    models = _models(read, top["models"], regions, account, name, providers=providers)
    guardrails = _guardrails(read, top.get("guardrails") or {})
    features = _features(read, top["features"], regions, models, guardrails)
    purchases = [
        f"models.{m.name}.regions.{r}.provisioned.create"
        for m in models.values()
        for r, offer in m.regions.items()
        if offer.purchase is not None
    ]
    if purchases and not allow_purchase:
        raise read.fail(
            purchases[0],
            "buys Provisioned Throughput (a paid commitment) but platform.allow_provisioned_purchase is not true",
        )
    if allow_purchase and not purchases:
        raise read.fail(
            "platform.allow_provisioned_purchase",
            "is true but no model has a provisioned.create block: remove it so no purchase stays armed",
        )
    platform = Platform(
        source,
        name,
        account,
        retention,
        regions,
        models,
        features,
        allow_purchase,
        cost_center,
        artifact_publishers=publishers,
        router=_router(read, top.get("router"), regions, features, name),
        guardrails=guardrails,
        providers=providers,
    )
    _check_concurrency(read, platform)
    return platform


def _longest_deadline_s(features: Mapping[str, FeatureSpec]) -> int:
    return -(-max((f.deadline_ms for f in features.values()), default=1000) // 1000)


def served_deadline_s(platform: Platform, region: str) -> int:
    """The longest deadline of the features the cell serves, in whole seconds (rounded up)."""
    deadlines = [f.deadline_ms for f in platform.features_served_in(region)] or [1000]
    return -(-max(deadlines) // 1000)


def executions_needed(rate_per_s: float, deadline_s: float) -> int:
    """Little's law: the executions `rate_per_s` requests/s can hold at once when each may hold one for `deadline_s`
    (requests in flight = arrival rate x time in the system), rounded up. The local fleet's benchmarks size their
    reserved concurrency with it too."""
    return math.ceil(rate_per_s * deadline_s)


def _check_concurrency(read: _Reader, platform: Platform) -> None:
    """The stage's throttle, the usage plans and the reserved concurrency must agree, or Lambda throttles first.

    Little's law: requests in flight = arrival rate x time in the system. A request may hold an execution for the
    longest deadline the cell serves, so the stage's rate times that deadline must fit the reserved concurrency, a
    burst arrives at once (each request takes an execution), and the calling services' plans together must fit the
    stage (else the stage throttles a service within its own plan).
    """
    settings = platform.router
    if not settings.configured:
        return
    for region in platform.region_names:
        deadline = served_deadline_s(platform, region)
        needed = executions_needed(settings.rate_limit, deadline)
        if needed > settings.reserved_concurrency:
            raise read.fail(
                "router.reserved_concurrency",
                f"{settings.reserved_concurrency} cannot carry router.api.rate_limit {settings.rate_limit}/s in "
                f"{region}, whose longest deadline is {deadline} s: rate x deadline = {needed} executions "
                "(Little's law); raise it or lower the rate",
            )
    if settings.burst_limit > settings.reserved_concurrency:
        raise read.fail(
            "router.api.burst_limit",
            f"{settings.burst_limit} is over router.reserved_concurrency {settings.reserved_concurrency}: a burst "
            "arrives at once and each request holds an execution",
        )
    planned = sum(service.rate_limit for service in settings.calling_services.values())
    if planned > settings.rate_limit:
        raise read.fail(
            "router.calling_services",
            f"the usage plans add up to {planned} requests/s, over router.api.rate_limit {settings.rate_limit}: the "
            "stage would throttle a service within its own plan",
        )


def _reject_duplicate_keys(text: str, source: str) -> None:
    """YAML keeps the last of two equal keys without a word; a platform file must not (duplicate model names...)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return  # safe_load already reported it

    def walk(node: yaml.Node | None, key: str) -> None:
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for name_node, value_node in node.value:
                name = name_node.value if isinstance(name_node, yaml.ScalarNode) else None
                if name is not None:
                    line = name_node.start_mark.line + 1
                    if name in seen:
                        raise PlatformConfigError(
                            source,
                            _join(key, name),
                            f"duplicate key {name!r} at line {line} (first at line {seen[name]}); "
                            "YAML would silently keep only the last one",
                        )
                    seen[name] = line
                walk(value_node, _join(key, str(name)))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, f"{key}[{i}]")

    walk(root, "")


def _regions(read: _Reader, value: object) -> dict[str, Region]:
    raw = read.mapping(value, "regions")
    if not raw:
        raise read.fail("regions", "needs at least one region")
    regions: dict[str, Region] = {}
    networks: dict[str, ipaddress.IPv4Network] = {}
    for name, body in raw.items():
        key = f"regions.{name}"
        read.region(name, key)
        data = read.fields(body, key, ("vpc_cidr", "availability_zones", "gateway_prefix_lists"))
        cidr_text = read.string(data["vpc_cidr"], f"{key}.vpc_cidr")
        try:
            network = ipaddress.IPv4Network(cidr_text, strict=True)
        except ValueError:
            raise read.fail(f"{key}.vpc_cidr", f"{cidr_text!r} is not an IPv4 CIDR block") from None
        if not (network.is_private and 16 <= network.prefixlen <= 24):
            raise read.fail(f"{key}.vpc_cidr", f"{cidr_text} must be a private range between /16 and /24")
        for other, other_network in networks.items():
            if network.overlaps(other_network):
                raise read.fail(f"{key}.vpc_cidr", f"{cidr_text} overlaps regions.{other}.vpc_cidr ({other_network})")
        networks[name] = network
        zones = read.strings(data["availability_zones"], f"{key}.availability_zones", read.string, min_items=2)
        for i, zone in enumerate(zones):
            if not re.fullmatch(re.escape(name) + r"[a-z]", zone):
                raise read.fail(f"{key}.availability_zones[{i}]", f"{zone!r} is not a zone of {name}")
        lists_key = f"{key}.gateway_prefix_lists"
        if isinstance(data["gateway_prefix_lists"], Mapping) and "dynamodb" in data["gateway_prefix_lists"]:
            raise read.fail(
                f"{lists_key}.dynamodb",
                "no longer used: the router keeps its shared state in the fleet store (ElastiCache), so the VPC has "
                "no DynamoDB gateway endpoint; delete this key",
            )
        prefix_lists = read.fields(data["gateway_prefix_lists"], lists_key, GATEWAY_SERVICES)
        for service in GATEWAY_SERVICES:
            read.string(
                prefix_lists[service],
                f"{key}.gateway_prefix_lists.{service}",
                _PREFIX_LIST,
                f"the AWS-managed prefix list id of com.amazonaws.{name}.{service} (aws ec2 describe-prefix-lists)",
            )
        regions[name] = Region(name, str(network), zones, {s: prefix_lists[s] for s in GATEWAY_SERVICES})
    return regions


def _models(
    read: _Reader,
    value: object,
    regions: Mapping[str, Region],
    account: str,
    platform: str,
    *,
    providers: Mapping[str, Provider],
) -> dict[str, Model]:
    raw = read.mapping(value, "models")
    if not raw:
        raise read.fail("models", "needs at least one model")
    models: dict[str, Model] = {}
    for name, body in raw.items():
        key = f"models.{name}"
        read.string(name, key, _NAME, "model name (lowercase letters, digits, dashes)")
        kind = read.mapping(body, key).get("kind")
        parse = MODEL_PARSERS.get(kind) if isinstance(kind, str) else None
        if parse is None:
            known = " or ".join(f"'{k}'" for k in MODEL_PARSERS)
            raise read.fail(f"{key}.kind", f"expected {known}, got {kind!r}")
        models[name] = parse(read, name, body, regions, account=account, platform=platform, providers=providers)
    return models


def _model_regions(read: _Reader, key: str, value: object, regions: Mapping[str, Region]) -> Mapping[str, Any]:
    raw = read.mapping(value, f"{key}.regions")
    if not raw:
        raise read.fail(f"{key}.regions", "needs at least one region")
    for region in raw:
        read.region(region, f"{key}.regions.{region}")
        if region not in regions:
            raise read.fail(f"{key}.regions.{region}", f"region {region!r} has no cell (add it under regions)")
    return raw


def _bedrock_model(
    read: _Reader, name: str, body: object, regions: Mapping[str, Region], *, account: str, platform: str, **_: Any
) -> Model:
    key = f"models.{name}"
    data = read.fields(body, key, ("kind", "model_id", "regions"), ("inference_profile",))
    model_id = read.string(data["model_id"], f"{key}.model_id", _MODEL_ID, "Bedrock model id")
    profile = None
    if data.get("inference_profile") is not None:
        pkey = f"{key}.inference_profile"
        raw_profile = read.fields(data["inference_profile"], pkey, ("id", "regions"))
        profile_id = read.string(raw_profile["id"], f"{pkey}.id", _MODEL_ID, "inference profile id")
        if not profile_id.endswith(model_id):
            raise read.fail(f"{pkey}.id", f"{profile_id!r} is not a profile of model {model_id!r}")
        profile_regions = read.strings(raw_profile["regions"], f"{pkey}.regions", read.region, min_items=1)
        profile = InferenceProfile(profile_id, profile_regions)
    per_region: dict[str, ModelRegion] = {}
    for region, raw in _model_regions(read, key, data["regions"], regions).items():
        rkey = f"{key}.regions.{region}"
        entry = read.fields(raw, rkey, (), ("on_demand", "provisioned"))
        on_demand = read.boolean(entry.get("on_demand", False), f"{rkey}.on_demand")
        if on_demand and profile is not None and region not in profile.regions:
            raise read.fail(f"{rkey}.on_demand", f"inference profile {profile.id!r} does not serve {region}")
        provisioned = None
        if entry.get("provisioned") is not None:
            pkey = f"{rkey}.provisioned"
            raw_pt = read.fields(entry["provisioned"], pkey, (), ("arn", "create", "max_in_flight"))
            in_flight = read.integer(raw_pt.get("max_in_flight", 8), f"{pkey}.max_in_flight", 1, 10_000)
            has_arn, has_create = raw_pt.get("arn") is not None, raw_pt.get("create") is not None
            if has_arn == has_create:
                raise read.fail(pkey, "needs exactly one of arn (an existing Provisioned Throughput) or create")
            if has_arn:
                arn = read.string(raw_pt["arn"], f"{pkey}.arn", _PROVISIONED_ARN, "provisioned-model ARN")
                match = _PROVISIONED_ARN.match(arn)
                assert match is not None  # checked just above
                if match["region"] != region or match["account"] != account:
                    raise read.fail(f"{pkey}.arn", f"must be in {region} and account {account}")
                provisioned = Provisioned(arn, in_flight)
            else:
                purchase = _purchase(read, f"{pkey}.create", raw_pt["create"], model_id=model_id, region=region,
                                     name=provisioned_model_name(platform, name, region))  # fmt: skip
                provisioned = Provisioned(None, in_flight, purchase)
        if not on_demand and provisioned is None:
            raise read.fail(rkey, "offers no capacity: set on_demand: true or provisioned")
        per_region[region] = ModelRegion(on_demand, provisioned, None)
    return Model(name, "bedrock", model_id, profile, per_region)


def _purchase(read: _Reader, key: str, value: object, *, model_id: str, region: str, name: str) -> ProvisionedPurchase:
    """A Provisioned Throughput purchase: units, term, and the cost sentence that must match them word for word."""
    data = read.mapping(value, key)
    if data.get("model_units") is None:
        raise read.fail(f"{key}.model_units", "missing required field: how many model units to buy (1 or more)")
    data = read.fields(value, key, ("model_units", "commitment", "acknowledge_cost"))
    units = read.integer(data["model_units"], f"{key}.model_units", 1, 100)
    commitment = data["commitment"]
    if commitment not in COMMITMENTS:
        raise read.fail(
            f"{key}.commitment", f"unknown commitment term {commitment!r} (expected one of: {', '.join(COMMITMENTS)})"
        )
    expected = purchase_sentence(units, commitment, model_id, region)
    said = read.string(data["acknowledge_cost"], f"{key}.acknowledge_cost")
    if said.strip() != expected:
        raise read.fail(f"{key}.acknowledge_cost", f"must read exactly: {expected!r}")
    return ProvisionedPurchase(units, commitment, name)


def _sagemaker_model(
    read: _Reader, name: str, body: object, regions: Mapping[str, Region], *, account: str, platform: str, **_: Any
) -> Model:
    key = f"models.{name}"
    data = read.fields(body, key, ("kind", "regions"))
    per_region: dict[str, ModelRegion] = {}
    for region, raw in _model_regions(read, key, data["regions"], regions).items():
        rkey = f"{key}.regions.{region}"
        ekey = f"{rkey}.endpoint"
        # The buckets an escrow model implies: the region's access-log bucket (the platform's), then its own.
        try:
            access_logs_bucket_name(platform, account, region)
        except BucketNameTooLong as error:
            raise read.fail("platform.name", f"too long for the S3 buckets of {region} ({error}): shorten it") from None
        try:
            artifact_bucket_name(platform, name, account, region)
        except BucketNameTooLong as error:
            raise read.fail(key, f"the model's artifact bucket in {region}: {error}; shorten the model name") from None
        raw_endpoint = read.fields(raw, rkey, ("endpoint",))["endpoint"]
        if read.mapping(raw_endpoint, ekey).get("model_data_url") is None:
            bucket = artifact_bucket_name(platform, name, account, region)
            raise read.fail(
                f"{ekey}.model_data_url",
                f"a SageMaker escrow model needs its artifact: the s3:// URI of its model.tar.gz in s3://{bucket}/",
            )
        endpoint = read.fields(raw_endpoint, ekey,
                               ("image_uri", "model_data_url", "instance_type"),
                               ("min_instances", "max_instances", "max_in_flight", "invocations_per_instance",
                                "schedule"))  # fmt: skip
        image = read.string(endpoint["image_uri"], f"{ekey}.image_uri", _IMAGE_URI, "ECR image URI")
        if f".dkr.ecr.{region}." not in image:
            raise read.fail(f"{ekey}.image_uri", f"the image must come from ECR in {region} (no cross-region pulls)")
        artifact = read.string(endpoint["model_data_url"], f"{ekey}.model_data_url", _S3_URI, "s3:// URI")
        bucket = artifact_bucket_name(platform, name, account, region)
        if not artifact.startswith(f"s3://{bucket}/") or artifact.endswith("/"):
            raise read.fail(
                f"{ekey}.model_data_url",
                f"must be an object in the model's own artifact bucket s3://{bucket}/ (created by the models stack)",
            )
        instance = read.string(
            endpoint["instance_type"], f"{ekey}.instance_type", _INSTANCE_TYPE, "SageMaker instance type"
        )
        family = _INSTANCE_TYPE.match(instance)
        assert family is not None  # checked just above
        if family["family"] in _LOCAL_STORAGE_FAMILIES:
            raise read.fail(
                f"{ekey}.instance_type",
                f"{instance} has local NVMe storage, where SageMaker refuses the customer-managed KMS key this "
                "platform puts on every endpoint: pick an EBS-backed type (e.g. ml.inf2.*, ml.g4ad.*, ml.m5.*)",
            )
        low = _instances(read, endpoint.get("min_instances", 2), f"{ekey}.min_instances", 2)
        high = read.integer(endpoint.get("max_instances", low), f"{ekey}.max_instances", low, 100)
        in_flight = read.integer(endpoint.get("max_in_flight", 8), f"{ekey}.max_in_flight", 1, 10_000)
        per_instance = read.integer(
            endpoint.get("invocations_per_instance", 60), f"{ekey}.invocations_per_instance", 1, 100_000
        )
        schedule = _schedule(read, f"{ekey}.schedule", endpoint.get("schedule", []))
        per_region[region] = ModelRegion(
            False, None, EscrowEndpoint(image, artifact, instance, low, high, in_flight, per_instance, schedule)
        )
    return Model(name, "sagemaker", None, None, per_region)


def _instances(read: _Reader, value: object, key: str, low: int) -> int:
    count = read.integer(value, key, 0, 100)
    if count < low:
        raise read.fail(
            key, f"{count} is out of range [{low}, 100]: an escrow endpoint runs at least two instances across zones"
        )
    return count


def _schedule(read: _Reader, key: str, value: object) -> tuple[ScheduledCapacity, ...]:
    if not isinstance(value, list):
        raise read.fail(key, f"expected a list, got {_type_name(value)}")
    actions: list[ScheduledCapacity] = []
    for i, raw in enumerate(value):
        ikey = f"{key}[{i}]"
        data = read.fields(raw, ikey, ("name", "expression", "min_instances", "max_instances"), ("timezone",))
        name = read.string(data["name"], f"{ikey}.name", _NAME, "action name (lowercase letters, digits, dashes)")
        if any(a.name == name for a in actions):
            raise read.fail(f"{ikey}.name", f"duplicate {name!r}")
        expression = read.string(
            data["expression"], f"{ikey}.expression", _SCHEDULE,
            "schedule expression: cron(m h dom mon dow y), rate(n unit) or at(yyyy-mm-ddThh:mm:ss)",
        )  # fmt: skip
        low = _instances(read, data["min_instances"], f"{ikey}.min_instances", 2)
        high = read.integer(data["max_instances"], f"{ikey}.max_instances", low, 100)
        timezone = read.string(data.get("timezone", "UTC"), f"{ikey}.timezone", _TIMEZONE, "IANA time zone")
        actions.append(ScheduledCapacity(name, expression, low, high, timezone))
    return tuple(actions)


def usable_capacities(first_capacity: str) -> tuple[Capacity, ...]:
    """The capacities a feature may use: provisioned-first spills to on-demand; on_demand-first stays on it."""
    return ("provisioned", "on_demand") if first_capacity == "provisioned" else ("on_demand",)


# A feature's `converse:` settings: the platform file's name -> (the Converse member, its allowed values).
CONVERSE_SETTINGS: dict[str, tuple[str, tuple[str, ...]]] = {
    "service_tier": ("serviceTier", ("priority", "default", "flex", "reserved")),  # reserved: where it is bought
    "latency": ("performanceConfig", ("standard", "optimized")),
    "guardrail": ("guardrailConfig", ()),  # a name from the platform file's `guardrails:` (checked in _features)
}


def _converse_settings(read: _Reader, value: object, key: str) -> dict[str, Any]:
    data = dict(read.fields(value if value is not None else {}, key, (), (*CONVERSE_SETTINGS, "caller_may_override")))
    for name, (_, allowed) in CONVERSE_SETTINGS.items():
        if allowed and name in data and data[name] not in allowed:
            raise read.fail(f"{key}.{name}", f"expected one of {', '.join(allowed)}, got {data[name]!r}")

    def setting(item: object, item_key: str) -> str:
        name = read.string(item, item_key)
        if name not in data:
            raise read.fail(item_key, f"{name!r} is not a setting of this feature ({', '.join(CONVERSE_SETTINGS)})")
        return name

    data["caller_may_override"] = read.strings(
        data.get("caller_may_override", []), f"{key}.caller_may_override", setting
    )
    return data


def _openai_model(
    read: _Reader,
    name: str,
    body: object,
    regions: Mapping[str, Region],
    *,
    providers: Mapping[str, Provider],
    **_: Any,
) -> Model:
    """A model behind an OpenAI-compatible endpoint of a declared provider (stacks/providers.py), in the cells that
    reach it: `regions` is a list, the provider's path is per cell."""
    key = f"models.{name}"
    data = read.fields(body, key, ("kind", "provider", "model", "regions"), ("images", "max_in_flight"))
    openai, cells = parse_openai_model(read, key, data, providers, regions)
    served: Capacity = "provisioned" if providers[openai.provider].type == "self_hosted" else "on_demand"
    per_region = {region: ModelRegion(False, None, None, served) for region in cells}
    return Model(name, "openai", None, None, per_region, openai)


# The platform file's model parser per backend kind: every kind of the router's registry has one (a test checks).
MODEL_PARSERS = {"bedrock": _bedrock_model, "sagemaker": _sagemaker_model, "openai": _openai_model}


def _features(
    read: _Reader,
    value: object,
    regions: Mapping[str, Region],
    models: Mapping[str, Model],
    guardrails: Mapping[str, Guardrail],
) -> dict[str, FeatureSpec]:
    raw = read.mapping(value, "features")
    if not raw:
        raise read.fail("features", "needs at least one feature")
    features: dict[str, FeatureSpec] = {}
    for name, body in raw.items():
        key = f"features.{name}"
        read.string(name, key, _NAME, "feature name (lowercase letters, digits, dashes)")
        data = read.fields(body, key, ("first_capacity", "models", "home_region"),
                           ("failover_regions", "deadline_ms", "max_attempts", "routing", "converse"))  # fmt: skip
        first = data["first_capacity"]
        if first not in CAPACITIES:
            raise read.fail(f"{key}.first_capacity", f"expected 'provisioned' or 'on_demand', got {first!r}")

        def model_ref(item: object, item_key: str) -> str:
            model = read.string(item, item_key)
            if model not in models:
                raise read.fail(item_key, f"unknown model {model!r} (models: {', '.join(sorted(models))})")
            return model

        def cell_ref(item: object, item_key: str) -> str:
            region = read.region(item, item_key)
            if region not in regions:
                raise read.fail(item_key, f"region {region!r} has no cell (add it under regions)")
            return region

        hierarchy = read.strings(data["models"], f"{key}.models", model_ref, min_items=1)
        home = cell_ref(data["home_region"], f"{key}.home_region")
        failover = read.strings(data.get("failover_regions", []), f"{key}.failover_regions", cell_ref)
        if home in failover:
            raise read.fail(f"{key}.failover_regions", f"repeats the home region {home!r}")
        feature = FeatureSpec(
            name=name,
            first_capacity=first,
            models=hierarchy,
            home_region=home,
            failover_regions=failover,
            deadline_ms=read.integer(data.get("deadline_ms", 30_000), f"{key}.deadline_ms", 100, 900_000),
            max_attempts=read.integer(data.get("max_attempts", 4), f"{key}.max_attempts", 1, 20),
            routing=read.mapping(data.get("routing", {}), f"{key}.routing"),
            converse=_converse_settings(read, data.get("converse", {}), f"{key}.converse"),
        )
        if not any(region in models[m].regions for m in hierarchy for region in feature.regions):
            raise read.fail(f"{key}.models", "no model of the hierarchy is offered in the feature's regions")
        # Every region the feature names must give it a target (stacks/targets.py: an on_demand-first feature never
        # spills onto provisioned capacity), or its router there would hold a feature it cannot serve.
        usable = usable_capacities(first)
        region_keys = [(home, f"{key}.home_region")]
        region_keys += [(r, f"{key}.failover_regions[{i}]") for i, r in enumerate(failover)]
        for region, region_key in region_keys:
            if not any(
                c in usable for m in hierarchy if (offer := models[m].regions.get(region)) for c in offer.capacities
            ):
                raise read.fail(
                    region_key,
                    f"{region} offers no model of the hierarchy ({', '.join(hierarchy)}) at a capacity a "
                    f"{first}-first feature may use ({' or '.join(usable)}): add an offer there or drop the region",
                )
        _check_guardrail(read, feature, key, models, guardrails)
        features[name] = feature
    return features


def _check_guardrail(
    read: _Reader, feature: FeatureSpec, key: str, models: Mapping[str, Model], guardrails: Mapping[str, Guardrail]
) -> None:
    """A guarded feature names a declared guardrail, uses Bedrock models only (Bedrock applies the guardrail: a
    SageMaker answer would go unguarded) and has no failover region (a guardrail's id is regional; the router
    applies one per feature, so another region's Bedrock would be sent this region's id: docs/design-notes.md)."""
    name = feature.guardrail
    if name is None:
        return
    gkey = f"{key}.converse.guardrail"
    read.string(name, gkey)
    if name not in guardrails:
        known = ", ".join(sorted(guardrails)) or "none declared under guardrails"
        raise read.fail(gkey, f"unknown guardrail {name!r} ({known})")
    for i, model in enumerate(feature.models):
        if models[model].kind != "bedrock":
            raise read.fail(
                f"{key}.models[{i}]",
                f"model {model!r} is {models[model].kind}, and guardrail {name!r} applies to Bedrock only: "
                "its answers would go unguarded",
            )
    if feature.failover_regions:
        raise read.fail(
            f"{key}.failover_regions",
            f"a feature with guardrail {name!r} does not fail over: the guardrail is regional (see design-notes)",
        )


# AWS::Bedrock::Guardrail's vocabulary (the CloudFormation resource's allowed values).
CONTENT_FILTER_TYPES = ("SEXUAL", "VIOLENCE", "HATE", "INSULTS", "MISCONDUCT", "PROMPT_ATTACK")
FILTER_STRENGTHS = ("NONE", "LOW", "MEDIUM", "HIGH")
PII_ACTIONS = ("BLOCK", "ANONYMIZE")
PII_TYPES = (
    "ADDRESS", "AGE", "AWS_ACCESS_KEY", "AWS_SECRET_KEY", "CA_HEALTH_NUMBER", "CA_SOCIAL_INSURANCE_NUMBER",
    "CREDIT_DEBIT_CARD_CVV", "CREDIT_DEBIT_CARD_EXPIRY", "CREDIT_DEBIT_CARD_NUMBER", "DRIVER_ID", "EMAIL",
    "INTERNATIONAL_BANK_ACCOUNT_NUMBER", "IP_ADDRESS", "LICENSE_PLATE", "MAC_ADDRESS", "NAME", "PASSWORD", "PHONE",
    "PIN", "SWIFT_CODE", "UK_NATIONAL_HEALTH_SERVICE_NUMBER", "UK_NATIONAL_INSURANCE_NUMBER",
    "UK_UNIQUE_TAXPAYER_REFERENCE_NUMBER", "URL", "USERNAME", "US_BANK_ACCOUNT_NUMBER", "US_BANK_ROUTING_NUMBER",
    "US_INDIVIDUAL_TAX_IDENTIFICATION_NUMBER", "US_PASSPORT_NUMBER", "US_SOCIAL_SECURITY_NUMBER",
    "VEHICLE_IDENTIFICATION_NUMBER",
)  # fmt: skip
_TOPIC_NAME = re.compile(r"^[0-9a-zA-Z-_ !?.]{1,100}$")
_MESSAGE = re.compile(r"^.{1,500}$", re.DOTALL)


def _guardrails(read: _Reader, value: object) -> dict[str, Guardrail]:
    out: dict[str, Guardrail] = {}
    for name, body in read.mapping(value, "guardrails").items():
        key = f"guardrails.{name}"
        read.string(name, key, _NAME, "guardrail name (lowercase letters, digits, dashes)")
        data = read.fields(
            body, key, ("blocked_input_message", "blocked_output_message"),
            ("content_filters", "denied_topics", "words", "managed_word_lists", "sensitive_information"),
        )  # fmt: skip

        def choices(raw: object, at: str, names: tuple[str, ...], values: tuple[str, ...]) -> dict[str, str]:
            entries = dict(read.mapping(raw or {}, at))
            for item, choice in entries.items():
                if item not in names:
                    raise read.fail(f"{at}.{item}", f"expected one of {', '.join(names)}")
                if choice not in values:
                    raise read.fail(f"{at}.{item}", f"expected one of {', '.join(values)}, got {choice!r}")
            return entries

        filters = choices(data.get("content_filters"), f"{key}.content_filters", CONTENT_FILTER_TYPES, FILTER_STRENGTHS)
        topics = []
        for i, raw in enumerate(data.get("denied_topics") or []):
            tkey = f"{key}.denied_topics[{i}]"
            topic = read.fields(raw, tkey, ("name", "definition"), ("examples",))
            topics.append(
                DeniedTopic(
                    read.string(topic["name"], f"{tkey}.name", _TOPIC_NAME, "topic name (1-100 characters)"),
                    read.string(topic["definition"], f"{tkey}.definition", re.compile(r"^.{1,200}$"), "1-200 chars"),
                    read.strings(topic.get("examples", []), f"{tkey}.examples", read.string),
                )
            )
        words = read.strings(data.get("words", []), f"{key}.words", read.string)
        managed = read.strings(
            data.get("managed_word_lists", []),
            f"{key}.managed_word_lists",
            lambda v, k: read.string(v, k, re.compile(r"^PROFANITY$"), "PROFANITY"),
        )
        pii = choices(data.get("sensitive_information"), f"{key}.sensitive_information", PII_TYPES, PII_ACTIONS)
        if not (any(s != "NONE" for s in filters.values()) or topics or words or managed or pii):
            raise read.fail(key, "filters nothing: set content_filters, denied_topics, words or sensitive_information")
        out[name] = Guardrail(
            name=name,
            blocked_input_message=read.string(
                data["blocked_input_message"], f"{key}.blocked_input_message", _MESSAGE, "1-500 characters"
            ),
            blocked_output_message=read.string(
                data["blocked_output_message"], f"{key}.blocked_output_message", _MESSAGE, "1-500 characters"
            ),
            content_filters=filters,
            denied_topics=tuple(topics),
            words=words,
            managed_word_lists=managed,
            sensitive_information=pii,
        )
    return out


# --- router (stacks/router.py) ---------------------------------------------------------------------------------

_LAYER_ARN = re.compile(
    r"^arn:aws(-us-gov)?:lambda:(?P<region>[a-z0-9-]+):[0-9]{12}:layer:(?P<name>[A-Za-z0-9_-]+):[0-9]+$"
)
# Exact role ARNs only: an account id in a resource policy admits every principal its IAM allows.
_CALLER = re.compile(r"^arn:aws(-us-gov)?:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}$")
_VPC_ENDPOINT = re.compile(r"^vpce-[0-9a-f]{8,17}$")
ENDPOINT_TYPES = ("private", "regional")


def _router(
    read: _Reader, value: object, regions: Mapping[str, Region], features: Mapping[str, FeatureSpec], platform: str
) -> RouterSettings:
    """Without an explicit router.api.rate_limit the stage's rate is derived from the reserved concurrency by
    Little's law (concurrency / the longest feature deadline of any cell)."""
    longest_deadline_s = _longest_deadline_s(features)
    if value is None:
        return RouterSettings()
    key = "router"
    data = read.fields(
        value,
        key,
        ("allowed_callers", "appconfig_extension_layer_arns"),
        ("api", "calling_services", "reserved_concurrency", "memory_mb", "fleet_store"),
    )
    # Default: at least one request per second for the longest deadline (Little's law), and never under 20.
    default_concurrency = max(20, longest_deadline_s)
    concurrency = read.integer(
        data.get("reserved_concurrency", default_concurrency), f"{key}.reserved_concurrency", 1, 999
    )
    endpoint_type, rate, burst, vpc_endpoints = _router_api(
        read,
        data.get("api") or {},
        regions,
        derived_rate=max(1, concurrency // longest_deadline_s),
        concurrency=concurrency,
    )

    def caller(item: object, item_key: str) -> str:
        return read.string(
            item, item_key, _CALLER, "caller: an exact IAM role ARN (an account id would admit its every principal)"
        )

    return RouterSettings(
        endpoint_type=endpoint_type,
        allowed_callers=read.strings(data["allowed_callers"], f"{key}.allowed_callers", caller, min_items=1),
        caller_vpc_endpoints=vpc_endpoints,
        caller_cidrs=_caller_cidrs(read, (data.get("api") or {}).get("caller_cidrs"), regions),
        account_cloudwatch_role=read.boolean(
            (data.get("api") or {}).get("account_cloudwatch_role", False), f"{key}.api.account_cloudwatch_role"
        ),
        rate_limit=rate,
        burst_limit=burst,
        calling_services=_calling_services(read, data.get("calling_services") or {}, rate, burst),
        reserved_concurrency=concurrency,
        memory_mb=read.integer(data.get("memory_mb", 1024), f"{key}.memory_mb", 128, 10_240),
        appconfig_extension_layer_arns=_extension_layers(read, data["appconfig_extension_layer_arns"], regions),
        fleet_store=_fleet_store(
            read,
            data.get("fleet_store") or {},
            regions=regions,
            features=features,
            platform=platform,
            rate=rate,
            burst=burst,
        ),
        configured=True,
    )


def _caller_cidrs(read: _Reader, value: object, regions: Mapping[str, Region]) -> dict[str, tuple[str, ...]]:
    """Per region, the callers' subnets in the cell's VPC: inside its upper half, which the network leaves free (the
    isolated subnets of the router, the models and the endpoints take the lower half)."""
    key = "router.api.caller_cidrs"
    found: dict[str, tuple[str, ...]] = {}
    for region, cidrs in read.mapping(value or {}, key).items():
        if region not in regions:
            raise read.fail(f"{key}.{region}", f"region {region!r} has no cell (add it under regions)")
        free = list(ipaddress.IPv4Network(regions[region].vpc_cidr).subnets(prefixlen_diff=1))[1]

        def cidr(item: object, item_key: str, free: ipaddress.IPv4Network = free) -> str:
            text = read.string(item, item_key)
            try:
                network = ipaddress.IPv4Network(text, strict=True)
            except ValueError:
                raise read.fail(item_key, f"{text!r} is not an IPv4 CIDR block") from None
            if not network.subnet_of(free):
                raise read.fail(item_key, f"{text} is not in {free}, the VPC's half free of router and model subnets")
            return str(network)

        found[region] = read.strings(cidrs, f"{key}.{region}", cidr, min_items=1)
    return found


def _router_api(
    read: _Reader, value: object, regions: Mapping[str, Region], *, derived_rate: int, concurrency: int
) -> tuple[Literal["private", "regional"], int, int, dict[str, tuple[str, ...]]]:
    key = "router.api"
    api = read.fields(
        value,
        key,
        (),
        (
            "endpoint_type",
            "caller_vpc_endpoints",
            "caller_cidrs",
            "rate_limit",
            "burst_limit",
            "account_cloudwatch_role",
        ),
    )
    endpoint_type = api.get("endpoint_type", "private")
    if endpoint_type not in ENDPOINT_TYPES:
        raise read.fail(f"{key}.endpoint_type", f"expected 'private' or 'regional', got {endpoint_type!r}")
    rate = read.integer(api.get("rate_limit", derived_rate), f"{key}.rate_limit", 1, 10_000)
    default_burst = max(rate, min(2 * rate, 5_000, concurrency))  # a burst must fit the concurrency too
    burst = read.integer(api.get("burst_limit", default_burst), f"{key}.burst_limit", 1, 5_000)
    if burst < rate:
        raise read.fail(f"{key}.burst_limit", f"{burst} is below rate_limit {rate} (a bucket must hold a second)")
    vpc_endpoints: dict[str, tuple[str, ...]] = {}
    if api.get("caller_vpc_endpoints") is not None:
        vkey = f"{key}.caller_vpc_endpoints"
        if endpoint_type != "private":
            raise read.fail(vkey, "only a private API is reached through VPC endpoints")
        for region, ids in read.mapping(api["caller_vpc_endpoints"], vkey).items():
            if region not in regions:
                raise read.fail(f"{vkey}.{region}", f"region {region!r} has no cell (add it under regions)")
            vpc_endpoints[region] = read.strings(
                ids, f"{vkey}.{region}", lambda v, k: read.string(v, k, _VPC_ENDPOINT, "VPC endpoint id (vpce-...)")
            )
    return endpoint_type, rate, burst, vpc_endpoints


def _fleet_store(
    read: _Reader, value: object, *, regions: Mapping[str, Region], features: Mapping[str, FeatureSpec], platform: str,
    rate: int, burst: int,
) -> FleetStoreSettings:  # fmt: skip
    """Usage limits sized from the platform: by default the API's burst at the ECPU budget of the longest plan; a
    configured maximum below the API's steady rate at that budget is refused (the store would throttle first)."""
    key = "router.fleet_store"
    data = read.fields(value, key, (), ("max_ecpu_per_second", "max_data_storage_gb"))
    for region in sorted(regions):
        name = fleet_cache_name(platform, region)
        if len(name) > FLEET_CACHE_NAME_MAX:
            raise read.fail(
                "platform.name",
                f"too long for the fleet store's cache name {name!r} (ElastiCache allows {FLEET_CACHE_NAME_MAX} "
                "characters)",
            )
    per_request = fleet_ecpu_per_request(max((f.max_attempts for f in features.values()), default=1))
    floor = rate * per_request
    default = min(15_000_000, max(1_000, -(-burst * per_request // 1_000) * 1_000))
    ecpu = read.integer(data.get("max_ecpu_per_second", default), f"{key}.max_ecpu_per_second", 1_000, 15_000_000)
    if ecpu < floor:
        raise read.fail(
            f"{key}.max_ecpu_per_second",
            f"{ecpu} is below what the API admits: router.api.rate_limit {rate} x {per_request} ECPUs per request "
            f"(a read, {per_request - FLEET_READ_ECPU - 2 * FLEET_LEASE_ECPU} for evidence writes, two lease "
            f"operations) = {floor}",
        )
    storage = read.integer(data.get("max_data_storage_gb", 1), f"{key}.max_data_storage_gb", 1, 5_000)
    return FleetStoreSettings(ecpu, storage)


def _calling_services(read: _Reader, value: object, rate: int, burst: int) -> dict[str, CallingService]:
    services: dict[str, CallingService] = {}
    for name, body in read.mapping(value, "router.calling_services").items():
        key = f"router.calling_services.{name}"
        read.string(name, key, _NAME, "service name (lowercase letters, digits, dashes)")
        entry = read.fields(body, key, ("rate_limit",), ("burst_limit", "quota_per_day"))
        s_rate = read.integer(entry["rate_limit"], f"{key}.rate_limit", 1, rate)
        s_burst = read.integer(entry.get("burst_limit", min(2 * s_rate, burst)), f"{key}.burst_limit", 1, burst)
        if s_burst < s_rate:
            raise read.fail(f"{key}.burst_limit", f"{s_burst} is below rate_limit {s_rate}")
        quota = entry.get("quota_per_day")
        if quota is not None:
            quota = read.integer(quota, f"{key}.quota_per_day", 1, 1_000_000_000)
        services[name] = CallingService(name, s_rate, s_burst, quota)
    return services


def _extension_layers(read: _Reader, value: object, regions: Mapping[str, Region]) -> dict[str, str]:
    key = "router.appconfig_extension_layer_arns"
    raw = read.mapping(value, key)
    for region in sorted(regions):
        if region not in raw:
            raise read.fail(f"{key}.{region}", "missing: every cell needs the AppConfig extension of its region")
    layers: dict[str, str] = {}
    for region, arn_value in raw.items():
        if region not in regions:
            raise read.fail(f"{key}.{region}", f"region {region!r} has no cell (add it under regions)")
        arn = read.string(arn_value, f"{key}.{region}", _LAYER_ARN, "Lambda layer version ARN")
        match = _LAYER_ARN.match(arn)
        assert match is not None  # checked just above
        if match["region"] != region:
            raise read.fail(f"{key}.{region}", f"the layer is in {match['region']}: use one of {region}")
        if not match["name"].endswith("Arm64"):
            raise read.fail(f"{key}.{region}", "the router runs on arm64: use an AWS-AppConfig-Extension-Arm64 layer")
        layers[region] = arn
    return layers
