import csv
import json
import subprocess
import sys

import pytest

from promptforget.cli import main


@pytest.mark.parametrize("cmd", [[], ["train"], ["forget"], ["evaluate"], ["demo"]])
def test_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main(cmd + ["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "usage: promptforget" in out


def test_installed_entry_point_help():
    r = subprocess.run([sys.executable, "-m", "promptforget.cli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "forget" in r.stdout


@pytest.fixture
def csv_data(tmp_path):
    path = tmp_path / "reviews.csv"
    rows = [("the food was great and tasty", "food"), ("pasta and pizza for dinner", "food"),
            ("the match ended in a draw", "sport"), ("a goal in the last minute", "sport"),
            ("the new phone has a fast chip", "tech"), ("software update fixes bugs", "tech")] * 3
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(rows)
    return path


def test_train_forget_evaluate_end_to_end(csv_data, tiny_bert_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--dataset", f"csv:{csv_data}", "--backbone", tiny_bert_dir, "--out", str(run),
                 "--epochs", "1", "--batch-size", "4", "--max-length", "16", "--test-size", "0.34",
                 "--view-b-sizes", "harmonic", "--kl-weight", "2", "--lr-schedule", "cosine"]) == 0
    assert {"pfm_config.json", "model.safetensors", "data.json", "train_log.json"} <= {p.name for p in run.iterdir()}
    saved = json.loads((run / "pfm_config.json").read_text())["config"]  # every flag reaches the config
    assert (saved["view_b_sizes"], saved["kl_weight"], saved["lr_schedule"], saved["epochs"]) == ("harmonic", 2.0, "cosine", 1)
    # refusing to clobber an existing run
    assert main(["train", "--dataset", f"csv:{csv_data}", "--backbone", tiny_bert_dir, "--out", str(run)]) == 2
    assert "exists" in capsys.readouterr().err

    assert main(["evaluate", str(run), "--max-combinations", "5"]) == 0
    report = json.loads((run / "evaluation.json").read_text())
    assert report["state"]["forgotten_classes"] == [] and set(report["protocol"]["by_k"]) == {"1", "2"}  # k in {1, C//2, C-1}, C=3
    assert "best_single" in report["probes"]

    before = (run / "model.safetensors").read_bytes()
    assert main(["forget", str(run), "--classes", "nonexistent"]) == 2
    assert "unknown class 'nonexistent'" in capsys.readouterr().err
    assert (run / "model.safetensors").read_bytes() == before

    assert main(["forget", str(run), "--classes", "sport"]) == 0
    assert main(["evaluate", str(run), "--no-protocol"]) == 0
    report = json.loads((run / "evaluation.json").read_text())
    assert report["state"]["forgotten_classes"] == ["sport"]
    assert report["state"]["head_masked"]["forgotten_acc"] == 0.0


def test_bad_dataset_name(capsys, tmp_path):
    assert main(["train", "--dataset", "imagenet-99", "--out", str(tmp_path / "r")]) == 2
    assert "unknown dataset" in capsys.readouterr().err


def test_demo_end_to_end_on_a_tiny_model(csv_data, tiny_bert_dir, tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--dataset", f"csv:{csv_data}", "--backbone", tiny_bert_dir, "--epochs", "1",
                 "--prompt-layer", "1", "--out", str(out), "--forget", "tech"]) == 0
    table = capsys.readouterr().out
    assert "forget class 'tech'" in table and "before forgetting" in table and "after (head masked)" in table
    report = json.loads((out / "demo_report.json").read_text())
    assert report["after"]["state"]["forgotten_classes"] == ["tech"]
    assert report["after"]["state"]["head_masked"]["forgotten_acc"] == 0.0
    # the demo's forget went through the durable path: the ledger records it
    from promptforget.store.ledger import Ledger

    assert any(e.get("classes") == ["tech"] for e in Ledger(out).read())


def test_overwrite_replaces_a_run_whole_and_nothing_else(csv_data, tiny_bert_dir, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--dataset", f"csv:{csv_data}", "--backbone", tiny_bert_dir, "--out", str(run),
            "--epochs", "0", "--max-length", "16", "--test-size", "0.34"]
    assert main(args) == 0
    assert main(["forget", str(run), "--classes", "food"]) == 0
    assert (run / "forget_ledger.jsonl").exists()
    assert main(args + ["--overwrite"]) == 0
    assert not (run / "forget_ledger.jsonl").exists()  # the new model starts a new ledger
    assert main(["forget", str(run), "--classes", "food"]) == 0
    other = str(tmp_path / "notes")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    assert main([other if a == str(run) else a for a in map(str, args)] + ["--overwrite"]) == 2
    assert "not a promptforget run directory" in capsys.readouterr().err and (tmp_path / "notes" / "keep.txt").exists()


def test_only_rank_zero_writes_a_run(csv_data, tiny_bert_dir, tmp_path, monkeypatch):
    # Under torchrun / accelerate launch every rank runs the CLI; a non-zero rank trains but never
    # creates, replaces or writes the run directory (rank 0 does, once).
    run = tmp_path / "run"
    args = ["train", "--dataset", f"csv:{csv_data}", "--backbone", tiny_bert_dir, "--out", str(run),
            "--epochs", "0", "--max-length", "16", "--test-size", "0.34"]
    monkeypatch.setenv("RANK", "1")
    assert main(args) == 0
    assert not run.exists()
    monkeypatch.setenv("RANK", "0")
    assert main(args) == 0
    def files():
        return {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}

    before = files()
    monkeypatch.setenv("RANK", "1")
    assert main(args + ["--overwrite"]) == 0
    assert files() == before


def test_hf_flag_names_aliases_and_named_columns(tiny_bert_dir, tmp_path, capsys):
    """HF Trainer's flag names are read as ours (with a note), train and spul share --data/--n-train, a CSV
    with other column names trains with --text-column/--label-column, and train ends with held-out accuracy."""
    data = tmp_path / "intents.csv"
    with data.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["utterance", "intent", "id"])
        w.writerows([(f"{word} please {i}", intent, i) for i in range(8)
                     for word, intent in (("refund", "billing"), ("password", "account"))])
    assert main(["train", "--data", f"csv:{data}", "--backbone", tiny_bert_dir, "--out", str(tmp_path / "r0")]) == 2
    assert "--text-column / --label-column" in capsys.readouterr().err  # the flags exist on train
    run = tmp_path / "run"
    assert main(["train", "--data", f"csv:{data}", "--text-column", "utterance", "--label-column", "intent",
                 "--backbone", tiny_bert_dir, "--output_dir", str(run), "--learning_rate", "0.002",
                 "--num_train_epochs=1", "--max_length", "8", "--n-train", "12", "--test-size", "0.25"]) == 0
    out, err = capsys.readouterr()
    assert "--learning_rate is read as --lr" in err and "--output_dir is read as --out" in err
    assert "held-out accuracy" in out
    config = json.loads((run / "pfm_config.json").read_text())["config"]
    assert (config["lr"], config["epochs"], config["max_length"], config["class_names"]) == (0.002, 1, 8, ["account", "billing"])
    record = json.loads((run / "data.json").read_text())
    assert (record["text_column"], record["label_column"], record["max_train"]) == ("utterance", "intent", 12)
    assert json.loads((run / "train_log.json").read_text())["n_train"] == 12


@pytest.mark.parametrize("argv, usage", [(["train", "--out", "x", "--bogus"], "usage: promptforget train"),
                                         (["spul", "finetune", "--out", "x", "--bogus"], "usage: promptforget spul finetune"),
                                         (["forget", "run", "--classes", "a", "--nope", "1"], "usage: promptforget forget")])
def test_an_unknown_flag_shows_the_sub_command_usage(argv, usage, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and usage in err and "unrecognized arguments" in err


def test_cheap_checks_come_before_loading_a_model(csv_data, tmp_path, capsys):
    """An existing run directory and a missing data file are reported at once: the backbone named here does
    not exist, so reaching it would be a different error."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "file").write_text("x")
    missing_backbone = str(tmp_path / "no-backbone")
    assert main(["train", "--dataset", f"csv:{csv_data}", "--backbone", missing_backbone, "--out", str(tmp_path / "run")]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert main(["train", "--dataset", f"csv:{tmp_path / 'nope.csv'}", "--backbone", missing_backbone,
                 "--out", str(tmp_path / "new")]) == 2
    err = capsys.readouterr().err
    assert "nope.csv" in err and "no-backbone" not in err and not (tmp_path / "new").exists()
