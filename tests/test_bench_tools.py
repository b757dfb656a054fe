"""The measuring tools under bench/ that the README's figures come from, run small so they cannot rot:
bench/qa_evidence.py (no model) and bench/knowledge_updates_daemon.py (a real model over HTTP)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from test_cli import CLEAN_ENV
from test_eval_qa import write_conversation

ROOT = Path(__file__).resolve().parent.parent


def bench(script: str, *args: str, env: dict[str, str] | None = None, timeout: float = 600
          ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], capture_output=True, text=True,
                          cwd=ROOT, env={**CLEAN_ENV, **(env or {})}, timeout=timeout)


def test_qa_evidence_counts_what_reaches_each_prompt(tmp_path: Path) -> None:
    data = write_conversation(tmp_path / "syn.json")
    p = bench("qa_evidence.py", "--path", str(data), "--conversations", "syn-1", "--configs", "b,c,e",
              "--window", "3584", "--rag-k", "5", "--prefetch", "4", "--workset", "400", "--json")
    assert p.returncode == 0, p.stderr[-2000:]
    rows = {r["config"]: r for r in json.loads(p.stdout)["rows"]}
    assert list(rows) == ["b", "c", "e"]
    assert all(r["questions"] == 3 for r in rows.values())  # the adversarial question has no evidence
    # RAG retrieves each password's turn; truncation keeps only the newest session's
    assert rows["c"]["any"] == 100.0 and rows["b"]["any"] < 100.0
    assert all(0 < r["tokens"] <= 3584 for r in rows.values())
    assert all(r["all"] <= r["any"] for r in rows.values())


def test_qa_evidence_bad_input_is_one_line(tmp_path: Path) -> None:
    for args, fragment in ((["--path", str(tmp_path / "none.json")], "no LoCoMo file"),
                           (["--path", str(write_conversation(tmp_path / "s.json")), "--configs", "d"], "--configs"),
                           (["--path", str(tmp_path / "s.json"), "--conversations", "conv-9"], "conv-9")):
        p = bench("qa_evidence.py", *args)
        assert p.returncode == 2 and fragment in p.stderr and "Traceback" not in p.stderr, p.stderr


@pytest.mark.llm
def test_knowledge_updates_after_the_daemon_on_a_real_model(llm_server, tmp_path: Path) -> None:
    log = tmp_path / "ku.jsonl"
    p = bench("knowledge_updates_daemon.py", "--base-url", llm_server.base_url, "--model", llm_server.model,
              "--cases", "calls", "city", "--log", str(log), env={"VMEM_API_KEY": llm_server.api_key})
    assert p.returncode == 0, p.stderr[-3000:]
    result = json.loads(p.stdout)
    assert result["cases"] == 2 and 0 <= result["current_first"] <= 2
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["calls", "city"]
    for r in rows:
        assert r["runs"] >= 2  # one run after each of the two sessions, at least
        assert isinstance(r["ok"], bool) and len(r["page"]) <= 5 and r["superseded"] <= r["facts"]
    bad = bench("knowledge_updates_daemon.py", "--base-url", llm_server.base_url, "--model", llm_server.model,
                "--cases", "nope")
    assert bad.returncode == 2 and "no case nope" in bad.stderr
    unjudged = tmp_path / "unjudged.json"  # a case with no words to judge it by: refused before any model call
    unjudged.write_text(json.dumps({"cases": [{"id": "mine", "start": "2024-01-01", "question": "q?",
                                               "turns": [[0, "user", "a"]], "old": 0, "new": 0}]}))
    bad = bench("knowledge_updates_daemon.py", "--base-url", "http://127.0.0.1:9/v1", "--model", "m",
                "--data", str(unjudged))
    assert bad.returncode == 2 and "no old_words/new_words" in bad.stderr and not bad.stdout
