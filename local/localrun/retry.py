"""A caller's retries, as an AWS SDK client in standard retry mode makes them (botocore.retries.standard), for the
benchmarks' and the load's callers: a caller of the router retries its 429 and 5xx answers, as the router's callers
are told to (docs/calling-the-router.md: back off for Retry-After seconds, then retry).

What standard mode does, and so this:
- at most 3 attempts in all (DEFAULT_MAX_ATTEMPTS);
- retries throttling answers (HTTP 429) and transient ones (500, 502, 503, 504), and a request that got no answer;
- waits rand(0, 1) x min(base x 2^(attempt - 1), 20 s) before the next attempt, the base 1 s after a throttle and
  50 ms after a transient error (ExponentialBackoff);
- a server's retry-after hint raises that wait, to at most the jittered wait + 5 s. botocore reads AWS's
  ``x-amz-retry-after`` (milliseconds); the router and its gateway responses send HTTP's ``Retry-After`` (seconds),
  read here the same way;
- a retry quota: a bucket of 500 tokens; a retry takes 5 after a throttle, 14 after anything else; a success gives
  back what its last retry took, or 1 if it needed none; too few tokens means no retry (RetryQuotaChecker, botocore
  1.44).
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field

MAX_ATTEMPTS = 3
MAX_BACKOFF_S = 20.0
THROTTLING_BASE_S = 1.0
TRANSIENT_BASE_S = 0.05
RETRY_AFTER_MAX_ADDITIONAL_S = 5.0
THROTTLING_STATUSES = frozenset({429})
TRANSIENT_STATUSES = frozenset({500, 502, 503, 504})
NO_ANSWER = 0  # the status recorded for a request that got no HTTP answer
QUOTA_TOKENS = 500
THROTTLING_RETRY_COST = 5
RETRY_COST = 14
NO_RETRY_INCREMENT = 1


@dataclass
class StandardRetry:
    """Whether to retry an answer and how long to wait first. Thread-safe: one per caller, shared by its threads
    (the retry quota is the client's)."""

    max_attempts: int = MAX_ATTEMPTS
    seed: int = 11
    _tokens: int = QUOTA_TOKENS
    _rng: random.Random = field(init=False, repr=False)
    _lock: threading.Lock = field(init=False, repr=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)  # noqa: S311 (jitter, not a secret)

    def retryable(self, status: int) -> bool:
        return status == NO_ANSWER or status in THROTTLING_STATUSES or status in TRANSIENT_STATUSES

    def next_delay_s(self, attempt: int, status: int, retry_after: str | None) -> float | None:
        """Seconds to wait before attempt `attempt + 1` after attempt `attempt` (1-based) answered `status`
        (NO_ANSWER: none); None when standard mode gives up (not retryable, attempts or quota spent)."""
        if attempt >= self.max_attempts or not self.retryable(status):
            return None
        cost = THROTTLING_RETRY_COST if status in THROTTLING_STATUSES else RETRY_COST
        with self._lock:
            if self._tokens < cost:
                return None
            self._tokens -= cost
            jitter = self._rng.random()
        base = THROTTLING_BASE_S if status in THROTTLING_STATUSES else TRANSIENT_BASE_S
        delay = jitter * min(base * 2 ** (attempt - 1), MAX_BACKOFF_S)
        hint = _seconds(retry_after)
        if hint is not None:
            delay = max(delay, min(hint, RETRY_AFTER_MAX_ADDITIONAL_S + delay))
        return delay

    def succeeded(self, last_status: int | None) -> None:
        """A 2xx answer: the quota gets back what the last retry took (`last_status`: the answer before it), or
        NO_RETRY_INCREMENT when the first attempt succeeded."""
        if last_status is None:
            back = NO_RETRY_INCREMENT
        else:
            back = THROTTLING_RETRY_COST if last_status in THROTTLING_STATUSES else RETRY_COST
        with self._lock:
            self._tokens = min(QUOTA_TOKENS, self._tokens + back)


def _seconds(raw: str | None) -> float | None:
    """Retry-After as delta-seconds (the router's form); anything else is ignored, as botocore ignores a bad hint."""
    if raw is None or not raw.strip().isdigit():
        return None
    return float(raw.strip())
