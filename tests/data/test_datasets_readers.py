"""Users' CSV / JSON-lines files and ``hf:`` datasets read through Hugging Face ``datasets``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from promptforget.data import load_splits
from promptforget.data.files import load_table, read_csv, read_jsonl
from promptforget.data.hub import load_hub_splits
from promptforget.data.text import label_classes, load_text_file, text_dataset_from_table

FIXTURES = Path(__file__).parent / "fixtures"

# What the stdlib csv/json readers gave for fixtures/labelled.{csv,jsonl} (the same 30 rows), computed before
# the readers moved to `datasets`: the TextDataset and load_splits(..., 0.3, 5) must not change.
EXPECTED_TEXTS = [
    "a, comma inside #0", "ünïcode café #1", "ünïcode café #2", "a, comma inside #3", 'a "quoted" bit #4', "007",
    "  leading space #6", "123 #7", "ünïcode café #8", "plain words #9", "ünïcode café #10", "plain words #11",
    "  leading space #12", 'a "quoted" bit #13', "ünïcode café #14", "a, comma inside #15", "a, comma inside #16",
    "123 #17", "  leading space #18", "ünïcode café #19", "ünïcode café #20", "  leading space #21",
    "  leading space #22", "123 #23", "a, comma inside #24", "a, comma inside #25", "123 #26", "a, comma inside #27",
    "ünïcode café #28", "  leading space #29",
]
EXPECTED_CLASSES = ["b,c", "business", "sport", "tech"]
EXPECTED_LABELS = [2, 3, 1, 0, 2, 3, 1, 3, 2, 3, 1, 0, 2, 3, 1, 0, 2, 3, 1, 0, 2, 0, 1, 0, 2, 3, 1, 0, 2, 3]
EXPECTED_TRAIN = [0, 1, 2, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18, 19, 21, 22, 24, 25, 27, 28, 29]
EXPECTED_TEST = [3, 4, 5, 9, 14, 16, 20, 23, 26]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_csv_and_jsonl_give_the_same_dataset_and_split_as_before(fmt):
    path = FIXTURES / f"labelled.{fmt}"
    ds = load_text_file(path, fmt=fmt)
    assert ds.texts == EXPECTED_TEXTS and ds.class_names == EXPECTED_CLASSES and ds.labels.tolist() == EXPECTED_LABELS
    assert ds.name == "labelled"
    train, test = load_splits(f"{fmt}:{path}", 0.3, 5)
    assert train.texts == [EXPECTED_TEXTS[i] for i in EXPECTED_TRAIN]
    assert test.texts == [EXPECTED_TEXTS[i] for i in EXPECTED_TEST]
    assert train.labels.tolist() == [EXPECTED_LABELS[i] for i in EXPECTED_TRAIN]
    assert train.class_names == test.class_names == EXPECTED_CLASSES


def test_csv_cells_stay_text_as_written(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text('text,label\n007,1\n,2\n\n"a,b",10\n')
    assert read_csv(p) == [{"text": "007", "label": "1"}, {"text": "", "label": "2"}, {"text": "a,b", "label": "10"}]
    (tmp_path / "h.csv").write_text("text,label\n")
    assert read_csv(tmp_path / "h.csv") == []
    assert load_table(p, "csv").column_names == ["text", "label"]


def test_jsonl_values_keep_their_types_and_documents_are_refused(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": "z"}\n')
    assert read_jsonl(p) == [{"text": "a", "label": 1}, {"text": "b", "label": "z"}]  # mixed types survive
    p.write_text('[{"text": "a"}, {"text": "b"}]\n')  # a JSON document, which datasets would also accept
    with pytest.raises(ValueError, match=r"d\.jsonl:1: expected a JSON object, got list"):
        read_jsonl(p)


def test_int_labels_sort_numerically_in_jsonl_and_csv(tmp_path):
    rows = [{"text": f"t{i}", "label": [2, 10, 1][i % 3]} for i in range(9)]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "d.csv").write_text("text,label\n" + "\n".join(f"{r['text']},{r['label']}" for r in rows))
    for fmt in ("jsonl", "csv"):
        ds = load_text_file(tmp_path / f"d.{fmt}", fmt=fmt)
        assert ds.class_names == ["1", "2", "10"] and ds.labels.tolist() == [1, 2, 0] * 3
    assert label_classes(["b", "a", "10", "9"]) == ["10", "9", "a", "b"]  # not all ints: as strings
    assert label_classes([True, False]) == ["False", "True"]


def test_columns_are_found_or_named(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text("\n".join(json.dumps({"id": i, "review": f"r{i}", "category": "xy"[i % 2]}) for i in range(4)))
    ds = load_text_file(p, fmt="jsonl")
    assert ds.texts == ["r0", "r1", "r2", "r3"] and ds.class_names == ["x", "y"]
    ds = load_text_file(p, fmt="jsonl", text_column="category", label_column="id")
    assert ds.texts == ["x", "y", "x", "y"] and ds.class_names == ["0", "1", "2", "3"]
    with pytest.raises(ValueError, match=r"no column 'body'; columns found: \['id', 'review', 'category'\]"):
        load_text_file(p, fmt="jsonl", text_column="body")


def test_class_label_columns_keep_their_names():
    import datasets

    table = datasets.Dataset.from_dict(
        {"sentence": ["a", "b", "c"], "label": [1, 0, 1]},
        features=datasets.Features({"sentence": datasets.Value("string"),
                                    "label": datasets.ClassLabel(names=["neg", "pos"])}),
    )
    ds = text_dataset_from_table(table, "t", "sentence", "label")
    assert ds.class_names == ["neg", "pos"] and ds.labels.tolist() == [1, 0, 1]


def test_hf_text_from_a_local_dataset_folder(tmp_path):
    rows = [{"text": f"t{i}", "label": "ab"[i % 2]} for i in range(10)]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows[:8]))
    (tmp_path / "test.jsonl").write_text("\n".join(json.dumps(r) for r in rows[8:]))
    train, test = load_splits(f"hf:{tmp_path}")
    assert train.texts == [f"t{i}" for i in range(8)] and test.texts == ["t8", "t9"]
    assert train.class_names == test.class_names == ["a", "b"] and test.labels.tolist() == [0, 1]
    (tmp_path / "test.jsonl").unlink()  # no test split: a stratified split of train
    train, test = load_hub_splits(str(tmp_path), test_size=0.25, seed=0)
    assert (len(train), len(test)) == (6, 2) and sorted(test.labels.tolist()) == [0, 1]


def test_hf_offline_fails_in_one_line(monkeypatch):
    import datasets
    import huggingface_hub

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConnectionError, match="could not load 'no-such-user/no-such-set'") as err:
        load_splits("hf:no-such-user/no-such-set")
    assert "\n" not in str(err.value)


def test_bad_files_fail_in_one_line(tmp_path):
    with pytest.raises(ValueError, match="unknown text file format 'xml'"):
        load_table(FIXTURES / "labelled.csv", "xml")
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(ValueError, match="not a readable CSV file"):
        read_csv(tmp_path / "e.csv")
    assert np.array_equal(load_text_file(FIXTURES / "labelled.csv").labels, EXPECTED_LABELS)
