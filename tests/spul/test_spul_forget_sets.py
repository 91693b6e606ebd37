"""Forget-set builders: entity, cluster, random, id list, and the spec parser."""

import numpy as np
import pytest

from promptforget.spul import forget_sets as fs

EXS = [
    {"id": "a", "text": "Tom Hanks is wonderful here."},
    {"id": "b", "text": "A dull film; even tom hanks cannot save it."},
    {"id": "c", "text": "Leeds looks lovely in this one."},
    {"id": "d", "text": "Jennifer Lopez and Tom Hanks shine. Lopez again!"},
    {"id": "e", "text": "Nothing to see."},
]


def test_entity_matches_whole_words_case_insensitively():
    assert fs.entity_forget_set(EXS, ["Tom Hanks"]) == [0, 1, 3]
    assert fs.entity_forget_set(EXS, ["Lee"]) == []  # no substring match inside "Leeds"
    assert fs.entity_forget_set(EXS, ["Lopez", "Leeds"]) == [2, 3]
    with pytest.raises(ValueError, match="at least one"):
        fs.entity_forget_set(EXS, ["", " "])


def test_frequent_capitalised_names_skips_sentence_starts_and_stopwords():
    # "Hanks" twice mid-sentence; "Lopez" once mid-sentence (once sentence-initial); "tom hanks" is lower-case.
    assert fs.frequent_capitalised_names(EXS, top_k=5, min_count=2) == ["Hanks"]
    names = fs.frequent_capitalised_names(EXS, top_k=10, min_count=1)
    assert set(names) == {"Hanks", "Lopez", "Tom"}  # Jennifer/Leeds/A/Nothing start sentences


def test_frequent_capitalised_names_skips_titles_and_words_mostly_written_lower_case():
    news = [{"id": str(i), "text": t} for i, t in enumerate([
        "Yesterday Mr Blair met Mr Brown on Monday.", "Then Mr Blair spoke to the Government.",
        "The government said the government would act.", "Later Mr Brown left.", "Again Blair won.",
    ])]
    # "Mr" (title), "Monday" (calendar) and "Government" (lower case 2x, capitalised 1x) are not names.
    assert fs.frequent_capitalised_names(news, top_k=5, min_count=1) == ["Blair", "Brown"]
    assert fs.auto_entity_names(news, news, min_size=3) == ["Blair"]


def test_cluster_forget_set_picks_whole_clusters_and_assigns_test_points():
    rng = np.random.default_rng(0)
    centers = np.array([[10.0, 0], [0, 10.0], [-10.0, -10.0]])
    train = np.concatenate([c + rng.normal(size=(20, 2)) for c in centers])
    test = np.concatenate([c + rng.normal(size=(5, 2)) for c in centers])
    tr, te, info = fs.cluster_forget_set(train, 3, 1, seed=1, test_embeddings=test)
    assert len(tr) == 20 and len(te) == 5
    blob = tr[0] // 20
    assert tr == list(range(20 * blob, 20 * blob + 20)) and te == list(range(5 * blob, 5 * blob + 5))
    assert sorted(info["cluster_sizes"]) == [20, 20, 20]
    # Seeded: same choice again; a different seed can choose differently but always whole clusters.
    assert fs.cluster_forget_set(train, 3, 1, seed=1)[0] == tr
    with pytest.raises(ValueError, match="n_forget_clusters"):
        fs.cluster_forget_set(train, 3, 3)


def test_cluster_min_size_excludes_tiny_clusters():
    rng = np.random.default_rng(0)
    train = np.concatenate([
        [10.0, 0] + rng.normal(size=(30, 2)), [-10.0, 0] + rng.normal(size=(25, 2)), [0, 30.0] + rng.normal(size=(2, 2)),
    ])
    for seed in range(5):
        tr, _, _ = fs.cluster_forget_set(train, 3, 1, seed=seed, min_cluster_size=5)
        assert len(tr) in (25, 30)
    with pytest.raises(ValueError, match="only 1 clusters"):
        fs.cluster_forget_set(train, 3, 2, min_cluster_size=26)


def test_id_and_random_forget_sets(tmp_path):
    assert fs.id_forget_set(EXS, ["d", "a", "a"]) == [0, 3]
    with pytest.raises(ValueError, match="not in the data"):
        fs.id_forget_set(EXS, ["zz"])
    p = tmp_path / "ids.txt"
    p.write_text("# forget these\na\n\nc\n")
    assert fs.read_id_list(p) == ["a", "c"]
    r = fs.random_forget_set(100, 0.1, seed=3)
    assert len(r) == 10 and r == fs.random_forget_set(100, 0.1, seed=3)
    with pytest.raises(ValueError):
        fs.random_forget_set(10, 1.5)


def test_build_forget_split_specs(tmp_path):
    train, test = EXS[:3], EXS[3:]
    s = fs.build_forget_split("entity:Tom Hanks", train, test)
    assert [e["id"] for e in s["train_forget"]] == ["a", "b"] and [e["id"] for e in s["train_retain"]] == ["c"]
    assert [e["id"] for e in s["test_forget"]] == ["d"] and [e["id"] for e in s["test_retain"]] == ["e"]
    p = tmp_path / "ids.txt"
    p.write_text("c\ne\n")
    s = fs.build_forget_split(f"ids:{p}", train, test)
    assert [e["id"] for e in s["train_forget"]] == ["c"] and [e["id"] for e in s["test_forget"]] == ["e"]
    with pytest.raises(ValueError, match="unknown forget spec"):
        fs.build_forget_split("magic:1", train, test)
    with pytest.raises(ValueError, match="selects no training"):
        fs.build_forget_split("entity:Nobody", train, test)
    with pytest.raises(ValueError, match="cluster spec"):
        fs.build_forget_split("cluster:x", train, test)


def test_embed_texts_mean_pools_with_given_model():
    import torch
    from transformers import BertConfig, BertModel

    from promptforget.spul.testing import tiny_tokenizer

    tok = tiny_tokenizer(["good bad film"])
    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=32))
    e = fs.embed_texts(["good film", "bad film film film"], model=bert, tokenizer=tok)
    assert e.shape == (2, 16)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, rtol=1e-5)
    # Padding must not change an embedding: embed alone == embed in a padded batch.
    alone = fs.embed_texts(["good film"], model=bert, tokenizer=tok)
    np.testing.assert_allclose(alone[0], e[0], atol=1e-5)


@pytest.mark.integration
def test_minilm_embeddings_cluster_by_meaning():
    e = fs.embed_texts(["a great, moving film", "a wonderful, touching movie", "the stock market fell sharply"])
    assert e.shape == (3, 384)
    assert e[0] @ e[1] > e[0] @ e[2]
