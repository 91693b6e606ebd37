"""Issue 28: a forget that cannot be rolled back.

Every tampering of the probe (and of test_service_tamper.py) is applied to a run with two signed, anchored
forgets (alpha, then gamma: four entries) -- including rollbacks to an older artefact with a cut ledger,
which a key alone cannot catch. With the key and the anchor, each one: stops the library's and the CLI's
forget with one line, leaves the run byte-identical (recovery signs no abort), and no loader serves a
forgotten class. Then the served side: an older artefact after a restart, in-place overwrites under load.
"""

from __future__ import annotations

import json
import os
import shutil
import threading

import httpx
import pytest

from promptforget.cli import main
from promptforget.store import durable
from promptforget.store.anchor import ANCHOR_DIR_ENV, ANCHOR_HOOK_ENV, DEFAULT_DIR_NAME
from promptforget.store.layout import LEDGER_NAME, WEIGHTS_NAME
from promptforget.store.ledger import KEY_ENV, KEY_FILE_ENV, Ledger, LedgerError, canonical, load_key, verify


FORGOTTEN = ("alpha", "gamma")


def _sibling(name):
    """A sibling test module's helpers (the tests run with --import-mode=importlib: no sys.path entry)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(f"_anchor_uses_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tamper = _sibling("test_service_tamper")  # the tamperings of issue 15, reused


def auth(tok):
    return {"Authorization": f"Bearer {tok}"}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in (KEY_ENV, KEY_FILE_ENV, ANCHOR_DIR_ENV, ANCHOR_HOOK_ENV):
        monkeypatch.delenv(name, raising=False)


def keygen(tmp_path):
    key_file = tmp_path / "keys" / "ledger.key"
    key_file.parent.mkdir()
    assert main(["ledger", "keygen", "--out", str(key_file)]) == 0
    return key_file


def two_forgets(run, tmp):
    """alpha, then gamma; the artefact before each is kept in ``tmp`` (original, mid)."""
    shutil.copy2(run / WEIGHTS_NAME, tmp / "original.safetensors")
    shutil.copy2(run / WEIGHTS_NAME, run.parent / "backup.safetensors")  # test_service_tamper's backup
    durable.forget(run, ["alpha"], reason="first", request_id="r1")
    shutil.copy2(run / WEIGHTS_NAME, tmp / "mid.safetensors")
    durable.forget(run, ["gamma"], reason="second", request_id="r2")


# --------------------------------------------------------------------------- the probe's tamperings
def keep_lines(run, n):
    tamper.write_lines(run, tamper.lines(run)[:n])


def rollback_to_the_first_pending(run, tmp):
    """The high-severity repro: only the first (signed) pending, the original artefact back."""
    keep_lines(run, 1)
    shutil.copy2(tmp / "original.safetensors", run / WEIGHTS_NAME)


def cut_the_second_forget_and_mid_artefact(run, tmp):
    keep_lines(run, 2)
    shutil.copy2(tmp / "mid.safetensors", run / WEIGHTS_NAME)


def cut_the_last_commit_and_mid_artefact(run, tmp):
    """Recovery would abort the dangling pending (the artefact is its before state) and sign it."""
    keep_lines(run, 3)
    shutil.copy2(tmp / "mid.safetensors", run / WEIGHTS_NAME)


def cut_the_tail(run, tmp):
    keep_lines(run, 2)


def ledger_deleted_and_original_artefact(run, tmp):
    (run / LEDGER_NAME).unlink()
    shutil.copy2(tmp / "original.safetensors", run / WEIGHTS_NAME)


def ledger_deleted_and_mid_artefact(run, tmp):
    (run / LEDGER_NAME).unlink()
    shutil.copy2(tmp / "mid.safetensors", run / WEIGHTS_NAME)


def ledger_emptied_and_original_artefact(run, tmp):
    (run / LEDGER_NAME).write_bytes(b"")
    shutil.copy2(tmp / "original.safetensors", run / WEIGHTS_NAME)


def older_artefact_only(run, tmp):
    shutil.copy2(tmp / "mid.safetensors", run / WEIGHTS_NAME)


def crlf_lines(run, tmp):
    tamper.write_lines(run, [ln.replace(b"\n", b"\r\n") for ln in tamper.lines(run)])


def reformatted_whitespace(run, tmp):
    tamper.write_lines(run, [json.dumps(json.loads(ln), sort_keys=True).encode() + b"\n" for ln in tamper.lines(run)])


def unsorted_keys(run, tmp):
    tamper.write_lines(run, [json.dumps(dict(reversed(json.loads(ln).items())), separators=(",", ":")).encode() + b"\n"
                             for ln in tamper.lines(run)])


def duplicate_key(run, tmp):
    """A reader that keeps the first of two keys sees beta forgotten; the hash covers the last."""
    ls = tamper.lines(run)
    ls[1] = ls[1].replace(b"{", b'{"classes":["beta"],', 1)
    tamper.write_lines(run, ls)


def nested_line(run, tmp):
    tamper.write_lines(run, tamper.lines(run) + [b"[" * 100_000 + b"\n"])


def ledger_symlink_out_of_the_run(run, tmp):
    outside = tmp / "outside.jsonl"
    shutil.move(run / LEDGER_NAME, outside)
    os.symlink(outside, run / LEDGER_NAME)


def artefact_symlink_out_of_the_run(run, tmp):
    outside = tmp / "outside.safetensors"
    shutil.copy2(tmp / "mid.safetensors", outside)
    (run / WEIGHTS_NAME).unlink()
    os.symlink(outside, run / WEIGHTS_NAME)


def signatures_stripped(run, tmp):
    tamper.write_entries(run, tamper.rehash_chain(Ledger(run).read(), strip_hmac=True))


def history_rewritten_to_the_first_forget(run, tmp):
    """A new, self-consistent chain of the first forget alone (hashes recomputed, no key) and the mid artefact."""
    tamper.write_entries(run, tamper.rehash_chain(Ledger(run).read()[:2], strip_hmac=True))
    shutil.copy2(tmp / "mid.safetensors", run / WEIGHTS_NAME)


PROBE = [rollback_to_the_first_pending, cut_the_second_forget_and_mid_artefact, cut_the_last_commit_and_mid_artefact,
         cut_the_tail, ledger_deleted_and_original_artefact, ledger_deleted_and_mid_artefact,
         ledger_emptied_and_original_artefact, older_artefact_only, crlf_lines, reformatted_whitespace, unsorted_keys,
         duplicate_key, nested_line, ledger_symlink_out_of_the_run, artefact_symlink_out_of_the_run,
         signatures_stripped, history_rewritten_to_the_first_forget]
MATRIX = [(f, f.__name__) for f in PROBE] + [
    (lambda run, tmp, t=t: t(run), t.__name__) for t in dict.fromkeys(t for t, _ in tamper.TAMPERINGS)]


def tamper_run(text_run, tmp_path, monkeypatch, how, regime):
    """Two forgets under ``regime`` (none | key | key+anchor), then the tampering ``how``."""
    if regime == "key":
        monkeypatch.setenv(KEY_ENV, tamper.KEY_HEX)  # a key without a file: no default anchor store
    elif regime == "key+anchor":
        monkeypatch.setenv(KEY_FILE_ENV, str(keygen(tmp_path)))
    two_forgets(text_run, tmp_path)
    how(text_run, tmp_path)
    return text_run


def served_forgotten(run) -> list[str]:
    """The forgotten classes a fresh load of the run would serve (a load that refuses serves nothing)."""
    from promptforget.pfm.model import PFMModel

    try:
        m = PFMModel.from_pretrained(run)
    except (OSError, ValueError):
        return []
    return [c for c in FORGOTTEN if c in m.active_classes]


def stopped(run, capsys) -> bool:
    """The tampering stops forgets: library and CLI refuse, nothing in the run changes."""
    before = tamper.snapshot(run)
    try:
        durable.forget(run, ["beta"], reason="after tampering", request_id="t1")
        return False
    except LedgerError:
        pass
    capsys.readouterr()
    code = main(["forget", str(run), "--classes", "beta", "--request-id", "t2"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert tamper.snapshot(run) == before
    return True


@pytest.mark.parametrize("how", [m for m, _ in MATRIX], ids=[n for _, n in MATRIX])
def test_with_key_and_anchor_no_tampering_lets_a_forget_proceed_or_a_class_be_served(
        text_run, tmp_path, monkeypatch, capsys, how):
    run = tamper_run(text_run, tmp_path, monkeypatch, how, "key+anchor")
    assert stopped(run, capsys)
    assert served_forgotten(run) == []
    before = tamper.snapshot(run)
    capsys.readouterr()
    assert main(["ledger", "verify", str(run)]) in (1, 2)
    tamper._one_line(capsys.readouterr().err)
    assert tamper.snapshot(run) == before  # verify's recovery wrote nothing either


@pytest.mark.parametrize("how", [cut_the_second_forget_and_mid_artefact, ledger_deleted_and_original_artefact],
                         ids=lambda f: f.__name__)
def test_without_an_anchor_a_rollback_goes_through(text_run, tmp_path, monkeypatch, capsys, how):
    # what the anchor adds: with the key alone these rollbacks verify and gamma (or alpha) is served again
    run = tamper_run(text_run, tmp_path, monkeypatch, how, "key")
    assert served_forgotten(run)
    assert not stopped(run, capsys)


def test_recovery_signs_no_abort_without_an_anchor_store(text_run, tmp_path, monkeypatch, capsys):
    run = tamper_run(text_run, tmp_path, monkeypatch, rollback_to_the_first_pending, "key")
    with pytest.raises(LedgerError, match="only aborted against an anchor store"):
        durable.recover(run)
    assert len(Ledger(run).read()) == 1


def test_verify_reports_the_anchor(text_run, tmp_path, monkeypatch, capsys):
    key_file = keygen(tmp_path)
    monkeypatch.setenv(KEY_FILE_ENV, str(key_file))
    two_forgets(text_run, tmp_path)
    rep = verify(text_run, load_key())
    head = Ledger(text_run).read()[-1]
    assert rep["ok"] and rep["anchor"] == {"seq": 4, "entry_sha256": head["entry_sha256"], "key_id": head["key_id"]}
    assert rep["anchor_dir"] == str(key_file.parent / DEFAULT_DIR_NAME)
    anchors = list((key_file.parent / DEFAULT_DIR_NAME).glob("*.json"))
    assert [a.stem for a in anchors] == [Ledger(text_run).read()[0]["entry_sha256"]]
    capsys.readouterr()
    assert main(["ledger", "verify", str(text_run)]) == 0
    assert f"anchored: seq 4 ({head['entry_sha256'][:16]}" in capsys.readouterr().out


def test_a_copy_of_the_run_is_held_to_the_same_anchor(text_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(KEY_FILE_ENV, str(keygen(tmp_path)))
    two_forgets(text_run, tmp_path)
    copy = tmp_path / "copy"
    shutil.copytree(text_run, copy)
    keep_lines(copy, 2)
    shutil.copy2(tmp_path / "mid.safetensors", copy / WEIGHTS_NAME)
    with pytest.raises(LedgerError, match="entries were removed behind the anchor"):
        durable.forget(copy, ["beta"], request_id="c1")


def test_the_anchor_dir_flag_and_env(text_run, tmp_path, monkeypatch, capsys):
    anchors = tmp_path / "anchors"
    shutil.copy2(text_run / WEIGHTS_NAME, tmp_path / "original.safetensors")
    assert main(["forget", str(text_run), "--classes", "alpha", "--anchor-dir", str(anchors)]) == 0
    assert len(list(anchors.glob("*.json"))) == 1
    keep_lines(text_run, 1)
    shutil.copy2(tmp_path / "original.safetensors", text_run / WEIGHTS_NAME)
    assert main(["forget", str(text_run), "--classes", "beta", "--anchor-dir", str(anchors)]) == 2
    assert "anchor" in capsys.readouterr().err
    assert main(["forget", str(text_run), "--classes", "beta", "--anchor-dir", str(text_run / "a")]) == 2
    assert "inside the run directory" in capsys.readouterr().err


def test_a_key_file_inside_the_run_is_refused(text_run, tmp_path, monkeypatch, capsys):
    key_file = keygen(tmp_path)
    inside = text_run / "ledger.key"
    shutil.copy2(key_file, inside)
    assert main(["forget", str(text_run), "--classes", "alpha", "--ledger-key-file", str(inside)]) == 2
    assert "inside the run directory" in capsys.readouterr().err
    assert not (text_run / LEDGER_NAME).exists()
    from promptforget.service.app import create_app
    from promptforget.service.settings import ServiceSettings

    with pytest.raises(ValueError, match="inside the run directory"):
        create_app(text_run, ServiceSettings(admin_token="admin-token-0123456789abcdef", ledger_key_file=str(inside)))


def test_an_entry_anchored_but_not_appended_is_appended_from_the_anchor(text_run, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_FILE_ENV, str(keygen(tmp_path)))
    durable.forget(text_run, ["alpha"], request_id="r1")
    real = Ledger.append_line

    def fail_on_commit(self, line, before_write=None):
        if b'"event":"commit"' in line:
            raise OSError(28, "No space left on device")
        return real(self, line, before_write)

    monkeypatch.setattr(Ledger, "append_line", fail_on_commit)
    with pytest.raises(durable.StorageError):
        durable.forget(text_run, ["gamma"], request_id="r2")
    assert [e["event"] for e in Ledger(text_run).read()] == ["pending", "commit", "pending"]
    monkeypatch.undo()
    monkeypatch.setenv(KEY_FILE_ENV, str(tmp_path / "keys" / "ledger.key"))
    rep = durable.recover(text_run)
    assert rep["anchor_repaired"] == {"seq": 4, "event": "commit"} and rep["resolved"] is None
    assert verify(text_run, load_key())["ok"]
    assert durable.forget(text_run, ["beta"], request_id="r3").forgotten_classes == ["alpha", "beta", "gamma"]


def test_the_hook_publishes_every_head_and_a_failing_hook_acknowledges_nothing(text_run, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_FILE_ENV, str(keygen(tmp_path)))
    log = tmp_path / "published.jsonl"
    monkeypatch.setenv(ANCHOR_HOOK_ENV, f"sh -c 'cat >> {log}'")
    durable.forget(text_run, ["alpha"], request_id="r1")
    heads = [json.loads(x) for x in log.read_text().splitlines()]
    entries = Ledger(text_run).read()
    assert [(h["seq"], h["entry_sha256"], h["entry_hmac"]) for h in heads] == [
        (e["seq"], e["entry_sha256"], e["hmac"]) for e in entries]
    monkeypatch.setenv(ANCHOR_HOOK_ENV, "false")
    with pytest.raises(durable.StorageError, match="anchor hook"):
        durable.forget(text_run, ["gamma"], request_id="r2")
    monkeypatch.setenv(ANCHOR_HOOK_ENV, f"sh -c 'cat >> {log}'")
    r = durable.forget(text_run, ["gamma"], request_id="r2")  # the pending anchored before the failure is resolved first
    assert r.forgotten_classes == ["alpha", "gamma"] and verify(text_run, load_key())["ok"]
    assert [e["event"] for e in Ledger(text_run).read()] == ["pending", "commit", "pending", "abort", "pending", "commit"]


def test_a_planted_temp_file_is_removed_and_never_read(text_run, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_FILE_ENV, str(keygen(tmp_path)))
    two_forgets(text_run, tmp_path)
    planted = text_run / f".{WEIGHTS_NAME}.planted.tmp"
    shutil.copy2(tmp_path / "original.safetensors", planted)  # the forgotten prompts' bytes, beside the artefact
    assert any("leftover temp files" in p for p in verify(text_run, load_key())["problems"])
    r = durable.forget(text_run, ["beta"], request_id="r3")  # recovery deletes it first: a crash leaves such files
    assert r.recovery["stale_temps"] == [planted.name] and not planted.exists()
    assert served_forgotten(text_run) == [] and verify(text_run, load_key())["ok"]


# --------------------------------------------------------------------------- what is served
def test_a_restart_on_an_older_artefact_never_serves_the_forgotten_class(text_run, tmp_path, serve, admin_token):
    obs = _sibling("test_service_observability")

    shutil.copy2(text_run / WEIGHTS_NAME, tmp_path / "original.safetensors")
    durable.forget(text_run, ["alpha"], request_id="r1")
    shutil.copy2(tmp_path / "original.safetensors", text_run / WEIGHTS_NAME)  # ledger intact, old model back
    from promptforget.pfm.model import PFMModel

    m = PFMModel.from_pretrained(text_run)
    assert "alpha" not in m.active_classes and m.masked_by_ledger == ["alpha"]
    with serve(text_run) as (url, _), httpx.Client(base_url=url) as c:
        r = c.get("/health")
        assert r.status_code == 503 and "alpha" in r.json()["detail"], r.text
        preds = c.post("/predict", json={"texts": ["a", "b", "c"], "top_k": 4}).json()["predictions"]
        assert {p["label"] for p in preds} == {"beta"}
        assert all(t["probability"] == 0.0 for p in preds for t in p["top"] if t["class"] == "alpha")
        assert c.get("/classes").json()["forgotten"] == ["alpha"]
        assert obs.value(obs.scrape(c), "promptforget_model_in_sync") == 0


def test_the_rollback_repro_over_http(text_run, tmp_path, monkeypatch, serve, admin_token):
    run = tamper_run(text_run, tmp_path, monkeypatch, rollback_to_the_first_pending, "key+anchor")
    before = tamper.snapshot(run)
    with serve(run) as (url, _), httpx.Client(base_url=url) as c:
        r = c.get("/health")
        assert r.status_code == 503 and "anchor" in r.json()["detail"], r.text
        assert c.post("/predict", json={"texts": ["x"]}).json()["predictions"][0]["label"] == "beta"
        r = c.post("/forget", json={"classes": ["beta"], "reason": "x", "request_id": "h1"}, headers=auth(admin_token))
        assert r.status_code == 409 and "anchor" in r.json()["detail"], r.text
    assert tamper.snapshot(run) == before


def test_health_notices_a_tampering_without_a_forget(text_run, serve):
    durable.forget(text_run, ["alpha"], request_id="r1")
    good = (text_run / LEDGER_NAME).read_bytes()
    with serve(text_run) as (url, _), httpx.Client(base_url=url) as c:
        assert c.get("/health").status_code == 200
        (text_run / LEDGER_NAME).write_bytes(good.replace(b"\n", b"\r\n"))
        r = c.get("/health")
        assert r.status_code == 503 and "canonical" in r.json()["detail"], r.text
        (text_run / LEDGER_NAME).write_bytes(good)
        assert c.get("/health").status_code == 200


def test_in_place_overwrites_and_truncation_never_reach_the_served_model(text_run, tmp_path, serve):
    shutil.copy2(text_run / WEIGHTS_NAME, tmp_path / "original.safetensors")
    durable.forget(text_run, ["alpha"], request_id="r1")
    size = (text_run / WEIGHTS_NAME).stat().st_size
    results, errors, stop = [], [], threading.Event()
    with serve(text_run) as (url, _):
        def worker():
            with httpx.Client(base_url=url, timeout=30) as c:
                while not stop.is_set():
                    try:
                        r = c.post("/predict", json={"texts": ["x"], "top_k": 4})
                        if r.status_code != 200:
                            errors.append(r.text)
                        else:
                            results.append(r.json()["predictions"][0])
                    except Exception as e:  # noqa: BLE001 - a reset connection fails the test
                        errors.append(repr(e))

        threads = [threading.Thread(target=worker) for _ in range(2)]
        for t in threads:
            t.start()

        def in_place(write):
            with open(text_run / WEIGHTS_NAME, "r+b") as f:
                write(f)
            for _ in range(3):  # and predictions after it, besides the threads'
                r = httpx.post(f"{url}/predict", json={"texts": ["y"], "top_k": 4}, timeout=30)
                assert r.status_code == 200, r.text
                results.append(r.json()["predictions"][0])

        in_place(lambda f: f.write(os.urandom(size)))  # `cp` / `rsync --inplace` over the live file
        in_place(lambda f: f.write((tmp_path / "original.safetensors").read_bytes()))  # an older artefact, in place
        in_place(lambda f: f.truncate(0))
        stop.set()
        for t in threads:
            t.join(30)
        assert httpx.get(f"{url}/health/live").status_code == 200
        assert httpx.get(f"{url}/health").status_code == 503
    assert not errors, errors[:3]
    assert len(results) >= 9
    assert all(p["label"] == "beta" and 0.0 <= p["probability"] <= 1.0 for p in results)
    tops = [t for p in results for t in p["top"]]
    assert all(t["probability"] == t["probability"] for t in tops)  # no NaN from bytes changed under the model
    assert all(t["probability"] == 0.0 for t in tops if t["class"] == "alpha")  # masked: never predicted


def test_request_rules(text_run, serve, admin_token):
    from promptforget.service.app import create_app
    from promptforget.service.settings import ServiceSettings

    with pytest.raises(ValueError, match="must differ from the admin token"):
        create_app(text_run, ServiceSettings(admin_token=admin_token, predict_token=admin_token))
    with serve(text_run) as (url, _), httpx.Client(base_url=url) as c:
        for bad in ("yes", 1, "true", None):
            r = c.post("/forget", json={"classes": ["alpha"], "reason": "x", "request_id": "b1", "exact": bad},
                       headers=auth(admin_token))
            assert r.status_code == 422 and "exact" in r.text, (bad, r.text)
        for bad in (True, "2", 2.0):
            r = c.post("/predict", json={"texts": ["x"], "top_k": bad})
            assert r.status_code == 422 and "top_k" in r.text, (bad, r.text)
    assert not (text_run / LEDGER_NAME).exists()


def test_the_ledger_lines_are_canonical(text_run):
    durable.forget(text_run, ["alpha"], request_id="r1")
    for line in (text_run / LEDGER_NAME).read_bytes().splitlines():
        assert canonical(json.loads(line)) == line


# --------------------------------------------------------------------------- crashes with key and anchor
CRASH_FORGET = ("import sys; from promptforget.store.durable import forget; "
                "forget(sys.argv[1], ['gamma'], reason='crash', request_id='c1', source='cli')")


@pytest.mark.parametrize("point", durable.CRASH_POINTS)
def test_every_crash_point_recovers_with_key_and_anchor(text_run, tmp_path, monkeypatch, point):
    import subprocess
    import sys

    key_file = keygen(tmp_path)
    monkeypatch.setenv(KEY_FILE_ENV, str(key_file))
    durable.forget(text_run, ["alpha"], request_id="r1")
    src = str(os.path.dirname(os.path.dirname(os.path.dirname(durable.__file__))))
    env = dict(os.environ, PYTHONPATH=src, **{durable.CRASH_ENV: point})
    r = subprocess.run([sys.executable, "-c", CRASH_FORGET, str(text_run)], env=env, capture_output=True, timeout=120)
    assert r.returncode == durable.CRASH_EXIT_CODE, r.stderr[-2000:]
    rep = durable.recover(text_run)  # the anchor is at or one entry ahead of the ledger: never a refusal
    assert verify(text_run, load_key())["ok"], verify(text_run, load_key())["problems"]
    forgotten = durable.artefact_state(text_run)["forgotten_classes"]
    assert forgotten == (["alpha"] if point in ("after_pending", "mid_artefact") else ["alpha", "gamma"]), (rep, forgotten)
    assert "beta" in durable.forget(text_run, ["beta"], request_id="r3").forgotten_classes  # forgets go on


def test_a_signed_pending_still_rolls_forward_without_an_anchor_store(text_run, monkeypatch):
    monkeypatch.setenv(KEY_ENV, tamper.KEY_HEX)
    real = Ledger.append_line

    def fail_on_commit(self, line, before_write=None):
        if b'"event":"commit"' in line:
            raise OSError(28, "No space left on device")
        return real(self, line, before_write)

    monkeypatch.setattr(Ledger, "append_line", fail_on_commit)
    with pytest.raises(durable.StorageError):
        durable.forget(text_run, ["alpha"], request_id="r1")
    monkeypatch.setattr(Ledger, "append_line", real)
    assert durable.recover(text_run)["resolved"] == {"pending_seq": 1, "action": "commit", "request_id": "r1"}
    assert verify(text_run, load_key())["ok"]
