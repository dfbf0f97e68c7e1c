"""Spillway's local emulator of the AWS runtime APIs the router calls.

Bedrock Runtime ``Converse`` and SageMaker Runtime ``InvokeEndpoint`` of several regions on loopback,
wire-compatible with real boto3 clients given ``endpoint_url``; capacity, latency and scheduled faults per
target; the AppConfig Agent Lambda extension's local HTTP interface; a Python and an HTTP control API.
Standard library only.

    from local.emulator import Emulator, Fault, TargetSpec

    with Emulator([TargetSpec("us-east-1", "bedrock", "anthropic.claude-x", max_in_flight=2)]) as emu:
        url = emu.endpoint_url("us-east-1")
        emu.set_fault("us-east-1", Fault.throttle(count=3))
"""

from local.emulator.appconfig import AppConfigExtension
from local.emulator.control import ControlClient, ControlServer
from local.emulator.core import Emulator, ScopeLike, to_scope
from local.emulator.faults import Fault, FaultKind, Scope
from local.emulator.targets import Kind, TargetKey, TargetSpec

__all__ = [
    "AppConfigExtension",
    "ControlClient",
    "ControlServer",
    "Emulator",
    "Fault",
    "FaultKind",
    "Kind",
    "Scope",
    "ScopeLike",
    "TargetKey",
    "TargetSpec",
    "to_scope",
]
