"""The U-LiRA ROC plot says what is compared (unlearned training vs held-out samples, per model) and does not
draw below the FPR one held-out sample can resolve."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.figure  # noqa: E402

from promptforget.audit.pfm_audit import plots  # noqa: E402


def _ulira(auc, n_member=40, n_nonmember=20):
    roc = {"fpr": [0.0, 0.05, 0.5, 1.0], "tpr": [0.025, 0.1, 0.6, 1.0]}
    return {"roc": roc, "auc": {"value": auc}, "n_member": n_member, "n_nonmember": n_nonmember}


def test_ulira_roc_labels_and_floor(tmp_path, monkeypatch):
    state = {"per_class_acc": {"a": 0.9, "b": 0.0}}
    audit = {"class_names": ["a", "b"], "forgotten_classes": ["b"], "reference_seeds": 5,
             "models": {"audited": {"state": state, "ulira": _ulira(0.61)},
                        "reference": {"state": state, "ulira": _ulira(0.50)}}}
    seen = {}
    real_savefig = matplotlib.figure.Figure.savefig

    def savefig(fig, path, *a, **k):
        seen[str(path)] = fig
        return real_savefig(fig, path, *a, **k)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    paths = plots(audit, tmp_path)
    ax = seen[paths["ulira_roc"]].axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["audited (AUC 0.61)", "reference, 1st of 5 seeds (AUC 0.50)"]
    assert "40 unlearned training vs 20 held-out" in ax.get_title()
    floor = 1 / 20
    for line in ax.get_lines()[:2]:  # the two ROC curves: FPR 0 sits just below the resolvable floor
        assert min(line.get_xdata()) == floor / 2
    assert any(list(line.get_xdata()) == [floor, floor] for line in ax.get_lines())  # the floor is drawn
