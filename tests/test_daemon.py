"""The in-process consolidation daemon (kernel/daemon.py): a step never waits for the daemon's
LLM, its runs are applied between steps and reach the next context, a step waits at most for a
run's short apply, idle runs, failures.

No wall-clock asserts: the daemon's driver is gated by events, and the tests wait for events."""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from vmem.kernel import Agent, ConsolidationDaemon, DaemonConfig, read_trace, replay
from vmem.kernel import daemon as daemon_module  # its internals, patched
from vmem.kernel.consolidation import PICK_SYSTEM
from vmem.kernel.drivers import Completion, Driver, DriverError, ScriptedDriver


def core_message(messages) -> str:
    """The core memory message of a compiled context (after the system and memory instructions)."""
    return next(m["content"] for m in messages if m["role"] == "system" and m["content"].startswith("<core_memory"))


T0 = dt.datetime(2024, 5, 1, 9, 0, tzinfo=dt.timezone.utc)
WAIT = 20.0  # seconds an event may take on a loaded machine (a bound, not a measurement)


class GatedDriver(Driver):
    """The daemon's model: each call announces itself and waits until the test opens the gate; it
    answers its extraction and yes/no calls from ``answers``, its "which one" calls with none."""

    def __init__(self, answers: list[Any]) -> None:
        self.answers = list(answers)
        self.called = threading.Event()
        self.gate = threading.Event()
        self.calls = 0

    def complete(self, messages: list[dict], tools: list[dict]) -> Completion:
        self.calls += 1
        self.called.set()
        assert self.gate.wait(WAIT), "the test never opened the gate"
        if messages[0]["content"] == PICK_SYSTEM:  # "which known fact is it about?": none
            return Completion(text='{"same": 0}')
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return Completion(text=answer)


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> dt.datetime:
        self.t += dt.timedelta(hours=1)
        return self.t


def make_agent(path: Path) -> tuple[Agent, list[list[dict]]]:
    seen: list[list[dict]] = []
    n = iter(range(10_000))

    def model(messages: list[dict], tools: list[dict]) -> Completion:
        seen.append(messages)
        return {"id": f"c{next(n)}", "name": "send_message", "arguments": {"message": "ok"}}

    agent = Agent.create(path, system="sys", driver=ScriptedDriver(model), clock=Clock(),
                         blocks={"human": "", "persona": "helpful"})
    return agent, seen


def until(condition: Any, daemon: Any = None) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, ("the daemon never got there", daemon and daemon.errors,
                                             daemon and daemon.reports)
        time.sleep(0.005)


def test_steps_do_not_wait_for_the_daemons_llm_and_its_run_reaches_the_next_context(tmp_path: Path) -> None:
    agent, seen = make_agent(tmp_path / "a")
    gated = GatedDriver(['{"human": ["name: Ana", "job: nurse"], "facts": ["Ana works nights"]}', '{"facts": []}'])
    with ConsolidationDaemon(agent, gated, DaemonConfig(every=2)) as daemon:
        agent.step("Hi, I'm Ana.")
        assert not gated.called.is_set()  # one turn: not due
        agent.step("I'm a nurse, I work nights.")
        assert gated.called.wait(WAIT)  # due after 2 turns: the worker is in the LLM call, gate closed
        for text in ("How are you?", "Tell me a joke.", "Thanks."):
            agent.step(text)  # each returns while the daemon's LLM call is still blocked
        assert not gated.gate.is_set() and daemon.running and daemon.reports == []
        assert agent.memory.block("human").value == ""
        gated.gate.set()
        until(lambda: daemon.reports)  # applied by the worker between steps, under agent.lock
        agent.step("What do you know about me?")
        assert "job: nurse" in core_message(seen[-1])  # the core memory message of this step's context
        report = daemon.reports[0]
        # 2 turns: user, call, result; two lines and three facts (a line is a fact too)
        assert (report.start, report.end) == (0, 6) and report.applied == 5
    events = [e["e"] for e in read_trace(agent.memory.store)]
    # the run is recorded between the fifth step's end and the sixth's user message
    users = [i for i, e in enumerate(events) if e == "user"]
    assert users[4] < events.index("consolidate") < users[5]
    assert agent.after_step == [] and daemon.errors == []  # stopped: unhooked from the agent
    agent.memory.check()
    agent.close()


def test_a_step_waits_at_most_for_the_short_apply(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    agent, _ = make_agent(tmp_path / "a")
    gated = GatedDriver(['{"human": ["name: Ana"]}'])
    gated.gate.set()
    applying, finish = threading.Event(), threading.Event()
    real_apply = daemon_module.apply

    def slow_apply(*args: Any, **kwargs: Any) -> Any:
        applying.set()
        assert finish.wait(WAIT)
        return real_apply(*args, **kwargs)

    monkeypatch.setattr(daemon_module, "apply", slow_apply)
    with ConsolidationDaemon(agent, gated, DaemonConfig(every=1)) as daemon:
        agent.step("I'm Ana.")
        assert applying.wait(WAIT)  # the worker holds agent.lock, in its apply
        done = threading.Event()
        stepper = threading.Thread(target=lambda: (agent.step("Hello"), done.set()))
        stepper.start()
        assert not done.wait(0.2)  # the step waits for the apply (a forced switch, not a timing)
        finish.set()
        assert done.wait(WAIT)  # and goes on once it is applied
        stepper.join()
        assert daemon.reports[0].applied == 2  # the line and its fact
    agent.close()


def test_wait_finishes_the_run_in_the_callers_thread(tmp_path: Path) -> None:
    agent, _ = make_agent(tmp_path / "a")
    gated = GatedDriver(['{"human": ["city: Porto"]}'])
    gated.gate.set()
    with ConsolidationDaemon(agent, gated, DaemonConfig(every=10)) as daemon:
        agent.step("I live in Porto.")
        assert not gated.called.is_set()
        assert daemon.wait(WAIT)  # not due by count: wait() runs now and returns once it is applied
        assert agent.memory.block("human").value == "city: Porto"
        assert agent.memory.consolidation_cursor == agent.memory.stats.recall
    agent.close()


def test_the_daemon_runs_beside_an_agent_in_either_store(place) -> None:
    """Its thread is named after the agent: a directory's name, or a PostgreSQL agent's (a URL
    has no ``.name``: a daemon beside an agent in PostgreSQL raised AttributeError; found by mypy)."""
    agent, _ = make_agent(place("ana"))
    gated = GatedDriver(['{"human": ["city: Porto"]}'])
    gated.gate.set()
    with ConsolidationDaemon(agent, gated, DaemonConfig(every=10)) as daemon:
        assert any(t.name.startswith("vmem-consolidate:ana") for t in threading.enumerate())  # the agent's name
        agent.step("I live in Porto.")
        assert daemon.wait(WAIT)
        assert agent.memory.block("human").value == "city: Porto"
    agent.close()


def test_an_idle_agent_is_consolidated(tmp_path: Path) -> None:
    agent, seen = make_agent(tmp_path / "a")
    gated = GatedDriver(['{"human": ["pet: a cat called Miso"]}'])
    with ConsolidationDaemon(agent, gated, DaemonConfig(every=0, idle=0.05)) as daemon:
        agent.step("I have a cat called Miso.")
        assert gated.called.wait(WAIT)  # no step came for the idle time: a run started
        gated.gate.set()
        until(lambda: daemon.reports)
        agent.step("Hello again")
        assert "pet: a cat called Miso" in core_message(seen[-1])
        assert len(daemon.reports) == 1 and gated.calls == 1  # idle again, nothing new: no second run
    agent.memory.check()
    agent.close()


def test_a_failed_llm_call_is_retried_with_the_same_turns(tmp_path: Path) -> None:
    agent, _ = make_agent(tmp_path / "a")
    gated = GatedDriver([DriverError("server down"), '{"human": ["name: Ana"]}'])
    gated.gate.set()
    with ConsolidationDaemon(agent, gated, DaemonConfig(every=1)) as daemon:
        agent.step("I'm Ana.")
        until(lambda: daemon.errors)
        assert "server down" in daemon.errors[0]
        until(lambda: not daemon.running)
        agent.step("Hello")  # due again: the batch starts where the failed one did
        until(lambda: daemon.reports, daemon)
        assert daemon.reports[0].start == 0 and agent.memory.block("human").value == "name: Ana"
    agent.close()


def test_a_run_that_fails_to_apply_changes_nothing_and_the_agent_goes_on(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    agent, _ = make_agent(tmp_path / "a")
    gated = GatedDriver(['{"facts": ["Ana likes tea"]}', '{"facts": ["Ana likes tea"]}'])
    agent.step("I like tea.")
    digest = agent.memory.digest()
    monkeypatch.setattr(agent.memory, "archival_insert", lambda *a, **k: (_ for _ in ()).throw(OSError("full")))
    gated.gate.set()
    with ConsolidationDaemon(agent, gated, DaemonConfig(every=1)) as daemon:
        assert daemon.wait(WAIT)
        assert daemon.errors == ["apply failed (OSError: full); nothing was changed"] and daemon.reports == []
        assert agent.memory.digest() == digest
        monkeypatch.undo()
        assert daemon.wait(WAIT)  # a new run reads the same turns again
        assert [r.start for r in daemon.reports] == [0] and daemon.reports[0].applied == 1
    agent.memory.check()
    agent.close()


def test_config_is_checked() -> None:
    with pytest.raises(ValueError):
        DaemonConfig(every=0, idle=None)
    with pytest.raises(ValueError):
        DaemonConfig(idle=0)
    with pytest.raises(ValueError):
        DaemonConfig(every=-1)


def test_the_daemons_runs_replay_to_the_same_digest(tmp_path: Path) -> None:
    agent, _ = make_agent(tmp_path / "a")
    gated = GatedDriver(['{"human": ["name: Ana"], "facts": ["calls per day: 60"]}',
                         '{"human": ["city: Porto"], "facts": ["calls per day: 1200"]}'])
    gated.gate.set()
    with ConsolidationDaemon(agent, gated, DaemonConfig(every=2)) as daemon:
        agent.step("I'm Ana, we take 60 calls a day.")
        agent.step("I live in Lisbon.")
        until(lambda: daemon.reports)
        agent.step("Now it's 1,200 calls a day.")
        agent.step("And I moved to Porto.")
        until(lambda: len(daemon.reports) == 2)
        agent.step("Bye")
    old = [p for p in agent.memory.store.archival.search(None, page_size=10).items if not p.current]
    assert [p.text for p in old] == ["calls per day: 60"]
    digest = agent.memory.digest()
    agent.close()
    again = replay(tmp_path / "a", tmp_path / "b")
    try:
        assert again.memory.digest() == digest
    finally:
        again.close()


def test_wait_consolidates_up_to_the_newest_message_even_past_a_run_in_flight(tmp_path: Path) -> None:
    agent, _ = make_agent(tmp_path / "a")
    gated = GatedDriver(['{"human": ["a: 1"]}', '{"human": ["b: 2"]}'])
    with ConsolidationDaemon(agent, gated, DaemonConfig(every=2)) as daemon:
        agent.step("first")
        agent.step("second")
        assert gated.called.wait(WAIT)  # a run over the first two turns is in its LLM call
        agent.step("third")  # not in that batch, and one turn is not due by count
        gated.gate.set()
        assert daemon.wait(WAIT)
        assert [(r.start, r.end) for r in daemon.reports] == [(0, 6), (6, 9)]
        assert agent.memory.consolidation_cursor == agent.memory.stats.recall
    agent.close()


def test_stop_right_after_a_due_turn_still_makes_that_run(tmp_path: Path) -> None:
    """`vmem chat` ends right after the turn that made a run due: stop() makes that run instead of
    dropping it until the next session. The race a loaded machine lost (the worker had not woken
    before stop() came) is forced: the test holds the daemon's condition through the due step and
    stop()'s first move, so the worker looks only after both."""
    agent, _ = make_agent(tmp_path / "a")
    driver = GatedDriver(['{"human": ["name: Ana"]}'])
    driver.gate.set()
    daemon = ConsolidationDaemon(agent, driver, DaemonConfig(every=2))
    agent.step("Hi, I'm Ana.")
    with daemon._cond:  # what stop() does first, before the worker can look
        agent.step("I live in Porto.")
        daemon._stopping = True
        daemon._cond.notify_all()
    daemon.stop(timeout=WAIT)
    assert driver.calls == 1 and len(daemon.reports) == 1, (daemon.errors, daemon.reports)
    assert "name: Ana" in agent.memory.block("human").value
    daemon.stop()  # stopping twice is harmless
    agent.close()


def test_the_daemon_looks_up_the_facts_a_new_one_may_replace_between_steps(tmp_path: Path) -> None:
    """The facts found by the new fact's own words ("houseplants", where the turn said "plants") are
    read with the agent's lock, between steps, and the yes/no call about them is made."""
    agent, _ = make_agent(tmp_path / "a")
    old = agent.memory.archival_insert("I have 12 houseplants, mostly succulents.")[0]
    gated = GatedDriver(['{"facts": ["The number of houseplants is now 31"]}', '{"replaced": true}'])
    gated.gate.set()
    with ConsolidationDaemon(agent, gated, DaemonConfig(every=10)) as daemon:
        agent.step("The collection got out of hand: 31 plants now, including a fiddle leaf fig.")
        assert daemon.wait(WAIT) and gated.calls == 2, (daemon.errors, daemon.reports)
        new = [p for p in agent.memory.store.archival.search("houseplants 31", page_size=5).items if p.current]
        assert [p.text for p in new] == ["The number of houseplants is now 31"]
        assert agent.memory.store.archival.get(old).superseded_by == new[0].id
    agent.memory.check()
    agent.close()
