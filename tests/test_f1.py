"""LoCoMo's answer score (vmem.app.f1), against cases computed by hand from the official scorer's rules."""

from __future__ import annotations

import pytest

from vmem.app.f1 import answer_tokens, gold_answer, multi_answer_f1, normalize_answer, score_answer, token_f1


@pytest.mark.parametrize("text, expected", [
    ("The cat, and a Dog!", "cat dog"),           # commas, case, punctuation, a/an/the *and* "and"
    ("An apple.", "apple"),
    ("Anna and Theo at the theatre", "anna theo at theatre"),  # whole words only: Anna, Theo, theatre stay
    ("1,200 calls/day", "1200 callsday"),         # a comma inside a number goes first, then punctuation
    ("  lots   of\tspace ", "lots of space"),
    ("", ""),
])
def test_normalisation(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


def test_tokens_are_porter_stemmed() -> None:
    assert answer_tokens("She painted sunsets") == ["she", "paint", "sunset"]
    assert answer_tokens("painting") == answer_tokens("paints") == ["paint"]


def test_token_f1_by_hand() -> None:
    # pred {paint, sunset}, gold {she, paint, sunset}: 2 shared, P 1, R 2/3 -> F1 0.8
    assert token_f1("painting sunsets", "She paints sunsets") == pytest.approx(0.8)
    # multiplicity counts: pred run x3, gold run x1 -> 1 shared, P 1/3, R 1 -> F1 0.5
    assert token_f1("run run run", "run") == pytest.approx(0.5)
    assert token_f1("1,200 calls", "1200 calls") == 1.0
    assert token_f1("The Bach and the Mozart", "bach, mozart") == 1.0  # articles and "and" do not count
    assert token_f1("", "anything") == 0.0
    assert token_f1("yes", "no") == 0.0
    assert token_f1("...", "...") == 0.0  # nothing left after normalising: no shared token


def test_multi_hop_scores_each_gold_part_by_its_best_prediction_part() -> None:
    gold = "Poetry reading, conference, pride parade"
    # gold parts: "Poetry reading" -> 1 ("Poetry reading"), "conference" -> 1 ("a conference"), "pride parade" -> 0
    assert multi_answer_f1("Poetry reading, a conference", gold) == pytest.approx(2 / 3)
    assert score_answer("Poetry reading, a conference", gold, 1) == pytest.approx(2 / 3)
    # unsplit, plain F1 would be {poetri, read, confer} vs 5 gold tokens: P 1, R 3/5 -> 0.75; the rule differs
    assert token_f1("Poetry reading, a conference", gold) == pytest.approx(0.75)
    # one prediction part can serve several gold parts
    assert multi_answer_f1("pride parade conference", "conference, pride parade") == pytest.approx((0.5 + 0.8) / 2)


def test_open_domain_scores_against_the_first_part_before_a_semicolon() -> None:
    gold = "Likely no; she would be less motivated"
    # first part {like, no}; pred {no}: P 1, R 1/2 -> 2/3
    assert score_answer("no", gold, 3) == pytest.approx(2 / 3)
    assert score_answer("she would be less motivated", gold, 3) == 0.0


def test_temporal_and_single_hop_are_plain_f1() -> None:
    assert score_answer("on 7 May 2023", "7 May 2023", 2) == pytest.approx(2 * 0.75 / 1.75)
    assert score_answer("pots", "pots", 4) == 1.0
    assert score_answer("Likely no; maybe", "Likely no; maybe", 4) == 1.0  # no semicolon rule outside category 3


@pytest.mark.parametrize("prediction, expected", [
    ("Not mentioned in the conversation", 1.0),
    ("NOT MENTIONED.", 1.0),
    ("No information available", 1.0),
    ("There is no information available about that", 1.0),
    ("no information", 0.0),          # the scorer looks for "no information available"
    ("Bach and Mozart", 0.0),
    ("", 0.0),
])
def test_adversarial_checks_for_an_abstention(prediction: str, expected: float) -> None:
    assert score_answer(prediction, "Bach and Mozart", 5) == expected


def test_unknown_category_is_an_error() -> None:
    with pytest.raises(ValueError, match="1-5"):
        score_answer("x", "x", 6)


def test_gold_answer() -> None:
    assert gold_answer({"answer": 2022, "category": 2}) == "2022"  # some answers are numbers
    assert gold_answer({"adversarial_answer": "Bach", "category": 5}) == "Bach"
    assert gold_answer({"answer": "x", "adversarial_answer": "y"}) == "x"
    with pytest.raises(KeyError):
        gold_answer({"question": "?"})
