"""SPUL core: label-position alignment, loss terms, generic labels, training, no second model copy."""

import gc
import math

import pytest
import torch

from promptforget.spul import ops
from promptforget.spul.config import SPULConfig
from promptforget.spul.model import SPUL
from promptforget.spul.tasks import SentimentTask, collate, encode_examples
from promptforget.spul.testing import tiny_llama, tiny_tokenizer

TEXTS = [
    ("a fine movie , truly great", "positive"),
    ("dull and boring", "negative"),
    ("great acting great story", "positive"),
    ("a boring mess", "negative"),
    ("truly fine", "positive"),
    ("a dull boring dull film", "negative"),
    ("great great film", "positive"),
    ("mess", "negative"),
]


def _examples():
    return [{"id": f"e{i}", "text": t, "label": y} for i, (t, y) in enumerate(TEXTS)]


@pytest.fixture()
def tiny():
    tok = tiny_tokenizer([t for t, _ in TEXTS])
    return tiny_llama(len(tok)), tok


def _spul(model, tok, **kw):
    cfg = SPULConfig(num_virtual_tokens=4, encoder_hidden_size=16, max_length=48, **kw)
    return SPUL(model, tok, SentimentTask(), cfg)


def test_label_hidden_positions_strip_virtual_tokens_and_shift():
    pos = torch.tensor([[5, 6], [3, 3]])
    assert ops.label_hidden_positions(pos, 0).tolist() == [[4, 5], [2, 2]]
    assert ops.label_hidden_positions(pos, 30).tolist() == [[34, 35], [32, 32]]
    with pytest.raises(ValueError):
        ops.label_hidden_positions(torch.tensor([[0]]), 3)


def test_label_logits_without_prompt_match_full_forward(tiny):
    model, tok = tiny
    enc = encode_examples(tok, SentimentTask(), _examples()[:3], 48)
    b = collate(enc, tok.pad_token_id)
    full = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    got = ops.label_logits(model, b)
    for i, e in enumerate(enc):
        # The token at label_start is predicted by the output at label_start - 1.
        torch.testing.assert_close(got[i, 0], full[i, e["label_start"] - 1], atol=1e-5, rtol=1e-5)


def test_alignment_with_virtual_tokens_matches_peft_forward(tiny):
    model, tok = tiny
    spul = _spul(model, tok)
    enc = encode_examples(tok, SentimentTask(), _examples()[:4], 48)  # different lengths -> right padding
    b = collate(enc, tok.pad_token_id)
    with torch.no_grad():
        full = spul.peft_model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        ours = spul.label_logits(b)
    n = spul.config.num_virtual_tokens
    assert full.shape[1] == b["input_ids"].shape[1] + n  # PEFT keeps the virtual positions in its output
    torch.testing.assert_close(ours, ops.align_label_logits(full, b["label_pos"], n), atol=1e-5, rtol=1e-5)
    # The reference code's mistake (no virtual-token offset) reads other positions: different logits.
    naive = ops.align_label_logits(full, b["label_pos"], 0)
    assert not torch.allclose(ours, naive, atol=1e-3)


def test_multi_token_labels_are_aligned_per_token(tiny):
    model, _ = tiny
    tok = tiny_tokenizer(["very good", "bad film"])
    model = tiny_llama(len(tok))
    task = SentimentTask(labels=("very good", "bad"))
    exs = [{"id": "a", "text": "film", "label": "very good"}, {"id": "b", "text": "bad film", "label": "bad"}]
    enc = encode_examples(tok, task, exs, 48)
    assert len(enc[0]["label_ids"]) == 2 and len(enc[1]["label_ids"]) == 1
    b = collate(enc, tok.pad_token_id)
    assert b["label_ids"][1, 1].item() == -100  # padded label slot is ignored by the CE
    full = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    got = ops.label_logits(model, b)
    s = enc[0]["label_start"]
    torch.testing.assert_close(got[0, 1], full[0, s], atol=1e-5, rtol=1e-5)  # 2nd label token from pos s


def test_label_ce_hand_computed():
    # softmax([0, ln 2, 0]) = [.25, .5, .25]; target 1 -> ln 2; target 0 -> ln 4; -100 ignored.
    row = torch.tensor([0.0, math.log(2), 0.0])
    logits = torch.stack([row, row]).unsqueeze(1).repeat(1, 2, 1)  # (B=2, L=2, V=3)
    targets = torch.tensor([[1, -100], [0, -100]])
    assert ops.label_ce(logits, targets).item() == pytest.approx((math.log(2) + math.log(4)) / 2, rel=1e-6)


def test_label_kl_hand_computed():
    ref = torch.log(torch.tensor([[0.5, 0.5]]))
    logits = torch.log(torch.tensor([[0.25, 0.75]]))
    expect = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert ops.label_kl(ref, logits).item() == pytest.approx(expect, rel=1e-5)
    assert ops.label_kl(ref, ref + 3.0).item() == pytest.approx(0.0, abs=1e-6)  # shift-invariant logits


def test_generic_labels_are_seeded():
    a = ops.draw_generic_labels(50, ["neutral", "unknown"], seed=3)
    assert a == ops.draw_generic_labels(50, ["neutral", "unknown"], seed=3)
    assert a != ops.draw_generic_labels(50, ["neutral", "unknown"], seed=4)
    assert set(a) == {"neutral", "unknown"}
    with pytest.raises(ValueError):
        ops.draw_generic_labels(3, [], seed=0)


def test_forget_step_loss_terms(tiny):
    model, tok = tiny
    exs = _examples()
    forget, retain = exs[:3], exs[3:]
    spul = _spul(model, tok, epochs=1, batch_size=8, alpha=0.7, beta=0.3, lr=1e-3, seed=5)
    task = spul.task
    generic = ops.draw_generic_labels(len(forget), spul.config.generic_labels, 5)
    # Expected L_f and L_kl before the first update, computed independently.
    fb = collate(encode_examples(tok, task, forget, 48, label_words=generic), tok.pad_token_id)
    rb = collate(encode_examples(tok, task, retain, 48), tok.pad_token_id)
    with torch.no_grad():
        l_f = ops.label_ce(spul.label_logits(fb), fb["label_ids"]).item()
        l_r = ops.label_ce(spul.label_logits(rb), rb["label_ids"]).item()
        p_ref = torch.log_softmax(spul.label_logits(rb, prompted=False)[:, 0], -1)
        q = torch.log_softmax(spul.label_logits(rb)[:, 0], -1)
        l_kl = (p_ref.exp() * (p_ref - q)).sum(-1).mean().item()
    out = spul.forget(forget, retain)
    assert out["generic_labels"] == generic
    s0 = out["steps"][0]
    assert s0["l_f"] == pytest.approx(l_f, rel=1e-4)
    assert s0["l_r"] == pytest.approx(l_r, rel=1e-4)
    assert s0["l_kl"] == pytest.approx(l_kl, rel=1e-3, abs=1e-6)
    assert s0["loss"] == pytest.approx(l_f + 0.7 * l_r + 0.3 * l_kl, rel=1e-4)


def test_recompute_reference_matches_cache(tiny):
    model, tok = tiny
    exs = _examples()
    a = _spul(model, tok, epochs=1, batch_size=4, seed=1).forget(exs[:2], exs[2:])
    model2, _ = tiny_llama(len(tok)), None
    b = _spul(model2, tok, epochs=1, batch_size=4, seed=1, kl_reference="recompute").forget(exs[:2], exs[2:])
    assert a["steps"][0]["l_kl"] == pytest.approx(b["steps"][0]["l_kl"], rel=1e-4, abs=1e-7)


def test_training_lowers_forget_loss_and_moves_only_the_prompt(tiny):
    model, tok = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    exs = _examples()
    spul = _spul(model, tok, epochs=40, batch_size=4, lr=3e-2, warmup_ratio=0.0, alpha=1.0, beta=0.0)
    hist = spul.forget(exs[:3], exs[3:])["steps"]
    assert hist[-1]["l_f"] < 0.5 * hist[0]["l_f"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"frozen weight {k} changed"
    n_train = sum(p.numel() for p in spul.trainable_parameters())
    assert n_train > 0 and all(not p.requires_grad for p in model.parameters())


def _copies_of(shape, dtype):
    """Distinct storages held by live tensors of a given shape (parameters included)."""
    ptrs = set()
    for obj in gc.get_objects():
        try:
            if isinstance(obj, torch.Tensor) and tuple(obj.shape) == shape and obj.dtype == dtype:
                ptrs.add(obj.untyped_storage().data_ptr())
        except Exception:  # objects that misbehave under isinstance/shape
            continue
    return len(ptrs)


def test_no_second_model_copy_during_training(tiny):
    model, tok = tiny
    emb = model.get_input_embeddings().weight
    q = model.model.layers[0].self_attn.q_proj.weight
    gc.collect()
    # Other tests' models may still be alive in this process, so compare against counts taken now.
    n_emb, n_q = _copies_of(tuple(emb.shape), emb.dtype), _copies_of(tuple(q.shape), q.dtype)
    spul = _spul(model, tok, epochs=2, batch_size=3, beta=0.5)
    assert spul.model is model
    assert all(a is b for a, b in zip(spul.model.parameters(), model.parameters()))
    seen = []

    def check(step, info):
        seen.append((_copies_of(tuple(emb.shape), emb.dtype), _copies_of(tuple(q.shape), q.dtype)))

    exs = _examples()
    spul.forget(exs[:3], exs[3:], callback=check)
    assert seen and all(e == n_emb and qq == n_q for e, qq in seen), (n_emb, n_q, seen)
    # Sanity: the counter would notice a deep copy.
    import copy

    dup = copy.deepcopy(model)
    assert _copies_of(tuple(emb.shape), emb.dtype) == n_emb + 1
    del dup


def test_save_and_reload_prompt(tiny, tmp_path):
    from peft import PeftModel

    model, tok = tiny
    exs = _examples()
    spul = _spul(model, tok, epochs=2, batch_size=4, lr=1e-2)
    spul.forget(exs[:2], exs[2:])
    spul.save_pretrained(tmp_path / "prompt")
    assert (tmp_path / "prompt" / "adapter_model.safetensors").exists()
    b = collate(encode_examples(tok, spul.task, exs, 48), tok.pad_token_id)
    with torch.no_grad():
        want = spul.label_logits(b)
    fresh = tiny_llama(len(tok))  # same seed -> same base weights
    again = SPUL.from_pretrained(fresh, tok, tmp_path / "prompt")
    assert again.config.num_virtual_tokens == 4
    with torch.no_grad():
        torch.testing.assert_close(again.label_logits(b), want, atol=1e-5, rtol=1e-5)
    # Plain PEFT can load it too.
    peft_model = PeftModel.from_pretrained(tiny_llama(len(tok)), str(tmp_path / "prompt"))
    assert peft_model.peft_config["default"].num_virtual_tokens == 4


def test_config_validation():
    with pytest.raises(ValueError, match="kl_reference"):
        SPULConfig(kl_reference="copy")
    with pytest.raises(ValueError, match="alpha"):
        SPULConfig(alpha=-1)
    with pytest.raises(ValueError, match="generic_labels"):
        SPULConfig(generic_labels=[])


def test_forget_rejects_empty_sets(tiny):
    model, tok = tiny
    spul = _spul(model, tok)
    with pytest.raises(ValueError, match="forget set is empty"):
        spul.forget([], _examples())
    with pytest.raises(ValueError, match="retain set is empty"):
        spul.forget(_examples()[:2], [])


def _encode_one_by_one(tokenizer, task, ex, label_word, max_length):
    """The former per-example encoder (encode, decode, re-encode), kept as the reference."""
    from promptforget.spul.tasks import label_token_ids

    label_ids = label_token_ids(tokenizer, label_word)
    ex = dict(ex)
    prompt_ids = tokenizer.encode(task.format_prompt(ex), add_special_tokens=True)
    for _ in range(4):
        excess = len(prompt_ids) + len(label_ids) - max_length
        if excess <= 0:
            break
        field_ids = tokenizer.encode(ex[task.truncate_field], add_special_tokens=False)
        if excess >= len(field_ids):
            raise ValueError("too short")
        ex[task.truncate_field] = tokenizer.decode(field_ids[: len(field_ids) - excess - 1])
        prompt_ids = tokenizer.encode(task.format_prompt(ex), add_special_tokens=True)
    else:
        raise ValueError("could not truncate")
    return {"input_ids": prompt_ids + label_ids, "label_start": len(prompt_ids), "label_ids": label_ids,
            "prompt_len": len(prompt_ids)}


def _collate_by_hand(encoded, pad_id):
    """The former hand-padded collator, kept as the reference."""
    T, L, B = max(len(e["input_ids"]) for e in encoded), max(len(e["label_ids"]) for e in encoded), len(encoded)
    input_ids, attention_mask = torch.full((B, T), pad_id), torch.zeros((B, T), dtype=torch.long)
    label_pos, label_ids = torch.zeros((B, L), dtype=torch.long), torch.full((B, L), -100)
    for i, e in enumerate(encoded):
        n, k = len(e["input_ids"]), len(e["label_ids"])
        input_ids[i, :n], attention_mask[i, :n] = torch.tensor(e["input_ids"]), 1
        label_pos[i, :k] = torch.arange(e["label_start"], e["label_start"] + k)
        label_pos[i, k:] = e["label_start"]
        label_ids[i, :k] = torch.tensor(e["label_ids"])
    return {"input_ids": input_ids, "attention_mask": attention_mask, "label_pos": label_pos, "label_ids": label_ids}


@pytest.mark.parametrize("which", ["tiny", "wordpiece"])
@pytest.mark.parametrize("max_length", [12, 20, 48])
def test_batched_encoding_and_padding_equal_the_per_example_ones(which, max_length):
    from transformers import AutoTokenizer

    from promptforget.backbones.encoder import default_text_encoder_dir
    from promptforget.spul.tasks import MultipleChoiceTask, TextTask

    long_texts = [t + " , and then " + " ".join([t] * 4) for t, _ in TEXTS]  # some need cutting
    tok = tiny_tokenizer(long_texts + ["topic is sport tech choices"]) if which == "tiny" else \
        AutoTokenizer.from_pretrained(default_text_encoder_dir())
    pad = tok.pad_token_id
    exs = [{"id": f"e{i}", "text": t, "label": y} for i, (t, (_, y)) in enumerate(zip(long_texts, TEXTS))]
    mc = [{"id": f"q{i}", "question": t, "choices": ["one", "two"], "label": "AB"[i % 2]} for i, t in enumerate(long_texts)]
    cases = [(SentimentTask(), exs, None), (TextTask(("positive", "negative"), "{text} topic is"), exs, None),
             (SentimentTask(labels=("positive", "negative", "neutral")), exs, ["neutral"] * len(exs)),
             (MultipleChoiceTask(num_choices=2), mc, None)]
    for task, examples, words in cases:
        try:
            expected = [_encode_one_by_one(tok, task, ex, ex["label"] if words is None else words[i], max_length)
                        for i, ex in enumerate(examples)]
        except ValueError:  # the template alone does not fit: the batched encoder refuses too
            with pytest.raises(ValueError):
                encode_examples(tok, task, examples, max_length, label_words=words)
            continue
        got = encode_examples(tok, task, examples, max_length, label_words=words)
        assert [{k: v for k, v in g.items() if k != "true_label"} for g in got] == expected
        assert all(len(g["input_ids"]) <= max_length for g in got)
        for k, v in collate(got, pad).items():
            assert torch.equal(v, _collate_by_hand(got, pad)[k]), k
