"""The router's alarms (to a CMK-encrypted SNS topic) and its dashboard.

Alarms: API 5xx (also AppConfig's rollback monitor), spill rate and failover rate per feature, breaker opens and
backend throttles (Metrics Insights sums over targets), Lambda throttles. They name the function and the API by
their literal names, so nothing here refers to the function or the API (no cycle with the role's policy). Metric
names and dimensions: lambdas/router/spillway/telemetry.py (a test checks they exist there).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from constructs import Construct

from stacks.constructs.concern import Concern
from stacks.naming import alarm_topic_name, api_name, function_name, router_name
from stacks.platform import Platform

METRICS_NAMESPACE = "Spillway"  # lambdas/router/spillway/telemetry.py (POWERTOOLS_METRICS_NAMESPACE)
METRICS_SERVICE = "spillway-router"  # the `service` dimension of every router metric
STAGE = "live"  # the API's only stage (stacks/constructs/router_api.py)
ROLLBACK_ALARM = "Api5xx"


def _metric(name: str, minutes: int = 1, **dimensions: str) -> cw.Metric:
    return cw.Metric(
        namespace=METRICS_NAMESPACE,
        metric_name=name,
        dimensions_map={"service": METRICS_SERVICE, **dimensions},
        statistic="Sum",
        period=cdk.Duration.minutes(minutes),
    )


def _aws(namespace: str, name: str, dims: Mapping[str, str], statistic: str = "Sum") -> cw.Metric:
    return cw.Metric(
        namespace=namespace, metric_name=name, dimensions_map=dict(dims), statistic=statistic,
        period=cdk.Duration.minutes(1),
    )  # fmt: skip


def _insights(metric: str, schema: str, label: str) -> cw.MathExpression:
    """The sum of a router metric over every target (a Metrics Insights query: one series, any target count)."""
    query = " ".join(
        ("SELECT", f"SUM({metric})", "FROM", f'SCHEMA("{METRICS_NAMESPACE}", {schema})',
         "WHERE", f"service = '{METRICS_SERVICE}'")
    )  # fmt: skip
    return cw.MathExpression(expression=query, label=label, period=cdk.Duration.minutes(1))


def _construct_name(feature: str) -> str:
    return "".join(part.capitalize() for part in feature.replace(".", "-").split("-"))


class RouterMonitoring(Concern):
    """The alarm topic, the alarms (`alarms`, `rollback_alarm`) and the dashboard of one cell's router."""

    def __init__(
        self, scope: Construct, construct_id: str, *, platform: Platform, region: str, key: kms.IKey,
        features: Sequence[str],
    ) -> None:  # fmt: skip
        super().__init__(scope, construct_id)
        self.features = tuple(features)
        self.api_dims = {"ApiName": api_name(platform, region), "Stage": STAGE}
        self.function_dims = {"FunctionName": function_name(platform, region)}
        self.alarm_topic = sns.Topic(
            self,
            "AlarmTopic",
            topic_name=alarm_topic_name(platform, region),
            display_name=f"{platform.name} router alarms ({region})",
            master_key=key,
            enforce_ssl=True,
        )
        self.alarms = self._alarms(router_name(platform, region))
        self.rollback_alarm = self.alarms[ROLLBACK_ALARM]
        self.dashboard = self._dashboard(router_name(platform, region))

    def _alarms(self, prefix: str) -> dict[str, cw.Alarm]:
        alarms: dict[str, cw.Alarm] = {}
        action = cw_actions.SnsAction(self.alarm_topic)

        def add(
            construct_id: str, name: str, description: str, metric: cw.IMetric, threshold: float,
            *, evaluation: int = 3, datapoints: int = 2,
        ) -> None:  # fmt: skip
            alarm = metric.create_alarm(
                self,
                f"Alarm{construct_id}",
                alarm_name=f"{prefix}-{name}",
                alarm_description=description,
                threshold=threshold,
                evaluation_periods=evaluation,
                datapoints_to_alarm=datapoints,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            )
            alarm.add_alarm_action(action)
            alarm.add_ok_action(action)
            alarms[construct_id] = alarm

        add(
            ROLLBACK_ALARM,
            "api-5xx",
            "Router API 5xx (also AppConfig's rollback monitor): a bad routing table or a router fault",
            _aws("AWS/ApiGateway", "5XXError", self.api_dims),
            5,
        )
        for feature in self.features:
            requests = _metric("Requests", 5, feature=feature)
            for metric, name, threshold in (("Spills", "spill-rate", 50), ("Failovers", "failover-rate", 10)):
                rate = cw.MathExpression(
                    expression="IF(requests > 0, 100 * events / requests, 0)",
                    using_metrics={"events": _metric(metric, 5, feature=feature), "requests": requests},
                    label=f"{metric} per request (%) of {feature}",
                    period=cdk.Duration.minutes(5),
                )
                add(
                    f"{metric}{_construct_name(feature)}",
                    f"{name}-{feature}",
                    f"{feature}: {metric.lower()} on {threshold}% or more of requests over 5 minutes",
                    rate,
                    threshold,
                )
        add(
            "BreakerOpens",
            "breaker-open",
            "A circuit breaker opened on some target (see the dashboard for which)",
            _insights("BreakerOpens", "service, target", "breaker opens"),
            1,
            evaluation=1,
            datapoints=1,
        )
        add(
            "DeploymentFaults",
            "deployment-faults",
            "A target answered with a deployment fault (missing endpoint or model id, access denied, bad credentials "
            "or signature): fix the deployment; the router moves on to the next target meanwhile",
            _insights("DeploymentFaults", "service, feature, target", "deployment faults"),
            1,
            evaluation=1,
            datapoints=1,
        )
        add(
            "BackendThrottles",
            "backend-throttles",
            "Backends throttle the router (capacity): spillover is carrying load; PT or quotas may need raising",
            _insights("Throttles", "service, feature, target", "backend throttles"),
            20,
        )
        add(
            "LambdaThrottles",
            "lambda-throttles",
            "The router Lambda hit its reserved concurrency: callers get 429/5xx; raise router.reserved_concurrency",
            _aws("AWS/Lambda", "Throttles", self.function_dims),
            1,
        )
        return alarms

    def _dashboard(self, name: str) -> cw.Dashboard:
        api_dims, fn_dims = self.api_dims, self.function_dims
        per_feature = [_metric(n, feature=f) for f in self.features for n in ("Spills", "Fallbacks", "Failovers")]
        dashboard = cw.Dashboard(self, "Dashboard", dashboard_name=name)
        dashboard.add_widgets(
            cw.AlarmStatusWidget(title="Alarms", alarms=list(self.alarms.values()), width=24, height=4),
        )
        dashboard.add_widgets(
            cw.GraphWidget(
                title="API requests and errors",
                left=[_aws("AWS/ApiGateway", n, api_dims) for n in ("Count", "4XXError", "5XXError")],
                width=12,
            ),
            cw.GraphWidget(
                title="API latency (p99)",
                left=[_aws("AWS/ApiGateway", n, api_dims, "p99") for n in ("Latency", "IntegrationLatency")],
                width=12,
            ),
        )
        dashboard.add_widgets(
            cw.GraphWidget(
                title="Requests per feature", left=[_metric("Requests", feature=f) for f in self.features], width=12
            ),
            cw.GraphWidget(title="Spills, fallbacks, failovers", left=per_feature, width=12),
        )
        dashboard.add_widgets(
            cw.GraphWidget(
                title="Breakers and backend throttles",
                left=[
                    _insights("BreakerOpens", "service, target", "breaker opens"),
                    _insights("Throttles", "service, feature, target", "backend throttles"),
                ],
                width=12,
            ),
            cw.GraphWidget(
                title="Router Lambda",
                left=[_aws("AWS/Lambda", n, fn_dims) for n in ("Invocations", "Errors", "Throttles")],
                right=[_aws("AWS/Lambda", "ConcurrentExecutions", fn_dims, "Maximum")],
                width=12,
            ),
        )
        return dashboard
