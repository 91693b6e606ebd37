"""Experiment tracking through Accelerate's trackers: `--report-to` on PFM training and the SPUL pipeline."""

import csv
import json

import pytest

from promptforget.cli import main
from promptforget.utils import tracking
from promptforget.utils.tracking import LOGS_DIR, resolve_report_to

pytest.importorskip("tensorboard")


def scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    """Every scalar the run's TensorBoard event files hold: tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = {}
    for events in sorted((run_dir / LOGS_DIR).rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events.parent))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return out


def test_report_to_resolves_and_refuses_what_is_not_installed(monkeypatch):
    assert resolve_report_to("auto") == "tensorboard"  # installed in the test environment
    assert resolve_report_to("none") == "none"
    real = tracking.importlib.util.find_spec
    monkeypatch.setattr(tracking.importlib.util, "find_spec",
                        lambda name: None if name in ("tensorboard", "mlflow") else real(name))
    assert resolve_report_to("auto") == "none"
    with pytest.raises(ValueError, match="tensorboard package is not installed"):
        resolve_report_to("tensorboard")
    with pytest.raises(ValueError, match="must be one of"):
        resolve_report_to("wandb")


def test_pfm_train_writes_tensorboard_events_per_epoch(tiny_bert_dir, tmp_path, word_csv):
    word_csv(tmp_path / "toy.csv", {"red": "apple cherry fire", "blue": "sky sea ice"}, per_class=12)
    run = tmp_path / "run"
    assert main(["train", "--dataset", f"csv:{tmp_path / 'toy.csv'}", "--backbone", tiny_bert_dir, "--epochs", "2",
                 "--max-length", "8", "--batch-size", "8", "--out", str(run), "--report-to", "tensorboard"]) == 0
    got = scalars(run)
    history = json.loads((run / "train_log.json").read_text())["history"]
    assert [step for step, _ in got["train/loss"]] == [1, 2]
    assert [v for _, v in got["train/loss"]] == pytest.approx([h["loss"] for h in history], rel=1e-5)
    assert {"train/ce", "train/kl", "train/lr"} <= set(got)
    # the held-out accuracy at the end of training, and `evaluate`'s figures, reach the tracker too
    log = json.loads((run / "train_log.json").read_text())
    assert got["eval/accuracy"] == [(2, pytest.approx(log["held_out_accuracy"]))]
    assert main(["evaluate", str(run), "--max-combinations", "2", "--report-to", "tensorboard"]) == 0
    got, report = scalars(run), json.loads((run / "evaluation.json").read_text())
    assert got["eval/no_mask/overall_acc"] == [(0, pytest.approx(report["state"]["no_mask"]["overall_acc"]))]
    assert "eval/head_masked/retained_acc" in got


def test_report_to_none_writes_no_logs(tiny_bert_dir, tmp_path):
    with open(tmp_path / "toy.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for i in range(16):
            w.writerow([f"word{i % 4} text", "a" if i % 2 else "b"])
    run = tmp_path / "run"
    assert main(["train", "--dataset", f"csv:{tmp_path / 'toy.csv'}", "--backbone", tiny_bert_dir, "--epochs", "1",
                 "--max-length", "8", "--out", str(run), "--report-to", "none"]) == 0
    assert not (run / LOGS_DIR).exists()


def test_spul_stage1_logs_steps_and_evaluation(tmp_path):
    from promptforget.spul.testing import tiny_llama, tiny_tokenizer

    words = ["good", "great", "fine", "bad", "awful", "dull"]
    rows = [{"id": f"r{i}", "text": f"a {words[i % 6]} film", "label": "positive" if i % 6 < 3 else "negative"}
            for i in range(24)]
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    tok = tiny_tokenizer(["a film"] + words)
    model = tiny_llama(len(tok))
    model.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    s1 = tmp_path / "stage1"
    assert main(["spul", "finetune", "--model", str(tmp_path / "base"), "--out", str(s1), "--data", f"jsonl:{data}",
                 "--max-length", "40", "--epochs", "1", "--batch-size", "8", "--lora-r", "2", "--lora-alpha", "4",
                 "--report-to", "tensorboard"]) == 0
    got = scalars(s1)
    steps = json.loads((s1 / "results.json").read_text())["history"]
    assert [v for _, v in got["train/loss"]] == pytest.approx([h["loss"] for h in steps], rel=1e-5)
    assert "train/lr" in got and {"eval/train", "eval/test"} <= set(got)
