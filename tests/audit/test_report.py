"""The report engine: verdict directions, the shared vocabulary of the PFM and SPUL reports, and the files."""

import json

import pytest

from promptforget.audit import pfm_audit, report, spul_audit
from promptforget.audit.report import (FORGETS_MORE, INCONCLUSIVE, INDISTINGUISHABLE, LEAKS_MORE, NO_REFERENCE,
                                       UTILITY_KEPT, UTILITY_LOST, Metric, verdict)

HIGHER_LEAKS = Metric("an AUC", "higher = leak", "reference value", 0.05)
LOWER_LEAKS = Metric("an efficacy", "higher = looks unseen", "reference value", 0.05, direction=-1)
UTILITY = Metric("retained accuracy", "higher = better", "original value", 0.02, kind="utility")
LEAK_WORDS = {LEAKS_MORE, FORGETS_MORE}


def test_higher_is_leak():
    assert verdict(HIGHER_LEAKS, 0.9, 0.5) == LEAKS_MORE
    assert verdict(HIGHER_LEAKS, 0.1, 0.5) == FORGETS_MORE
    assert verdict(HIGHER_LEAKS, 0.5, 0.5) == INDISTINGUISHABLE
    assert verdict(HIGHER_LEAKS, 0.54, 0.5) == INDISTINGUISHABLE  # within the tolerance
    assert verdict(HIGHER_LEAKS, 0.56, 0.5) == LEAKS_MORE


def test_lower_is_leak():
    assert verdict(LOWER_LEAKS, 0.1, 0.5) == LEAKS_MORE
    assert verdict(LOWER_LEAKS, 0.9, 0.5) == FORGETS_MORE
    assert verdict(LOWER_LEAKS, 0.5, 0.5) == INDISTINGUISHABLE


def test_utility_never_yields_a_leak_verdict():
    assert verdict(UTILITY, 0.5, 0.9) == UTILITY_LOST
    assert verdict(UTILITY, 0.9, 0.5) == UTILITY_KEPT
    assert verdict(UTILITY, 0.9, 0.9) == UTILITY_KEPT
    assert all(verdict(UTILITY, a, b) not in LEAK_WORDS for a in (0.0, 0.5, 1.0) for b in (0.0, 0.5, 1.0))
    lower_is_more = Metric("error", "lower = better", "original value", 0.02, direction=-1, kind="utility")
    assert verdict(lower_is_more, 0.1, 0.3) == UTILITY_KEPT and verdict(lower_is_more, 0.3, 0.1) == UTILITY_LOST


def test_missing_figures():
    assert verdict(HIGHER_LEAKS, 0.5, None) == NO_REFERENCE
    assert verdict(HIGHER_LEAKS, None, 0.5) == INCONCLUSIVE
    assert verdict(HIGHER_LEAKS, float("nan"), 0.5) == INCONCLUSIVE
    # key recovery steps: None = never recovered within the budget (+inf); fewer steps = easier = leak
    steps = pfm_audit.METRICS["key_recovery_steps_n{n}"]
    assert verdict(steps, 20, None) == LEAKS_MORE
    assert verdict(steps, None, 20) == FORGETS_MORE
    assert verdict(steps, None, None) == INDISTINGUISHABLE
    assert verdict(steps, 25, 20) == INDISTINGUISHABLE  # tolerance 10 steps
    with pytest.raises(ValueError):
        Metric("x", "y", "z", 0.1, direction=0)


def test_registries_say_which_way_leaks():
    p, s = pfm_audit.METRICS, spul_audit.SPUL_METRICS
    assert p["retained_acc"].kind == "utility" and p["mia_efficacy"].direction == -1
    assert p["mia_auc_loss"].direction == 1 and p["key_recovery_steps_n{n}"].direction == -1
    assert s["acc_train_retain"].kind == s["acc_test_retain"].kind == "utility"
    assert s["acc_train_forget"].kind == "leak" and s["mia_efficacy"].direction == -1
    assert s["llm_auc_min_k_pp"].direction == 1 and s["blackbox_best"].direction == 1
    m = report.lookup(p, "key_recovery_j_n25")
    assert "n=25" in m.definition and m.direction == 1
    with pytest.raises(KeyError):
        report.lookup(p, "no_such_metric")


def spul_result(acc_forget: float, acc_retain: float, auc: float, efficacy: float) -> dict:
    splits = {"train_retain": acc_retain, "test_retain": acc_retain, "train_forget": acc_forget,
              "test_forget": acc_forget}
    return {"accuracy": {k: {"accuracy": v} for k, v in splits.items()},
            "mia": {"mia_efficacy": efficacy, "forget_train_vs_test_auc": {"confidence": auc, "loss": auc}},
            "llm_mia": {"loss": auc, "zlib": auc, "min_k": auc, "min_k_pp": auc},
            "blackbox": {"plain_acc": acc_forget, "paraphrase_acc_mean": acc_forget,
                         "injection_acc_mean": acc_forget, "best_attack_acc": acc_forget}}


def pfm_result(acc_forget: float, acc_retain: float, auc: float, efficacy: float) -> dict:
    return {"state": {"no_mask": {"retained_acc": acc_retain, "forgotten_acc": acc_forget},
                      "per_class_acc": {"a": acc_retain, "b": acc_forget}},
            "forgotten_classes_audited": ["b"],
            "mia": {"no_mask": {"mia_efficacy": efficacy, "forget_train_vs_test_auc": {"confidence": auc},
                                "retain_vs_test_auc": {"loss": 0.5}}},
            "key_recovery": {"5": {"final_youden": acc_forget, "final_forgotten_acc": acc_forget,
                                   "steps_to_threshold": None}}}


# audited leaks (answers the forget set, members recognisable), loses utility; the reference forgot
LEAKY = {"acc_forget": 0.9, "acc_retain": 0.6, "auc": 0.8, "efficacy": 0.1}
RETRAINED = {"acc_forget": 0.0, "acc_retain": 0.9, "auc": 0.5, "efficacy": 0.7}


@pytest.mark.parametrize("module, result", [(pfm_audit, pfm_result), (spul_audit, spul_result)])
def test_pfm_and_spul_tables_share_one_vocabulary(module, result):
    audit = {"models": {"audited": result(**LEAKY), "reference": result(**RETRAINED)}}
    rows = {r["metric"]: r for r in module.report_table(audit)}
    assert rows["mia_efficacy"]["verdict"] == LEAKS_MORE  # lower efficacy = forget set looks member-like
    assert rows["mia_auc_confidence"]["verdict"] == LEAKS_MORE
    retained = "retained_acc" if module is pfm_audit else "acc_test_retain"
    forgotten = "forgotten_acc" if module is pfm_audit else "acc_test_forget"
    assert rows[retained]["verdict"] == UTILITY_LOST and rows[forgotten]["verdict"] == LEAKS_MORE
    for r in rows.values():
        assert r["verdict"] in ({UTILITY_KEPT, UTILITY_LOST} if r["kind"] == "utility" else {report.DESCRIPTIVE}
                                if r["kind"] == "context" else {INDISTINGUISHABLE, LEAKS_MORE, FORGETS_MORE, INCONCLUSIVE})
    # swapped roles: the audited model forgets more than retraining and keeps its utility
    swapped = {"models": {"audited": result(**RETRAINED), "reference": result(**LEAKY)}}
    rows = {r["metric"]: r for r in module.report_table(swapped)}
    assert rows["mia_efficacy"]["verdict"] == rows[forgotten]["verdict"] == FORGETS_MORE
    assert rows[retained]["verdict"] == UTILITY_KEPT
    alone = {"models": {"audited": result(**LEAKY)}}
    assert {r["verdict"] for r in module.report_table(alone)} == {NO_REFERENCE}


def test_markdown_summary_names_each_way():
    rows = pfm_audit.report_table({"models": {"audited": pfm_result(**LEAKY), "reference": pfm_result(**RETRAINED)}})
    text = report.markdown("t", "intro", rows, have_reference=True)
    verdict_section = text.split("## Verdict")[1].split("## Definitions")[0]
    headline = verdict_section.split("Secondary figures")[0]
    assert "leaks more than retraining** on `mia_efficacy`, `key_recovery_j_n5`" in headline  # the primary ones
    assert "`forgotten_acc` leaks more than retraining" in verdict_section.split("Secondary figures")[1]
    assert "Utility lost" in verdict_section
    assert "| `mia_efficacy` * | 0.100 | 0.700 | - | leaks more than retraining |" in text
    assert "| `forgotten_acc` | 0.900 | 0.000 | - | leaks more than retraining (secondary) |" in text
    rows = pfm_audit.report_table({"models": {"audited": pfm_result(**RETRAINED), "reference": pfm_result(**RETRAINED)}})
    verdict_section = report.markdown("t", "intro", rows, True).split("## Verdict")[1]
    assert "No primary figure leaks more" in verdict_section and "forgets more" not in verdict_section
    assert "No retrained reference" in report.markdown("t", "intro", rows, have_reference=False)


def test_format_number():
    assert report.format_number(None) == "-" and report.format_number(float("nan")) == "nan"
    assert report.format_number(0.12345) == "0.123" and report.format_number(7) == "7"


def test_spul_report_files(tmp_path):
    audit = {"kind": "spul", "models": {"audited": spul_result(**LEAKY), "reference": spul_result(**RETRAINED),
                                        "original": spul_result(**LEAKY)},
             "split_sizes": {"train_retain": 3, "train_forget": 2, "test_retain": 3, "test_forget": 2},
             "stage1_model": "stage1/model", "spul_config": {"num_virtual_tokens": 3}}
    paths = spul_audit.write_spul_report(audit, tmp_path, with_plots=False)
    rec = json.loads((tmp_path / "audit.json").read_text())
    assert rec["audit"]["kind"] == "spul" and rec["figures"] == {} and rec["reference_seeds"] == 1
    assert rec["metrics"]["mia_efficacy"]["direction"] == -1
    rows = {r["metric"]: r for r in rec["table"]}
    assert rows["blackbox_best"]["verdict"] == LEAKS_MORE and rows["blackbox_best"]["original"]["value"] == 0.9
    md = (tmp_path / "audit.md").read_text()
    assert md.startswith("# SPUL unlearning audit") and "## Definitions" in md and "## Verdict" in md
    card = (tmp_path / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: promptforget") and "base_model: stage1/model" in card
    assert "| `acc_test_retain` | 0.600 | 0.900 | utility lost |" in card
    assert set(paths) == {"json", "markdown", "model_card"}
