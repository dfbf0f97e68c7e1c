"""Many threads calling the handler at once (the local endpoint does) each get the answer to their own request.

Powertools keeps the current event on a class attribute, which is right for Lambda (one event at a time per
instance) and wrong for a threaded caller: without the per-thread resolver, callers received each other's answers.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

from spillway.backends.contract import BackendReply, Usage
from spillway.config import Target
from tests.router.conftest import Harness, api_event, body_of, converse_body, header


def _echo_after_a_pause(target: Target, request: Mapping[str, Any], timeout_s: float) -> BackendReply:
    time.sleep(0.001)  # let other threads enter the handler while this request is in flight
    text = request["messages"][0]["content"][0]["text"]
    response = {
        "output": {"message": {"role": "assistant", "content": [{"text": f"echo {text}"}]}},
        "stopReason": "end_turn",
    }
    return BackendReply(response=response, latency_ms=1.0, usage=Usage(1, 1))


def test_concurrent_callers_get_their_own_answers(table_doc: dict[str, Any]) -> None:
    h = Harness(table_doc)
    h.bedrock.default = _echo_after_a_pause
    h.sagemaker.default = _echo_after_a_pause
    mixed: list[str] = []
    errors: list[BaseException] = []

    def caller(n: int) -> None:
        try:
            for i in range(25):
                mine = f"caller-{n}-{i}"
                event = api_event("POST", "/v1/features/summarize-thread/converse", body=converse_body(mine))
                event["requestContext"]["requestId"] = mine
                answer = h.call(event)
                text = body_of(answer)["output"]["message"]["content"][0]["text"]
                if text != f"echo {mine}" or header(answer, "x-spillway-request-id") != mine:
                    mixed.append(f"{mine} got {json.dumps(text)[:40]}")
        except BaseException as exc:  # surfaced below: a thread's failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(8)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can: races show at once
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        sys.setswitchinterval(interval)
        h.handler.set_router(None)
    assert not errors, errors[:3]
    assert not mixed, mixed[:5]
