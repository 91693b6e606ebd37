"""benchmarks/forgetting_candidates.py: a sweep piece end to end on a tiny encoder, the head-row deletion,
and the merge's arithmetic."""

from __future__ import annotations

import json

import pytest
import torch


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("forgetting_candidates")


TINY_AUDIT = ["key_steps=4", "key_restarts=1", "attack_seeds=2", "reference_seeds=2", "relearn_steps=3",
              "ns=[5]", "n_retain=20", "max_eval_retain=40", "eval_every=2"]


@pytest.fixture(scope="module")
def piece(bench, tiny_dinov2_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("cand") / "pfm-s3"
    args = ["piece", "--dataset", "digits", "--backbone", str(tiny_dinov2_dir), "--candidate", "pfm", "--seed", "3",
            "--out", str(out), "--max-combinations", "2", "--set", "epochs=1", "--set", "prompt_layer=1"]
    for a in TINY_AUDIT:
        args += ["--audit", a]
    assert bench.main(args) == 0
    return json.loads((out / "piece.json").read_text()), out


def test_piece_audits_the_class_that_leaks_most_at_k1(piece):
    rec, out = piece
    worst = rec["protocol"]["1"]["worst"]["acc"]
    assert rec["audited_class"] == worst["class"]
    audit = json.loads((out / "audit" / "audit.json").read_text())
    assert audit["audit"]["forgotten_classes"] == [worst["class"]]
    assert audit["reference_seeds"] == 2
    assert sorted(rec["protocol"]) == ["1", "5", "9"]  # k = 1, C/2, C-1 of 10 digits
    assert {"key_recovery_j_n5", "linear_probe_acc_n5", "relearn_j_n5"} <= set(rec["audit"])
    row = rec["audit"]["key_recovery_j_n5"]
    assert row["verdict"] == "uninformative"  # 2 references: figures, no verdict
    assert -1.0 <= row["audited"]["value"] <= 1.0  # Youden's J
    hr = rec["head_row_deleted"]["relearn_j_n5"]
    assert len(hr["audited_seeds"]) == 2 and len(hr["reference_seeds"]) == 2
    assert rec["knobs"]["seed"] == 3 and rec["knobs"]["image_size"] == 28  # the image recipe, then the overrides
    assert rec["knobs"]["epochs"] == 1


def test_head_row_deleted_zeroes_only_the_forgotten_rows(bench, piece):
    from promptforget.pfm.model import PFMModel

    _, out = piece
    model = PFMModel.from_pretrained(out / "run")
    cut = bench.head_row_deleted(model, ["4", "7"])
    for i, name in enumerate(model.class_names):
        if name in ("4", "7"):
            assert torch.all(cut.head.weight[i] == 0) and cut.head.bias[i] == 0
        else:
            assert torch.equal(cut.head.weight[i], model.head.weight[i]) and cut.head.bias[i] == model.head.bias[i]
    assert torch.count_nonzero(model.head.weight[model.class_index("4")]) > 0  # the original is untouched
    with torch.no_grad():  # a zeroed row gives a constant logit of 0: the class cannot be favoured by its row
        x = torch.randn(3, model.head.in_features)
        assert torch.all(cut.head(x)[:, model.class_index("4")] == 0)


def _piece(ds, cand, seed, acc, worst=None, kr=None, verdict="leaks more than retraining"):
    p = {"dataset": ds, "candidate": cand, "seed": seed, "full_bank_acc": acc, "train_seconds": 10.0}
    if worst is not None:
        p["protocol"] = {"1": {"forgotten_acc_mean": 0.1, "worst": {
            "acc": {"class": "a", "value": worst, "n": 50, "ci95": [worst - 0.1, worst + 0.1]},
            "argmin_acc": {"class": "b", "value": 0.2, "n": 50, "ci95": [0.1, 0.3]}}}}
        p["audit"] = {"key_recovery_j_n5": {"audited": {"value": kr, "ci95": [kr - 0.1, kr + 0.1]},
                                            "reference": {"value": 0.1, "ci95": [0.0, 0.2]}, "verdict": verdict}}
        p["head_row_deleted"] = {"relearn_j_n5": {"audited": 0.3, "reference": 0.2}}
    return p


def test_merge_summarises_seeds_worst_class_and_verdicts(bench, tmp_path):
    pieces = [_piece("d", "plain", 1, 0.90), _piece("d", "plain", 2, 0.92),
              _piece("d", "pfm", 1, 0.80, worst=0.30, kr=0.9), _piece("d", "pfm", 2, 0.84, worst=0.55, kr=0.7,
                                                                       verdict="inconclusive")]
    for p in pieces:
        d = tmp_path / f"{p['candidate']}-s{p['seed']}"
        d.mkdir()
        (d / "piece.json").write_text(json.dumps(p))
    assert bench.main(["merge", str(tmp_path), "--out", str(tmp_path / "out" / "cand")]) == 0
    rows = {r["candidate"]: r for r in json.loads((tmp_path / "out" / "cand.json").read_text())["rows"]}
    pfm = rows["pfm"]
    assert pfm["plain_acc_mean"] == pytest.approx(0.91)
    assert pfm["k1"]["worst_top1"]["value"] == 0.55  # the worst over seeds, not the mean
    assert pfm["key_recovery_j_n5"]["audited"] == [0.9, 0.7]
    assert pfm["key_recovery_j_n5"]["verdicts"] == ["leaks more than retraining", "inconclusive"]
    md = (tmp_path / "out" / "cand.md").read_text()
    assert "0.800 +- 0.141 vs 0.100 +- 0.000 (1x leaks, 1x inconcl.)" in md
    assert "0.55 [0.45, 0.65] (a)" in md
    assert "0.820 +- 0.028 (0.910)" in md  # utility mean +- sd, the plain fine-tune beside it
    assert bench.main(["merge", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")]) == 2


def test_parse_sets_reads_json_values(bench):
    assert bench.parse_sets(["epochs=3", "ns=[5, 25]", "probe_mode=confusion"]) == {
        "epochs": 3, "ns": [5, 25], "probe_mode": "confusion"}
    with pytest.raises(SystemExit):
        bench.parse_sets(["epochs"])


def test_a_bad_piece_fails_in_one_line(bench, tmp_path, capsys):
    args = ["piece", "--candidate", "pfm", "--seed", "1", "--out", str(tmp_path / "p")]
    assert bench.main(args + ["--dataset", "no_such_set"]) == 2
    assert bench.main(args + ["--dataset", "digits", "--set", "epochs=-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)
    assert "epochs" in err[1]


def test_audit_reaudits_a_trained_piece_reusing_its_references(bench, piece, capsys):
    import shutil

    rec, out = piece
    other = out.parent / "pfm-s3-again"
    shutil.copytree(out, other)
    refs = sorted((other / "audit" / "reference").glob("seed-*/model.safetensors"))
    assert len(refs) == 2
    before = [p.stat().st_mtime_ns for p in refs]
    forget = rec["audited_class"]
    args = ["audit", str(other), "--forget", forget] + [x for a in TINY_AUDIT for x in ("--audit", a)]
    assert bench.main(args + ["--audit", "attack_seeds=1"]) == 0
    again = json.loads((other / "piece.json").read_text())
    assert again["audited_class"] == forget and again["audit_settings"]["attack_seeds"] == 1
    assert len(again["head_row_deleted"]["relearn_j_n5"]["audited_seeds"]) == 1  # the new settings were used
    assert [p.stat().st_mtime_ns for p in refs] == before  # the saved references were reused, not retrained
    assert again["protocol"] == rec["protocol"] and again["full_bank_acc"] == rec["full_bank_acc"]
    capsys.readouterr()
    assert bench.main(["audit", str(out.parent / "missing")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
