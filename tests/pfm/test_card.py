"""The run's model card: huggingface_hub ModelCard with model-index results, forgets and the ledger head."""

import json

import pytest
from huggingface_hub import ModelCard

from promptforget.pfm.card import write_model_card
from promptforget.pfm.config import PFMConfig
from promptforget.pfm.model import PFMModel, forget_run
from promptforget.store.layout import AUDIT_DIR, DATA_NAME, EVAL_NAME
from promptforget.store.ledger import GENESIS, Ledger

CLASSES = ["cat", "dog", "emu"]
EVALUATION = {
    "n_test": 30,
    "state": {"no_mask": {"overall_acc": 0.8, "retained_acc": 0.9, "forgotten_acc": 0.6},
              "head_masked": {"overall_acc": 0.6, "retained_acc": 0.95, "forgotten_acc": 0.0}},
    "protocol": {"by_k": {"1": {"retained_acc": {"mean": 0.85, "std": 0.01},
                                "forgotten_acc": {"mean": 0.3, "std": 0.05}}}},
}
AUDIT = {"table": [{"metric": "mia_auc", "audited": 0.52, "reference": 0.5, "verdict": "OK"},
                   {"metric": "key_recovery_youden", "audited": 0.7, "reference": 0.1, "verdict": "GAP"}]}


@pytest.fixture
def run(tiny_vit_dir, tmp_path):
    PFMModel(PFMConfig(backbone=tiny_vit_dir, class_names=CLASSES)).save_pretrained(tmp_path / "run")
    (tmp_path / "run" / DATA_NAME).write_text(json.dumps({"dataset": "digits", "test_size": 0.2, "seed": 1,
                                                          "max_train": None}))
    return tmp_path / "run"


def results(card) -> dict[str, float]:
    return {r.metric_name: r.metric_value for r in card.data.eval_results or []}


def test_card_at_train_time(run, tiny_vit_dir):
    card = ModelCard.load(write_model_card(run))
    assert card.data.base_model == tiny_vit_dir and card.data.pipeline_tag == "image-classification"
    assert {"machine-unlearning", "promptforget"} <= set(card.data.tags)
    assert card.data.datasets == ["digits"] and card.data.forgotten_classes == []
    assert card.data.ledger_head_sha256 == GENESIS
    assert not card.data.eval_results  # nothing evaluated yet
    assert "No class has been forgotten" in card.text and "the shared" in card.text


def test_card_has_the_evaluation_and_the_audit_as_eval_results(run):
    (run / EVAL_NAME).write_text(json.dumps(EVALUATION))
    (run / AUDIT_DIR).mkdir()
    (run / AUDIT_DIR / "audit.json").write_text(json.dumps(AUDIT))
    card = ModelCard.load(write_model_card(run))
    got = results(card)
    assert got["full-bank accuracy"] == 0.8
    assert got["retained-class accuracy"] == 0.95
    assert got["forgotten-class accuracy (no head mask)"] == 0.6
    assert got["protocol k=1: forgotten accuracy"] == 0.3
    assert got["audit key_recovery_youden (verdict: GAP)"] == 0.7
    assert all(r.dataset_type == "digits" and r.task_type == "image-classification" for r in card.data.eval_results)
    assert "| `key_recovery_youden` | 0.700 | 0.100 | GAP |" in card.text


def test_card_after_forget_lists_classes_ledger_entries_and_head(run):
    forget_run(run, ["dog"], reason="request 7", request_id="req-7")
    card = ModelCard.load(write_model_card(run))
    entries = Ledger(run).read()
    commit = entries[-1]
    assert card.data.forgotten_classes == ["dog"]
    assert card.data.ledger_head_sha256 == commit["entry_sha256"] != GENESIS
    assert f"| dog | {commit['seq']} | `req-7` | {commit['time']} |" in card.text
    assert "classes still known (2): cat, emu" in card.text


def test_card_is_regenerated_from_the_run_files(run):
    first = write_model_card(run, evaluation=EVALUATION).read_text()
    assert write_model_card(run, evaluation=EVALUATION).read_text() == first  # same files -> same card
    forget_run(run, ["emu"])
    second = write_model_card(run, evaluation=EVALUATION).read_text()
    assert second != first and ModelCard.load(run / "README.md").data.forgotten_classes == ["emu"]
    assert not list(run.glob(".*.tmp"))


def test_card_names_the_real_backbone_not_the_alias(run):
    record = json.loads((run / "pfm_config.json").read_text())
    record["backbone"]["name_or_path"] = "minilm"
    (run / "pfm_config.json").write_text(json.dumps(record))
    assert ModelCard.load(write_model_card(run)).data.base_model == "sentence-transformers/all-MiniLM-L6-v2"


def test_card_of_a_missing_run_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a (PFM|promptforget) run directory"):
        write_model_card(tmp_path)


def test_the_dinov2_alias_is_named_by_its_local_directory(tmp_path, monkeypatch):
    from promptforget.backbones.dinov2.cache import CACHE_ENV, DEFAULT_NAME, cache_root
    from promptforget.pfm.card import base_model_id

    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    assert base_model_id("dinov2-s14") == str(cache_root() / DEFAULT_NAME)
    assert cache_root().is_relative_to(tmp_path)
    assert base_model_id("minilm") == "sentence-transformers/all-MiniLM-L6-v2"
    assert base_model_id("/some/dir") == "/some/dir"



@pytest.mark.parametrize("typed, name", [("csv:data/intents.csv", "intents"), ("jsonl:/x/reviews.v2.jsonl", "reviews"),
                                         ("hf:org/some-set", "org/some-set"), ("bbc_news", "bbc_news"),
                                         ("cifar10:/data/cifar-10-python.tar.gz", "cifar-10-python")])
def test_the_card_names_a_dataset_not_its_path(typed, name):
    from promptforget.data.sources import dataset_label

    assert dataset_label(typed) == name
