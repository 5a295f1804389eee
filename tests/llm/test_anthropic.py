"""AnthropicModel: the real SDK against the fake Messages API, its retries, and how failures read."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from agent.errors import ModelUnavailable
from fixtures.anthropic_fake import FakeAnthropic, text, tool_use
from fixtures.server import RunningServer, serve
from llm.anthropic import AnthropicModel, ModelReplyData, make_client

pytestmark = pytest.mark.timeout(60)

MODEL = "claude-sonnet-4-6"
ASK = [{"role": "user", "content": "is presto healthy?"}]
TOOLS = [{"name": "presto__health", "description": "cluster health", "input_schema": {"type": "object"}}]


@pytest.fixture(scope="module")
def shared() -> Iterator[tuple[FakeAnthropic, RunningServer]]:
    fake = FakeAnthropic(api_key="test-key")
    with serve(fake.app) as running:
        yield fake, running
        fake.release()


@pytest.fixture
def fake(shared: tuple[FakeAnthropic, RunningServer]) -> Iterator[FakeAnthropic]:
    shared[0].reset()
    yield shared[0]
    shared[0].reset()


@pytest.fixture
def url(shared: tuple[FakeAnthropic, RunningServer]) -> str:
    return shared[1].url


async def complete(url: str, *, max_retries: int = 0, timeout: float = 10.0) -> ModelReplyData:
    async with make_client("test-key", url, max_retries=max_retries, timeout=timeout) as client:
        return await AnthropicModel(client, MODEL).complete(
            system="be brief", messages=ASK, tools=TOOLS, max_tokens=256
        )


async def failure(url: str, *, max_retries: int = 0, timeout: float = 10.0) -> ModelUnavailable:
    with pytest.raises(ModelUnavailable) as err:
        await complete(url, max_retries=max_retries, timeout=timeout)
    return err.value


async def test_a_reply_comes_back_as_plain_dicts_with_stop_reason_and_usage(
    fake: FakeAnthropic, url: str
) -> None:
    fake.enqueue(tool_use("presto__health", {"cluster": "prod"}, id="toolu_h1", text_before="Checking."))
    async with make_client("test-key", url, max_retries=0) as client:
        reply = await AnthropicModel(client, MODEL).complete(
            system="be brief", messages=ASK, tools=TOOLS, max_tokens=256
        )

    assert reply.content == (
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "toolu_h1", "name": "presto__health", "input": {"cluster": "prod"}},
    )
    assert reply.stop_reason == "tool_use"
    assert reply.input_tokens > 0
    assert reply.output_tokens > 0
    body = fake.last_request().body
    assert (body["model"], body["system"][0]["text"], body["max_tokens"]) == (MODEL, "be brief", 256)
    # The tools as given, in name order, with the cache breakpoint after the last (agent.caching).
    assert [{k: v for k, v in t.items() if k != "cache_control"} for t in body["tools"]] == sorted(
        TOOLS, key=lambda t: t["name"]
    )


async def test_no_tools_means_no_tools_field(fake: FakeAnthropic, url: str) -> None:
    fake.enqueue(text("hi"))
    async with make_client("test-key", url, max_retries=0) as client:
        await AnthropicModel(client, MODEL).complete(system="s", messages=ASK, tools=[], max_tokens=8)
    assert "tools" not in fake.last_request().body


async def test_overloaded_twice_then_success_is_retried_by_the_sdk_with_backoff(
    fake: FakeAnthropic, url: str
) -> None:
    fake.fail_next(2, "overloaded")
    fake.enqueue(text("healthy"))
    reply = await complete(url, max_retries=2)

    assert reply.content == ({"type": "text", "text": "healthy"},)
    reqs = fake.requests()
    assert [r.status for r in reqs] == [529, 529, 200]
    assert [r.headers.get("x-stainless-retry-count") for r in reqs] == ["0", "1", "2"]
    assert reqs[1].at - reqs[0].at >= 0.3  # backed off (0.5 s less jitter), not a tight loop


async def test_overloaded_beyond_the_retries_is_unavailable_overloaded(fake: FakeAnthropic, url: str) -> None:
    fake.fail_next(1, "overloaded")
    err = await failure(url)
    assert err.kind == "overloaded"
    assert "overloaded" in str(err)


async def test_a_spend_limit_is_not_retried_and_says_an_admin_must_act(fake: FakeAnthropic, url: str) -> None:
    fake.fail_next(1, "spend_limit")
    fake.enqueue(text("would be served by a retry"))
    err = await failure(url, max_retries=3)

    assert err.kind == "spend_limit"
    assert "usage limit" in err.message
    assert "admin" in err.message
    assert len(fake.requests()) == 1


async def test_retry_after_on_a_rate_limit_is_honoured(fake: FakeAnthropic, url: str) -> None:
    fake.fail_next(1, "rate_limit", retry_after=1.0)
    fake.enqueue(text("ok"))
    await complete(url, max_retries=2)

    first, second = fake.requests()
    assert second.at - first.at >= 0.95  # longer than the SDK's own first backoff (≤0.5 s)


async def test_a_rate_limit_that_persists_is_unavailable_rate_limited(fake: FakeAnthropic, url: str) -> None:
    fake.fail_next(1, "rate_limit", retry_after=None)
    err = await failure(url)
    assert err.kind == "rate_limited"


async def test_a_server_error_is_unavailable_error_with_a_plain_message(
    fake: FakeAnthropic, url: str
) -> None:
    fake.fail_next(1, "api_error")
    err = await failure(url)
    assert err.kind == "error"
    assert "Error code" not in err.message  # SDK detail stays in the log


async def test_a_slow_model_is_unavailable_timeout(fake: FakeAnthropic, url: str) -> None:
    fake.hang()  # released by the fixture's reset
    err = await failure(url, timeout=0.2)
    assert err.kind == "timeout"


async def test_an_unreachable_service_is_unavailable_connection() -> None:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    err = await failure(f"http://127.0.0.1:{port}")
    assert err.kind == "connection"


async def test_streamed_text_arrives_in_pieces_and_the_whole_message_comes_back(
    fake: FakeAnthropic, url: str
) -> None:
    fake.enqueue(
        tool_use("presto__health", {"cluster": "prod"}, id="toolu_s1", text_before="Checking health now.")
    )
    pieces: list[str] = []

    async def on_text(delta: str) -> None:
        pieces.append(delta)

    async with make_client("test-key", url, max_retries=0) as client:
        reply = await AnthropicModel(client, MODEL).complete(
            system="be brief", messages=ASK, tools=TOOLS, max_tokens=256, on_text=on_text
        )

    assert fake.last_request().body.get("stream") is True
    assert len(pieces) > 1
    assert "".join(pieces) == "Checking health now."
    assert reply.content == (
        {"type": "text", "text": "Checking health now."},
        {"type": "tool_use", "id": "toolu_s1", "name": "presto__health", "input": {"cluster": "prod"}},
    )
    assert reply.stop_reason == "tool_use"
    assert reply.input_tokens > 0
    assert reply.output_tokens > 0


async def test_a_streamed_request_that_fails_reads_as_the_same_unavailable_model(
    fake: FakeAnthropic, url: str
) -> None:
    fake.fail_next(1, "overloaded")

    async def on_text(delta: str) -> None:
        raise AssertionError("no text expected")

    async with make_client("test-key", url, max_retries=0) as client:
        with pytest.raises(ModelUnavailable) as err:
            await AnthropicModel(client, MODEL).complete(
                system="s", messages=ASK, tools=[], max_tokens=8, on_text=on_text
            )
    assert err.value.kind == "overloaded"
