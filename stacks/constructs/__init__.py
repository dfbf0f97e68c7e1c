"""Reusable constructs the stacks compose: CMK-encrypted log groups, private interface endpoints."""

from stacks.constructs.encrypted_log_group import EncryptedLogGroup, LogsKey
from stacks.constructs.private_endpoint import PrivateInterfaceEndpoint

__all__ = ["EncryptedLogGroup", "LogsKey", "PrivateInterfaceEndpoint"]
