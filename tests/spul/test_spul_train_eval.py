"""Tokenisation/truncation, stage-1 LoRA fine-tuning, evaluation metrics and the generation check."""

import pytest
import torch

from promptforget.spul import ops
from promptforget.spul.config import FinetuneConfig
from promptforget.spul.evaluate import OTHER, evaluate_splits, generation_check, metrics
from promptforget.spul.tasks import (
    MultipleChoiceTask,
    SentimentTask,
    check_label_tokens,
    encode_example,
    encode_examples,
    task_from_dict,
)
from promptforget.spul.testing import tiny_llama, tiny_tokenizer
from promptforget.spul.train import finetune

WORDS = "good great fine bad awful dull film movie plot very"
EXS = [
    {"id": "p1", "text": "good film", "label": "positive"},
    {"id": "p2", "text": "great movie", "label": "positive"},
    {"id": "p3", "text": "fine plot", "label": "positive"},
    {"id": "n1", "text": "bad film", "label": "negative"},
    {"id": "n2", "text": "awful movie", "label": "negative"},
    {"id": "n3", "text": "dull plot", "label": "negative"},
]


@pytest.fixture()
def tok():
    return tiny_tokenizer([WORDS])


def test_truncation_keeps_template_and_label(tok):
    ex = {"id": "x", "text": " ".join(["good"] * 40), "label": "positive"}
    full = encode_example(tok, SentimentTask(), ex, "positive", 200)
    short = encode_example(tok, SentimentTask(), ex, "positive", 30)
    assert len(full["input_ids"]) > 30 >= len(short["input_ids"])
    assert short["input_ids"][-1] == tok.encode(" positive", add_special_tokens=False)[0]
    assert short["input_ids"][short["label_start"] :] == short["label_ids"]
    assert tok.decode(short["input_ids"]).rstrip().endswith("Sentiment : positive")
    with pytest.raises(ValueError, match="too short"):
        encode_example(tok, SentimentTask(), ex, "positive", 10)


def test_label_checks(tok):
    ids = check_label_tokens(tok, ["positive", "negative"])
    assert all(len(v) == 1 for v in ids.values())
    with pytest.raises(ValueError, match="start with the same token"):
        check_label_tokens(tok, ["very good", "very bad"])
    with pytest.raises(ValueError, match="not one of"):
        encode_examples(tok, SentimentTask(), [{"id": "z", "text": "good", "label": "meh"}], 40)


def test_multiple_choice_prompt_and_roundtrip():
    task = MultipleChoiceTask(num_choices=3)
    ex = {"id": "q", "question": "How many legs do horses have?", "choices": ["two", "four", "six"], "label": "B"}
    text = task.format_prompt(ex)
    assert "A. two\nB. four\nC. six" in text and text.endswith("### Answer:")
    assert task.labels == ("A", "B", "C")
    assert task_from_dict(task.to_dict()) == task
    assert task_from_dict(SentimentTask().to_dict()) == SentimentTask()
    with pytest.raises(ValueError):
        task_from_dict({"kind": "regression"})


def test_finetune_learns_labels_and_merges(tok):
    model = tiny_llama(len(tok))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    task = SentimentTask()
    cfg = FinetuneConfig(lr=5e-2, epochs=25, batch_size=6, max_length=40, lora_r=4, lora_alpha=8, lora_dropout=0.0)
    scorer = lambda m: (lambda b: ops.label_logits(m, b))  # noqa: E731
    acc0 = evaluate_splits(scorer(model), tok, task, {"all": EXS}, 40)["all"]["accuracy"]
    merged, hist = finetune(model, tok, task, EXS, cfg)
    assert hist["steps"][-1]["loss"] < 0.2 * hist["steps"][0]["loss"]
    ev = evaluate_splits(scorer(merged), tok, task, {"all": EXS}, 40)["all"]
    assert ev["accuracy"] == 1.0 and ev["accuracy"] > acc0
    assert not any("lora" in n for n, _ in merged.named_modules())  # merged into plain weights
    changed = {k for k, v in merged.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(("q_proj" in k or "v_proj" in k) for k in changed)
    assert hist["trainable_parameters"] == sum(
        4 * (p.shape[0] + p.shape[1]) for n, p in merged.named_parameters() if n.endswith(("q_proj.weight", "v_proj.weight"))
    )


def test_finetune_rejects_unknown_target_modules(tok):
    with pytest.raises(ValueError, match="not found"):
        finetune(tiny_llama(len(tok)), tok, SentimentTask(), EXS, FinetuneConfig(target_modules=["query"]))


def test_evaluation_counts_other_predictions(tok):
    """A scorer that always puts its argmax on 'neutral': accuracy 0, every prediction '<other>'."""
    V = len(tok)
    neutral = tok.encode(" neutral", add_special_tokens=False)[0]
    positive = tok.encode(" positive", add_special_tokens=False)[0]

    def scorer(b):
        logits = torch.zeros(b["input_ids"].shape[0], b["label_pos"].shape[1], V)
        logits[..., neutral] = 5.0
        logits[..., positive] = 1.0  # best of the candidate labels -> restricted prediction 'positive'
        return logits

    ev = evaluate_splits(scorer, tok, SentimentTask(), {"s": EXS, "empty": []}, 40)
    assert ev["s"]["accuracy"] == 0.0 and ev["s"]["predicted"] == {OTHER: 6}
    assert ev["s"]["accuracy_restricted"] == 0.5 and ev["s"]["f1_weighted"] == 0.0
    assert ev["empty"]["n"] == 0 and ev["empty"]["accuracy"] is None
    assert "full-vocabulary" in ev["prediction_rule"]


def test_metrics_weighted_f1_hand_computed():
    exs = [{"label": "positive"}] * 3 + [{"label": "negative"}]
    preds = ["positive", "positive", OTHER, "negative"]
    m = metrics(exs, preds, [True, True, False, True], ["positive"] * 4)
    # positive: P=1, R=2/3 -> F1=0.8 (weight 3); negative: P=R=1 (weight 1) -> (2.4 + 1) / 4 = 0.85
    assert m["accuracy"] == 0.75 and m["f1_weighted"] == pytest.approx(0.85)
    assert m["accuracy_restricted"] == 0.75


def test_generation_check_returns_text(tok):
    model = tiny_llama(len(tok))
    out = generation_check(model, tok, SentimentTask(), EXS[:2], 40, max_new_tokens=2)
    assert [o["id"] for o in out] == ["p1", "p2"]
    assert all(isinstance(o["generated"], str) and len(o["generated"].split()) <= 2 for o in out)
