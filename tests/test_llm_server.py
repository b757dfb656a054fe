"""The ``llm_server`` fixture itself, over HTTP with the real ``openai`` client.

These pin down the facts about llama.cpp's server that the rest of the suite (and the
OpenAI driver) relies on: where evaluated and cached prompt tokens are reported, that a
prompt extending the previous one is served from the KV cache, and what a prompt longer than
the context looks like.  Each request generates a few tokens only: the file takes seconds.
"""

from __future__ import annotations

import json
import urllib.request
import uuid

import openai
import pytest

from vmem.kernel.drivers.openai import is_context_overflow
from llm_server import SMOLLM2_FILE, LLMServer, _unavailable

pytestmark = pytest.mark.llm


def _timings(completion) -> dict:
    """llama.cpp's per-request timings: not an OpenAI field, so the client keeps it in
    ``model_extra`` (``completion.to_dict()["timings"]`` is the same dict)."""
    timings = (completion.model_extra or {}).get("timings")
    assert isinstance(timings, dict), f"no timings in {completion.to_dict()}"
    return timings


def _system_prompt(facts: int = 20) -> str:
    """A system prompt that starts with a fresh nonce, so no earlier request's cache covers it."""
    text = " ".join(f"Fact {i}: {i} is {'even' if i % 2 == 0 else 'odd'}." for i in range(facts))
    return f"Session {uuid.uuid4().hex}. You answer briefly. {text}"


def test_plain_completion(llm_server: LLMServer) -> None:
    client = llm_server.client()
    reply = client.chat.completions.create(
        model=llm_server.model,
        messages=[{"role": "user", "content": "What is the capital of France? Answer in one word."}],
        max_tokens=16,
        temperature=0,
        seed=1,
    )
    choice = reply.choices[0]
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str) and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage is not None and 0 < reply.usage.completion_tokens <= 16
    if llm_server.started_here:
        assert reply.model == llm_server.model
        assert "paris" in choice.message.content.lower()  # greedy decoding, and SmolLM2 knows this one


def test_health_and_models(llm_server: LLMServer) -> None:
    assert llm_server.base_url.endswith("/v1")
    listed = [m.id for m in llm_server.client().models.list().data]
    assert listed
    if llm_server.started_here:
        assert listed == [llm_server.model]
        assert llm_server.base_url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(llm_server.base_url[: -len("/v1")] + "/health", timeout=5) as response:
            assert json.loads(response.read()) == {"status": "ok"}


def test_timings_report_evaluated_and_cached_tokens_and_a_shared_prefix_is_cached(llm_server: LLMServer) -> None:
    client = llm_server.client()
    first_messages = [
        {"role": "system", "content": _system_prompt()},
        {"role": "user", "content": "Is 7 odd? Answer yes or no."},
    ]
    first = client.chat.completions.create(model=llm_server.model, messages=first_messages, max_tokens=8, temperature=0)
    t1 = _timings(first)
    for key in ("prompt_n", "cache_n", "prompt_ms", "prompt_per_second", "predicted_n", "predicted_ms", "predicted_per_second"):
        assert key in t1, f"timings lacks {key}: {t1}"
    # usage.prompt_tokens counts every prompt token; timings splits it into evaluated + cached.
    assert first.usage.prompt_tokens == t1["prompt_n"] + t1["cache_n"]
    assert first.usage.prompt_tokens_details is not None
    assert first.usage.prompt_tokens_details.cached_tokens == t1["cache_n"]
    assert t1["predicted_n"] == first.usage.completion_tokens
    # The nonce near the start means little of this prompt can have been cached before.
    assert t1["cache_n"] < 20 and t1["prompt_n"] > 100, t1

    second_messages = first_messages + [
        {"role": "assistant", "content": first.choices[0].message.content or ""},
        {"role": "user", "content": "Is 8 even? Answer yes or no."},
    ]
    second = client.chat.completions.create(model=llm_server.model, messages=second_messages, max_tokens=8, temperature=0)
    t2 = _timings(second)
    assert second.usage.prompt_tokens == t2["prompt_n"] + t2["cache_n"]
    assert second.usage.prompt_tokens_details.cached_tokens == t2["cache_n"]
    # The whole first prompt is a prefix of the second, so all of it comes from the cache
    # (llama.cpp re-evaluates at least the last token, hence the slack of one).
    assert t2["cache_n"] >= first.usage.prompt_tokens - 1, (t1, t2)
    assert t2["prompt_n"] < t2["cache_n"] / 4, (t1, t2)


def test_a_prompt_over_n_ctx_is_a_context_overflow(llm_server: LLMServer) -> None:
    if llm_server.n_ctx is None:
        pytest.skip("the server's context size is unknown (not llama.cpp?)")
    client = llm_server.client()
    too_long = "hello " * (llm_server.n_ctx + 200)  # one token per word and then some
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=llm_server.model, messages=[{"role": "user", "content": too_long}], max_tokens=4
        )
    exc = caught.value
    assert exc.status_code == 400
    assert is_context_overflow(exc), f"the driver would not see a context overflow in: {exc.body!r}"
    if llm_server.started_here:  # llama.cpp's wording, which the driver's regex also matches
        assert isinstance(exc.body, dict) and exc.body.get("type") == "exceed_context_size_error"
        assert f"exceeds the available context size ({llm_server.n_ctx} tokens)" in exc.body.get("message", "")


def test_tools_are_ignored_by_a_template_without_tool_support(llm_server: LLMServer) -> None:
    """SmolLM2's chat template has no tools: llama.cpp neither rejects ``tools=`` nor puts
    them in the prompt, so a driver in ``auto`` mode never learns it should fall back.  Tests
    that drive this model with tools must use the driver's ``json`` tool mode."""
    if llm_server.gguf is None or llm_server.gguf.name != SMOLLM2_FILE:
        pytest.skip("about the bundled SmolLM2 model only")
    client = llm_server.client()
    tools = [{
        "type": "function",
        "function": {
            "name": "send_message",
            "description": "Send a message to the user.",
            "parameters": {"type": "object", "properties": {"message": {"type": "string"}}, "required": ["message"]},
        },
    }]
    messages = [{"role": "user", "content": "Use send_message to say hi."}]
    plain = client.chat.completions.create(model=llm_server.model, messages=messages, max_tokens=4, temperature=0)
    with_tools = client.chat.completions.create(
        model=llm_server.model, messages=messages, tools=tools, max_tokens=4, temperature=0
    )
    assert with_tools.usage.prompt_tokens == plain.usage.prompt_tokens  # the tools are not in the prompt
    assert not with_tools.choices[0].message.tool_calls


def test_a_missing_llm_skips_or_fails_when_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VMEM_REQUIRE_LLM", raising=False)
    with pytest.raises(pytest.skip.Exception, match="pip install xllamacpp"):
        _unavailable("nothing installed")
    monkeypatch.setenv("VMEM_REQUIRE_LLM", "1")
    with pytest.raises(pytest.fail.Exception, match="VMEM_REQUIRE_LLM"):
        _unavailable("nothing installed")
