"""The durable forget path and the hash-chained ledger, without a server."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from promptforget.cli import main
from promptforget.pfm.model import PFMModel, forget_run
from promptforget.store import durable
from promptforget.store.layout import class_from_key, class_key, prompt_tensor_name as prompt_key
from promptforget.store.ledger import LEDGER_NAME, Ledger, LedgerError, canonical, entry_hash, verify


def files(d):
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


def rewrite(run, entries):
    (run / LEDGER_NAME).write_bytes(b"".join(canonical(e) + b"\n" for e in entries))


def test_class_keys_round_trip_and_name_the_stored_prompts(text_run):
    for name in ["cat", "St. Louis", "100%", "a.b%2E"]:
        assert "." not in class_key(name) and class_from_key(class_key(name)) == name
        assert prompt_key(name) == "prompts." + class_key(name)
    stored = set(load_file(str(text_run / "model.safetensors")))
    classes = json.loads((text_run / "pfm_config.json").read_text())["config"]["class_names"]
    assert {prompt_key(c) for c in classes} <= stored


def test_forget_writes_artefact_and_chained_ledger(text_run):
    before = load_file(str(text_run / "model.safetensors"))
    r = durable.forget(text_run, ["beta"], reason="GDPR art. 17", request_id="req-1")
    assert not r.replayed and r.classes == ["beta"] and r.active_classes == ["alpha", "gamma", "delta"]
    after = load_file(str(text_run / "model.safetensors"))
    # exactly the prompt is gone; every other tensor is bit-identical
    assert set(before) - set(after) == {"prompts.beta"}
    for k, v in after.items():
        assert torch.equal(v, before[k])
    m = PFMModel.from_pretrained(text_run)
    assert m.forgotten_classes == ["beta"]
    entries = Ledger(text_run).read()
    assert [e["event"] for e in entries] == ["pending", "commit"]
    c = entries[1]
    assert c["request_id"] == "req-1" and c["reason"] == "GDPR art. 17" and c["source"] == "cli"
    import hashlib

    assert c["removed_prompt_sha256"]["beta"] == hashlib.sha256(before["prompts.beta"].numpy().tobytes()).hexdigest()
    assert c["prev_sha256"] == entries[0]["entry_sha256"] and c["entry_sha256"] == entry_hash(c)
    rep = verify(text_run)
    assert rep["ok"], rep["problems"]
    assert rep["forgotten_classes"] == ["beta"] and rep["artefact_sha256"] == c["artefact_after_sha256"]


def test_repeated_request_id_is_idempotent(text_run):
    durable.forget(text_run, ["alpha", "gamma"], reason="r", request_id="same")
    snapshot = files(text_run)
    again = durable.forget(text_run, ["gamma", "alpha"], reason="r", request_id="same")
    assert again.replayed and again.ledger_seq == 2 and files(text_run) == snapshot
    with pytest.raises(durable.RequestIdConflictError, match="already used"):
        durable.forget(text_run, ["beta"], reason="r", request_id="same")
    assert files(text_run) == snapshot


@pytest.mark.parametrize("bad, err", [(["nope"], durable.UnknownClassNameError), (["alpha", "alpha"], durable.ForgetError),
                                      (["alpha", "beta", "gamma", "delta"], durable.ForgetError), ([], durable.ForgetError)])
def test_refused_forget_writes_nothing(text_run, bad, err):
    snapshot = files(text_run)
    with pytest.raises(err):
        durable.forget(text_run, bad, request_id="x1")
    assert files(text_run) == snapshot and not (text_run / LEDGER_NAME).exists()


def test_bad_request_id_is_refused(text_run):
    with pytest.raises(durable.ForgetError, match="request_id"):
        durable.forget(text_run, ["alpha"], request_id="has space")


def test_forget_run_keeps_a_given_model_in_step(text_run):
    m = PFMModel.from_pretrained(text_run)
    out = forget_run(text_run, ["delta"], model=m, reason="test")
    assert out is m and m.forgotten_classes == ["delta"]
    assert Ledger(text_run).read()[-1]["source"] == "python"


# --------------------------------------------------------------------------- tampering
@pytest.fixture
def ledgered_run(text_run):
    durable.forget(text_run, ["alpha"], reason="first", request_id="r1")
    durable.forget(text_run, ["gamma"], reason="second", request_id="r2")
    assert verify(text_run)["ok"]
    return text_run


def test_verify_catches_an_edited_entry(ledgered_run):
    entries = Ledger(ledgered_run).read()
    entries[1]["reason"] = "something else"
    rewrite(ledgered_run, entries)
    rep = verify(ledgered_run)
    assert not rep["ok"] and any("entry 2" in p and "modified" in p for p in rep["problems"])


def test_verify_catches_an_edit_with_a_recomputed_hash(ledgered_run):
    entries = Ledger(ledgered_run).read()
    entries[1]["classes"] = ["beta"]  # rewrite history: claim beta was forgotten
    entries[1]["entry_sha256"] = entry_hash(entries[1])
    rewrite(ledgered_run, entries)
    problems = verify(ledgered_run)["problems"]
    assert any("entry 3" in p and "chain broken" in p for p in problems)
    assert any("differs from its pending" in p for p in problems)


def test_verify_catches_a_removed_entry(ledgered_run):
    entries = Ledger(ledgered_run).read()
    rewrite(ledgered_run, entries[:1] + entries[2:])
    problems = verify(ledgered_run)["problems"]
    assert any("expected seq 2" in p for p in problems) and any("chain broken" in p for p in problems)


def test_verify_catches_a_restored_prompt(ledgered_run):
    # put a prompt back under a forgotten class's name (e.g. an old backup of the weights file)
    sd = load_file(str(ledgered_run / "model.safetensors"))
    m = PFMModel.from_pretrained(ledgered_run)
    from safetensors.torch import save_file

    entries = Ledger(ledgered_run).read()
    # under its own name (the bytes of another class's prompt: a new value, so only the name check fires)
    sd_named = dict(sd, **{"prompts.alpha": m.prompt_of("beta").clone()})
    save_file(sd_named, str(ledgered_run / "model.safetensors"), metadata={"backbone_sha256": m.backbone_sha256})
    problems = verify(ledgered_run)["problems"]
    assert any("'alpha' is forgotten in the ledger but its prompt is in the artefact" in p for p in problems)
    assert any("not the one the last commit produced" in p for p in problems)
    assert entries  # ledger untouched by verify
    assert Ledger(ledgered_run).read() == entries


def test_verify_catches_removed_prompt_bytes_under_another_name(text_run):
    before = load_file(str(text_run / "model.safetensors"))
    durable.forget(text_run, ["beta"], reason="r", request_id="r1")
    from safetensors.torch import save_file

    sd = load_file(str(text_run / "model.safetensors"))
    sd["extra.hidden"] = before["prompts.beta"]
    save_file(sd, str(text_run / "model.safetensors"))
    problems = verify(text_run)["problems"]
    assert any("'extra.hidden' has the exact bytes of the prompt of 'beta'" in p for p in problems)


def test_corrupt_ledger_blocks_forgetting(ledgered_run):
    with open(ledgered_run / LEDGER_NAME, "ab") as f:
        f.write(b"not json\n")
    with pytest.raises(LedgerError, match="line 5"):
        durable.forget(ledgered_run, ["beta"], request_id="r3")


def test_unresolvable_pending_blocks_forgetting(text_run):
    durable.forget(text_run, ["alpha"], request_id="r1")
    entries = Ledger(text_run).read()
    # a pending whose before/after hashes match nothing on disk
    Ledger(text_run).append({"event": "pending", "request_id": "r9", "classes": ["beta"], "reason": "", "source": "cli",
                             "removed_prompt_sha256": {}, "artefact_before_sha256": "1" * 64,
                             "artefact_after_sha256": "2" * 64}, entries)
    with pytest.raises(LedgerError, match="neither its before nor its after"):
        durable.forget(text_run, ["beta"], request_id="r2")


# --------------------------------------------------------------------------- CLI
def test_cli_forget_and_ledger_verify(text_run, capsys):
    assert main(["forget", str(text_run), "--classes", "beta", "--reason", "ticket 42", "--request-id", "t-42"]) == 0
    assert "forgot ['beta']" in capsys.readouterr().out
    assert main(["forget", str(text_run), "--classes", "beta", "--request-id", "t-42"]) == 0
    assert "no change" in capsys.readouterr().out
    assert main(["forget", str(text_run), "--classes", "beta", "--request-id", "t-43"]) == 2
    assert "already forgotten" in capsys.readouterr().err
    assert main(["ledger", "verify", str(text_run)]) == 0
    assert "OK: 2 entries, 1 forgets" in capsys.readouterr().out
    assert main(["ledger", "show", str(text_run)]) == 0
    shown = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [e["event"] for e in shown] == ["pending", "commit"] and shown[1]["reason"] == "ticket 42"
    entries = Ledger(text_run).read()
    entries[0]["reason"] = "edited"
    rewrite(text_run, entries)
    assert main(["ledger", "verify", str(text_run)]) == 1
    assert "modified" in capsys.readouterr().err


@pytest.mark.parametrize("cmd", [["serve"], ["ledger"], ["ledger", "verify"], ["ledger", "show"]])
def test_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main(cmd + ["--help"])
    assert e.value.code == 0 and "usage: promptforget" in capsys.readouterr().out


def test_only_artefact_temp_files_count_as_leftovers(ledgered_run):
    """A temp file of the artefact may hold a removed prompt's bytes; one of the model card cannot."""
    (ledgered_run / ".README.md.abc.tmp").write_text("card being written")
    assert verify(ledgered_run)["ok"]
    (ledgered_run / ".model.safetensors.abc.tmp").write_bytes(b"old bytes")
    report = verify(ledgered_run)
    assert not report["ok"] and any("leftover" in p for p in report["problems"])
