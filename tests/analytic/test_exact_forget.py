"""The analytic family's contract: after any sequence of forgets the artefact is byte for byte what `train`
writes on the remaining data with the same config; unknown or already-forgotten examples are refused with
nothing changed; the ledger holds keyed hashes, never ids; the proof by recomputation checks it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from promptforget.analytic.run import rewrite_for, recompute, train_run
from promptforget.store.durable import UnknownExampleError, forget
from promptforget.store.layout import ANALYTIC_CONFIG_NAME, LEDGER_NAME, WEIGHTS_NAME
from promptforget.store.ledger import LedgerKey

WORDS = {"fruit": "apple banana cherry grape lemon mango", "vehicle": "car bus train plane boat bike",
         "colour": "red blue green yellow pink black", "animal": "cat dog horse cow sheep goat"}


def write_rows(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "text", "label"])
        w.writerows(rows)
    return path


def make_rows(per_class: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    rows = [[f"user-{label[:2]}-{i}", " ".join(rng.choice(ws.split(), 3)), label]
            for label, ws in WORDS.items() for i in range(per_class)]
    return [rows[i] for i in rng.permutation(len(rows))]


def train(out, data, bert, **knobs):
    return train_run(out, f"csv:{data}", test_size=0, backbone=bert, max_length=12, batch_size=8, progress=False,
                     **knobs)


def artefact(run):
    return (run / WEIGHTS_NAME).read_bytes()


def run_files(run) -> dict[str, bytes]:
    """Every file of the run directory (relative path -> bytes), the features files under examples/ included."""
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def artefact_files(run) -> dict[str, bytes]:
    """model.safetensors and the features files it references: what a forget must leave as a retrain writes it."""
    return {k: v for k, v in run_files(run).items() if k == WEIGHTS_NAME or k.startswith("examples/")}


def example_features(run, example_id: str) -> bytes:
    """The fixed-point features the run keeps for one example (its row in its class's features file)."""
    from promptforget.analytic.artefact import all_features, parse, run_reader

    cfg = json.loads((run / ANALYTIC_CONFIG_NAME).read_text())["config"]
    p = parse(artefact(run), cfg["class_names"])
    row = [bytes(r) for r in p.id_sha256].index(rewrite_for(run, None).row_key(example_id))
    return bytes(all_features(run_reader(run), p)[row])


@pytest.fixture
def base(tmp_path, tiny_bert_dir):
    rows = make_rows()
    data = write_rows(tmp_path / "data.csv", rows)
    run = train(tmp_path / "run", data, tiny_bert_dir, id_salt="s" * 32)
    cfg = json.loads((run / ANALYTIC_CONFIG_NAME).read_text())["config"]
    return rows, run, cfg


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_any_sequence_of_forgets_equals_training_on_the_rest(base, tmp_path, tiny_bert_dir, seed):
    rows, run, cfg = base
    rng = np.random.default_rng(seed)
    gone_classes, gone_ids = set(), set()
    for step in range(3):
        left = [r for r in rows if r[2] not in gone_classes and r[0] not in gone_ids]
        if step == 1 and seed != 2:  # a class (seed 2: examples only)
            c = str(rng.choice(sorted({r[2] for r in left})))
            forget(run, [c], rewrite=rewrite_for(run, None))
            gone_classes.add(c)
        else:
            ids = [str(x) for x in rng.choice([r[0] for r in left], size=int(rng.integers(1, 4)), replace=False)]
            forget(run, [], examples=ids, rewrite=rewrite_for(run, None))
            gone_ids |= set(ids)
    remaining = write_rows(tmp_path / "rest.csv", [r for r in rows if r[2] not in gone_classes and r[0] not in gone_ids])
    knobs = {k: cfg[k] for k in ("id_salt", "class_names", "seed", "head", "feature_map", "scale_bits")}
    fresh = train(tmp_path / "fresh", remaining, tiny_bert_dir, **knobs)
    assert artefact(run) == artefact(fresh)
    assert artefact_files(run) == artefact_files(fresh)  # the features files too, and no other one left over
    # and the proof by recomputation agrees, from the recorded data and the ledger alone
    proof = recompute(run, progress=False)
    assert proof["ok"], proof["problems"]
    assert proof["forgotten_examples"] == len(gone_ids) and proof["forgotten_classes"] == sorted(gone_classes)


def test_forget_order_does_not_matter(tmp_path, tiny_bert_dir):
    rows = make_rows()
    data = write_rows(tmp_path / "data.csv", rows)
    a = train(tmp_path / "a", data, tiny_bert_dir, id_salt="x" * 32)
    b = train(tmp_path / "b", data, tiny_bert_dir, id_salt="x" * 32)
    ids = [rows[3][0], rows[7][0], rows[11][0]]
    forget(a, [], examples=ids, rewrite=rewrite_for(a, None))
    for i in reversed(ids):
        forget(b, [], examples=[i], rewrite=rewrite_for(b, None))
    assert artefact_files(a) == artefact_files(b)


def test_unknown_or_already_forgotten_examples_are_refused_unchanged(base):
    rows, run, _ = base
    forget(run, [], examples=[rows[0][0]], rewrite=rewrite_for(run, None))
    before = run_files(run)
    for bad in (["nobody"], [rows[0][0]], [rows[1][0], "nobody"]):
        with pytest.raises(UnknownExampleError, match="not in the training set"):
            forget(run, [], examples=bad, rewrite=rewrite_for(run, None))
    assert run_files(run) == before


def test_ledger_records_keyed_hashes_not_ids(base):
    rows, run, _ = base
    key = LedgerKey(b"k" * 32)
    features = example_features(run, rows[5][0])
    assert any(features in data for data in run_files(run).values())
    r = forget(run, [], examples=[rows[5][0]], rewrite=rewrite_for(run, key), key=key)
    text = (run / LEDGER_NAME).read_text()
    assert rows[5][0] not in text and r.examples[0] in text and r.exact_at_commit
    # keyed: another key gives another hash for the same id
    assert rewrite_for(run, LedgerKey(b"z" * 32)).ledger_hashes([rows[5][0]]) != r.examples
    # the run keeps no trace of the forgotten row: its id hash and its features are in no file of it
    row_key = rewrite_for(run, key).row_key(rows[5][0])
    assert row_key not in artefact(run)
    assert not any(features in data for data in run_files(run).values())
    assert len(list((run / "examples").iterdir())) == 4  # one features file per class, the old one deleted
    assert recompute(run, key, progress=False)["ok"]
    assert not recompute(run, LedgerKey(b"z" * 32), progress=False)["ok"]  # a wrong key matches no example


def test_recompute_catches_a_tampered_artefact(base):
    rows, run, _ = base
    forget(run, ["fruit"], rewrite=rewrite_for(run, None))
    raw = bytearray(artefact(run))
    raw[-1] ^= 1  # one bit of the last tensor
    (run / WEIGHTS_NAME).write_bytes(bytes(raw))
    proof = recompute(run, progress=False)
    assert not proof["ok"] and "differs from the run's" in proof["problems"][0]


def test_a_changed_features_file_is_caught(base):
    rows, run, _ = base
    victim = next(r for r in rows if r[2] == "animal")[0]
    path = run / "examples" / next(f.name for f in (run / "examples").iterdir()
                                   if example_features(run, victim) in f.read_bytes())
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 1
    path.write_bytes(bytes(raw))
    before = run_files(run)
    with pytest.raises(ValueError, match="does not match the hash"):  # a forget touching it refuses, unchanged
        forget(run, [], examples=[victim], rewrite=rewrite_for(run, None))
    assert run_files(run) == before
    proof = recompute(run, progress=False)
    assert not proof["ok"] and "differs from the recomputed features file" in proof["problems"][0]
    path.write_bytes(bytes(raw[:-1]) + bytes([raw[-1] ^ 1]))  # restored: the proof holds again
    assert recompute(run, progress=False)["ok"]
    (run / "examples" / "stray.safetensors").write_bytes(b"left behind")
    proof = recompute(run, progress=False)
    assert not proof["ok"] and "a retrain does not write (stray.safetensors" in proof["problems"][0]


@pytest.mark.parametrize("point", ["after_pending", "after_artefact", "after_commit"])
def test_a_crash_leaves_no_forgotten_features_behind_once_recovered(base, point):
    import os
    import subprocess
    import sys

    from promptforget.store import durable

    rows, run, _ = base
    victim = rows[2][0]
    features = example_features(run, victim)
    script = ("import sys; from promptforget.analytic.run import rewrite_for; from promptforget.store.durable import forget; "
              "forget(sys.argv[1], [], examples=[sys.argv[2]], rewrite=rewrite_for(sys.argv[1], None))")
    env = {**os.environ, durable.CRASH_ENV: point}
    r = subprocess.run([sys.executable, "-c", script, str(run), victim], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == durable.CRASH_EXIT_CODE, r.stderr
    # the next forget recovers first (commit or abort), then deletes what the committed artefact does not name
    forget(run, [], examples=[rows[3][0]], rewrite=rewrite_for(run, None))
    committed_victim = point != "after_pending"
    assert any(features in data for data in run_files(run).values()) != committed_victim
    assert recompute(run, progress=False)["ok"]


def test_example_forget_cannot_empty_a_class_silently(tmp_path, tiny_bert_dir):
    rows = make_rows(per_class=3)
    run = train(tmp_path / "run", write_rows(tmp_path / "d.csv", rows), tiny_bert_dir)
    fruit = [r[0] for r in rows if r[2] == "fruit"]
    with pytest.raises(ValueError, match="forget the class instead"):
        forget(run, [], examples=fruit, rewrite=rewrite_for(run, None))


def test_pfm_runs_refuse_examples(tmp_path):
    from promptforget.store.durable import ForgetError

    (tmp_path / "pfm_config.json").write_text(json.dumps({"config": {"class_names": ["a", "b"]}}))
    with pytest.raises(ForgetError, match="whole classes only"):
        forget(tmp_path, [], examples=["1"])


def test_cli_train_forget_examples_and_verify_recompute(tmp_path, tiny_bert_dir, capsys):
    from types import SimpleNamespace

    from promptforget.cli import main

    rows = make_rows()
    data = write_rows(tmp_path / "d.csv", rows)
    run = tmp_path / "run"

    def cli(*args):
        code = main(list(args))
        out = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)

    r = cli("train", "--family", "analytic", "--dataset", f"csv:{data}", "--backbone", tiny_bert_dir,
            "--max-length", "12", "--test-size", "0.25", "--out", str(run))
    assert r.returncode == 0, r.stderr
    r = cli("forget", str(run), "--examples", "nobody")
    assert r.returncode == 2 and "not in the training set" in r.stderr and "Traceback" not in r.stderr
    from promptforget.pfm.exact import exact_training_data

    first = exact_training_data(run).ids[0]
    r = cli("forget", str(run), "--examples", first, "--reason", "GDPR art. 17")
    assert r.returncode == 0 and "exact" in r.stdout, r.stderr
    r = cli("ledger", "verify", str(run), "--recompute")
    assert r.returncode == 0 and "equals the artefact" in r.stdout, r.stdout + r.stderr
    assert first not in (run / LEDGER_NAME).read_text()
    r = cli("evaluate", str(run))
    assert r.returncode == 0 and "held-out accuracy" in r.stdout
    card = (run / "README.md").read_text()
    assert "exact and instant" in card and "under `examples/`" in card and "1 single example(s)" in card
    assert "datasets:\n- d\n" in card and str(tmp_path) not in card  # a name, no machine path


def test_two_processes_write_the_bytes_of_one(tiny_bert_dir, one_and_two_processes, tmp_path):
    """1 and 2 processes train the same bytes; forgetting in each then equals training on the rest (so a broken
    subtraction fails here too)."""
    rows = make_rows(per_class=9)
    data = write_rows(tmp_path / "d.csv", rows)
    gone = [rows[0][0], rows[5][0]]
    script = f"""
import os, shutil, sys
from promptforget.analytic.run import rewrite_for, train_run
from promptforget.store.durable import forget
out = sys.argv[1]
run = train_run(out + ".run", "csv:{data}", test_size=0, backbone=sys.argv[2], max_length=12, batch_size=4,
                id_salt="p" * 32, progress=False)
if int(os.environ.get("RANK", "0")) == 0:
    shutil.copy(out + ".run/model.safetensors", out + ".trained")
    forget(run, [], examples={gone!r}, rewrite=rewrite_for(run, None))
    shutil.copy(out + ".run/model.safetensors", out)
"""
    single, multi = one_and_two_processes(script, tiny_bert_dir)
    assert Path(f"{single}.trained").read_bytes() == Path(f"{multi}.trained").read_bytes()
    rest = write_rows(tmp_path / "rest.csv", [r for r in rows if r[0] not in gone])
    classes = json.loads((Path(f"{single}.run") / ANALYTIC_CONFIG_NAME).read_text())["config"]["class_names"]
    fresh = train_run(tmp_path / "fresh", f"csv:{rest}", test_size=0, backbone=tiny_bert_dir, max_length=12,
                      batch_size=4, id_salt="p" * 32, class_names=classes, progress=False)
    assert single.read_bytes() == multi.read_bytes() == artefact(fresh)


def test_export_loads_with_plain_transformers_and_equals_the_run(base, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from promptforget.analytic.export import export_run
    from promptforget.analytic.model import AnalyticModel

    rows, run, _ = base
    forget(run, ["colour"], rewrite=rewrite_for(run, None))
    forget(run, [], examples=[rows[0][0]], rewrite=rewrite_for(run, None))
    out = export_run(run, tmp_path / "export")
    model = AutoModelForSequenceClassification.from_pretrained(out, trust_remote_code=True).eval()
    tok = AutoTokenizer.from_pretrained(out)
    assert set(model.config.id2label.values()) == {"fruit", "vehicle", "animal"}  # "colour" is not even named
    texts = [r[1] for r in rows[:8]] + ["apple car dog " * 20]
    with torch.no_grad():
        logits = model(**tok(texts, padding=True, truncation=True, return_tensors="pt")).logits
    run_model = AnalyticModel.from_pretrained(run)
    ours = run_model(run_model.preprocess(texts))[:, [run_model.class_names.index(c) for c in model.config.id2label.values()]]
    torch.testing.assert_close(logits, ours, rtol=1e-9, atol=1e-9)
    assert not any(p.name.startswith("examples") for p in out.iterdir())


def _audited_run(tmp_path, bert, rows):
    data = write_rows(tmp_path / "d.csv", rows)
    run = train_run(tmp_path / "run", f"csv:{data}", test_size=0.3, backbone=bert, max_length=12, batch_size=8,
                    progress=False, id_salt="a" * 32)
    from promptforget.pfm.exact import exact_training_data

    ids = [i for i, y in zip(exact_training_data(run).ids, exact_training_data(run).labels) if y != 0][:3]
    forget(run, ["animal"], rewrite=rewrite_for(run, None))
    forget(run, [], examples=ids, rewrite=rewrite_for(run, None))
    return run


def test_audit_finds_a_forgotten_class_and_examples_indistinguishable(tmp_path, tiny_bert_dir):
    from promptforget.audit.analytic_audit import audit_run

    record = audit_run(_audited_run(tmp_path, tiny_bert_dir, make_rows(per_class=14)), progress=False)
    assert record["reference"]["ok"]
    leaks = [r for r in record["table"] if r["kind"] in ("leak", "utility")]
    assert {r["metric"].split("[")[0] for r in leaks} >= {"retained_acc", "forgotten_class_top1",
                                                          "forgotten_examples_row_found", "forgotten_examples_loss_auc"}
    assert all(r["verdict"] == "indistinguishable" for r in leaks), leaks
    power = next(r for r in record["table"] if r["metric"] == "member_rows_found")
    assert power["audited"]["value"] == 1.0  # the row lookup finds members: the attack has power


def test_audit_tells_a_broken_subtraction_apart(tmp_path, tiny_bert_dir, monkeypatch):
    import promptforget.analytic.stats as stats
    from promptforget.audit.analytic_audit import audit_run

    exact_minus = stats.ExactStats.minus

    def broken(self, q, labels):  # an example forget subtracts one row fewer than it drops
        return exact_minus(self, q[1:], labels[1:]) if 1 < len(q) <= 3 else exact_minus(self, q, labels)

    monkeypatch.setattr(stats.ExactStats, "minus", broken)
    run = _audited_run(tmp_path, tiny_bert_dir, make_rows(per_class=14))
    monkeypatch.setattr(stats.ExactStats, "minus", exact_minus)
    record = audit_run(run, progress=False)
    assert not record["reference"]["ok"] and "NOT the retrain" in record["headline"][0]
    assert any(r["verdict"] != "indistinguishable" for r in record["table"] if r["kind"] == "leak")


def test_audit_cli_on_an_analytic_run(tmp_path, tiny_bert_dir, capsys):
    from promptforget.cli import main

    run = _audited_run(tmp_path, tiny_bert_dir, make_rows(per_class=14))
    assert main(["audit", str(run)]) == 0
    out = capsys.readouterr().out
    assert "byte for byte the retrain" in out and "indistinguishable" in out
    assert main(["audit", str(run), "--forget", "fruit"]) == 2
    assert "what its ledger forgot" in capsys.readouterr().err


def test_one_class_left_and_bad_ids_are_clean_errors(tmp_path, tiny_bert_dir):
    from promptforget.store.durable import ForgetError

    rows = [r for r in make_rows() if r[2] in ("fruit", "vehicle")]
    run = train(tmp_path / "run", write_rows(tmp_path / "d.csv", rows), tiny_bert_dir)
    before = artefact(run)
    with pytest.raises(ForgetError, match="at least two classes"):
        forget(run, ["fruit"], rewrite=rewrite_for(run, None))
    with pytest.raises(ForgetError, match="UTF-8"):
        forget(run, [], examples=["ab\ud800"], rewrite=rewrite_for(run, None))
    assert artefact(run) == before


def test_non_finite_features_are_refused():
    from promptforget.analytic.stats import quantize

    with pytest.raises(ValueError, match="NaN or infinite"):
        quantize(np.array([[np.nan, 1.0]]), 12)


def test_a_broken_ledger_stops_an_analytic_model_from_loading(base):
    from promptforget.analytic.model import AnalyticModel

    rows, run, _ = base
    forget(run, [], examples=[rows[0][0]], rewrite=rewrite_for(run, None))
    (run / LEDGER_NAME).write_text("not json\n")
    with pytest.raises(ValueError, match="ledger cannot be read"):
        AnalyticModel.from_pretrained(run)


def test_audit_with_a_duplicate_text_stays_indistinguishable(tmp_path, tiny_bert_dir):
    from promptforget.audit.analytic_audit import audit_run

    rows = make_rows(per_class=14)
    rows += [["dup-a", "apple apple apple", "fruit"], ["dup-b", "apple apple apple", "fruit"]]
    data = write_rows(tmp_path / "d.csv", rows)
    run = train_run(tmp_path / "run", f"csv:{data}", test_size=0.3, backbone=tiny_bert_dir, max_length=12,
                    batch_size=8, progress=False, id_salt="d" * 32)
    from promptforget.pfm.exact import exact_training_data

    ids = exact_training_data(run).ids
    gone = "dup-a" if "dup-a" in ids and "dup-b" in ids else next(i for i in ids)
    forget(run, [], examples=[gone], rewrite=rewrite_for(run, None))
    record = audit_run(run, progress=False)
    assert all(r["verdict"] == "indistinguishable" for r in record["table"] if r["kind"] == "leak"), record["table"]


def test_pfm_forget_exact_refuses_examples(tmp_path, capsys):
    from promptforget.cli import main

    (tmp_path / "pfm_config.json").write_text(json.dumps({"config": {"class_names": ["a", "b"]}}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert main(["forget", str(tmp_path), "--examples", "3", "--exact"]) == 2
    assert "whole classes only" in capsys.readouterr().err


def test_a_symlinked_features_directory_is_not_written_through(base, tmp_path):
    from promptforget.store.durable import StorageError

    rows, run, _ = base
    elsewhere = tmp_path / "elsewhere"
    (run / "examples").rename(elsewhere)
    (run / "examples").symlink_to(elsewhere)
    before = {p.name: p.read_bytes() for p in elsewhere.iterdir()}
    with pytest.raises(StorageError, match="symbolic link"):
        forget(run, [], examples=[rows[0][0]], rewrite=rewrite_for(run, None))
    assert {p.name: p.read_bytes() for p in elsewhere.iterdir()} == before
