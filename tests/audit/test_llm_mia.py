"""LOSS / ZLib / Min-K% / Min-K%++ on hand-made log-probs, and token statistics from a tiny random Llama."""

import math

import numpy as np
import pytest
import torch

from promptforget.audit import llm_mia
from promptforget.audit.llm_mia import TokenStats



def test_min_k_by_hand():
    lp = np.array([-0.1, -5.0, -0.2, -3.0, -0.3, -0.4, -2.0, -0.5, -0.6, -1.0])
    # k = 0.4 of 10 tokens = the 4 lowest: -5, -3, -2, -1
    assert llm_mia.min_k(lp, 0.4) == pytest.approx(-11 / 4)
    assert llm_mia.min_k(lp, 1.0) == pytest.approx(lp.mean())
    assert llm_mia.min_k(np.array([-2.0, -1.0]), 0.1) == -2.0  # at least one token
    with pytest.raises(ValueError, match="k must be"):
        llm_mia.min_k(lp, 0.0)


def test_min_k_pp_normalises_by_the_next_token_distribution():
    lp = np.array([-1.0, -4.0, -2.0])
    mu = np.array([-2.0, -2.0, -2.0])
    sigma = np.array([1.0, 2.0, 0.5])
    z = (lp - mu) / sigma  # [1, -1, 0]
    assert llm_mia.min_k_pp(lp, mu, sigma, k=0.4) == pytest.approx(np.sort(z)[:2].mean())  # ceil(1.2) = 2


def test_scores_orientation_and_zlib():
    texts = ["aaaa aaaa aaaa aaaa", "the quick brown fox"]
    st = [TokenStats(np.array([-0.1, -0.2]), np.zeros(2) - 1, np.ones(2)), TokenStats(np.array([-3.0, -4.0]), np.zeros(2) - 1, np.ones(2))]
    s = llm_mia.scores_from_stats(texts, st)
    assert s["loss"][0] > s["loss"][1]  # the well-predicted text scores as more member-like
    assert s["zlib"][0] == pytest.approx(-0.15 / llm_mia.zlib_bytes(texts[0]))
    assert llm_mia.zlib_bytes("aaaa aaaa aaaa aaaa") < llm_mia.zlib_bytes("the quick brown fox")


def test_aucs_separate_members_with_lower_loss():
    rng = np.random.default_rng(0)

    def stats(n, shift):
        return [TokenStats(rng.normal(-3 + shift, 1, 20), np.full(20, -3.0), np.ones(20)) for _ in range(n)]

    texts = ["some text"] * 50
    mem, non = llm_mia.scores_from_stats(texts, stats(50, 2.0)), llm_mia.scores_from_stats(texts, stats(50, 0.0))
    aucs = llm_mia.aucs_from_scores(mem, non)
    assert all(aucs[s] > 0.95 for s in llm_mia.SCORES)
    same = llm_mia.aucs_from_scores(llm_mia.scores_from_stats(texts, stats(50, 0.0)), non)
    assert all(abs(same[s] - 0.5) < 0.2 for s in llm_mia.SCORES)


WORDS = ("hello world this is a test short the cat sat on mat today green ideas sleep furiously now b c d e f g h "
         "one two three four five dogs bark at mailman rain falls in spain mainly x y z w v u t s six seven eight nine ten")


@pytest.fixture(scope="module")
def tiny_llama():
    """A 2-layer random Llama over a 70-word vocabulary (a real HF fast tokenizer, built offline)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "<s>", ",", *dict.fromkeys(WORDS.split())])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", unk_token="<unk>", eos_token="<s>")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval(), tok


def test_token_stats_match_a_direct_computation(tiny_llama):
    model, tok = tiny_llama
    texts = ["hello world, this is a test", "short test"]
    st = llm_mia.token_stats(model, tok, texts, batch_size=2)  # padded batch
    for text, s in zip(texts, st):
        ids = tok([text], return_tensors="pt")["input_ids"]
        assert ids.shape[1] == len(s.logprobs) + 1
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
        want = logp.gather(-1, ids[0, 1:, None])[:, 0].numpy()
        np.testing.assert_allclose(s.logprobs, want, atol=1e-4)
        p = logp.exp()
        mu = (p * logp).sum(-1).numpy()
        np.testing.assert_allclose(s.mu, mu, atol=1e-4)
        # sigma: the standard deviation (not the variance) of log p(z) under z ~ p, computed the long way
        sigma = torch.sqrt((p * (logp - torch.as_tensor(mu)[:, None]) ** 2).sum(-1)).numpy()
        np.testing.assert_allclose(s.sigma, sigma, rtol=1e-3, atol=1e-4)
        # log-prob of a uniform-ish random model is near -log V
        assert abs(s.mu.mean() + math.log(tok.vocab_size)) < 1.0


def test_training_on_texts_raises_their_scores(tiny_llama):
    """Overfit the tiny LM on 4 texts: every score must rank them above 4 unseen texts (AUC 1)."""
    import copy

    model, tok = tiny_llama
    model = copy.deepcopy(model).train()
    members = ["the cat sat on the mat today", "green ideas sleep furiously now", "a b c d e f g h", "one two three four five"]
    others = ["dogs bark at the mailman", "rain falls in spain mainly", "x y z w v u t s", "six seven eight nine ten"]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    enc = tok(members, return_tensors="pt", padding=True)
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    for _ in range(60):
        loss = model(**enc, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    aucs = llm_mia.llm_mia_aucs(model.eval(), tok, members, others)
    for s in llm_mia.SCORES:
        assert aucs[s] == 1.0, (s, aucs)
    # a soft prompt prefix changes the scores (how a prompted SPUL model is audited)
    pre = torch.randn(3, 32)
    a = llm_mia.token_stats(model, tok, members[:1])[0].logprobs
    b = llm_mia.token_stats(model, tok, members[:1], prefix_embeds=pre)[0].logprobs
    assert a.shape == b.shape and not np.allclose(a, b)
