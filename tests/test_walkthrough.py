"""A new user's first session, scripted: their own CSV -> train -> evaluate -> forget -> export -> load with plain
transformers -> serve -> /docs offline -> move the run and its data, forget --exact from elsewhere.

Every step is the command or call the README shows, on a tiny random-weight backbone so it runs in seconds.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import socket
from pathlib import Path

import pytest
import torch

from promptforget.cli import main

INTENTS = {"billing": "refund invoice charge payment bill", "account": "password login username email reset",
           "shipping": "parcel delivery courier tracking package", "support": "agent help human chat call"}


def write_intents(path: Path, per_class: int = 12) -> Path:
    """The user's own CSV, with their own column names."""
    import numpy as np

    rng = np.random.default_rng(0)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["utterance", "intent"])
        for intent, words in INTENTS.items():
            for _ in range(per_class):
                w.writerow([" ".join(rng.choice(words.split(), 4)), intent])
    return path


@pytest.fixture
def offline(monkeypatch):
    """No network: a connection attempt fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_a_new_users_walk_through(tiny_bert_dir, tmp_path, monkeypatch, capsys, offline):
    from fastapi.testclient import TestClient
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from promptforget.pfm.model import PFMModel
    from promptforget.service.app import create_app
    from promptforget.service.settings import ServiceSettings

    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "hf_modules"))  # trust_remote_code's copy of the code
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    write_intents(Path("intents.csv"))
    probes = ["refund my invoice charge", "reset my password please", "where is my parcel delivery",
              "I want a human agent", " ".join(["refund invoice"] * 20)]  # the last is longer than max_length

    # train: the held-out accuracy is the last thing it says
    assert main(["train", "--data", "csv:intents.csv", "--text-column", "utterance", "--label-column", "intent",
                 "--backbone", tiny_bert_dir, "--out", "runs/intents", "--epochs", "2", "--max-length", "16",
                 "--batch-size", "8", "--lr", "3e-3", "--report-to", "none"]) == 0
    assert re.search(r"held-out accuracy \d\.\d{3} on \d+ examples", capsys.readouterr().out)
    assert "datasets:\n- intents\n" in Path("runs/intents/README.md").read_text()  # a name, not csv:PATH

    # evaluate
    assert main(["evaluate", "runs/intents", "--max-combinations", "3", "--report-to", "none"]) == 0
    assert "head masked" in capsys.readouterr().out

    # forget: from then on Python never answers the class
    assert main(["forget", "runs/intents", "--classes", "billing", "--reason", "walk-through"]) == 0
    capsys.readouterr()
    model = PFMModel.from_pretrained("runs/intents")
    assert model.forgotten_classes == ["billing"] and "billing" not in model.predict(probes)

    # export, loaded with plain transformers: the same logits, for every length, and no forgotten class
    assert main(["export", "runs/intents", "--out", "exports/intents"]) == 0
    exported = AutoModelForSequenceClassification.from_pretrained("exports/intents", trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained("exports/intents")
    with torch.no_grad():
        logits = exported(**tokenizer(probes, padding=True, truncation=True, return_tensors="pt")).logits
        expected = model(model.preprocess(probes), mask_forgotten=True)
    finite = expected.isfinite()
    assert torch.equal(finite, logits.isfinite())
    torch.testing.assert_close(logits[finite], expected[finite], rtol=0, atol=1e-5)
    labels = [exported.config.id2label[i] for i in logits.argmax(1).tolist()]
    assert not any(label.startswith("billing") for label in labels)
    assert (Path("exports/intents") / "README.md").is_file()
    assert str(tmp_path) not in (Path("exports/intents") / "config.json").read_text()

    # serve: the forgotten class is never predicted; the API docs load with no network
    with TestClient(create_app("runs/intents", ServiceSettings(admin_token="admin-token-0123456789abcdef"))) as client:
        r = client.post("/predict", json={"texts": probes})
        assert r.status_code == 200 and "billing" not in {p["label"] for p in r.json()["predictions"]}
        page = client.get("/docs")
        assets = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", page.text)
        assert page.status_code == 200 and assets and not [a for a in assets if "//" in a]
        assert all(client.get(a).status_code == 200 for a in assets)

    # move the project (run and data together) and forget exactly from another directory
    moved = tmp_path / "moved" / "project"
    shutil.move(project, moved)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert main(["forget", str(moved / "runs" / "intents"), "--classes", "support", "--exact"]) == 0
    assert "the artefact is now a retrain without ['billing', 'support']" in capsys.readouterr().out
    model = PFMModel.from_pretrained(moved / "runs" / "intents")
    assert set(model.predict(probes)) <= {"account", "shipping"}
    ledger = [json.loads(line) for line in (moved / "runs" / "intents" / "forget_ledger.jsonl").read_text().splitlines()]
    assert ledger[-1]["event"] == "exact"
