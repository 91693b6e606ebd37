"""Exact forgetting on a tiny run: the retrain equals a from-scratch retrain, open requests coalesce, a
crash mid-retrain leaves the instant state and resumes, and missing or changed data is refused."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load, load_file

from promptforget.cli import main
from promptforget.pfm import exact as exact_mod
from promptforget.pfm.exact import ExactUnavailableError, dataset_sha256, exact_forget, run_exact
from promptforget.store import durable
from promptforget.store.layout import DATA_NAME, WEIGHTS_NAME
from promptforget.store.ledger import KEY_ENV, Ledger, request_state, verify

ROWS = [("the food was great and tasty", "food"), ("pasta and pizza for dinner", "food"),
        ("the match ended in a draw", "sport"), ("a goal in the last minute", "sport"),
        ("the new phone has a fast chip", "tech"), ("software update fixes bugs", "tech")] * 3
KNOBS = dict(epochs=1, batch_size=4, max_length=16)


def write_csv(path: Path, rows=ROWS) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def trained(tiny_bert_dir, tmp_path_factory):
    from promptforget.pfm.run import train_run

    d = tmp_path_factory.mktemp("exact")
    data = write_csv(d / "toy.csv")
    run = train_run(d / "run", f"csv:{data}", test_size=0.34, backbone=tiny_bert_dir, **KNOBS)
    return run


@pytest.fixture
def run(trained, tmp_path):
    """A fresh copy of the trained run (its data stays where the run recorded it)."""
    return Path(shutil.copytree(trained, tmp_path / "run"))


@pytest.fixture(scope="module")
def exact_sport(trained, tmp_path_factory):
    """The artefact an uncrashed exact forget of 'sport' produces."""
    r = Path(shutil.copytree(trained, tmp_path_factory.mktemp("exact-ref") / "run"))
    exact_forget(r, ["sport"], log=lambda *_: None)
    return (r / WEIGHTS_NAME).read_bytes()


def files(run: Path) -> dict:
    return {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def same_weights(a: bytes, b: bytes) -> bool:
    """Equal tensors (the header's metadata order may differ between writes)."""
    ta, tb = load(a), load(b)
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def test_train_records_the_manifest_of_its_examples(run):
    from promptforget.pfm.run import load_split

    record = json.loads((run / DATA_NAME).read_text())
    train, _ = load_split(run)
    assert record["train_manifest_sha256"] == dataset_sha256(train)
    # order and labels count, not only the set of texts
    swapped = train.subset(list(reversed(range(len(train)))))
    assert dataset_sha256(swapped) != record["train_manifest_sha256"]


def test_exact_forget_is_a_from_scratch_retrain(run, exact_sport, tmp_path):
    from promptforget.audit.reference import train_pfm_reference
    from promptforget.pfm.model import PFMModel
    from promptforget.pfm.run import load_split

    r, done = exact_forget(run, ["sport"], reason="gdpr", request_id="req-1", log=lambda *_: None)
    assert r.exact_requested and done["request_ids"] == ["req-1"] and done["classes"] == ["sport"]
    raw = (run / WEIGHTS_NAME).read_bytes()
    assert same_weights(raw, exact_sport)  # deterministic: the same recipe and seed give the same weights
    # The same weights as the audit's retrain-from-scratch reference (same recipe and seed).
    model = PFMModel.from_pretrained(run)
    train, _ = load_split(run)
    ref = train_pfm_reference(model.config, model.encode_dataset(train.inputs), train.labels, ["sport"],
                              tmp_path / "ref", progress=False)
    mine, theirs = load_file(str(run / WEIGHTS_NAME)), load_file(str(tmp_path / "ref" / WEIGHTS_NAME))
    assert mine.keys() == theirs.keys() and "prompts.sport" not in mine
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert ref.forgotten_classes == ["sport"]

    entries = Ledger(run).read()
    assert [e["event"] for e in entries] == ["pending", "commit", "exact_pending", "exact"]
    kept = train.subset([i for i, y in enumerate(train.labels) if train.class_names[y] != "sport"])
    assert done["train_manifest_sha256"] == dataset_sha256(kept) and done["n_train"] == len(kept)
    assert done["artefact_before_sha256"] == entries[1]["artefact_after_sha256"]
    assert done["artefact_after_sha256"] == sha(raw)
    assert request_state(entries, "req-1")["state"] == "exact"
    report = verify(run)
    assert report["ok"], report["problems"]
    assert report["forgotten_classes"] == ["sport"]


def test_open_requests_coalesce_into_one_retrain(run, monkeypatch):
    calls = []
    real = exact_mod.retrain
    monkeypatch.setattr(exact_mod, "retrain", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    durable.forget(run, ["sport"], request_id="a", exact=True)
    durable.forget(run, ["tech"], request_id="b", exact=True)
    entries = Ledger(run).read()
    assert [request_state(entries, r)["state"] for r in "ab"] == ["retraining", "retraining"]
    done = run_exact(run, log=lambda *_: None)
    assert calls == [["sport", "tech"]]
    assert done["request_ids"] == ["a", "b"] and done["classes"] == ["sport", "tech"]
    entries = Ledger(run).read()
    assert [e["event"] for e in entries].count("exact") == 1
    assert [request_state(entries, r)["state"] for r in "ab"] == ["exact", "exact"]
    assert run_exact(run, log=lambda *_: None) is None  # nothing open: no retrain
    assert len(calls) == 1 and verify(run)["ok"]


def test_a_forget_during_the_retrain_makes_it_stale_and_it_runs_again(run, monkeypatch):
    calls = []
    real = exact_mod.retrain

    def retrain(run_dir, forgotten, *a, **k):
        out = real(run_dir, forgotten, *a, **k)
        if not calls:  # an instant forget lands while the first retrain trains
            durable.forget(run_dir, ["tech"], request_id="instant-b")
        calls.append(list(forgotten))
        return out

    monkeypatch.setattr(exact_mod, "retrain", retrain)
    _, done = exact_forget(run, ["sport"], request_id="exact-a", log=lambda *_: None)
    assert calls == [["sport"], ["sport", "tech"]]  # the stale retrain was never installed
    assert done["classes"] == ["sport", "tech"] and done["request_ids"] == ["exact-a"]
    entries = Ledger(run).read()
    assert request_state(entries, "instant-b")["state"] == "exact"  # its data was left out too
    assert verify(run)["ok"]


def test_missing_or_changed_data_is_refused_and_nothing_changes(run, capsys):
    record = json.loads((run / DATA_NAME).read_text())
    data = Path(record["dataset"].partition(":")[2])
    before = files(run)
    moved = data.with_suffix(".moved")
    data.rename(moved)
    try:
        with pytest.raises(ExactUnavailableError, match="unavailable"):
            exact_forget(run, ["sport"])
        assert main(["forget", str(run), "--classes", "sport", "--exact"]) == 2
        err = capsys.readouterr().err
        assert "exact forget refused" in err and len(err.strip().splitlines()) == 1
        assert files(run) == before
    finally:
        moved.rename(data)
    original = data.read_bytes()
    try:
        edited = [(t.replace("bugs", "many bugs"), y) for t, y in ROWS]  # one text edited, everywhere
        write_csv(data, edited)
        with pytest.raises(ExactUnavailableError, match="differs from the file the run was trained on"):
            exact_forget(run, ["sport"])
        assert files(run) == before
    finally:
        data.write_bytes(original)
    # a run trained before manifests existed
    (run / DATA_NAME).write_text(json.dumps({k: v for k, v in record.items() if k != "train_manifest_sha256"}))
    before = files(run)
    with pytest.raises(ExactUnavailableError, match="records no train_manifest_sha256"):
        exact_forget(run, ["sport"])
    assert files(run) == before


def test_a_moved_run_forgets_exactly_from_anywhere(tiny_bert_dir, tmp_path, monkeypatch, capsys):
    """Trained with a data path relative to the working directory, the run and its data are moved together,
    then apart: --exact works from another directory, with --data-root once the data is elsewhere, and a
    changed file there is refused."""
    from promptforget.pfm.run import train_run

    (tmp_path / "project").mkdir()
    monkeypatch.chdir(tmp_path / "project")
    write_csv(Path("toy.csv"))
    train_run("run", "csv:toy.csv", test_size=0.34, backbone=tiny_bert_dir, **KNOBS)
    record = json.loads(Path("run", DATA_NAME).read_text())
    assert record["dataset"] == "csv:toy.csv" and record["source"]["relative_to_run"] == "../toy.csv"
    assert record["source"]["sha256"] == hashlib.sha256(Path("toy.csv").read_bytes()).hexdigest()

    moved = tmp_path / "elsewhere" / "project"
    shutil.move(tmp_path / "project", moved)  # the recorded absolute path is gone too
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    run = moved / "run"
    assert main(["forget", str(run), "--classes", "sport", "--exact"]) == 0, capsys.readouterr().err
    assert "the artefact is now a retrain without ['sport']" in capsys.readouterr().out

    data = tmp_path / "data"
    data.mkdir()
    shutil.move(moved / "toy.csv", data / "toy.csv")  # now the data lives apart from the run
    before = files(run)
    assert main(["forget", str(run), "--classes", "tech", "--exact"]) == 2
    err = capsys.readouterr().err
    assert "--data-root" in err and len(err.strip().splitlines()) == 1 and files(run) == before
    assert main(["forget", str(run), "--classes", "tech", "--exact", "--data-root", str(data)]) == 0
    capsys.readouterr()

    run2 = Path(shutil.copytree(trained_from(tmp_path / "p2", tiny_bert_dir, monkeypatch), tmp_path / "run2"))
    write_csv(tmp_path / "p2-data.csv", [(t.upper(), y) for t, y in ROWS])  # same name elsewhere, other content
    (tmp_path / "changed").mkdir()
    shutil.move(tmp_path / "p2-data.csv", tmp_path / "changed" / "toy.csv")
    shutil.rmtree(tmp_path / "p2")
    monkeypatch.setenv("PROMPTFORGET_DATA_ROOT", str(tmp_path / "changed"))
    before = files(run2)
    assert main(["forget", str(run2), "--classes", "tech", "--exact"]) == 2
    assert "differs from the file the run was trained on" in capsys.readouterr().err and files(run2) == before


def trained_from(project: Path, backbone: str, monkeypatch) -> Path:
    """A run trained in ``project`` on ``project/toy.csv`` (typed relative to it)."""
    from promptforget.pfm.run import train_run

    project.mkdir()
    monkeypatch.chdir(project)
    write_csv(Path("toy.csv"))
    return train_run(project / "run", "csv:toy.csv", test_size=0.34, backbone=backbone, **KNOBS)


def test_cli_exact_and_a_signed_ledger(run, exact_sport, monkeypatch, capsys):
    monkeypatch.setenv(KEY_ENV, "k" * 8 + "0123456789abcdef")
    assert main(["forget", str(run), "--classes", "sport", "--exact", "--request-id", "cli-1"]) == 0
    out = capsys.readouterr().out
    assert "forgot ['sport']" in out and "the artefact is now a retrain without ['sport']" in out
    assert same_weights((run / WEIGHTS_NAME).read_bytes(), exact_sport)
    assert "| sport | 2 | `cli-1` |" in (run / "README.md").read_text()  # the card row ...
    assert "| cli | - | exact |" in (run / "README.md").read_text()  # ... says the forget is exact
    from promptforget.store.ledger import load_key

    report = verify(run, load_key())
    assert report["ok"] and report["authenticated"], report["problems"]
    assert main(["exact", str(run)]) == 0 and "no exact forget is pending" in capsys.readouterr().out
    monkeypatch.delenv(KEY_ENV)
    assert verify(run)["signed"] and not verify(run)["ok"]  # signed, and no key to check it with


def test_the_ledger_checks_exact_entries(run):
    from promptforget.store.ledger import canonical, check_chain, entry_hash

    exact_forget(run, ["sport"], log=lambda *_: None)
    entries = Ledger(run).read()
    assert check_chain(entries) == []
    bad = [dict(e) for e in entries]
    for e in bad[2:]:  # an exact retrain that claims to have left out another class
        e["classes"] = ["tech"]
    prev = bad[1]["entry_sha256"]
    for e in bad[2:]:
        e["prev_sha256"] = prev
        e["entry_sha256"] = prev = entry_hash(e)
    problems = check_chain(bad)
    assert any("the retrain left out ['tech']" in p for p in problems)
    (run / "forget_ledger.jsonl").write_bytes(b"".join(canonical(e) + b"\n" for e in bad))
    assert not verify(run)["ok"]


@pytest.mark.parametrize("point", durable.EXACT_CRASH_POINTS)
def test_a_crash_mid_retrain_leaves_instant_or_exact_and_resumes(run, exact_sport, point):
    env = {**os.environ, durable.CRASH_ENV: point, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(durable.__file__).parents[2])}
    r = subprocess.run([sys.executable, "-m", "promptforget.cli", "forget", str(run), "--classes", "sport", "--exact",
                        "--request-id", "crash-1"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == durable.CRASH_EXIT_CODE, r.stderr[-2000:]
    entries = Ledger(run).read()
    instant = next(e for e in entries if e["event"] == "commit")["artefact_after_sha256"]
    now = sha((run / WEIGHTS_NAME).read_bytes())
    rolled_forward = point in ("after_exact_artefact", "before_exact_commit")
    if rolled_forward:  # never a half state: the retrain's exact bytes, or the instant state
        assert entries[-1]["event"] == "exact_pending" and now == entries[-1]["artefact_after_sha256"]
        assert same_weights((run / WEIGHTS_NAME).read_bytes(), exact_sport)
    else:
        assert now == instant
    assert request_state(entries, "crash-1")["state"] == "retraining"
    # The next start (here: `promptforget exact`) resolves it and ends in the exact state.
    assert main(["exact", str(run)]) == 0
    entries = Ledger(run).read()
    assert request_state(entries, "crash-1")["state"] == "exact"
    assert same_weights((run / WEIGHTS_NAME).read_bytes(), exact_sport)
    resolved = [e["event"] for e in entries if e["event"] in ("exact_abort", "exact")]
    if point in ("after_exact_pending", "mid_exact_artefact"):
        assert resolved == ["exact_abort", "exact"]
    elif rolled_forward:
        assert resolved == ["exact"] and entries[-1]["recovered"] is True
    else:
        assert resolved == ["exact"]
    assert not list(run.glob(".*.tmp"))
    assert verify(run)["ok"]


def test_an_instant_request_id_is_not_replayed_as_exact(run):
    durable.forget(run, ["sport"], request_id="inst-1")
    with pytest.raises(durable.RequestIdConflictError, match="was an instant forget"):
        exact_forget(run, ["sport"], request_id="inst-1")
    assert request_state(Ledger(run).read(), "inst-1")["state"] == "instant"


def test_the_audit_cannot_tell_an_exact_forget_from_retraining(run, tmp_path):
    # The exact artefact is a retrain of the run's own seed; the audit's references are retrained with other
    # seeds (seed+1, ...: never the audited run's, which would correlate them). No primary figure finds
    # residual knowledge, and two references give no verdict at all. (With 4 forget samples a count can
    # still split retrains apart -- MIA-efficacy 4/4 against 0/4 three times -- where the t interval's normal
    # model does not hold: docs/audit.md, "Limits".)
    from promptforget.audit.report import LEAKS_MORE, UNINFORMATIVE, UTILITY_LOST

    exact_forget(run, ["sport"], log=lambda *_: None)
    out = tmp_path / "audit"
    common = ["--key-restarts", "1", "--attack-seeds", "1", "--ns", "1", "3", "--key-steps", "3", "--relearn-steps",
              "2", "--eval-every", "1", "--n-retain", "4", "--max-mia", "20", "--ulira-shadows", "0", "--out", str(out)]
    assert main(["audit", str(run), "--train-reference", "--reference-seeds", "3", *common]) == 0
    record = json.loads((out / "audit.json").read_text())
    primary = {r["metric"]: r["verdict"] for r in record["table"] if r["role"] == "primary"}
    assert LEAKS_MORE not in set(primary.values()), primary
    assert "Residual knowledge detected" not in (out / "audit.md").read_text()
    assert UTILITY_LOST not in {r["verdict"] for r in record["table"]}
    assert main(["audit", str(run), "--train-reference", "--reference-seeds", "2", "--no-plots", *common]) == 0
    record = json.loads((out / "audit.json").read_text())
    assert {r["verdict"] for r in record["table"] if r["kind"] == "leak"} <= {UNINFORMATIVE}


def test_a_served_moved_run_forgets_exactly_with_the_data_root_setting(tiny_bert_dir, tmp_path, monkeypatch):
    """`serve --data-root` (ServiceSettings.data_root): the service finds a moved run's data for exact forgets;
    without it the exact forget is refused before anything is written."""
    from promptforget.pfm.exact import ExactUnavailableError
    from promptforget.service.host import ModelHost
    from promptforget.service.settings import ServiceSettings

    run = trained_from(tmp_path / "p", tiny_bert_dir, monkeypatch)
    (tmp_path / "data").mkdir()
    shutil.move(tmp_path / "p" / "toy.csv", tmp_path / "data" / "toy.csv")
    monkeypatch.delenv("PROMPTFORGET_DATA_ROOT", raising=False)
    blind = ModelHost(run, ServiceSettings(admin_token="a" * 24, poll_interval_s=0))
    before = files(run)
    with pytest.raises(ExactUnavailableError, match="--data-root"):
        blind.forget(["sport"], "x", "r-1", exact=True)
    assert files(run) == before
    host = ModelHost(run, ServiceSettings(admin_token="a" * 24, poll_interval_s=0, data_root=str(tmp_path / "data")))
    r = host.forget(["sport"], "x", "r-2", exact=True)
    assert r.exact_requested and host.wait_exact(120)
    assert host.request_state("r-2")["state"] == "exact" and host.exact_problem is None
