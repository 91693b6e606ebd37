"""End-to-end CLI on a tiny saved model: spul finetune -> unlearn -> evaluate, baseline, bigbench."""

import json

import pytest

from promptforget.cli import main
from promptforget.spul.pipeline import stage1_warnings
from promptforget.spul.testing import tiny_llama, tiny_tokenizer

WORDS = ["good", "great", "fine", "bad", "awful", "dull"]


@pytest.fixture()
def setup(tmp_path):
    rows = []
    for i in range(24):
        w = WORDS[i % 6]
        rows.append({"id": f"r{i}", "text": f"a {w} film", "label": "positive" if i % 6 < 3 else "negative"})
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    tok = tiny_tokenizer(["a film how many legs horses two four six is ice cold yes no"] + WORDS)
    model = tiny_llama(len(tok))
    mdir = tmp_path / "base"
    model.save_pretrained(mdir)
    tok.save_pretrained(mdir)
    return tmp_path, data, mdir


def _common(data):
    return ["--data", "jsonl", "--data-file", str(data), "--test-size", "0.25", "--max-length", "40"]


def test_stage1_warnings_name_chance_and_answers_outside_the_label_words():
    labels = ["negative", "positive"]
    good = {"n": 10, "accuracy": 0.9, "predicted": {"positive": 5, "negative": 5}}
    assert stage1_warnings({"train": good, "test": good}, labels) == []
    poor = {"n": 96, "accuracy": 0.4, "predicted": {"positive": 11, "<other>": 85}}
    got = stage1_warnings({"train": good, "test": poor}, labels)
    assert "at or below chance (0.500)" in got[0] and "85/96 test predictions are outside the label words" in got[1]
    assert "--epochs" in got[-1] and len(got) == 3


def test_cli_pipeline(setup, capsys):
    tmp, data, mdir = setup
    s1 = tmp / "stage1"
    assert main(["spul", "finetune", "--model", str(mdir), "--out", str(s1), *_common(data),
                 "--epochs", "1", "--batch-size", "8", "--lora-r", "2", "--lora-alpha", "4"]) == 0
    res = json.loads((s1 / "results.json").read_text())
    assert set(res["evaluation"]) >= {"train", "test"} and res["trainable_parameters"] > 0
    assert res["parameters"]["trainable"] == res["trainable_parameters"]  # what the LoRA trained, not 0
    out, err = capsys.readouterr()
    assert "split" in out and "accuracy" in out and str(s1 / "results.json") in out  # a table, not JSON
    # the tiny random model is a poor stage 1: the warnings are in results.json and on stderr
    assert res["warnings"] == stage1_warnings(res["evaluation"], ["negative", "positive"])
    assert all(w in err for w in res["warnings"])
    assert (s1 / "model" / "model.safetensors").exists()
    assert json.loads((s1 / "config.json").read_text())["command"] == "spul finetune"

    forget = ["--forget", "entity:great", "--min-forget", "1"]
    u = tmp / "unlearn"
    assert main(["spul", "unlearn", "--model", str(s1 / "model"), "--out", str(u), *_common(data), *forget,
                 "--epochs", "1", "--batch-size", "4", "--num-virtual-tokens", "3", "--encoder-hidden-size", "8"]) == 0
    res = json.loads((u / "results.json").read_text())
    ev = res["evaluation"]
    assert {"train_retain", "train_forget", "test_retain", "test_forget"} <= set(ev)
    ids = json.loads((u / "forget_split.json").read_text())["ids"]
    assert ev["train_forget"]["n"] == len(ids["train_forget"]) > 0
    assert set(ids["train_forget"]) | set(ids["test_forget"]) == {"r1", "r7", "r13", "r19"}  # the "great" rows
    assert (u / "prompt" / "adapter_model.safetensors").exists() and (u / "prompt" / "adapter_config.json").exists()
    assert res["generation_check"] and res["trainable_parameters"] > 0

    e = tmp / "eval"
    capsys.readouterr()
    assert main(["spul", "evaluate", "--model", str(s1 / "model"), "--prompt", str(u / "prompt"), "--out", str(e),
                 *_common(data), *forget, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["train_forget"] == ev["train_forget"]["accuracy"]
    ev2 = json.loads((e / "results.json").read_text())["evaluation"]
    assert ev2["train_forget"] == ev["train_forget"]  # reloaded prompt scores identically

    b = tmp / "ga_gd"
    assert main(["baseline", "ga_gd", "--model", str(s1 / "model"), "--out", str(b), *_common(data), *forget,
                 "--lr", "1e-3", "--batch-size", "4"]) == 0
    assert (b / "adapter" / "adapter_model.safetensors").exists()
    assert main(["spul", "evaluate", "--model", str(s1 / "model"), "--adapter", str(b / "adapter"),
                 "--out", str(tmp / "eval_b"), *_common(data), *forget]) == 0
    assert (json.loads((tmp / "eval_b" / "results.json").read_text())["evaluation"]["train_forget"]
            == json.loads((b / "results.json").read_text())["evaluation"]["train_forget"])


def test_cli_bigbench_unlearn(setup):
    tmp, _, mdir = setup
    f, r = tmp / "f.json", tmp / "r.json"
    f.write_text(json.dumps({"name": "legs", "examples": [
        {"input": f"how many legs {i}", "target_scores": {"two": 0, "four": 1, "six": 0}} for i in range(8)]}))
    r.write_text(json.dumps({"name": "ice", "examples": [
        {"input": f"is ice cold {i}", "target_scores": {"yes": 1, "no": 0}} for i in range(8)]}))
    out = tmp / "bb"
    assert main(["spul", "unlearn", "--model", str(mdir), "--out", str(out), "--data", "bigbench",
                 "--bigbench-forget", str(f), "--bigbench-retain", str(r), "--max-length", "60",
                 "--epochs", "1", "--batch-size", "4", "--num-virtual-tokens", "2", "--encoder-hidden-size", "8"]) == 0
    ev = json.loads((out / "results.json").read_text())["evaluation"]
    assert ev["train_forget"]["n"] == 6 and ev["test_forget"]["n"] == 2 and ev["train_retain"]["n"] == 6


def test_cli_input_errors(setup, capsys):
    tmp, data, mdir = setup
    assert main(["spul", "unlearn", "--model", str(mdir), "--out", str(tmp / "x"), *_common(data)]) == 2
    assert "--forget is required" in capsys.readouterr().err
    assert main(["spul", "unlearn", "--model", str(mdir), "--out", str(tmp / "x"), *_common(data),
                 "--forget", "entity:nobody"]) == 2
    assert "selects no training" in capsys.readouterr().err
    assert main(["baseline", "ga", "--model", str(mdir), "--out", str(tmp / "y"), "--data", "bigbench"]) == 2
    assert "--bigbench-forget" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["baseline", "npo", "--out", str(tmp / "z")])
