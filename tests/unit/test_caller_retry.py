"""The benchmarks' caller retries as botocore's standard retry mode does (local/localrun/retry.py), checked against
botocore's own ExponentialBackoff and constants where they exist, so a drift from the SDK fails here."""

from __future__ import annotations

from botocore.retries import standard

from local.localrun import retry


def test_the_limits_are_botocores() -> None:
    assert retry.MAX_ATTEMPTS == standard.DEFAULT_MAX_ATTEMPTS
    backoff = standard.ExponentialBackoff
    assert retry.MAX_BACKOFF_S == backoff._MAX_BACKOFF
    assert retry.RETRY_AFTER_MAX_ADDITIONAL_S == backoff._RETRY_AFTER_MAX_ADDITIONAL
    assert backoff._DEFAULT_BACKOFF_CONFIG["throttling_base_scale"] == retry.THROTTLING_BASE_S
    assert backoff._DEFAULT_BACKOFF_CONFIG["non_throttling_base_scale"] == retry.TRANSIENT_BASE_S
    assert set(retry.TRANSIENT_STATUSES) == set(standard.TransientRetryableChecker._TRANSIENT_STATUS_CODES)
    assert set(retry.THROTTLING_STATUSES) == set(standard.ThrottlingStatusCodeChecker._THROTTLING_STATUS_CODES)
    quota = standard.RetryQuotaChecker
    assert (retry.RETRY_COST, retry.THROTTLING_RETRY_COST) == (quota._RETRY_COST, quota._THROTTLING_RETRY_COST)
    assert retry.NO_RETRY_INCREMENT == quota._NO_RETRY_INCREMENT


def test_a_503_with_retry_after_waits_the_hint_and_a_400_is_not_retried() -> None:
    caller = retry.StandardRetry()
    assert caller.next_delay_s(1, 400, "1") is None
    delay = caller.next_delay_s(1, 503, "1")
    assert delay is not None
    assert 1.0 <= delay <= 1.05
    assert caller.next_delay_s(1, 503, None) is not None
    assert caller.next_delay_s(1, 503, None) <= retry.TRANSIENT_BASE_S  # type: ignore[operator]


def test_a_hint_is_capped_at_the_jittered_wait_plus_five_seconds() -> None:
    caller = retry.StandardRetry()
    delay = caller.next_delay_s(1, 429, "60")
    assert delay is not None
    assert 5.0 <= delay <= 6.0


def test_three_attempts_at_most_and_an_empty_quota_stops_retries() -> None:
    caller = retry.StandardRetry()
    assert caller.next_delay_s(2, 503, "1") is not None
    assert caller.next_delay_s(3, 503, "1") is None  # the third attempt was the last
    starved = retry.StandardRetry()
    granted = 0
    while starved.next_delay_s(1, 503, None) is not None:
        granted += 1
    assert granted == retry.QUOTA_TOKENS // retry.RETRY_COST
    starved.succeeded(503)  # a success after a retry gives its cost back
    assert starved.next_delay_s(1, 503, None) is not None


def test_a_request_with_no_answer_is_retried() -> None:
    assert retry.StandardRetry().next_delay_s(1, retry.NO_ANSWER, None) is not None
