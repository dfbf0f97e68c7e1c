"""One provider's key in one cell: a Secrets Manager secret under its own customer-managed key, rotated on schedule.

The router reads it through the cell's Secrets Manager endpoint (`OpenAICompatBackend`, cached five minutes, dropped
on a 401) and may read nothing else (stacks/models.py names this secret's exact ARN and decrypts with this key only
through Secrets Manager). The secret is created with a random placeholder; the operator's rotation function (named
per cell in the platform file: it holds the right to regenerate the provider's key, e.g. Azure's key1/key2) puts the
provider's key on its first rotation and every `rotate_after_days` after. Secrets Manager invokes that function, so
its resource policy must allow `secretsmanager.amazonaws.com` (docs/models.md); an imported function cannot be
changed from here.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from stacks.constructs.key_policy import ServiceUse, restricted_key
from stacks.naming import partition_of, provider_secret_name
from stacks.providers import ApiKey


class ProviderSecret(Construct):
    """The secret of `provider`'s key in this stack's region (see the module docstring)."""

    def __init__(
        self, scope: Construct, construct_id: str, *, platform: str, account: str, provider: str, api_key: ApiKey
    ) -> None:
        super().__init__(scope, construct_id)
        region = cdk.Stack.of(self).region
        name = provider_secret_name(platform, provider)
        # Secrets Manager puts the secret's ARN in the encryption context of every data key it asks for.
        arn_pattern = f"arn:{partition_of(region)}:secretsmanager:{region}:{account}:secret:{name}-*"
        self.key = restricted_key(
            self,
            "Key",
            description=f"{platform} {provider} API key in {region}",
            uses=[ServiceUse("secretsmanager", {"SecretARN": arn_pattern})],
        )
        self.secret = secretsmanager.Secret(
            self,
            "Secret",
            secret_name=name,
            description=f"{platform}: the {provider} API key the router sends (rotated by the operator's function)",
            encryption_key=self.key,
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        rotation = lambda_.Function.from_function_arn(self, "Rotation", api_key.rotation_functions[region])
        self.secret.add_rotation_schedule(
            "Schedule",
            rotation_lambda=rotation,
            automatically_after=cdk.Duration.days(api_key.rotate_after_days),
            rotate_immediately_on_update=False,
        )

    @property
    def secret_arn(self) -> str:
        return self.secret.secret_arn

    @property
    def key_arn(self) -> str:
        return self.key.key_arn
