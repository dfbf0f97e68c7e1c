"""The contract between the engine and the backends: what a backend is called with and what it answers.

Its own module so that the layering holds both ways: the engine imports no backend (and no boto3), and the
backends import no engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..config import Target


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True, slots=True)
class BackendReply:
    response: Mapping[str, Any] = field(repr=False)  # Converse-shaped; never logged
    latency_ms: float = 0.0  # as the backend measured it
    ttft_ms: float | None = None  # time to first token, when streamed
    usage: Usage | None = None
    service_tier: str | None = None  # the tier that served, when the answer says (Bedrock's serviceTier.type)
    gaps_ms: tuple[float, ...] = field(default=(), repr=False)  # inter-token gaps, when streamed (for the metrics)


class Backend(Protocol):
    """What the engine calls. Raise spillway.errors.BackendError (built with errors.classify) on failure."""

    def invoke(self, target: Target, request: Mapping[str, Any], timeout_s: float) -> BackendReply: ...
