"""The official `openai` package against the router's OpenAI-compatible door in the one-process world, each request
signed with SigV4 by tools/openai_client.py's httpx auth hook."""

from __future__ import annotations

import pytest

from local.localrun import LocalWorld

# requirements-dev.txt pins it; the router's own requirements do not (the Lambda never imports it).
openai = pytest.importorskip("openai", reason="the openai package is in requirements-dev.txt only")
httpx2 = pytest.importorskip("httpx2", reason="the openai package's HTTP client")
from tools.openai_client import client  # noqa: E402

FEATURE = "summarize-thread"


def test_the_openai_package_calls_the_router_signed_with_sigv4(world: LocalWorld) -> None:
    sent: list[httpx2.Request] = []  # type: ignore[name-defined]
    oa = client(world.url, "us-east-1", event_hooks={"request": [sent.append]})
    completion = oa.chat.completions.create(
        model=FEATURE, messages=[{"role": "user", "content": "hello from openai"}], max_completion_tokens=32
    )
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content
    assert completion.usage is not None
    assert completion.usage.prompt_tokens > 0
    authorization = sent[0].headers["authorization"]
    assert authorization.startswith("AWS4-HMAC-SHA256 Credential=")
    assert "/us-east-1/execute-api/aws4_request" in authorization
    models = [m.id for m in oa.models.list()]
    assert FEATURE in models


def test_the_openai_package_sees_the_routers_errors(world: LocalWorld) -> None:
    oa = client(world.url, "us-east-1")
    with pytest.raises(openai.NotFoundError) as caught:
        oa.chat.completions.create(model="no-such-feature", messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 404
    with pytest.raises(openai.BadRequestError) as bad:
        oa.chat.completions.create(model=FEATURE, messages=[{"role": "user", "content": "x"}], logit_bias={"1": 1})
    assert bad.value.param == "logit_bias"  # type: ignore[attr-defined]
