"""vmem.app.evaluation on a tiny LoCoMo-shaped file made here (never the shared data)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from vmem.app.evaluation import (
    evaluate_locomo,
    format_report,
    load_locomo,
    normalise_evidence,
    parse_session_date,
    store_available,
)

TURNS = [
    ("Caroline", "Hey Mel, how are you?"),
    ("Melanie", "Great! I went hiking near the waterfall."),
    ("Caroline", "What did the kids think of the dinosaur exhibit?"),
    ("Melanie", "They were stoked and loved the bones."),
    ("Caroline", "I adopted a puppy named Oscar."),
    ("Melanie", "Oscar is adorable!"),
]


@pytest.fixture()
def locomo(tmp_path: Path) -> Path:
    session = [{"speaker": s, "dia_id": f"D1:{i}", "text": t} for i, (s, t) in enumerate(TURNS, 1)]
    session[4]["blip_caption"] = "a photo of a small brown dog"
    data = [
        {
            "sample_id": "conv-test",
            "conversation": {
                "speaker_a": "Caroline",
                "speaker_b": "Melanie",
                "session_1_date_time": "1:56 pm on 8 May, 2023",
                "session_1": session,
                "session_2_date_time": "10:00 am on 9 May, 2023",  # a date with no session, as in conv-26
            },
            "qa": [
                {"question": "Where did Melanie go hiking?", "answer": "waterfall", "evidence": ["D1:02"], "category": 4},
                {"question": "What did Melanie's kids think of the dinosaur exhibit?", "answer": "stoked",
                 "evidence": ["D1:4"], "category": 1},
                {"question": "What kind of dog?", "answer": "brown", "evidence": ["D1:5; D1:6"], "category": 5},
                {"question": "Unanswerable", "answer": "x", "evidence": ["D9:99"], "category": 2},
                {"question": "No evidence", "answer": "x", "evidence": [], "category": 3},
            ],
        }
    ]
    path = tmp_path / "locomo.json"
    path.write_text(json.dumps(data))
    return path


def test_parse_session_date() -> None:
    assert parse_session_date("1:56 pm on 8 May, 2023") == dt.datetime(2023, 5, 8, 13, 56, tzinfo=dt.timezone.utc)
    assert parse_session_date("12:09 am on 13 September, 2023") == dt.datetime(2023, 9, 13, 0, 9, tzinfo=dt.timezone.utc)
    assert parse_session_date("12:30 pm on 1 Aug 2023").hour == 12
    for bad in ("", "yesterday", "13:00 pm on 8 May, 2023", "1:56 pm on 8 Mayday, 2023", "1:56 pm on 31 February, 2023"):
        with pytest.raises(ValueError):
            parse_session_date(bad)


def test_normalise_evidence() -> None:
    known = {"D8:6", "D9:17", "D11:26", "D30:5"}
    assert normalise_evidence(["D8:6; D9:17"], known) == ["D8:6", "D9:17"]
    assert normalise_evidence(["D:11:26", "D30:05", "D30:5"], known) == ["D11:26", "D30:5"]
    assert normalise_evidence(["D1:1", "garbage", "D99:1"], known) == []
    assert normalise_evidence(["D1:1"]) == ["D1:1"]


def test_load_locomo(locomo: Path) -> None:
    (conv,) = load_locomo(locomo)
    assert conv.sample_id == "conv-test" and len(conv.turns) == 6
    assert conv.turns[4].page_text() == "Caroline: I adopted a puppy named Oscar. [a photo of a small brown dog]"
    assert conv.turns[0].page_text(speaker=False) == "Hey Mel, how are you?"
    assert conv.turns[0].timestamp == dt.datetime(2023, 5, 8, 13, 56, tzinfo=dt.timezone.utc)
    assert [q.evidence for q in conv.questions] == [("D1:2",), ("D1:4",), ("D1:5", "D1:6")]


BACKENDS = ["memory"] + (["store"] if store_available() else [])


@pytest.mark.parametrize("backend", BACKENDS)
def test_evaluate_locomo_recall(locomo: Path, backend: str) -> None:
    res = evaluate_locomo(
        locomo,
        modes=("text", "text+context", "vector", "hybrid", "rrf"),
        ks=(1, 2, 5),
        progress=False,
        backend=backend,
        speaker=False,
    )
    assert set(res) == {"text", "text+context", "vector", "hybrid", "rrf"}
    text = res["text"]
    assert text["questions"] == 3
    assert text["questions_by_category"] == {"multi-hop": 1, "single-hop": 1, "adversarial": 1}
    assert text["by_category"]["single-hop"]["1"] == 1.0  # "hiking" finds its turn first
    # the answer turn shares no word with the question: text alone misses it, context finds it
    assert text["by_category"]["multi-hop"]["5"] == 0.0
    assert res["text+context"]["by_category"]["multi-hop"]["1"] == 0.0
    assert res["text+context"]["by_category"]["multi-hop"]["2"] == 1.0
    # the image caption is searchable ("dog"); the reply "Oscar is adorable!" is not: half the evidence
    assert text["by_category"]["adversarial"]["5"] == 0.5
    for mode in res.values():
        for k in ("1", "2", "5"):
            assert 0.0 <= mode["overall"][k] <= 1.0
        assert mode["overall"]["1"] <= mode["overall"]["2"] <= mode["overall"]["5"]
    report = format_report(res)
    assert "DRAGON" in report and "multi-hop" in report


def test_evaluate_locomo_rejects_bad_arguments(locomo: Path) -> None:
    with pytest.raises(ValueError, match="mode"):
        evaluate_locomo(locomo, modes=("bm42",), progress=False)
    with pytest.raises(ValueError, match="ks"):
        evaluate_locomo(locomo, ks=(0,), progress=False)
    with pytest.raises(FileNotFoundError):
        evaluate_locomo(locomo.parent / "absent.json", progress=False)


@pytest.mark.skipif(not store_available(), reason="needs vmem.storage")
def test_select_context_loco_scores_each_fold_on_its_held_out_conversation(locomo: Path) -> None:
    from vmem.app.evaluation import format_loco_report, select_context_loco

    data = json.loads(locomo.read_text())
    twin = json.loads(json.dumps(data[0]))
    twin["sample_id"] = "conv-twin"
    locomo.write_text(json.dumps([data[0], twin]))
    grid = [(0.0, 0.0, 0.0), (1.0, 0.0, 0.0), (0.0, 0.0, 1.0)]
    res = select_context_loco(locomo, grid=grid, progress=False, speaker=False)
    assert [f["held_out"] for f in res["folds"]] == ["conv-test", "conv-twin"]
    # the dinosaur answer shares no word with its question but follows one: forward context finds it
    for f in res["folds"]:
        assert tuple(f["chosen"]) in grid and f["questions"] == 3
        assert f["test"]["10"] >= f["test_without"]["10"]
    assert res["mean"]["10"] == pytest.approx(sum(f["test"]["10"] for f in res["folds"]) / 2)
    assert set(res["by_category"]) == {"multi-hop", "single-hop", "adversarial"}
    assert "held out" in format_loco_report(res)
    with pytest.raises(ValueError, match="target"):
        select_context_loco(locomo, target="blocks", progress=False)
