"""``vmem eval qa`` (vmem.app.qa): the harness on a synthetic conversation in LoCoMo's shape.

No LoCoMo data is needed: :func:`write_conversation` writes a conversation of six dated sessions
whose first and last sessions hold a few "password" facts, with filler between, far longer than
the window. Two kinds of test:

- with a scripted *reader* driver that answers only from what reaches it (the prompt, or the
  results of the searches it makes), so each configuration's plumbing shows in its score: the
  whole conversation finds every fact, truncation only the recent one, retrieval, the agent's
  search and prefetch find the old ones too;
- the command line against the real model of the ``llm_server`` fixture (SmolLM2), on two
  questions under (b)-(e), so the harness cannot rot: it asserts the report's shape and that
  every configuration made its calls, never the small model's answers.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from vmem.app.extractive import ExtractiveSummarizer
from vmem.app.qa import (
    ADVERSARIAL_OPTION,
    QASettings,
    daemon_status,
    format_qa_report,
    load_dialogues,
    question_message,
    read_reply,
    run_qa,
    select_items,
)
from vmem.kernel import Memory, MemoryConfig
from vmem.kernel.drivers import Completion, Driver, ToolCall, Usage
from vmem.kernel.summary import SUMMARIZER_PROMPT

from test_cli import CLEAN_ENV, assert_clean_error, vmem

SPEAKERS = ("Ana", "Ben")
FILLER = ["I spent the afternoon sorting old photographs from the summer trip to the mountains.",
          "The weather report promised rain again, so the picnic moved indoors to the kitchen.",
          "We talked about the new bakery on the corner and its cinnamon rolls for a while.",
          "My neighbour repaired the fence and then asked whether I wanted some tomatoes.",
          "The train was late by twenty minutes, which gave me time to finish my crossword."]
FACTS = {  # thing -> (session, the password), session 1 is the oldest
    "garage": (1, "Zorblax"),
    "boat": (1, "Quintessa"),
    "laptop": (6, "Marigold"),
}
DATES = ["1:56 pm on 8 May, 2023", "10:15 am on 20 May, 2023", "4:02 pm on 3 June, 2023",
         "9:30 am on 19 June, 2023", "7:45 pm on 2 July, 2023", "11:11 am on 15 July, 2023"]


def write_conversation(path: Path) -> Path:
    """A LoCoMo-shaped file: one conversation, six sessions of 30 turns, four questions."""
    conversation: dict[str, Any] = {"speaker_a": SPEAKERS[0], "speaker_b": SPEAKERS[1]}
    for s, date in enumerate(DATES, 1):
        turns = []
        for t in range(30):
            speaker = SPEAKERS[t % 2]
            text = f"{FILLER[(s + t) % len(FILLER)]} That was on day {t} of session {s}."
            turns.append({"speaker": speaker, "dia_id": f"D{s}:{t + 1}", "text": text})
        facts = [(thing, word) for thing, (session, word) in FACTS.items() if session == s]
        for k, (thing, word) in enumerate(facts):
            turns[3 + 4 * k]["text"] = f"By the way, the password for the {thing} is {word}."
        conversation[f"session_{s}"] = turns
        conversation[f"session_{s}_date_time"] = date
    qa = [
        {"question": "What is the password for the garage?", "answer": "Zorblax", "evidence": ["D1:4"], "category": 4},
        {"question": "What is the password for the boat?", "answer": "Quintessa", "evidence": ["D1:8"],
         "category": 1},
        {"question": "What is the password for the laptop?", "answer": "Marigold", "evidence": ["D6:4"],
         "category": 4},
        {"question": "What is the password for the castle?", "adversarial_answer": "Drawbridge", "evidence": [],
         "category": 5},
    ]
    path.write_text(json.dumps([{"sample_id": "syn-1", "conversation": conversation, "qa": qa}]))
    return path


_THING = re.compile(r"password for the (\w+)\?")


class Reader(Driver):
    """Answers a question only from what reaches it. With tools (the agent), it first searches the
    conversation, then answers with send_message from what it has read."""

    def __init__(self) -> None:
        self.calls = 0

    def complete(self, messages: Any, tools: Any) -> Completion:
        self.calls += 1
        last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
        question = messages[last_user]["content"]
        thing = _THING.search(question)
        seen = "\n".join(str(m.get("content") or "") for m in messages)
        usage = Usage(sum(len(str(m.get("content") or "")) // 4 for m in messages), 4, 0)
        if tools and not any(m["role"] == "tool" for m in messages[last_user:]):
            query = f"password {thing.group(1)}" if thing else question
            return Completion(tool_calls=[ToolCall("s1", "conversation_search", {"query": query, "request_heartbeat": True})], usage=usage)
        found = re.search(rf"password for the {thing.group(1)} is (\w+)", seen) if thing else None
        answer = found.group(1) if found else ADVERSARIAL_OPTION
        if tools:
            return Completion(tool_calls=[ToolCall("s2", "send_message", {"message": answer})], usage=usage)
        return Completion(text=answer, usage=usage)


@pytest.fixture
def synthetic(tmp_path: Path) -> Path:
    return write_conversation(tmp_path / "syn.json")


def test_each_configuration_answers_from_what_reaches_the_model(synthetic: Path, tmp_path: Path) -> None:
    dialogues = load_dialogues(synthetic)
    items = select_items(dialogues)
    assert [i.qid for i in items] == ["syn-1:0", "syn-1:1", "syn-1:2", "syn-1:3"]
    drivers: list[Reader] = []

    def make(max_tokens: int) -> Reader:
        drivers.append(Reader())
        return drivers[-1]

    settings = QASettings(window=3584, reserve=256, rag_k=5, prefetch=4, workset=400)
    seen: list[str] = []
    report = run_qa(dialogues, items, list("abcdef"), settings, make, workdir=tmp_path,
                    on_outcome=lambda o: seen.append(f"{o.config}:{o.qid}"))
    by = {(o.config, o.qid): o for o in report.outcomes}
    daemon = daemon_status() is None  # (f) runs where the kernel has the consolidation daemon
    assert len(seen) == len(report.outcomes) == (6 if daemon else 5) * 4
    if daemon:
        # the reader answers the daemon's prompts with no proposal: every run was made, none applied,
        # and (f) answers as (e) does
        facts = report.prepared["f"]["syn-1"]
        assert facts["daemon_runs"] >= 2 and facts["daemon_calls"] >= facts["daemon_runs"]
        assert facts["daemon_applied"] == 0 and facts["daemon_error"] is None
        assert [by["f", i.qid].f1 for i in items] == [by["e", i.qid].f1 for i in items]
    else:
        assert "f" in report.unavailable and "not available" in report.unavailable["f"]
    old, recent, adversarial = ("syn-1:0", "syn-1:1"), "syn-1:2", "syn-1:3"
    for config in "acde":  # the whole conversation, retrieval, the agent's search, prefetch: every fact
        for qid in (*old, recent, adversarial):
            assert by[config, qid].f1 == 1.0, (config, qid, by[config, qid])
    # truncation keeps the newest turns only: the old facts are gone, the recent one is there
    assert by["b", recent].f1 == 1.0 and by["b", adversarial].f1 == 1.0
    assert all(by["b", qid].f1 == 0.0 and by["b", qid].prediction == ADVERSARIAL_OPTION for qid in old)
    # the agent searched, then answered with send_message: two calls a question
    assert all(by["d", qid].calls == 2 and by["d", qid].detail["tool_calls"] == ["conversation_search", "send_message"]
               for qid in old)
    assert all(o.prompt_tokens > 0 and o.error is None for o in report.outcomes)
    # the windowed configurations stay in the window; the whole conversation does not fit in it
    assert by["a", recent].prompt_tokens * 4 > 3 * 3584
    # vmem ingested the history without the model: flushes happened, summarised extractively
    for config in "de":
        facts = report.prepared[config]["syn-1"]
        assert facts["turns"] == 180 and facts["flushes"] >= 1 and facts["summary_requests"] >= 1
        assert facts["evicted"] > 0
    data = report.to_dict()
    json.dumps(data, allow_nan=False)  # strict JSON
    if not daemon:
        assert data["configs"]["f"] == {"name": "daemon", "description": data["configs"]["f"]["description"],
                                        "available": False, "reason": report.unavailable["f"]}
        assert re.search(r"^\(f\) daemon +not available", format_qa_report(report), re.M)
    assert data["configs"]["a"]["overall"]["f1"] == 1.0
    assert data["configs"]["b"]["by_category"]["single-hop"] == {**data["configs"]["b"]["by_category"]["single-hop"],
                                                                 "questions": 2, "f1": 0.5}
    table = format_qa_report(report)
    assert re.search(r"^\(b\) truncate +0\.0 \(1\) +50\.0 \(2\) +100\.0 \(1\) +50\.0 ", table, re.M), table


def test_selection_is_a_fixed_sample_spread_across_categories(synthetic: Path, tmp_path: Path) -> None:
    data = json.loads(synthetic.read_text())
    data[0]["qa"] = [{"question": f"q{n}", "answer": "x", "category": 1 + n % 5} for n in range(50)]
    path = tmp_path / "many.json"
    path.write_text(json.dumps(data))
    dialogues = load_dialogues(path)
    sample = select_items(dialogues, limit=10, seed=3)
    assert sorted(i.category for i in sample) == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert sample == select_items(dialogues, limit=10, seed=3)  # the same arguments, the same questions
    assert sample != select_items(dialogues, limit=10, seed=4)
    assert [i.index for i in sample] == sorted(i.index for i in sample)  # in file order
    assert [i.qid for i in select_items(dialogues, questions=["syn-1:7", "syn-1:2"])] == ["syn-1:7", "syn-1:2"]
    assert {i.category for i in select_items(dialogues, categories=[2, 5])} == {2, 5}
    with pytest.raises(ValueError, match="no conversation conv-9"):
        select_items(dialogues, conversations=["conv-9"])
    with pytest.raises(ValueError, match="no question syn-1:99"):
        select_items(dialogues, questions=["syn-1:99"])
    with pytest.raises(ValueError, match="categories are 1-5"):
        select_items(dialogues, categories=[7])


def test_question_messages_and_replies(synthetic: Path) -> None:
    items = {i.category: i for i in select_items(load_dialogues(synthetic))}
    adversarial = items[5]
    message = question_message(adversarial, seed=0)
    options = re.fullmatch(r"What is the password for the castle\? Select the correct answer: \(a\) (.+) \(b\) (.+)\.",
                           message)
    assert options and {options.group(1), options.group(2)} == {ADVERSARIAL_OPTION, "Drawbridge"}
    assert read_reply(adversarial, " (a) ", 0) == options.group(1)
    assert read_reply(adversarial, "b.", 0) == options.group(2)
    assert read_reply(adversarial, "Drawbridge, I think", 0) == "Drawbridge, I think"
    assert read_reply(items[4], "a", 0) == "a"  # option letters mean something for adversarial questions only
    # the order is drawn per question from the seed: some seed puts the abstention second
    orders = {(m := question_message(adversarial, seed=s)).index(ADVERSARIAL_OPTION) < m.index("Drawbridge")
              for s in range(16)}
    assert orders == {True, False}


def test_extractive_summarizer_folds_within_the_words_asked(tmp_path: Path) -> None:
    summarize = ExtractiveSummarizer()
    def request(words: int, previous: str = "(none)") -> list[dict[str, str]]:
        return [{"role": "system", "content": SUMMARIZER_PROMPT.format(words=words)},
                {"role": "user", "content": f"Previous summary:\n{previous}\n\nMessages to fold in:\n"
                                            "user: [Session 2 · 10:15 am on 20 May, 2023] Ana: Hi there!\n"
                                            "user: Ben: I adopted a grey cat called Pixel from the Porto shelter.\n"
                                            "user: Ana: Oh nice. Yes."}]

    text = summarize(request(45))  # a third of 45 words: room for the one sentence that says something
    assert text == "On 10:15 am on 20 May, 2023: Ben: I adopted a grey cat called Pixel from the Porto shelter."
    assert summarize(request(45)) == text and summarize.requests == 2  # deterministic
    # too little room: the best sentence's first words; the oldest lines of the previous summary go first
    assert summarize(request(24)) == "On 10:15 am on 20 May, 2023: Ben: I adopted a grey cat called Pixel from"
    folded = summarize(request(30, previous="On 1 May: Ana: an old line that is long enough to go.\nOn 2 May: kept"))
    assert folded.splitlines() == ["On 2 May: kept", "On 10:15 am on 20 May, 2023: Ben: I adopted a grey cat called "
                                                     "Pixel from the Porto"]
    with pytest.raises(ValueError, match="not a summary request"):
        summarize([{"role": "user", "content": "hello"}])
    # in a memory: the queue manager flushes through it, nothing is lost, the invariants hold
    memory = Memory.create(tmp_path / "m", system="s", config=MemoryConfig(window=3328, reserve_output=128))
    for n in range(60):
        memory.append({"role": "user", "content": f"Ben: fact number {n} is that Pixel ate {n} Porto sardines."})
        memory.context(summarizer=summarize)
    memory.check()
    assert memory.evicted > 0 and memory.summary and len(memory.summary.split()) <= 0.1 * 2200
    assert memory.conversation_search("sardines").total == 60
    memory.close()


def test_the_extractive_summary_leaves_the_kernels_notes_out() -> None:
    """A pressure alert in the messages to fold is the kernel talking, not the conversation: its
    long, wordy sentences would otherwise outscore what was said."""
    alert = ("system: Memory pressure: the context window is 75% full. Older messages will soon be evicted to "
             "recall storage behind a summary. Save anything important to core memory (core_memory_append / "
             "core_memory_replace) or archival memory (archival_memory_insert) now.\n"
             "  A second line of the same system note, about Porto and Pixel and 1,200 calls a day.")
    text = ExtractiveSummarizer()([
        {"role": "system", "content": SUMMARIZER_PROMPT.format(words=300)},
        {"role": "user", "content": "Previous summary:\n(none)\n\nMessages to fold in:\n"
                                    f"user: Ben: I adopted a grey cat called Pixel.\n{alert}\n"
                                    "user: Ana: My sister moved to Lisbon in March."}])
    assert text == "Ben: I adopted a grey cat called Pixel. | Ana: My sister moved to Lisbon in March."


@pytest.mark.llm
def test_eval_qa_on_a_real_model(llm_server, synthetic: Path, tmp_path: Path) -> None:
    log = tmp_path / "outcomes.jsonl"
    # a small window (the agent's tool schemas take ~1,800 of it), short answers and one question per
    # configuration keep it to a minute or two (CI's budget); the harness's logic has its own tests above
    p = vmem("eval", "qa", str(synthetic), "--base-url", llm_server.base_url, "--model", llm_server.model,
             "--tool-mode", "json", "--configs", "b,c,d,e", "--limit", "1", "--window", "3584", "--reserve", "256",
             "--rag-k", "5", "--prefetch", "3", "--workset", "200", "--max-steps", "2", "--answer-tokens", "16",
             "--agent-tokens", "64", "--merge-system", "--json", "--log", str(log),
             env={**CLEAN_ENV, "VMEM_API_KEY": llm_server.api_key}, timeout=1200)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Traceback" not in p.stderr and "%|" not in p.stderr  # no progress bar when stderr is not a terminal
    report = json.loads(p.stdout)
    assert list(report["configs"]) == ["b", "c", "d", "e"]
    assert report["settings"]["merge_system"] is True
    for key, entry in report["configs"].items():
        assert entry["available"] is True, entry
        overall = entry["overall"]
        assert overall["questions"] == 1 and 0.0 <= overall["f1"] <= 1.0
        assert overall["errors"] == 0, [q["error"] for q in report["questions"] if q["config"] == key]
        assert overall["prompt_tokens"] > 0 and overall["calls"] >= 1 and overall["seconds"] > 0
    questions = report["questions"]
    assert len(questions) == 4 and len({q["qid"] for q in questions}) == 1  # the same question everywhere
    assert [json.loads(line)["qid"] for line in log.read_text().splitlines()] == [q["qid"] for q in questions]


def test_eval_qa_bad_input_is_one_clear_line(synthetic: Path, tmp_path: Path) -> None:
    server = ("--base-url", "http://127.0.0.1:9/v1", "--model", "m")  # never reached: the input is refused first
    assert_clean_error(vmem("eval", "qa", str(synthetic), *server, "--configs", "b,x"), 2, "--configs", "x")
    assert_clean_error(vmem("eval", "qa", str(synthetic), *server, "--categories", "two"), 2, "--categories")
    assert_clean_error(vmem("eval", "qa", str(synthetic), *server, "--conversations", "conv-9"), 2, "conv-9")
    assert_clean_error(vmem("eval", "qa", str(synthetic), *server, "--window", "100"), 2, "window")
    assert_clean_error(vmem("eval", "qa", str(tmp_path / "none.json"), *server), 2, "no LoCoMo file")
    assert_clean_error(vmem("eval", "qa", str(synthetic)), 2, "no model")
    (tmp_path / "bad.json").write_text('{"not": "a list"}')
    assert_clean_error(vmem("eval", "qa", str(tmp_path / "bad.json"), *server), 1, "not a LoCoMo file")


def test_a_memory_the_window_cannot_hold_is_an_error_not_a_crash(synthetic: Path, tmp_path: Path) -> None:
    dialogues = load_dialogues(synthetic)
    items = select_items(dialogues)[:2]
    # 2,100 tokens: the agent's tool schemas (~1,760) leave no room for its pinned pages and last messages
    report = run_qa(dialogues, items, ["b", "d"], QASettings(window=2100, reserve=128), lambda n: Reader(),
                    workdir=tmp_path)
    agent = [o for o in report.outcomes if o.config == "d"]
    assert len(agent) == 2 and all(o.error and "Error: " in o.error and o.f1 == 0.0 for o in agent)
    error = report.prepared["d"]["syn-1"]["error"]
    assert "would need" in error or "fit" in error or "too small to work" in error
    assert [o.error for o in report.outcomes if o.config == "b"] == [None, None]  # the others ran
    assert report.summary("d")["errors"] == 2
