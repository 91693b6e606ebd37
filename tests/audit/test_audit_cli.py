"""`promptforget audit RUN_DIR` end to end on a tiny CSV text run (tiny random BERT)."""

import json

import pytest

from promptforget.cli import main



@pytest.fixture(scope="module")
def run_dir(tiny_bert_dir, tmp_path_factory, word_csv):
    d = tmp_path_factory.mktemp("auditcli")
    word_csv(d / "toy.csv", {"red": "apple cherry blood fire", "blue": "sky sea ocean ice",
                             "green": "grass leaf frog lime"}, per_class=15)
    run = d / "run"
    rc = main(["train", "--dataset", f"csv:{d / 'toy.csv'}", "--backbone", tiny_bert_dir, "--epochs", "1",
               "--max-length", "8", "--batch-size", "16", "--out", str(run)])
    assert rc == 0
    return run


def test_audit_cli_writes_report(run_dir, tmp_path):
    out = tmp_path / "audit"
    rc = main(["audit", str(run_dir), "--forget", "red", "--train-reference", "--reference-epochs", "1",
               "--reference-seeds", "2", "--key-restarts", "1", "--attack-seeds", "1", "--ns", "1", "3", "--key-steps", "2", "--relearn-steps", "2", "--eval-every", "1", "--n-retain", "4",
               "--max-mia", "20", "--out", str(out)])
    assert rc == 0
    rec = json.loads((out / "audit.json").read_text())
    assert rec["audit"]["forgotten_classes"] == ["red"]
    assert set(rec["audit"]["models"]) == {"audited", "reference", "original"}
    metrics = {r["metric"]: r for r in rec["table"]}
    assert {"key_recovery_acc_n3", "relearn_j_n1", "mia_efficacy"} <= set(metrics)
    assert metrics["mia_efficacy"]["verdict"] != "no reference"
    # U-LiRA runs by default (16 shadows, the run's recipe); 2 references give figures, not verdicts
    assert rec["audit"]["models"]["audited"]["ulira"]["n_shadow"] == 16
    assert {"ulira_auc", "ulira_tpr_1pct_fpr"} <= set(metrics) and metrics["ulira_auc"]["verdict"] == "uninformative"
    assert "**Uninformative**: 2 reference seed(s)" in (out / "audit.md").read_text()
    assert (out / "audit.md").read_text().startswith("# Unlearning audit: red forgotten")
    assert (out / "README.md").is_file() and (out / "key_recovery_curves.png").is_file()
    assert rec["audit"]["reference_seeds"] == 2
    saved = sorted(p.parent.name for p in (out / "reference").glob("seed-*/reference.json"))
    assert len(saved) == 2, saved
    # the run itself was not modified: it still knows "red"
    from promptforget.pfm.model import PFMModel

    assert "red" in PFMModel.from_pretrained(run_dir).active_classes


def test_audit_cli_bad_input(run_dir, tmp_path, capsys):
    assert main(["audit", str(run_dir), "--forget", "purple", "--no-reference", "--out", str(tmp_path)]) == 2
    assert "purple" in capsys.readouterr().err
    assert main(["audit", str(run_dir), "--forget", "red", "--out", str(tmp_path)]) == 2
    assert "--reference" in capsys.readouterr().err
    assert main(["audit", str(run_dir), "--no-reference", "--out", str(tmp_path)]) == 2
    assert main(["audit", str(tmp_path / "nope"), "--no-reference"]) == 2
