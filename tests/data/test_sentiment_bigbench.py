"""Rotten Tomatoes CSV reader, splits/subsampling, and the BIG-bench multiple-choice loader."""

import bz2
import csv
import json

import pytest

from promptforget.data import bigbench, sentiment


def _write_rt(path, rows):
    opener = bz2.open if str(path).endswith(".bz2") else open
    with opener(path, "wt", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["category", "filename", "text", "movie_name"])
        w.writerows(rows)


def test_read_rotten_tomatoes_maps_labels_and_drops_plots(tmp_path):
    p = tmp_path / "rt.csv.bz2"
    _write_rt(p, [
        ["plot", "f0", "A plot summary.", "m0"],
        ["fresh", "f1", "A delight.", "m1"],
        ["rotten", "f2", "  A mess.  ", "m1"],
        ["fresh", "f3", "", "m2"],
    ])
    exs = sentiment.read_rotten_tomatoes(p)
    assert [(e["id"], e["text"], e["label"], e["movie"]) for e in exs] == [
        ("rt-1", "A delight.", "positive", "m1"), ("rt-2", "A mess.", "negative", "m1"),
    ]


def test_read_rotten_tomatoes_rejects_other_csv(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="missing column"):
        sentiment.read_rotten_tomatoes(p)


def test_split_and_subsample_are_seeded_and_balanced():
    exs = [{"id": i, "text": str(i), "label": "positive" if i % 4 else "negative"} for i in range(100)]
    tr, te = sentiment.train_test_split(exs, 0.2, seed=1)
    assert len(te) == 20 and len(tr) == 80 and not {e["id"] for e in tr} & {e["id"] for e in te}
    assert sentiment.train_test_split(exs, 0.2, seed=1) == (tr, te)
    assert sentiment.train_test_split(exs, 0.2, seed=2) != (tr, te)
    sub = sentiment.subsample(exs, 20, seed=0)
    assert len(sub) == 20 and sum(e["label"] == "negative" for e in sub) == 10
    assert [e["id"] for e in sub] == sorted(e["id"] for e in sub)  # original order kept
    with pytest.raises(ValueError):
        sentiment.train_test_split(exs, 0, seed=0)


def test_unknown_hf_dataset_is_rejected():
    with pytest.raises(ValueError, match="unknown sentiment data set"):
        sentiment.load_hf_sentiment("imdb-ish")


@pytest.mark.integration
def test_bundled_rotten_tomatoes():
    exs = sentiment.read_rotten_tomatoes()
    assert len(exs) > 4000 and {e["label"] for e in exs} == {"positive", "negative"}
    tr, te = sentiment.load_rotten_tomatoes(n_train=50, n_test=20, seed=0)
    assert len(tr) == 50 and len(te) == 20


def _bb(tmp_path, examples, **extra):
    p = tmp_path / "task.json"
    p.write_text(json.dumps({"name": "toy", "examples": examples, **extra}))
    return p


def test_bigbench_loader(tmp_path):
    p = _bb(tmp_path, [
        {"input": "Legs on a horse?", "target_scores": {"two": 0, "four": 1, "six": 0}},
        {"input": "Is ice cold?", "target_scores": {"Yes": 1, "No": 0}},
    ], task_prefix="Answer: ")
    exs = bigbench.load_bigbench_task(p)
    assert exs[0] == {"id": "toy-0", "task": "toy", "question": "Answer: Legs on a horse?",
                      "choices": ["two", "four", "six"], "label": "B"}
    assert exs[1]["label"] == "A" and exs[1]["choices"] == ["Yes", "No"]


def test_bigbench_max_choices_keeps_answer(tmp_path):
    scores = {c: 0 for c in "abcdefgh"}
    scores["f"] = 1
    p = _bb(tmp_path, [{"input": "q", "target_scores": scores}])
    ex = bigbench.load_bigbench_task(p, max_choices=3, seed=4)[0]
    assert len(ex["choices"]) == 3 and "f" in ex["choices"]
    assert ex["choices"][ord(ex["label"]) - ord("A")] == "f"
    assert ex["choices"] == sorted(ex["choices"])  # file order preserved


def test_bigbench_rejects_bad_files(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        bigbench.load_bigbench_task(p)
    with pytest.raises(ValueError, match="target_scores"):
        bigbench.load_bigbench_task(_bb(tmp_path, [{"input": "q", "target": "free text"}]))
    p.write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match="examples"):
        bigbench.load_bigbench_task(p)
