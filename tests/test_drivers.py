"""Driver base types, the default async path, ScriptedDriver, ReplayDriver, RecordingDriver."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Sequence

import msgpack
import pytest

from vmem.kernel.drivers import (
    Completion,
    ContextOverflowError,
    Driver,
    DriverError,
    DriverTimeoutError,
    RecordingDriver,
    ReplayDriver,
    ReplayMismatch,
    ScriptedDriver,
    ScriptExhausted,
    ToolCall,
    Usage,
    request_digest,
)

TOOLS = [{"type": "function", "function": {"name": "send_message", "parameters": {"type": "object", "properties": {"message": {"type": "string"}}}}}]
MSGS = [{"role": "system", "content": "sys"}, {"role": "user", "content": "hello"}]


# --------------------------------------------------------------------------- types


def test_completion_round_trips_through_msgpack() -> None:
    c = Completion(
        text="thinking",
        tool_calls=[
            ToolCall("c1", "send_message", {"message": "hi", "n": [1, 2.5, None, True]}),
            ToolCall("c2", "pause", None, "invalid JSON in the arguments: ...", raw_arguments="{oops"),
        ],
        usage=Usage(120, 7),
        finish_reason="tool_calls",
    )
    back = Completion.from_dict(msgpack.unpackb(msgpack.packb(c.to_dict())))
    assert back == c
    assert Completion.from_dict(Completion().to_dict()) == Completion()


def test_tool_call_needs_exactly_one_of_arguments_and_error() -> None:
    with pytest.raises(ValueError):
        ToolCall("c", "f", None, None)
    with pytest.raises(ValueError):
        ToolCall("c", "f", {}, "both")


def test_to_message_is_an_openai_assistant_message() -> None:
    c = Completion(
        text=None,
        tool_calls=[ToolCall("c1", "send_message", {"message": "é"}), ToolCall("c2", "f", None, "bad", raw_arguments="{x")],
    )
    assert c.to_message() == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "send_message", "arguments": '{"message": "é"}'}},
            {"id": "c2", "type": "function", "function": {"name": "f", "arguments": "{x"}},
        ],
    }
    assert Completion(text="hi").to_message() == {"role": "assistant", "content": "hi"}
    assert Usage(3, 4).total_tokens == 7


def test_exception_tree() -> None:
    assert issubclass(ContextOverflowError, DriverError)
    assert issubclass(DriverTimeoutError, DriverError) and issubclass(DriverTimeoutError, TimeoutError)
    assert issubclass(ScriptExhausted, DriverError) and issubclass(ReplayMismatch, DriverError)
    e = DriverError("boom", status=503, attempts=4)
    assert (e.message, e.status, e.attempts, str(e)) == ("boom", 503, 4, "boom")


# --------------------------------------------------------------------------- custom drivers


class EchoDriver(Driver):
    """A custom driver is one small class."""

    def __init__(self) -> None:
        self.threads: list[int] = []
        self.closed = False

    def complete(self, messages: Sequence[dict], tools: Sequence[dict]) -> Completion:
        self.threads.append(threading.get_ident())
        return Completion(text=str(messages[-1]["content"]))

    def close(self) -> None:
        self.closed = True


def test_custom_sync_driver_works_in_async_code_via_a_worker_thread() -> None:
    d = EchoDriver()

    async def main() -> tuple[Completion, int]:
        return await d.acomplete(MSGS, TOOLS), threading.get_ident()

    out, loop_thread = asyncio.run(main())
    assert out.text == "hello"
    assert d.threads and d.threads[0] != loop_thread


def test_drivers_are_context_managers_that_close() -> None:
    with EchoDriver() as d:
        pass
    assert d.closed  # type: ignore[attr-defined]

    async def main() -> EchoDriver:
        async with EchoDriver() as d2:
            return d2  # type: ignore[return-value]

    assert asyncio.run(main()).closed


# --------------------------------------------------------------------------- ScriptedDriver


def test_scripted_driver_accepts_every_response_form() -> None:
    d = ScriptedDriver(
        [
            "plain text",
            {"name": "send_message", "arguments": {"message": "hi"}},
            [{"name": "a", "arguments": {}}, {"function": "b", "arguments": '{"x": 1,}', "id": "given"}],
            {"text": "t", "tool_calls": [{"name": "c", "arguments": "{bad"}], "usage": (5, 2)},
            Completion(text="ready-made"),
            ToolCall("tc", "d", {"k": "v"}),
        ]
    )
    outs = [d.complete(MSGS, TOOLS) for _ in range(6)]
    assert outs[0] == Completion(text="plain text", finish_reason="stop")
    assert outs[1].tool_calls == [ToolCall("call_2_0", "send_message", {"message": "hi"})]
    assert [(c.id, c.name, c.arguments) for c in outs[2].tool_calls] == [("call_3_0", "a", {}), ("given", "b", {"x": 1})]
    (bad,) = outs[3].tool_calls
    assert outs[3].text == "t" and outs[3].usage == Usage(5, 2)
    assert bad.arguments is None and bad.raw_arguments == "{bad" and "invalid JSON" in bad.error
    assert outs[4] == Completion(text="ready-made")
    assert outs[5].tool_calls == [ToolCall("tc", "d", {"k": "v"})]
    assert d.remaining == 0


def test_scripted_driver_records_requests_as_copies() -> None:
    d = ScriptedDriver(["a", "b"])
    msgs = [dict(m) for m in MSGS]
    d.complete(msgs, TOOLS)
    msgs[-1]["content"] = "changed afterwards"
    d.complete(msgs, [])
    assert d.requests[0].messages[-1]["content"] == "hello"
    assert d.requests[0].tools == TOOLS and d.requests[1].tools == []
    assert d.requests[1].messages[-1]["content"] == "changed afterwards"


def test_a_scripted_driver_that_does_not_record_keeps_no_request_and_unique_ids() -> None:
    # a fleet's worker steps a scripted agent for minutes: each recorded request was a deep copy of
    # the whole context, 10% of the worker's time, and the list grew without bound
    seen: list[int] = []

    def respond(messages: list[dict[str, Any]], tools: list[Any]) -> dict[str, Any]:
        seen.append(len(messages))
        return {"name": "send_message", "arguments": {"message": "ok"}}

    d = ScriptedDriver(respond, record=False)
    first = d.complete([{"role": "user", "content": "a"}], [])
    second = d.complete([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], [])
    assert d.requests == [] and seen == [1, 2]
    assert first.tool_calls[0].id != second.tool_calls[0].id


def test_scripted_driver_raises_scripted_exceptions() -> None:
    d = ScriptedDriver([ContextOverflowError("too long", status=400), "after the flush"])
    with pytest.raises(ContextOverflowError, match="too long"):
        d.complete(MSGS, TOOLS)
    assert d.complete(MSGS, TOOLS).text == "after the flush"


def test_scripted_driver_says_clearly_when_the_script_runs_out() -> None:
    d = ScriptedDriver(["only one"])
    d.complete(MSGS, TOOLS)
    with pytest.raises(ScriptExhausted, match=r"ran out after 1 responses; request #2 \(last message 'user': 'hello'\)"):
        d.complete(MSGS, TOOLS)
    d.push("more")
    assert d.complete(MSGS, TOOLS).text == "more"


def test_scripted_driver_with_a_responder_and_usage() -> None:
    def responder(messages: list[dict], tools: list[dict]) -> Any:
        return f"{len(messages)} messages, {len(tools)} tools"

    def usage(messages: list[dict], tools: list[dict], c: Completion) -> Usage:
        return Usage(sum(len(str(m["content"])) for m in messages), len(c.text or ""))

    d = ScriptedDriver(responder, usage=usage)
    out = d.complete(MSGS, TOOLS)
    assert out.text == "2 messages, 1 tools" and out.usage == Usage(8, 19)
    assert d.remaining is None
    with pytest.raises(TypeError):
        d.push("x")


def test_scripted_driver_async_paths() -> None:
    async def responder(messages: list[dict], tools: list[dict]) -> Any:
        await asyncio.sleep(0)
        return {"name": "send_message", "arguments": {"message": messages[-1]["content"]}}

    d = ScriptedDriver(responder)
    out = asyncio.run(d.acomplete(MSGS, TOOLS))
    assert out.tool_calls[0].arguments == {"message": "hello"}
    with pytest.raises(TypeError, match="needs acomplete"):
        d.complete(MSGS, TOOLS)
    listed = ScriptedDriver(["x"])
    assert asyncio.run(listed.acomplete(MSGS, TOOLS)).text == "x"
    with pytest.raises(ScriptExhausted):
        asyncio.run(listed.acomplete(MSGS, TOOLS))


@pytest.mark.parametrize("bad", [42, None, [], [{"arguments": {}}]])
def test_scripted_driver_rejects_unusable_responses(bad: Any) -> None:
    with pytest.raises(TypeError):
        ScriptedDriver([bad]).complete(MSGS, TOOLS)


# --------------------------------------------------------------------------- record / replay


def _recorded(keep_request: bool = False) -> tuple[list[dict], list[Completion]]:
    inner = ScriptedDriver(
        [
            {"text": "hmm", "tool_calls": [{"name": "send_message", "arguments": {"message": "1"}}], "usage": (9, 3)},
            ContextOverflowError("prompt too long", status=400),
            "done",
        ]
    )
    trace: list[bytes] = []
    rec = RecordingDriver(inner, sink=lambda e: trace.append(msgpack.packb(e)), keep_request=keep_request)
    outs = [rec.complete(MSGS, TOOLS)]
    with pytest.raises(ContextOverflowError):
        rec.complete(MSGS + [{"role": "user", "content": "more"}], TOOLS)
    outs.append(rec.complete(MSGS[:1], TOOLS))
    assert len(rec.exchanges) == 3
    return [msgpack.unpackb(b) for b in trace], outs


def test_replay_returns_recorded_outcomes_in_order() -> None:
    exchanges, outs = _recorded()
    r = ReplayDriver(exchanges)
    assert r.complete(MSGS, TOOLS) == outs[0]
    with pytest.raises(ContextOverflowError, match="prompt too long") as info:
        r.complete(MSGS + [{"role": "user", "content": "more"}], TOOLS)
    assert info.value.status == 400
    assert asyncio.run(r.acomplete(MSGS[:1], TOOLS)) == outs[1]
    assert r.remaining == 0
    with pytest.raises(ScriptExhausted, match="all 3 recorded exchanges were replayed"):
        r.complete(MSGS, TOOLS)


def test_replay_detects_a_different_request() -> None:
    exchanges, _ = _recorded()
    r = ReplayDriver(exchanges)
    other = [MSGS[0], {"role": "user", "content": "something else"}]
    with pytest.raises(ReplayMismatch) as info:
        r.complete(other, TOOLS)
    assert info.value.index == 0 and info.value.actual == request_digest(other, TOOLS)
    assert info.value.expected == exchanges[0]["digest"]
    assert r.position == 0  # not consumed
    with pytest.raises(ReplayMismatch):
        r.complete(MSGS, [])  # same messages, different tools
    assert r.complete(MSGS, TOOLS).text == "hmm"


def test_replay_mismatch_names_the_differing_message_when_requests_are_kept() -> None:
    exchanges, _ = _recorded(keep_request=True)
    with pytest.raises(ReplayMismatch, match=r"message 1 differs: recorded .*hello.* but got .*bye"):
        ReplayDriver(exchanges).complete([MSGS[0], {"role": "user", "content": "bye"}], TOOLS)


def test_replay_without_verification_ignores_the_request() -> None:
    exchanges, outs = _recorded()
    r = ReplayDriver(exchanges, verify=False)
    assert r.complete([{"role": "user", "content": "anything"}], []) == outs[0]


def test_request_digest_ignores_key_order_and_tuples() -> None:
    a = request_digest([{"role": "user", "content": "x", "meta": [1, 2]}], TOOLS)
    b = request_digest([{"content": "x", "meta": (1, 2), "role": "user"}], TOOLS)
    assert a == b
    assert a != request_digest([{"role": "user", "content": "y"}], TOOLS)


def test_recording_driver_records_async_calls_and_errors() -> None:
    rec = RecordingDriver(ScriptedDriver(["a", DriverTimeoutError("slow")]))
    assert asyncio.run(rec.acomplete(MSGS, TOOLS)).text == "a"
    with pytest.raises(DriverTimeoutError):
        asyncio.run(rec.acomplete(MSGS, TOOLS))
    assert rec.exchanges[1]["error"]["type"] == "DriverTimeoutError"
    replay = ReplayDriver(rec.exchanges)
    assert replay.complete(MSGS, TOOLS).text == "a"
    with pytest.raises(DriverTimeoutError, match="slow"):
        replay.complete(MSGS, TOOLS)
