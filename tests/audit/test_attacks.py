"""Key recovery, relearning, linear probe and the whole PFM audit on a tiny random BERT PFM."""

import copy

import numpy as np
import pytest
import torch

from promptforget.audit import key_recovery as kr
from promptforget.audit.pfm_audit import audit_pfm, forgotten_probes
from promptforget.audit.reference import train_pfm_reference
from promptforget.pfm.config import PFMConfig
from promptforget.pfm.model import PFMModel, UnknownClassError
from promptforget.pfm.train import fit

CLASSES = ["sport", "music", "food"]
WORDS = {"sport": "goal match team score", "music": "song guitar band album", "food": "bread pasta cheese soup"}



def toy_texts(n_per_class, seed):
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i, c in enumerate(CLASSES):
        words = WORDS[c].split()
        for _ in range(n_per_class):
            texts.append(" ".join(rng.choice(words, 4)))
            labels.append(i)
    return texts, torch.tensor(labels)


@pytest.fixture(scope="module")
def trained(tiny_bert_dir):
    cfg = PFMConfig(backbone=tiny_bert_dir, class_names=CLASSES, max_length=8, epochs=4, batch_size=16, lr=5e-3)
    model = PFMModel(cfg)
    tr_texts, ytr = toy_texts(12, 0)
    te_texts, yte = toy_texts(6, 1)
    xtr, xte = model.encode_dataset(tr_texts), model.encode_dataset(te_texts)
    fit(model, xtr, ytr, progress=False)
    return model, xtr, ytr, xte, yte


def test_fresh_prompt_is_the_only_trainable_tensor(trained):
    model = trained[0]
    with pytest.raises(ValueError, match="still has its prompt"):
        kr.with_fresh_prompt(model, "food")
    forgot = copy.deepcopy(model)
    forgot.forget(["food"])
    m = kr.with_fresh_prompt(forgot, "food", seed=1)
    assert m.active_classes == CLASSES and forgot.active_classes == ["sport", "music"]
    trainable = [n for n, p in m.named_parameters() if p.requires_grad]
    assert trainable == ["prompts.food"]
    with pytest.raises(UnknownClassError):
        kr.with_fresh_prompt(forgot, "cars")


def test_key_recovery_returns_a_curve_and_touches_nothing_else(trained):
    model, xtr, ytr, xte, yte = trained
    forgot = copy.deepcopy(model)
    forgot.forget(["food"])
    before = {k: v.clone() for k, v in forgot.state_dict().items()}
    data = kr.build_attack_data(xtr, ytr, xte, yte, [2], n=5, n_retain=10, seed=0)
    assert len(data.labels) == 15 and int((data.labels == 2).sum()) == 5
    assert bool((data.eval_forget_labels == 2).all()) and not bool((data.eval_retain_labels == 2).any())
    r = kr.key_recovery(forgot, "food", data, steps=12, lr=5e-2, eval_every=4, batch_size=64, progress=False)
    steps = [row["step"] for row in r["curve"]]
    assert steps == [0, 4, 8, 12]
    assert all(0 <= row["forgotten_acc"] <= 1 and 0 <= row["retained_acc"] <= 1 for row in r["curve"])
    assert all(row["youden"] == pytest.approx(row["forgotten_acc"] - row["forgotten_fpr"]) for row in r["curve"])
    # full batch (15 <= 64): Adam on one prompt must lower the attack loss
    losses = [row["loss"] for row in r["curve"][1:]]
    assert losses[-1] < losses[0]
    assert r["final_forgotten_acc"] == r["curve"][-1]["forgotten_acc"]
    assert r["steps_to_threshold"] is None or r["steps_to_threshold"] in steps
    after = forgot.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    with pytest.raises(ValueError, match="pool has"):
        kr.build_attack_data(xtr, ytr, xte, yte, [2], n=999)


def test_steps_to():
    curve = [{"step": 0, "youden": 0.0}, {"step": 10, "youden": 0.4}, {"step": 20, "youden": 0.7}]
    assert kr.steps_to(curve, 0.5) == 20 and kr.steps_to(curve, 0.0) == 0 and kr.steps_to(curve, 0.9) is None


def test_youden_is_zero_for_a_key_that_floods_every_input(trained):
    """A "recovered" class that is predicted for every input is no recovery: recall 1, FPR 1, J 0."""
    model, xtr, ytr, xte, yte = trained
    forgot = copy.deepcopy(model)
    forgot.forget(["food"])
    with torch.no_grad():
        forgot.head.bias[2] = 1e4  # the head now answers "food" whatever the input
    data = kr.build_attack_data(xtr, ytr, xte, yte, [2], n=5, n_retain=10, seed=0)
    acc = kr._accs(forgot, data, 64)
    assert acc["forgotten_acc"] == 1.0 and acc["forgotten_fpr"] == 1.0 and acc["youden"] == 0.0


def test_relearn_changes_head_not_prompts(trained):
    model, xtr, ytr, xte, yte = trained
    forgot = copy.deepcopy(model)
    forgot.forget(["food"])
    data = kr.build_attack_data(xtr, ytr, xte, yte, [2], n=5, n_retain=10, seed=0)
    r = kr.relearn_attack(forgot, data, train="head", steps=4, eval_every=2, progress=False)
    assert [row["step"] for row in r["curve"]] == [0, 2, 4]
    with pytest.raises(ValueError, match="head"):
        kr.relearn_attack(forgot, data, train="everything")


def test_cls_features_are_what_the_head_reads(trained):
    model, _, _, xte, _ = trained
    f = kr.cls_features(model, xte, batch_size=5)
    from promptforget.pfm.evaluate import batched_logits

    logits = batched_logits(model, xte)
    with torch.no_grad():
        torch.testing.assert_close(model.head(torch.as_tensor(f)), logits, atol=1e-4, rtol=1e-4)


def test_linear_probe_on_separable_and_on_noise_features():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 50)
    sep = np.eye(4)[y] * 5 + rng.normal(0, 0.3, (200, 4))
    r = kr.linear_probe(sep, y, sep, y, forgotten=[3], n_per_class=5)
    assert r["forgotten_acc"] == 1.0 and r["retained_acc"] == 1.0
    noise = rng.normal(size=(200, 4))
    r = kr.linear_probe(noise, y, rng.normal(size=(200, 4)), y, forgotten=[3], n_per_class=25)
    assert r["forgotten_acc"] < 0.6


def test_full_audit_with_reference(trained, tiny_bert_dir, tmp_path):
    from promptforget.audit.pfm_audit import report_table, write_report

    model, xtr, ytr, xte, yte = trained
    ref = train_pfm_reference(model.config, xtr, ytr, ["food"], out_dir=tmp_path / "ref", progress=False,
                              config_overrides={"epochs": 2})
    assert ref.forgotten_classes == ["food"] and (tmp_path / "ref" / "reference.json").is_file()
    assert PFMModel.from_pretrained(tmp_path / "ref").forgotten_classes == ["food"]
    audit = audit_pfm(model, xtr, ytr, xte, yte, forget=["food"], reference=ref, ns=(1, 5), key_steps=4,
                      relearn_steps=2, eval_every=2, n_retain=6, progress=False)
    assert model.active_classes == CLASSES  # the audit forgets in a copy
    assert set(audit["models"]) == {"audited", "reference", "original"}
    a = audit["models"]["audited"]
    assert set(a["key_recovery"]) == {"1", "5"} and "key_recovery" not in audit["models"]["original"]
    assert a["state"]["forgotten_classes"] == ["food"]
    assert 0 <= a["mia"]["no_mask"]["mia_efficacy"] <= 1
    assert a["probes_forgotten"]["n_samples"] == 6
    # head-masked: the forgotten class can never be predicted, so p_y = 0 for every forget sample
    assert max(a["mia_scores"]["head_masked"]["forget_train"]["confidence"]) == 0.0
    rows = report_table(audit)
    ids = [r["metric"] for r in rows]
    assert {"retained_acc", "mia_efficacy", "key_recovery_j_n5", "relearn_j_n1", "linear_probe_acc_n1"} <= set(ids)
    assert all(r["definition"] and r["ideal"] for r in rows)
    paths = write_report(audit, tmp_path / "report", config=model.config.to_dict(), dataset="toy")
    for k in ("json", "markdown", "model_card", "per_class_accuracy", "mia_histograms", "key_recovery_curves"):
        assert (tmp_path / "report" / paths[k].split("/")[-1]).stat().st_size > 0, k
    card = (tmp_path / "report" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: promptforget") and "food" in card
    # an already-forgotten model: no "original", and --forget must agree
    forgot = copy.deepcopy(model)
    forgot.forget(["food"])
    with pytest.raises(ValueError, match="disagrees"):
        audit_pfm(forgot, xtr, ytr, xte, yte, forget=["music"], attacks=False)
    with pytest.raises(ValueError, match="forgotten nothing"):
        audit_pfm(model, xtr, ytr, xte, yte, attacks=False)


def test_forgotten_probes(trained):
    model, _, _, xte, yte = trained
    forgot = copy.deepcopy(model)
    forgot.forget(["food"])
    p = forgotten_probes(forgot, xte, yte, [2])
    assert set(p["best_single"]["per_prompt"]) == {"sport", "music"}
    assert p["best_single"]["acc"] == max(p["best_single"]["per_prompt"].values())
    from promptforget.pfm.evaluate import evaluate_state

    assert p["all_wrong"]["acc"] == pytest.approx(evaluate_state(forgot, xte, yte)["no_mask"]["forgotten_acc"])


def test_recovery_scores_sign():
    """Youden's J = recall - FPR: a perfect recovery is +1, a key that floods every input 0."""
    y_forget, y_retain = torch.full((10,), 2), torch.tensor([0, 1] * 10)
    perfect = kr.recovery_scores(torch.full((10,), 2), y_forget, y_retain, y_retain)
    assert perfect["youden"] == 1.0 and perfect["forgotten_fpr"] == 0.0 and perfect["retained_acc"] == 1.0
    flood = kr.recovery_scores(torch.full((10,), 2), y_forget, torch.full((20,), 2), y_retain)
    assert flood["youden"] == 0.0
    hits, flagged = kr.recovery_hits(torch.full((10,), 2), y_forget, torch.full((20,), 2))
    assert hits.sum() == 10 and flagged.sum() == 20


def test_worst_forgotten_class_shows_beside_the_mean():
    """Three forgotten classes; class b is still answered for 34% of its images, a and c never: the mean
    (0.113) hides it, the worst class does not."""
    from promptforget.audit.pfm_audit import class_figures

    labels = torch.tensor([0] * 50 + [1] * 50 + [2] * 50 + [3] * 50)
    logits = torch.rand(200, 4, generator=torch.Generator().manual_seed(0)) * 0.5
    logits[:, 3] = 1.0  # everything answered "d" ...
    logits[50:67, 1] = 2.0  # ... except 17 of b's 50 images
    logits[100:150, 2] = -1.0  # c is always the least likely: its argmin accuracy is 1
    f = class_figures(logits, labels, [0, 1, 2], ["a", "b", "c", "d"])
    assert f["forgotten_class_acc"]["value"] == pytest.approx(0.34 / 3)
    worst = f["forgotten_class_acc_worst"]
    assert worst["value"] == pytest.approx(0.34) and worst["worst_class"] == "b" and worst["ci95"][0] > 0.15
    assert f["forgotten_class_argmin_acc_worst"]["worst_class"] == "c"
    assert f["forgotten_class_argmin_acc_worst"]["value"] == 1.0


def test_protocol_reports_the_worst_removed_class(trained):
    from promptforget.pfm.evaluate import evaluate_protocol, evaluate_state, wilson_interval

    model, _, _, xte, yte = trained
    res = evaluate_protocol(model, xte, yte, ks=[1, 2], progress=False)
    for k in ("1", "2"):
        s = res["by_k"][k]
        for row in s["runs"]:
            assert row["worst_forgotten_acc"] >= row["forgotten_acc"] - 1e-9  # the max over classes >= their mean
            if len(row["forgotten"]) == 1:
                assert row["worst_forgotten_acc"] == pytest.approx(row["forgotten_acc"])
        w = s["worst_forgotten"]["acc"]
        assert w["value"] == max(r["worst_forgotten_acc"] for r in s["runs"]) and w["class"] in CLASSES
        assert w["ci95"][0] <= w["value"] <= w["ci95"][1]
    forgot = copy.deepcopy(model)
    forgot.forget(["food"])
    assert evaluate_state(forgot, xte, yte)["worst_forgotten_class"]["acc"]["class"] == "food"
    lo, hi = wilson_interval(0, 50)
    assert lo == pytest.approx(0.0, abs=1e-12) and 0.05 < hi < 0.1  # sound at 0, unlike a normal approximation


def test_several_references_and_several_forgotten_classes(trained, tmp_path):
    from promptforget.audit.pfm_audit import report_table
    from promptforget.audit.reference import train_pfm_references
    from promptforget.audit.report import VERDICTS

    model, xtr, ytr, xte, yte = trained
    forget = ["music", "food"]
    refs = train_pfm_references(model.config, xtr, ytr, forget, tmp_path / "ref", reference_seeds=3, progress=False,
                                config_overrides={"epochs": 1}, log=lambda m: None)
    # never the audited run's own seed: that reference would be correlated with the audited model
    assert [r.config.seed for r in refs] == [model.config.seed + 1, model.config.seed + 2, model.config.seed + 3]
    assert (tmp_path / "ref" / f"seed-{model.config.seed + 1}" / "reference.json").is_file()
    messages = []
    again = train_pfm_references(model.config, xtr, ytr, forget, tmp_path / "ref", reference_seeds=3,
                                 log=messages.append)
    assert len(again) == 3 and all("reusing" in m for m in messages)  # saved references are not retrained
    audit = audit_pfm(model, xtr, ytr, xte, yte, forget=forget, reference=refs, ns=(2,), key_steps=4,
                      key_budgets=(2, 4), key_restarts=2, relearn_steps=2, attack_seeds=2, eval_every=2, n_retain=6,
                      retained_probes=(), progress=False)
    assert audit["reference_seeds"] == 3
    a, ref = audit["models"]["audited"], audit["models"]["reference"]
    # identical attack settings for the audited model and every reference
    assert a["attack_settings"]["key_restarts"] == 2 and a["attack_settings"]["seed"] == 0
    for seed_result in ref["seed_figures"]:
        assert set(seed_result) == set(a["figures"])
    kr2 = a["key_recovery"]["2"]
    assert set(kr2["per_class"]) == set(forget) and kr2["worst_class"] in forget  # each class attacked
    assert len(kr2["restarts"]) == 2 and set(kr2["at_budget"]) == {"2", "4"}
    assert len(a["linear_probe"]["2"]["seeds"]) == 2 and "forgotten_fpr" in a["linear_probe"]["2"]
    assert ref["reference_seeds"] == 3 and len(ref["seed_figures"]) == 3
    assert ref["figures"]["mia_auc_loss"]["how"] == "over reference seeds" and "seed_sd" in ref["figures"]["mia_auc_loss"]
    rows = {r["metric"]: r for r in report_table(audit)}
    assert {"key_recovery_j_s2_n2", "key_recovery_j_n2", "linear_probe_fpr_n2", "relearn_j_n2",
            "forgotten_class_acc_worst", "forgotten_class_argmin_acc_worst"} <= set(rows)
    assert "key_recovery_j_s4_n2" not in rows  # the largest budget is key_recovery_j_n2: no duplicate row
    assert rows["relearn_j_n2"]["role"] == "primary" and rows["key_recovery_j_s2_n2"]["role"] == "secondary"
    for r in rows.values():
        assert r["verdict"] in VERDICTS and r["verdict"] != "no reference"
        fig = r["audited"]
        if fig is not None and fig["value"] is not None and fig["ci95"] is not None:
            assert set(fig) >= {"value", "ci95", "n", "how"}
    assert rows["key_recovery_j_s2_n2"]["definition"].count("steps=2") == 1
    # bad input: one-line errors
    with pytest.raises(ValueError, match="n=99"):
        audit_pfm(model, xtr, ytr, xte, yte, forget=forget, reference=refs, ns=(99,), progress=False)
    with pytest.raises(ValueError, match="cars"):
        audit_pfm(model, xtr, ytr, xte, yte, forget=["cars"], attacks=False, progress=False)


def test_ulira_as_published(trained):
    """Shadows with the run's own recipe: half trained with half the class's samples and then forgotten (the
    method under test), half retrained without the class; the audited model's forget-train samples are ranked
    against its held-out forget-test samples; each reference is scored the same way."""
    from promptforget.audit.pfm_audit import pfm_ulira

    model, xtr, ytr, xte, yte = trained
    audited = copy.deepcopy(model)
    audited.forget(["food"])
    with pytest.raises(ValueError, match=">= 8"):
        pfm_ulira(model.config, xtr, ytr, xte, yte, {"audited": audited}, ["food"], n_shadow=4, log=lambda m: None)
    refs = [train_pfm_reference(model.config, xtr, ytr, ["food"], progress=False, seed=s) for s in (1, 2, 3)]
    res = pfm_ulira(model.config, xtr, ytr, xte, yte, {"audited": audited, "reference": refs}, ["food"], n_shadow=8,
                    progress=False, log=lambda m: None)
    a = res["audited"]
    assert a["n_shadow"] == 8 and a["n_member"] == 12 and a["n_nonmember"] == 6
    assert a["auc"]["n_member"] == 12 and a["auc"]["n_nonmember"] == 6  # held-out samples on the same model
    assert "shadow models" in a["auc"]["how"]
    ins, outs = [s for s in a["shadows"] if s["in"]], [s for s in a["shadows"] if not s["in"]]
    assert len(ins) == len(outs) == 4
    # each of the 18 "food" samples (12 train + 6 held out) trained in exactly 2 of the 4 "in" shadows
    assert sum(s["class_samples_trained"] for s in ins) == 36 and min(s["class_samples_trained"] for s in ins) > 0
    assert all(s["class_samples_trained"] == 0 for s in outs)
    assert all(s["forgotten"] == ["food"] for s in a["shadows"])  # every shadow forgot the class
    assert a["recipe"] == {k: v for k, v in model.config.to_dict().items() if k != "seed"}
    assert len({s["seed"] for s in a["shadows"]}) == 8 and model.config.seed not in {s["seed"] for s in a["shadows"]}
    assert {"tpr_at_0.01_fpr", "tpr_at_0.001_fpr", "roc"} <= set(a)
    assert 0 <= a["auc"]["ci95"][0] <= a["auc"]["value"] <= a["auc"]["ci95"][1] <= 1
    assert res["reference"]["auc"]["reference_seeds"] == 3
