"""Cross-region reachability (stub while the network stack settles)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aws_cdk as cdk
from constructs import Construct

from stacks.network import NetworkStack
from stacks.platform import Platform


class LinksStack(cdk.Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        platform: Platform,
        region: str,
        networks: Mapping[str, NetworkStack],
        **kwargs: Any,
    ) -> None:
        kwargs["env"] = cdk.Environment(account=platform.account, region=region)
        kwargs.setdefault("stack_name", f"{platform.name}-links-{region}")
        kwargs.setdefault("cross_region_references", True)
        super().__init__(scope, construct_id, **kwargs)
        cdk.CfnWaitConditionHandle(self, "Placeholder")
