"""Black-box extraction against a prompted model, with callables whose answers are known."""

import pytest

from promptforget.audit.blackbox import (INJECTIONS, blackbox_leakage, predict_from_generate,
                                         predict_from_scores)

TEXTS = ["the team scored a goal", "a new album by the band", "fresh bread and soup"]
LABELS = ["sport", "music", "food"]


def keyword_model(text):
    for word, label in (("goal", "sport"), ("album", "music"), ("bread", "food")):
        if word in text.lower():
            return label
    return "unknown"


def test_a_model_that_never_forgot_leaks_everything():
    r = blackbox_leakage(keyword_model, TEXTS, LABELS)
    assert r["plain_acc"] == 1.0 and r["best_attack_acc"] == 1.0 and r["injection_acc_mean"] == 1.0


def test_a_refusing_model_leaks_nothing_but_a_jailbreakable_one_does():
    assert blackbox_leakage(lambda t: "unknown", TEXTS, LABELS)["best_attack_acc"] == 0.0

    def jailbreakable(text):  # says "unknown" unless the query tells it to ignore its instructions
        return keyword_model(text) if "ignore" in text.lower() else "unknown"

    r = blackbox_leakage(jailbreakable, TEXTS, LABELS)
    assert r["plain_acc"] == 0.0 and r["paraphrase_acc_mean"] == 0.0
    assert r["best_attack_acc"] == 1.0 and 0 < r["injection_acc_mean"] < 1


def test_adapters_and_validation():
    gen = predict_from_generate(lambda t: f"Answer: {keyword_model(t).upper()}!", ["sport", "music", "food"])
    assert gen(TEXTS[1]) == "music" and predict_from_generate(lambda t: "no idea", LABELS)(TEXTS[0]) is None
    sc = predict_from_scores(lambda t: {"sport": 0.1, "food": 0.7, "music": 0.2})
    assert sc("x") == "food"
    with pytest.raises(ValueError, match="texts but"):
        blackbox_leakage(keyword_model, TEXTS, LABELS[:2])
    with pytest.raises(ValueError, match="must contain"):
        blackbox_leakage(keyword_model, TEXTS, LABELS, injections=["no placeholder"])
    assert all("{text}" in t for t in INJECTIONS)
