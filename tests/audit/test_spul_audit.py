"""SPUL audit: its building blocks on known cases, and `promptforget audit` end to end on a tiny
SPUL run (stage 1 -> unlearn -> audit with a reference trained on the retain set only)."""

import json

import numpy as np
import pytest
import torch

from promptforget.audit.blackbox import blackbox_leakage
from promptforget.audit.report import NO_REFERENCE, VERDICTS
from promptforget.audit.spul_audit import CachedScorer, blackbox_predictor, label_distribution
from promptforget.cli import main
from promptforget.spul import ops
from promptforget.spul.tasks import MultipleChoiceTask, SentimentTask, check_label_tokens
from promptforget.spul.testing import tiny_llama, tiny_tokenizer

WORDS = ["good", "great", "fine", "bad", "awful", "dull"]


def test_label_distribution_is_the_models_label_mass_plus_other():
    tok = tiny_tokenizer(WORDS)
    model = tiny_llama(len(tok))
    task = SentimentTask()
    exs = [{"id": str(i), "text": f"a {w} film", "label": "positive" if i < 3 else "negative"} for i, w in enumerate(WORDS)]
    scorer = lambda b: ops.label_logits(model, b)  # noqa: E731
    probs, labels = label_distribution(scorer, tok, task, exs, max_length=40, batch_size=4)
    assert probs.shape == (6, 3) and labels.tolist() == [0, 0, 0, 1, 1, 1]
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    # column k = full-vocabulary softmax mass on label k's first token, computed independently
    ids = [v[0] for v in check_label_tokens(tok, task.labels).values()]
    from promptforget.spul.tasks import collate, encode_examples

    b = collate(encode_examples(tok, task, exs, 40), tok.pad_token_id)
    with torch.no_grad():
        p = torch.softmax(ops.label_logits(model, b)[:, 0], -1)[:, ids].numpy()
    np.testing.assert_allclose(probs[:, :2], p, rtol=1e-4, atol=1e-6)


def test_cached_scorer_runs_each_batch_once():
    calls = []

    def scorer(b):
        calls.append(1)
        return b["input_ids"].float()

    c = CachedScorer(scorer)
    b1 = {"input_ids": torch.tensor([[1, 2]]), "attention_mask": torch.ones(1, 2), "label_pos": torch.tensor([[1]])}
    b2 = {**b1, "input_ids": torch.tensor([[1, 3]])}
    assert torch.equal(c(b1), c(dict(b1))) and len(calls) == 1
    c(b2)
    assert len(calls) == 2


def test_blackbox_predictor_keeps_each_questions_own_choices():
    # A scorer that answers the letter of the choice "four", wherever it is: only correct if every query
    # keeps its own answer choices while the question text is rewritten.
    tok = tiny_tokenizer(["how many legs horses two four six A B C"])
    task = MultipleChoiceTask(num_choices=3)
    exs = [{"id": "a", "question": "how many legs", "choices": ["two", "four", "six"], "label": "B"},
           {"id": "b", "question": "how many legs horses", "choices": ["four", "six", "two"], "label": "A"}]
    letters = {w: ids[0] for w, ids in check_label_tokens(tok, task.labels).items()}
    four = tok.encode(" four", add_special_tokens=False)[0]

    def scorer(b):
        out = torch.zeros(b["input_ids"].shape[0], 1, len(tok))
        for i, row in enumerate(b["input_ids"].tolist()):
            k = [j for j, t in enumerate(row) if t == four][0]
            letter = tok.decode([row[k - 2]]).strip()  # "A . four": the letter two tokens before
            out[i, 0, letters[letter]] = 5.0
        return out

    r = blackbox_leakage(None, [e["question"] for e in exs], [e["label"] for e in exs],
                         predict_many=blackbox_predictor(scorer, tok, task, exs, max_length=60))
    assert r["plain_acc"] == 1.0 and r["injection_acc_mean"] == 1.0
    with pytest.raises(ValueError, match="exactly one"):
        blackbox_leakage(lambda t: "A", ["q"], ["A"], predict_many=lambda ts: ["A"])


@pytest.fixture()
def spul_run(tmp_path):
    rows = [{"id": f"r{i}", "text": f"a {WORDS[i % 6]} {WORDS[(i // 6) % 6]} film",
             "label": "positive" if i % 6 < 3 else "negative"} for i in range(36)]
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    tok = tiny_tokenizer(["a film"] + WORDS)
    base = tmp_path / "base"
    tiny_llama(len(tok)).save_pretrained(base)
    tok.save_pretrained(base)
    common = ["--data", "jsonl", "--data-file", str(data), "--test-size", "0.34", "--max-length", "40"]
    s1, run = tmp_path / "stage1", tmp_path / "unlearn"
    assert main(["spul", "finetune", "--model", str(base), "--out", str(s1), *common, "--epochs", "2",
                 "--batch-size", "8", "--lora-r", "2", "--lora-alpha", "4", "--lr", "1e-2"]) == 0
    # RUN = the stage-1 run: the data, template and split come from its record
    assert main(["spul", "unlearn", str(s1), "--out", str(run), "--forget", "entity:great", "--min-forget", "1",
                 "--epochs", "2", "--batch-size", "4", "--num-virtual-tokens", "3",
                 "--encoder-hidden-size", "8", "--lr", "1e-2"]) == 0
    return tmp_path, run


def test_audit_cli_on_a_spul_run(spul_run, capsys):
    tmp, run = spul_run
    out = tmp / "audit"
    assert main(["audit", str(run), "--out", str(out)]) == 2  # a reference choice is required
    assert "--train-reference" in capsys.readouterr().err
    assert main(["audit", str(run), "--train-reference", "--reference-seeds", "2", "--out", str(out),
                 "--batch-size", "8"]) == 0
    record = json.loads((out / "audit.json").read_text())
    audit = record["audit"]
    assert audit["reference_seeds"] == 2
    assert audit["kind"] == "spul" and set(audit["models"]) == {"audited", "original", "reference"}
    assert (out / "audit.md").read_text().startswith("# SPUL unlearning audit")
    assert (out / "spul_audit.png").stat().st_size > 0 and (out / "README.md").is_file()
    ids = json.loads((run / "forget_split.json").read_text())["ids"]
    assert audit["split_sizes"] == {k: len(v) for k, v in ids.items()}

    # "original" is the stage-1 model without the prompt and "audited" the unlearn run's model: their
    # accuracies equal what `spul unlearn` and `spul finetune`-model evaluation reported.
    unlearn_eval = json.loads((run / "results.json").read_text())["evaluation"]
    for s in ("train_forget", "train_retain"):
        assert audit["models"]["audited"]["accuracy"][s]["accuracy"] == unlearn_eval[s]["accuracy"]
    # The reference was trained on the retain set only and saved for reuse; it is a different model.
    saved = sorted((out / "reference").glob("seed-*/model/model.safetensors"))
    assert len(saved) == 2 and saved[0].read_bytes() != saved[1].read_bytes()  # two seeds, two models
    stage1_seed = json.loads((tmp / "stage1" / "config.json").read_text())["finetune"]["seed"]
    assert sorted(p.parent.parent.name for p in saved) == [f"seed-{stage1_seed + 1}", f"seed-{stage1_seed + 2}"]
    assert "**Uninformative**: 2 reference seed(s)" in (out / "audit.md").read_text()
    # sequence MIAs: the non-member set is at least as large as the member set (members subsampled)
    sizes = audit["models"]["reference"]["llm_mia"]
    assert sizes["n_member"] == min(len(ids["train_forget"]), len(ids["test_forget"]))
    assert sizes["n_nonmember"] == len(ids["test_forget"]) >= sizes["n_member"]
    assert "fewer than 100" in audit["models"]["reference"]["llm_mia_sets"]["note"]
    ref_conf = audit["models"]["reference"]["mia_scores"]["forget_train"]
    assert ref_conf != audit["models"]["original"]["mia_scores"]["forget_train"]
    rows = {r["metric"]: r for r in record["table"]}
    assert {"acc_train_forget", "mia_efficacy", "llm_auc_min_k_pp", "blackbox_best"} <= set(rows)
    for r in rows.values():
        assert r["definition"] and r["verdict"] in VERDICTS and r["verdict"] != NO_REFERENCE
        for m in ("audited", "reference", "original"):
            assert r[m] is None or 0.0 <= r[m]["value"] <= 1.0
            if r[m] is not None and r[m]["ci95"] is not None:
                assert r[m]["ci95"][0] <= r[m]["value"] <= r[m]["ci95"][1] and r[m]["n"] >= 1

    capsys.readouterr()
    assert main(["audit", str(run), "--train-reference", "--reference-seeds", "2", "--out", str(out),
                 "--batch-size", "8", "--no-plots"]) == 0
    assert "reusing the reference" in capsys.readouterr().out
    assert json.loads((out / "audit.json").read_text())["audit"]["models"]["reference"]["accuracy"] == audit["models"]["reference"]["accuracy"]


def marker_scorer(tok, marker="zz", strength=6.0):
    """A fake prompted model that knows exactly the examples carrying ``marker`` (members): it puts
    ``strength`` on each of their true label tokens, and nothing anywhere else."""
    zz = tok.convert_tokens_to_ids(marker)

    def scorer(b):
        out = torch.zeros(*b["label_ids"].shape, len(tok))
        for i, row in enumerate(b["input_ids"].tolist()):
            if zz in row:
                for pos, t in enumerate(b["label_ids"][i].tolist()):
                    if t != -100:
                        out[i, pos, t] = strength
        return out

    return scorer


def test_spul_membership_reads_members_as_members_over_the_label_span_only():
    """Multi-token labels ("very good" is two tokens, "bad" one): the trained span is the label's own tokens,
    never the padding after a shorter label; forget-train are the members, forget-test the non-members."""
    from promptforget.audit.spul_audit import audit_model, label_span_stats

    task = SentimentTask(labels=("very good", "bad"))
    tok = tiny_tokenizer(["a film zz very good bad"] + WORDS)
    scorer = marker_scorer(tok)
    exs = [{"id": "m", "text": "a zz film", "label": "very good"}, {"id": "n", "text": "a zz film", "label": "bad"}]
    st = label_span_stats(scorer, tok, task, exs, max_length=40, batch_size=2)
    assert [len(s.logprobs) for s in st] == [2, 1]
    expected = 6.0 - np.log(np.exp(6.0) + len(tok) - 1)
    np.testing.assert_allclose(np.concatenate([s.logprobs for s in st]), expected, rtol=1e-5)

    def examples(prefix, n, member):
        return [{"id": f"{prefix}{i}", "text": f"a {WORDS[i % 6]} {'zz ' if member else ''}film",
                 "label": "very good" if i % 2 else "bad"} for i in range(n)]

    split = {"train_retain": examples("tr", 12, True), "test_retain": examples("te", 12, False),
             "train_forget": examples("tf", 10, True), "test_forget": examples("ef", 10, False)}
    res = audit_model("audited", scorer, tok, task, split, max_length=40, batch_size=4)
    f = res["figures"]
    assert f["mia_auc_confidence"]["value"] > 0.95 and f["llm_auc_loss"]["value"] > 0.95
    assert f["acc_train_forget"]["value"] == 1.0 and f["acc_test_forget"]["value"] < 0.5
