"""What the consolidation daemon's model may propose (kernel/proposals.py), read leniently from
the messy answers of small models; nothing guessed, what cannot be read counted."""

from __future__ import annotations

import datetime as dt

import pytest

from vmem.kernel.proposals import (
    Batch,
    BlockEdit,
    Fact,
    KnownFact,
    Supersession,
    Turn,
    closeness,
    near_duplicate,
    normal,
    parse_pick,
    parse_proposals,
    parse_verdict,
    related,
    restates,
    topic,
)
from vmem.kernel.drivers.lenient_json import parse_first_object
from vmem.storage import Block

T0 = dt.datetime(2024, 5, 1, 9, 0, tzinfo=dt.timezone.utc)


def batch_of(known: tuple[KnownFact, ...] = (), blocks: tuple[Block, ...] = (Block("human", "name: Bob", 120),)
             ) -> Batch:
    return Batch(0, 2, (Turn(1, "user", "I'm Ana and I make 60 calls a day", T0),), blocks, known)


# --------------------------------------------------------------------------- lenient parsing


@pytest.mark.parametrize("text", [
    '```json\n{"human": ["job: nurse"], "facts": ["calls per day: 60"]}\n```',
    'Sure! Here is the JSON:\n{"human": ["job: nurse"], "facts": ["calls per day: 60"]}\nHope it helps.',
    "{'human': ['job: nurse'], 'facts': ['calls per day: 60'],}",
    '{"User": "job: nurse", "facts": "calls per day: 60"}',
    '{"human": ["job: nurse"], "facts": ["calls per day: 60"',  # cut off between values
])
def test_messy_small_model_answers_are_read(text: str) -> None:
    found = parse_proposals(text, batch_of())
    assert found.error is None and found.malformed == 0
    assert found.edits == [BlockEdit("human", "job: nurse")]
    assert found.facts == [Fact("calls per day: 60")]


def test_a_bare_list_is_facts_and_prose_is_an_error() -> None:
    assert parse_proposals('["likes tea", "has a cat"]', batch_of()).facts == [Fact("likes tea"), Fact("has a cat")]
    nothing = parse_proposals("I could not find anything worth remembering.", batch_of())
    assert nothing.error and nothing.count == 0
    assert parse_proposals("", batch_of()).error


def test_a_topic_line_replaces_the_blocks_line_on_that_topic() -> None:
    found = parse_proposals('{"human": ["Name: Ana", "city: Porto"]}', batch_of())
    assert found.edits == [BlockEdit("human", "Name: Ana", "name: Bob"), BlockEdit("human", "city: Porto")]


def test_the_prompts_own_markup_copied_back_is_not_content() -> None:
    """Qwen2.5-Coder-1.5B, as the daemon over bench/data/knowledge_updates.json, copied the prompt's
    markup into what it proposed (verbatim): a known fact's "(since <date>)" (the old value then came
    back as a new fact, dated on the update's day, and ranked first), a turn's time and role. The
    role head also made "user" a topic, so one such line replaced another."""
    answer = ('{"human": ["user: Since the product launch we\'re up to 1,200 calls a day, it\'s chaos.",'
              ' "user: Two more next month, and I\'m calling my manager about overtime."],'
              ' "facts": ["60 calls a day (since 2024-01-08)", "1,200 calls a day (since 2024-02-18)",'
              ' "(2024-01-22 09:00) I get to work by bus, it takes about 50 minutes.",'
              ' "(2024-01-30 09:00) user: My newsletter has 300 subscribers after a year of writing.",'
              ' "[2024-05-02 09:00] assistant: Saved.", "(2024-05-02 09:01)",'
              ' "2024-05-24 09:03: I\'m seeing someone new, Ines; she\'s my girlfriend now.",'
              ' "screen time: 2 hours a day (since 2024-04-24 09:04)",'
              ' "1. I use VS Code for everything, with the vim extension."]}')
    found = parse_proposals(answer, batch_of())
    assert found.facts == [Fact("60 calls a day"), Fact("1,200 calls a day"),
                           Fact("I get to work by bus, it takes about 50 minutes."),
                           Fact("My newsletter has 300 subscribers after a year of writing."), Fact("Saved."),
                           Fact("I'm seeing someone new, Ines; she's my girlfriend now."),
                           Fact("screen time: 2 hours a day"),
                           Fact("I use VS Code for everything, with the vim extension.")]  # a known fact's number
    assert found.malformed == 1  # nothing left of the last one
    assert found.edits == [BlockEdit("human", "Since the product launch we're up to 1,200 calls a day, it's chaos."),
                           BlockEdit("human", "Two more next month, and I'm calling my manager about overtime.")]
    # words that only look like it stay
    kept = parse_proposals('{"facts": ["The user: a nurse since 2019", "since 2024-01-08 she runs daily",'
                           ' "2024-05-24 was her first day", "3.5 hours of piano a week", "2024. A good year"]}',
                           batch_of())
    assert kept.facts == [Fact("The user: a nurse since 2019"), Fact("since 2024-01-08 she runs daily"),
                          Fact("2024-05-24 was her first day"), Fact("3.5 hours of piano a week"),
                          Fact("2024. A good year")]


def test_unreadable_items_are_counted_not_guessed() -> None:
    known = (KnownFact(101, "calls per day: 60", T0),)
    found = parse_proposals('{"human": [{"x": 1}, 3.5], "nosuchblock": ["a", "b"], '
                            '"facts": [{"fact": "calls per day: 1200", "replaces": 1}, '
                            '{"fact": "moved", "replaces": 9}, {"fact": "x", "replaces": "one"}, null]}',
                            batch_of(known))
    # {"x": 1} and null cannot be read; 3.5 is a line "3.5"; two lines for an unknown block; numbers
    # 9 (not shown) and "one" are not known facts
    assert found.malformed == 1 + 2 + 2 + 1
    assert found.edits == [BlockEdit("human", "3.5")]
    assert found.facts == [Fact("calls per day: 1200", (101,))]
    assert found.supersessions == [Supersession((101,), 0, "stated")]


@pytest.mark.parametrize("text, verdict", [
    ('{"replaced": true}', True), ('{"replaced": false}', False), ("```json\n{'replaced': 'yes'}\n```", True),
    ("Yes, the old fact is outdated.", True), ("No.", False), ("no longer true", True), ("Maybe", None),
    ('{"something": 1}', None), ("", None),
])
def test_yes_no_verdicts(text: str, verdict: bool | None) -> None:
    assert parse_verdict(text) is verdict


@pytest.mark.parametrize("text, pick", [
    ('{"same": 2}', 2), ('```json\n{"same": "3"}\n```', 3), ('{"same": 0}', 0), ('{"same": null}', 0),
    ("2", 2), (" [1] ", 1), ('{"number": 1}', 1),
    ('{"same": 4}', None),  # not one of the three shown
    ('{"same": [1, 2]}', None), ('{"same": true}', None), ('{"other": 1}', None), ("I think it is 2", None),
    ("", None), ("-1", None),
])
def test_which_known_fact_answers(text: str, pick: int | None) -> None:
    assert parse_pick(text, 3) == pick


def test_topics_duplicates_and_relatedness() -> None:
    assert topic("Calls per day: 1,200") == "calls per day" and topic("no topic here") is None
    assert topic("a very long sentence that is not a topic at all: x") is None
    assert near_duplicate("Ana has a dog named Rex", "ana has a dog named rex.")
    assert not near_duplicate("Ana lives in Lisbon", "Ana lives in Porto")
    assert related("Ana lives in Lisbon", "Ana lives in Porto") and related("city: Lisbon", "City: Porto")
    assert not related("Ana lives in Lisbon", "Bob plays chess")
    assert related("I get to work by bus", "I cycle to work now")  # one content word is enough to ask
    assert not related("Ana drinks tea", "Ana has a dog", frozenset({"ana"}))  # not a word most facts hold
    assert not related("calls per day: 60", "calls: Ana's job")  # two topics: two things, words aside
    assert restates("Ana lives in Porto", "name: Ana") and restates("I moved: Porto, Rua Nova", "Porto")
    assert not restates("Ana lives in Porto", "city: Lisbon") and not restates("x", "the")  # no content: no
    assert closeness("work: bus", "Work: bike") > closeness("I get to work by bus", "I bus to work") \
        > closeness("I get to work by bus", "I cycle to work now")


def test_a_fact_is_dated_by_the_user_turn_it_comes_from() -> None:
    t1, t2 = T0, T0 + dt.timedelta(days=3)
    batch = Batch(0, 4, (Turn(1, "user", "I adopted a cat called Miso", t1), Turn(2, "assistant", "cute", t1),
                         Turn(3, "user", "I started running on Mondays", t2), Turn(4, "assistant", "good", t2)), ())
    assert batch.time_of("has a cat called Miso") == t1
    assert batch.time_of("runs on Mondays") == t2
    assert batch.time_of("something else entirely") == t2  # none shares a word: the newest


def test_an_answer_written_twice_is_read_once_and_placeholders_are_left_for_the_checks() -> None:
    # SmolLM2-135M's answer to the daemon's prompt, as it came: the schema's placeholders, three times
    text = ('{"human": ["...", "..."], "persona": ["...", "..."], "facts": ["...", "..."]}\n\n'
            '{"human": ["...", "..."], "persona": ["...", "..."], "facts": ["...", "..."]}\n\n{"human": ["...", "..')
    found = parse_proposals(text, batch_of(blocks=(Block("human", "", 100), Block("persona", "", 100))))
    assert found.error is None and len(found.edits) == 4 and len(found.facts) == 2
    assert all(normal(e.new) == "" for e in found.edits)  # apply skips them as empty


def test_parse_first_object() -> None:
    assert parse_first_object('x {"a": 1} {"b": 2}').arguments == {"a": 1}
    assert parse_first_object('```json\n{"a": [1, 2,],}\n```\nmore').arguments == {"a": [1, 2]}
    assert parse_first_object("no json").error
    assert parse_first_object('{"a": "cut').error  # a value cut off is never repaired
