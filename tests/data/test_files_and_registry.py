"""Reading users' data files, the dataset registry, and locating files inside installed packages."""

from __future__ import annotations

import json

import pytest

from promptforget.data import dataset_help, dataset_names, get_dataset, load_splits
from promptforget.data.files import iter_jsonl, read_csv, read_jsonl
from promptforget.data.text import load_text_file
from promptforget.utils.packages import package_dir, package_file


# --------------------------------------------------------------------------- files
def test_read_jsonl_skips_blank_lines_and_numbers_lines_from_one(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"text": "a", "label": 1}\n\n  \n{"text": "b", "label": 2}\n')
    assert read_jsonl(p) == [{"text": "a", "label": 1}, {"text": "b", "label": 2}]
    assert [n for n, _ in iter_jsonl(p)] == [1, 4]


@pytest.mark.parametrize("bad, msg", [("{not json", r"d\.jsonl:2: not valid JSON"), ("[1, 2]", r"d\.jsonl:2: expected a JSON object")])
def test_read_jsonl_names_the_bad_line(tmp_path, bad, msg):
    p = tmp_path / "d.jsonl"
    p.write_text('{"text": "a"}\n' + bad + "\n")
    with pytest.raises(ValueError, match=msg):
        read_jsonl(p)


def test_read_csv_and_missing_files(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("text,label\nhello,pos\n")
    assert read_csv(p) == [{"text": "hello", "label": "pos"}]
    for reader in (read_csv, read_jsonl):
        with pytest.raises(FileNotFoundError, match="data file not found"):
            reader(tmp_path / "missing")


def test_text_file_through_the_readers(tmp_path):
    rows = [{"text": f"t{i}", "label": "ab"[i % 2]} for i in range(6)]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    ds = load_text_file(tmp_path / "d.jsonl", fmt="jsonl")
    assert ds.texts == [r["text"] for r in rows] and ds.class_names == ["a", "b"] and ds.labels.tolist() == [0, 1] * 3
    with pytest.raises(ValueError, match="row 2 lacks a 'text' or 'label' field"):
        (tmp_path / "e.jsonl").write_text('{"text": "x", "label": "a"}\n{"text": "y"}')
        load_text_file(tmp_path / "e.jsonl", fmt="jsonl")
    with pytest.raises(ValueError, match=r"cannot tell the label column from the columns found: \['text'\]"):
        (tmp_path / "e.jsonl").write_text('{"text": "x"}')
        load_text_file(tmp_path / "e.jsonl", fmt="jsonl")
    with pytest.raises(ValueError, match="csv or jsonl"):
        load_text_file(tmp_path / "d.jsonl", fmt="xml")


# --------------------------------------------------------------------------- registry
def test_registry_names_and_help():
    assert dataset_names("classification") == [
        "bbc_news", "mnist5k", "digits", "csv:PATH", "jsonl:PATH", "cifar10:DIR", "cifar100:DIR", "medmnist:FILE.npz",
        "hf:REPO_ID",
    ]
    assert dataset_names("prompting") == ["rotten_tomatoes", "sst2", "yelp_polarity", "bbc_news", "csv:PATH", "jsonl:PATH",
                                          "hf:REPO_ID", "bigbench"]
    assert dataset_names(kind="image") == ["mnist5k", "digits", "cifar10:DIR", "cifar100:DIR", "medmnist:FILE.npz", "hf:REPO_ID"]
    assert dataset_names("classification", kind="text") == ["bbc_news", "csv:PATH", "jsonl:PATH", "hf:REPO_ID"]
    assert all(f"{n}: " in dataset_help("classification") for n in dataset_names("classification"))
    assert get_dataset("mnist-5k").name == "mnist5k" and get_dataset("jsonl", "prompting").location == "PATH"
    assert get_dataset("csv:some/file.csv").location == "PATH"


def test_load_splits_reads_the_registry(tmp_path):
    tr, te = load_splits("digits", 0.25, 7)
    assert (len(tr), len(te)) == (1347, 450) and tr.name == "digits[train]"
    (tmp_path / "d.csv").write_text("text,label\n" + "\n".join(f"t{i},{'xy'[i % 2]}" for i in range(10)))
    tr, te = load_splits(f"csv:{tmp_path / 'd.csv'}", 0.2, 42)
    assert (len(tr), len(te)) == (8, 2) and tr.class_names == ["x", "y"]


@pytest.mark.parametrize("name, msg", [("imagenet", "unknown dataset 'imagenet'; use one of bbc_news, mnist5k"),
                                       ("cifar10", "needs a location: cifar10:DIR"), ("csv", "needs a location: csv:PATH")])
def test_load_splits_rejects_bad_names_in_one_line(name, msg):
    with pytest.raises(ValueError, match=msg):
        load_splits(name)


# --------------------------------------------------------------------------- installed packages
def test_package_files_are_found_without_importing(tmp_path, monkeypatch):
    pkg = tmp_path / "pf_fake_pkg"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    (pkg / "data" / "x.csv").write_text("a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert package_dir("pf_fake_pkg") == pkg
    assert package_file("pf_fake_pkg", "data", "x.csv") == pkg / "data" / "x.csv"
    with pytest.raises(FileNotFoundError, match="not found in the installed 'pf_fake_pkg'"):
        package_file("pf_fake_pkg", "data", "y.csv")
    with pytest.raises(FileNotFoundError, match="pip install nothing"):
        package_dir("pf_no_such_pkg", missing="needs pip install nothing")
    with pytest.raises(FileNotFoundError, match="make install"):
        package_dir("pf_no_such_pkg")
