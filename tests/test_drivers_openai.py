"""OpenAIDriver end to end: the real openai client against a loopback fake server.

Every scenario runs through both the sync path (OpenAI) and the async path (AsyncOpenAI).
Backoff is tiny; delays are observed through on_retry, never timed.
"""

from __future__ import annotations

import asyncio
import json
import socket
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

import pytest
from fake_openai_server import FakeOpenAIServer, Reply

from vmem.kernel.drivers import (
    Completion,
    ContextOverflowError,
    DriverError,
    DriverTimeoutError,
    OpenAIDriver,
    RetryEvent,
    RetryPolicy,
    ToolCall,
    Usage,
)
from vmem.kernel.drivers.openai import NO_KEY, parse_retry_after

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "send_message",
            "description": "Send a message to the human.",
            "parameters": {"type": "object", "properties": {"message": {"type": "string"}}, "required": ["message"]},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "core_memory_append",
            "description": "Append to a core memory block.",
            "parameters": {
                "type": "object",
                "properties": {"label": {"type": "string"}, "content": {"type": "string"}},
                "required": ["label", "content"],
            },
        },
    },
]
MSGS = [{"role": "system", "content": "You are a helpful agent."}, {"role": "user", "content": "Hi, I'm Ada."}]
FAST = RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.004)


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as s:
        yield s


@pytest.fixture(autouse=True)
def _fresh(server: FakeOpenAIServer) -> Iterator[None]:
    server.reset()
    yield
    assert server.pending == 0, "a test left scripted replies unused"


Ask = Callable[..., Completion]


@pytest.fixture(params=["sync", "async"])
def ask(request: pytest.FixtureRequest) -> Ask:
    """ask(driver, messages=MSGS, tools=TOOLS): complete() or acomplete() in a fresh loop."""

    def run(driver: OpenAIDriver, messages: list[dict] = MSGS, tools: list[dict] = TOOLS) -> Completion:
        if request.param == "sync":
            return driver.complete(messages, tools)
        return asyncio.run(driver.acomplete(messages, tools))

    return run


def make(server: FakeOpenAIServer, **kw: Any) -> tuple[OpenAIDriver, list[RetryEvent]]:
    events: list[RetryEvent] = []
    kw.setdefault("retry", FAST)
    kw.setdefault("timeout", 5.0)
    kw.setdefault("api_key", "test-key")
    return OpenAIDriver("fake-model", base_url=server.base_url, on_retry=events.append, **kw), events


# --------------------------------------------------------------------------- native tool calls


def test_native_tool_calls_are_parsed_and_usage_reported(server: FakeOpenAIServer, ask: Ask) -> None:
    driver, _ = make(server, tool_mode="native")
    server.push(
        Reply.tool_calls(
            ("core_memory_append", {"label": "human", "content": "Name: Ada"}, "call_a"),
            ("send_message", "{'message': 'Nice to meet you, Ada!',}", "call_b"),  # repairable
            ("send_message", '{"message": "cut', "call_c"),  # not repairable
            content="Saving her name.",
            usage=(321, 45),
        )
    )
    out = ask(driver)
    assert out.text == "Saving her name."
    assert out.usage == Usage(321, 45) and out.finish_reason == "tool_calls"
    a, b, c = out.tool_calls
    assert a == ToolCall("call_a", "core_memory_append", {"label": "human", "content": "Name: Ada"},
                         raw_arguments='{"label": "human", "content": "Name: Ada"}')
    assert (b.id, b.name, b.arguments) == ("call_b", "send_message", {"message": "Nice to meet you, Ada!"})
    assert (c.id, c.arguments, c.raw_arguments) == ("call_c", None, '{"message": "cut')
    assert "ends inside a string" in c.error

    (req,) = server.chat_requests
    assert req.body["model"] == "fake-model"
    assert req.messages == MSGS and req.tools == TOOLS
    assert "tool_choice" not in req.body
    assert req.headers["authorization"] == "Bearer test-key"


def test_text_answer_and_missing_usage(server: FakeOpenAIServer, ask: Ask) -> None:
    driver, _ = make(server, tool_mode="native")
    server.push(Reply.text("Hello Ada.", usage=None))
    out = ask(driver)
    assert out == Completion(text="Hello Ada.", tool_calls=[], usage=None, finish_reason="stop")


def test_params_and_tool_choice_are_sent(server: FakeOpenAIServer, ask: Ask) -> None:
    driver, _ = make(server, tool_mode="native", tool_choice="required", params={"temperature": 0, "max_tokens": 64})
    server.push(Reply.text("ok"))
    ask(driver)
    body = server.chat_requests[0].body
    assert (body["tool_choice"], body["temperature"], body["max_tokens"]) == ("required", 0, 64)


def test_no_tools_means_no_tools_parameter(server: FakeOpenAIServer, ask: Ask) -> None:
    driver, _ = make(server, tool_mode="native", tool_choice="required")
    server.push(Reply.text("summary"))
    assert ask(driver, tools=[]).text == "summary"
    body = server.chat_requests[0].body
    assert "tools" not in body and "tool_choice" not in body


@pytest.mark.parametrize("mode", ["native", "json"])
def test_merge_system_sends_one_leading_system_message_and_ends_with_the_user(
        server: FakeOpenAIServer, ask: Ask, mode: str) -> None:
    driver, _ = make(server, tool_mode=mode, merge_system=True)
    server.push(Reply.text("ok"))
    messages = [{"role": "system", "content": "Instructions."}, {"role": "system", "content": "<core_memory/>"},
                {"role": "user", "content": "Hello."}, {"role": "assistant", "content": "Hi."},
                {"role": "user", "content": "Again."}, {"role": "system", "content": "<memory_statistics/>"}]
    ask(driver, messages=messages)
    sent = server.chat_requests[0].messages
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "system", "user"]
    assert sent[0]["content"].startswith("Instructions.\n\n<core_memory/>")
    assert sent[3]["content"] == "<memory_statistics/>" and sent[4]["content"] == "Again."
    assert len(messages) == 6 and messages[-1]["role"] == "system"  # the caller's list is unchanged


def test_merge_system_keeps_a_chain_after_the_user_turn() -> None:
    from vmem.kernel.drivers.openai import merge_system_messages

    call = {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function",
                                                                  "function": {"name": "f", "arguments": "{}"}}]}
    result = {"role": "tool", "tool_call_id": "c", "content": "done"}
    out = merge_system_messages([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}, call, result,
                                 {"role": "system", "content": "V"}])
    assert [m["role"] for m in out] == ["system", "system", "user", "assistant", "tool"]
    assert merge_system_messages([{"role": "user", "content": "U"}]) == [{"role": "user", "content": "U"}]


# --------------------------------------------------------------------------- json fallback


HISTORY = MSGS + [
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "send_message", "arguments": '{"message": "Hi!"}'}}],
    },
    {"role": "tool", "tool_call_id": "c1", "content": '{"status": "OK"}'},
    {"role": "user", "content": "Remember that I like tea."},
]


def test_json_mode_model_without_native_tools(server: FakeOpenAIServer, ask: Ask) -> None:
    driver, _ = make(server, tool_mode="json")
    server.push(
        Reply.text(
            "She likes tea; I will store it.\n"
            '```json\n{"function": "core_memory_append", "arguments": {"label": "human", "content": "Likes tea."}}\n```\n'
            '```json\n{"function": "send_message", "arguments": {"message": "Noted!"}}\n```',
            usage=(200, 30),
        )
    )
    out = ask(driver, messages=HISTORY)
    assert out.text == "She likes tea; I will store it."
    assert [(c.name, c.arguments) for c in out.tool_calls] == [
        ("core_memory_append", {"label": "human", "content": "Likes tea."}),
        ("send_message", {"message": "Noted!"}),
    ]
    assert all(c.id.startswith("call_") for c in out.tool_calls) and out.tool_calls[0].id != out.tool_calls[1].id
    assert out.usage == Usage(200, 30)

    (req,) = server.chat_requests
    assert req.tools is None and "tools" not in req.body
    system = req.messages[0]["content"]
    assert system.startswith("You are a helpful agent.") and "### core_memory_append" in system
    assert {m["role"] for m in req.messages} == {"system", "user", "assistant"}
    assert req.messages[2]["content"] == '```json\n{"function": "send_message", "arguments": {"message": "Hi!"}}\n```'
    assert req.messages[3]["content"].startswith("Function result (send_message, call c1):")


@pytest.mark.parametrize("style", ["ollama", "llamacpp", "vllm"])
def test_auto_mode_falls_back_to_json_when_tools_are_rejected(server: FakeOpenAIServer, ask: Ask, style: str) -> None:
    driver, events = make(server)
    assert driver.tool_mode == "auto"
    server.push(
        Reply.tools_unsupported(style),
        Reply.text('{"function": "send_message", "arguments": {"message": "hi"}}'),
        Reply.text("plain answer"),
    )
    out = ask(driver)
    assert [(c.name, c.arguments) for c in out.tool_calls] == [("send_message", {"message": "hi"})]
    assert out.text is None
    assert driver.fell_back_to_json and events == []  # a switch, not a retry
    first, second = server.chat_requests
    assert first.tools == TOOLS and second.tools is None
    assert "# Available functions" in second.messages[0]["content"]
    # the switch is remembered: the next request goes straight to the json protocol
    assert ask(driver).text == "plain answer"
    assert len(server.chat_requests) == 3 and server.chat_requests[2].tools is None


def test_auto_mode_reads_json_calls_in_a_native_answer_only_for_offered_tools(server: FakeOpenAIServer, ask: Ask) -> None:
    driver, _ = make(server)
    server.push(
        Reply.text('Calling now {"name": "send_message", "arguments": {"message": "yo"}}'),
        Reply.text('Example: {"name": "launch_rockets", "arguments": {}}'),
    )
    out = ask(driver)
    assert [(c.name, c.arguments) for c in out.tool_calls] == [("send_message", {"message": "yo"})]
    assert out.text == "Calling now"
    out = ask(driver)
    assert out.tool_calls == [] and out.text == 'Example: {"name": "launch_rockets", "arguments": {}}'
    assert not driver.fell_back_to_json


def test_native_mode_does_not_fall_back(server: FakeOpenAIServer, ask: Ask) -> None:
    driver, _ = make(server, tool_mode="native")
    server.push(Reply.tools_unsupported("ollama"))
    with pytest.raises(DriverError, match="does not support tools") as info:
        ask(driver)
    assert info.value.status == 400 and len(server.chat_requests) == 1


# --------------------------------------------------------------------------- retries


def test_rate_limit_then_success_honours_retry_after(server: FakeOpenAIServer, ask: Ask) -> None:
    driver, events = make(server)
    server.push(Reply.rate_limit(retry_after=0.02), Reply.rate_limit(retry_after_ms=15), Reply.text("finally"))
    assert ask(driver).text == "finally"
    assert len(server.chat_requests) == 3
    assert [(e.attempt, e.status, e.delay, e.retry_after) for e in events] == [(1, 429, 0.02, 0.02), (2, 429, 0.015, 0.015)]


def test_backoff_without_retry_after_is_exponential_with_jitter(server: FakeOpenAIServer, ask: Ask) -> None:
    policy = RetryPolicy(max_attempts=4, base_delay=0.002, multiplier=2.0, max_delay=0.005, jitter=0.5)
    driver, events = make(server, retry=policy)
    server.push(Reply.rate_limit(), Reply.server_error(502), Reply.server_error(503), Reply.text("ok"))
    assert ask(driver).text == "ok"
    assert [e.status for e in events] == [429, 502, 503]
    caps = [0.002, 0.004, 0.005]  # base * 2**k, capped at max_delay
    for e, cap in zip(events, caps):
        assert cap * 0.5 <= e.delay <= cap and e.retry_after is None


def test_server_errors_exhaust_the_attempts(server: FakeOpenAIServer, ask: Ask) -> None:
    driver, events = make(server)
    server.push(*[Reply.server_error()] * 3)
    with pytest.raises(DriverError, match=r"HTTP 500 \(gave up after 3 attempts\)") as info:
        ask(driver)
    assert (info.value.status, info.value.attempts) == (500, 3)
    assert not isinstance(info.value, (ContextOverflowError, DriverTimeoutError))
    assert len(server.chat_requests) == 3 and len(events) == 2


def test_the_clients_own_retries_are_off(server: FakeOpenAIServer, ask: Ask) -> None:
    driver, _ = make(server, retry=RetryPolicy(max_attempts=1))
    server.push(Reply.server_error())
    with pytest.raises(DriverError):
        ask(driver)
    assert len(server.chat_requests) == 1  # the openai client would otherwise retry twice


def test_retry_after_beyond_the_limit_stops_at_once(server: FakeOpenAIServer, ask: Ask) -> None:
    driver, events = make(server)
    server.push(Reply.rate_limit(retry_after=3600))
    with pytest.raises(DriverError, match="retry after 3600s") as info:
        ask(driver)
    assert info.value.status == 429 and len(server.chat_requests) == 1 and events == []


def test_exhausted_quota_is_not_retried(server: FakeOpenAIServer, ask: Ask) -> None:
    driver, _ = make(server)
    server.push(Reply.error(429, "You exceeded your current quota.", type="insufficient_quota", code="insufficient_quota"))
    with pytest.raises(DriverError, match="exceeded your current quota") as info:
        ask(driver)
    assert info.value.status == 429 and len(server.chat_requests) == 1


@pytest.mark.parametrize("status", [400, 401, 404])
def test_client_errors_are_not_retried(server: FakeOpenAIServer, ask: Ask, status: int) -> None:
    driver, _ = make(server)
    server.push(Reply.error(status, "nope"))
    with pytest.raises(DriverError, match=f"HTTP {status}: nope") as info:
        ask(driver)
    assert info.value.status == status and len(server.chat_requests) == 1


def test_connection_errors_are_retried_then_surface(ask: Ask) -> None:
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    events: list[RetryEvent] = []
    driver = OpenAIDriver("m", base_url=f"http://127.0.0.1:{port}/v1", retry=FAST, on_retry=events.append)
    with pytest.raises(DriverError, match="connection error") as info:
        ask(driver)
    assert info.value.attempts == 3 and info.value.status is None
    assert [e.attempt for e in events] == [1, 2] and all(e.status is None for e in events)


# --------------------------------------------------------------------------- overflow and timeouts


@pytest.mark.parametrize("style", ["openai", "vllm", "llamacpp", "prompt_too_long"])
def test_context_overflow_maps_to_context_overflow_error(server: FakeOpenAIServer, ask: Ask, style: str) -> None:
    driver, events = make(server)
    server.push(Reply.context_overflow(style))
    with pytest.raises(ContextOverflowError) as info:
        ask(driver)
    assert info.value.status == 400 and len(server.chat_requests) == 1 and events == []


def test_request_too_large_is_a_context_overflow(server: FakeOpenAIServer, ask: Ask) -> None:
    driver, _ = make(server)
    server.push(Reply.error(413, "Request Entity Too Large"))
    with pytest.raises(ContextOverflowError) as info:
        ask(driver)
    assert info.value.status == 413


def test_overflow_reported_with_a_5xx_is_not_retried(server: FakeOpenAIServer, ask: Ask) -> None:
    driver, _ = make(server)
    server.push(Reply.error(500, "input is too long for the model", type="server_error"))
    with pytest.raises(ContextOverflowError):
        ask(driver)
    assert len(server.chat_requests) == 1


def test_timeout_raises_driver_timeout_error(server: FakeOpenAIServer, ask: Ask) -> None:
    driver, events = make(server, timeout=0.2)
    server.push(Reply.text("too late").after(30))
    with pytest.raises(DriverTimeoutError) as info:
        ask(driver)
    assert isinstance(info.value, TimeoutError) and info.value.attempts == 1
    assert len(server.chat_requests) == 1 and events == []


def test_timeouts_can_be_retried(server: FakeOpenAIServer, ask: Ask) -> None:
    policy = RetryPolicy(max_attempts=2, base_delay=0.001, retry_timeouts=True)
    driver, events = make(server, timeout=0.2, retry=policy)
    server.push(Reply.text("slow").after(30), Reply.text("fast"))
    assert ask(driver).text == "fast"
    assert len(server.chat_requests) == 2 and [e.reason for e in events] == ["timeout"]


# --------------------------------------------------------------------------- malformed responses


@pytest.mark.parametrize(
    ("reply", "needle"),
    [
        (Reply.raw(200, b"<html>not json</html>"), "could not be decoded"),
        (Reply(200, {"id": "x", "object": "chat.completion", "choices": []}), "no choices"),
    ],
)
def test_malformed_responses_are_driver_errors(server: FakeOpenAIServer, ask: Ask, reply: Reply, needle: str) -> None:
    driver, _ = make(server)
    server.push(reply)
    with pytest.raises(DriverError, match=needle):
        ask(driver)


def test_sloppy_server_fields_are_tolerated(server: FakeOpenAIServer, ask: Ask) -> None:
    # empty call id, arguments as an object instead of a string (seen from some local servers)
    driver, _ = make(server, tool_mode="native")
    call = {"id": "", "type": "function", "function": {"name": "send_message", "arguments": {"message": "hi"}}}
    server.push(Reply(200, {"id": "x", "choices": [{"index": 0, "finish_reason": "tool_calls",
                                                    "message": {"role": "assistant", "content": "", "tool_calls": [call]}}]}))
    out = ask(driver)
    (tc,) = out.tool_calls
    assert tc.id.startswith("call_") and tc.arguments == {"message": "hi"}
    assert out.text is None and out.usage is None


# --------------------------------------------------------------------------- configuration


def test_configuration_from_the_environment(server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("VMEM_BASE_URL", "VMEM_API_KEY", "OPENAI_API_KEY", "VMEM_TOOL_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("VMEM_MODEL", "env-model")
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("VMEM_TOOL_MODE", "json")
    driver = OpenAIDriver(retry=FAST)
    assert (driver.model, driver.tool_mode) == ("env-model", "json")
    server.push(Reply.text("hi"))
    driver.complete(MSGS, TOOLS)
    req = server.chat_requests[0]
    assert req.body["model"] == "env-model" and req.headers["authorization"] == f"Bearer {NO_KEY}"


def test_configuration_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("VMEM_MODEL", "VMEM_BASE_URL", "OPENAI_BASE_URL", "VMEM_API_KEY", "OPENAI_API_KEY", "VMEM_TOOL_MODE"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ValueError, match="no model"):
        OpenAIDriver()
    with pytest.raises(ValueError, match="no API key"):
        OpenAIDriver("gpt-4o")
    with pytest.raises(ValueError, match="tool_mode"):
        OpenAIDriver("m", base_url="http://127.0.0.1:1/v1", tool_mode="xml")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)


def test_async_client_follows_the_event_loop_and_closes(server: FakeOpenAIServer) -> None:
    driver, _ = make(server)
    server.push(Reply.text("one"), Reply.text("two"))

    async def twice() -> list[str | None]:
        a = await driver.acomplete(MSGS, TOOLS)
        b = await driver.acomplete(MSGS, TOOLS)
        await driver.aclose()
        return [a.text, b.text]

    assert asyncio.run(twice()) == ["one", "two"]
    server.push(Reply.text("three"))
    assert asyncio.run(driver.acomplete(MSGS, TOOLS)).text == "three"  # a new loop, a new client
    driver.close()


def test_a_given_client_is_used_without_its_retries(server: FakeOpenAIServer, ask: Ask) -> None:
    import openai

    client = openai.OpenAI(api_key="given-key", base_url=server.base_url, max_retries=5)
    driver = OpenAIDriver("m", client=client, retry=RetryPolicy(max_attempts=1))
    server.push(Reply.server_error(), Reply.text("ok"))
    with pytest.raises(DriverError):
        ask(driver)  # the async path builds a matching AsyncOpenAI from the given client
    assert len(server.chat_requests) == 1
    assert ask(driver).text == "ok"
    assert server.chat_requests[-1].headers["authorization"] == "Bearer given-key"


# --------------------------------------------------------------------------- Retry-After parsing


def test_parse_retry_after() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert parse_retry_after({"Retry-After": "7"}) == 7.0
    assert parse_retry_after({"retry-after": "0.25"}) == 0.25
    assert parse_retry_after({"retry-after-ms": "1500", "Retry-After": "9"}) == 1.5
    assert parse_retry_after({"Retry-After": "Wed, 01 Jan 2025 12:00:30 GMT"}, now=now) == 30.0
    assert parse_retry_after({"Retry-After": "Wed, 01 Jan 2025 11:00:00 GMT"}, now=now) == 0.0
    for bad in ({}, {"Retry-After": "soon"}, {"Retry-After": "-3"}, {"Retry-After": "nan"}, {"retry-after-ms": "x"}):
        assert parse_retry_after(bad) is None


def test_fake_server_records_and_serves_models(server: FakeOpenAIServer) -> None:
    import urllib.request

    with urllib.request.urlopen(server.base_url + "/models") as resp:
        data = json.loads(resp.read())
    assert data["data"][0]["id"] == "fake-model"
    assert server.requests[-1].method == "GET" and server.chat_requests == []
