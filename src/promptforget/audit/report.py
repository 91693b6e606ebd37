"""Audit report: a flat table of figures (each with its definition, sign and ideal value), the JSON
record, a Markdown summary, plots, and a Hugging Face style model card.

Reading a row: "audited" is the model after the forget, "reference" the retrain-from-scratch model that
never saw the forgotten classes, "original" the model before the forget. Unlearning is as good as
retraining on a figure when audited ~= reference; the verdict column says whether the gap is within
the tolerance given next to each metric.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from promptforget.utils.io import atomic_write_json, atomic_write_text

REPORT_JSON = "audit.json"
REPORT_MD = "audit.md"
MODEL_CARD = "README.md"


@dataclass(frozen=True)
class Metric:
    definition: str
    sign: str  # how to read it
    ideal: str  # the target value
    tol: float  # |audited - reference| within which the row counts as "matches the reference"


# Each metric id maps to its definition. ``{n}`` is the adversary's number of forgotten-class samples.
METRICS: dict[str, Metric] = {
    "retained_acc": Metric("accuracy on held-out samples of retained classes, full prompt bank, no head mask",
                           "higher is better (utility)", "the original model's value", 0.02),
    "forgotten_acc": Metric("accuracy on held-out samples of forgotten classes, full remaining prompt bank, no head mask",
                            "higher = more of the class still answered", "reference value (about 0)", 0.02),
    "forgotten_class_acc": Metric("mean per-class test accuracy of the forgotten classes with the model's full prompt "
                                  "bank (for the original model: before the forget)", "higher = class answered",
                                  "reference value (about 0)", 0.02),
    "forgotten_acc_probe_none": Metric("accuracy on forgotten-class samples with no prompt at all",
                                       "higher = residual knowledge", "reference value", 0.05),
    "forgotten_acc_probe_best_single": Metric("accuracy on forgotten-class samples with the single remaining prompt "
                                              "that maximises it (chosen with the labels: an upper bound)",
                                              "higher = residual knowledge", "reference value", 0.05),
    "retained_acc_probe_all_wrong": Metric("accuracy on retained-class samples given every prompt except their own",
                                           "higher = knowledge not bound to the own key", "chance (1/C)", 0.05),
    "mia_efficacy": Metric("SalUn MIA-efficacy: share of the forget-train set that an RBF-SVC on the confidence p_y, "
                           "fitted on retain-train (members) vs test (non-members), calls non-member",
                           "higher = forget set looks unseen", "reference value", 0.05),
    "mia_auc_confidence": Metric("ROC-AUC of the confidence p_y, forget-train (members) vs forget-test",
                                 "0.5 = no signal; >0.5 = training samples of the forgotten class still recognisable",
                                 "reference value (about 0.5)", 0.05),
    "mia_auc_loss": Metric("ROC-AUC of -loss, forget-train vs forget-test", "as above", "reference value (about 0.5)", 0.05),
    "mia_auc_entropy": Metric("ROC-AUC of -entropy of the output, forget-train vs forget-test", "as above",
                              "reference value (about 0.5)", 0.05),
    "mia_auc_m_entropy": Metric("ROC-AUC of -modified entropy (Song & Mittal 2021), forget-train vs forget-test",
                                "as above", "reference value (about 0.5)", 0.05),
    "mia_retain_auc_loss": Metric("ROC-AUC of -loss, retain-train vs test (generalisation gap on retained classes)",
                                  "0.5 = no overfitting signal", "reference value", 0.05),
    "key_recovery_j_n{n}": Metric("Youden's J (recall of the forgotten class minus the share of retained samples "
                                  "predicted as it) after optimising ONE fresh prompt token (all else frozen) on n "
                                  "labelled forgotten-class samples + a retained-class pool",
                                  "higher = the shared weights still encode the class (residual knowledge); 0 = no "
                                  "better than a constant answer", "reference value", 0.05),
    "key_recovery_acc_n{n}": Metric("forgotten-class test accuracy (recall) after key recovery (see key_recovery_j)",
                                    "higher = more recovered, but a key that floods every input also scores high",
                                    "reference value", 0.05),
    "key_recovery_steps_n{n}": Metric("optimiser steps until key recovery's Youden's J reaches the threshold "
                                      "(None = not within the budget)", "fewer = easier to recover",
                                      "reference value", 10),
    "relearn_j_n{n}": Metric("Youden's J of the forgotten class after a few fine-tuning steps of head (+LoRA) on the "
                             "adversary's set, no prompt for the class", "higher = easier relearning",
                             "reference value", 0.05),
    "linear_probe_acc_n{n}": Metric("forgotten-class test accuracy of a logistic-regression probe on the frozen CLS "
                                    "features, n labelled samples per class", "higher = class separable in the features",
                                    "reference value", 0.05),
    "ulira_auc": Metric("U-LiRA (online) ROC-AUC, forget-train vs forget-test, shadows trained then forgotten",
                        "0.5 = no signal", "reference value (about 0.5)", 0.05),
}


def metric_info(metric_id: str) -> Metric:
    if metric_id in METRICS:
        return METRICS[metric_id]
    base, _, n = metric_id.rpartition("_n")
    if n.isdigit() and f"{base}_n{{n}}" in METRICS:
        m = METRICS[f"{base}_n{{n}}"]
        return Metric(m.definition.replace(" n ", f" n={n} "), m.sign, m.ideal, m.tol)
    raise KeyError(f"unknown metric {metric_id!r}")


def flatten(model_result: dict) -> dict[str, float | int | None]:
    """The headline figures of one model's audit result (see :data:`METRICS`)."""
    r: dict[str, float | int | None] = {}
    st = model_result.get("state", {}).get("no_mask", {})
    r["retained_acc"] = st.get("retained_acc")
    r["forgotten_acc"] = st.get("forgotten_acc")
    pc, fc = model_result.get("state", {}).get("per_class_acc", {}), model_result.get("forgotten_classes_audited", [])
    vals = [pc[c] for c in fc if pc.get(c) is not None]
    if vals:
        r["forgotten_class_acc"] = sum(vals) / len(vals)
    pf = model_result.get("probes_forgotten") or {}
    if pf:
        r["forgotten_acc_probe_none"] = pf["none"]["acc"]
        r["forgotten_acc_probe_best_single"] = pf["best_single"]["acc"]
    pr = model_result.get("probes_retained") or {}
    if "all_wrong" in pr:
        r["retained_acc_probe_all_wrong"] = pr["all_wrong"]["acc"]
    mia = (model_result.get("mia") or {}).get("no_mask")
    if mia:
        r["mia_efficacy"] = mia["mia_efficacy"]
        for k, v in (mia.get("forget_train_vs_test_auc") or {}).items():
            if f"mia_auc_{k}" in METRICS:
                r[f"mia_auc_{k}"] = v
        r["mia_retain_auc_loss"] = mia["retain_vs_test_auc"]["loss"]
    for n, s in (model_result.get("key_recovery") or {}).items():
        r[f"key_recovery_j_n{n}"] = s["final_youden"]
        r[f"key_recovery_acc_n{n}"] = s["final_forgotten_acc"]
        r[f"key_recovery_steps_n{n}"] = s["steps_to_threshold"]
    for n, s in (model_result.get("relearn") or {}).items():
        r[f"relearn_j_n{n}"] = s["final_youden"]
    for n, s in (model_result.get("linear_probe") or {}).items():
        r[f"linear_probe_acc_n{n}"] = s["forgotten_acc"]
    if "ulira" in model_result:
        r["ulira_auc"] = model_result["ulira"]["online"]["auc"]
    return r


def _num(x) -> bool:
    return isinstance(x, (int, float)) and not (isinstance(x, float) and math.isnan(x))


def verdict(metric_id: str, audited, reference) -> str:
    """'match' if audited is within the metric's tolerance of the reference, else which way it leaks."""
    if reference is None and audited is None:
        return "-"
    m = metric_info(metric_id)
    if metric_id.startswith("key_recovery_steps"):
        # None = never reached within the budget: treat as +infinity.
        a = math.inf if audited is None else audited
        b = math.inf if reference is None else reference
        if a == b or (math.isfinite(a) and math.isfinite(b) and abs(a - b) <= m.tol):
            return "match"
        return "GAP (faster than reference)" if a < b else "slower than reference"
    if not (_num(audited) and _num(reference)):
        return "-"
    d = audited - reference
    if abs(d) <= m.tol:
        return "match"
    if metric_id == "retained_acc":
        return "lower utility" if d < 0 else "higher utility"
    if metric_id == "mia_efficacy":
        return "GAP (forget set looks more member-like)" if d < 0 else "above reference"
    return "GAP (more than reference)" if d > 0 else "below reference"


def table(audit: dict) -> list[dict]:
    models = audit["models"]
    flat = {name: flatten(res) for name, res in models.items()}
    ids: list[str] = []
    for f in flat.values():
        ids += [k for k in f if k not in ids]
    rows = []
    for mid in ids:
        info = metric_info(mid)
        a, ref, orig = (flat.get(n, {}).get(mid) for n in ("audited", "reference", "original"))
        rows.append({"metric": mid, "audited": a, "reference": ref, "original": orig,
                     "verdict": verdict(mid, a, ref) if "reference" in flat else "no reference",
                     "definition": info.definition, "sign": info.sign, "ideal": info.ideal, "tolerance": info.tol})
    return rows


def _fmt(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return "nan" if math.isnan(x) else f"{x:.3f}"
    return str(x)


def markdown(audit: dict, rows: list[dict], figures: dict[str, str] | None = None) -> str:
    c = len(audit["class_names"])
    lines = [
        f"# Unlearning audit: {', '.join(audit['forgotten_classes'])} forgotten",
        "",
        f"Run: `{audit.get('run_dir', '-')}`; {c} classes (chance {1 / c:.3f}); {audit['n_train']} train / "
        f"{audit['n_test']} test samples. *audited* = after the forget, *reference* = retrained from scratch "
        "without the forgotten classes (gold standard), *original* = before the forget. Unlearning is as good "
        "as retraining on a row when audited ~= reference (within the tolerance).",
        "",
        "| metric | audited | reference | original | verdict | ideal | reading |",
        "|---|---:|---:|---:|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| `{r['metric']}` | {_fmt(r['audited'])} | {_fmt(r['reference'])} | {_fmt(r['original'])} | "
                     f"{r['verdict']} | {r['ideal']} (tol {r['tolerance']}) | {r['sign']} |")
    gaps = [r["metric"] for r in rows if str(r["verdict"]).startswith("GAP")]
    lines += ["", "## Verdict", ""]
    if "reference" not in audit["models"]:
        lines.append("No retrained reference was given: figures cannot be judged against the gold standard.")
    elif gaps:
        lines.append("Residual knowledge detected (audited model leaks more than the retrained reference) on: "
                     + ", ".join(f"`{g}`" for g in gaps) + ".")
    else:
        lines.append("No figure shows more leakage than the retrained reference within tolerance.")
    lines += ["", "## Definitions", ""]
    for r in rows:
        lines.append(f"- `{r['metric']}`: {r['definition']}.")
    if figures:
        lines += ["", "## Figures", ""] + [f"![{k}]({Path(v).name})" for k, v in figures.items()]
    s = audit.get("settings")
    if s:
        lines += ["", "## Settings", "", "```json", json.dumps(s, indent=2, sort_keys=True), "```"]
    return "\n".join(lines) + "\n"


def plots(audit: dict, out_dir: str | os.PathLike) -> dict[str, str]:
    """per-class accuracy, MIA histograms, key-recovery curves. Returns {name: path}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    models, names = audit["models"], audit["class_names"]
    paths: dict[str, str] = {}
    style = {"original": ("tab:gray", "-"), "audited": ("tab:red", "-"), "reference": ("tab:blue", "--")}

    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(names) + 2), 3.5))
    present = [m for m in ("original", "audited", "reference") if m in models]
    w = 0.8 / max(len(present), 1)
    for i, m in enumerate(present):
        acc = [models[m]["state"]["per_class_acc"].get(c) for c in names]
        ax.bar(np.arange(len(names)) + i * w, [np.nan if a is None else a for a in acc], w, label=m, color=style[m][0])
    ax.set_xticks(np.arange(len(names)) + w * (len(present) - 1) / 2, names, rotation=45, ha="right")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"per-class accuracy (forgotten: {', '.join(audit['forgotten_classes'])})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths["per_class_accuracy"] = str(out / "per_class_accuracy.png")
    fig.savefig(paths["per_class_accuracy"], dpi=120)
    plt.close(fig)

    hm = [m for m in ("audited", "reference", "original") if "mia_scores" in models.get(m, {})]
    if hm:
        fig, axes = plt.subplots(1, len(hm), figsize=(4 * len(hm), 3.2), squeeze=False)
        for ax, m in zip(axes[0], hm):
            sc = models[m]["mia_scores"]["no_mask"]
            for split, color in (("forget_train", "tab:red"), ("forget_test", "tab:blue")):
                if split in sc:
                    v = np.asarray(sc[split]["confidence"])
                    ax.hist(v, bins=30, range=(0, 1), alpha=0.55, density=True, color=color, label=split)
            auc = (models[m]["mia"]["no_mask"].get("forget_train_vs_test_auc") or {}).get("confidence")
            ax.set_title(f"{m}: p_y on forgotten class" + (f" (AUC {auc:.2f})" if auc is not None else ""), fontsize=9)
            ax.set_xlabel("confidence p_y")
            ax.legend(fontsize=7)
        fig.tight_layout()
        paths["mia_histograms"] = str(out / "mia_histograms.png")
        fig.savefig(paths["mia_histograms"], dpi=120)
        plt.close(fig)

    for attack in ("key_recovery", "relearn"):
        have = [m for m in ("audited", "reference") if models.get(m, {}).get(attack)]
        if not have:
            continue
        fig, ax = plt.subplots(figsize=(6, 3.8))
        ns = sorted({int(n) for m in have for n in models[m][attack]})
        cmap = plt.get_cmap("viridis")
        for j, n in enumerate(ns):
            for m in have:
                s = models[m][attack].get(str(n))
                if s:
                    ax.plot([r["step"] for r in s["curve"]], [r["youden"] for r in s["curve"]],
                            linestyle=style[m][1], color=cmap(j / max(len(ns) - 1, 1)), label=f"{m}, n={n}")
        ax.set_xlabel("optimiser steps")
        ax.set_ylabel("Youden's J of the forgotten class")
        ax.set_ylim(-1.02, 1.02)
        ax.set_title(f"{attack.replace('_', ' ')}: audited (solid) vs retrained reference (dashed)", fontsize=9)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        paths[f"{attack}_curves"] = str(out / f"{attack}_curves.png")
        fig.savefig(paths[f"{attack}_curves"], dpi=120)
        plt.close(fig)
    return paths


def model_card(audit: dict, rows: list[dict], config: dict | None = None, dataset: str | None = None) -> str:
    """A Hugging Face style README.md (YAML front matter + sections) for the audited run."""
    cfg = config or {}
    front = ["---", "library_name: promptforget", "tags:", "- machine-unlearning", "- pre-forgettable-model",
             "- prompt-tuning"]
    if cfg.get("backbone"):
        front.append(f"base_model: {cfg['backbone']}")
    if dataset:
        front += ["datasets:", f"- {dataset}"]
    front += ["metrics:", "- accuracy", "- roc_auc", "---", ""]
    kept = [c for c in audit["class_names"] if c not in audit["forgotten_classes"]]
    body = [
        "# Pre-Forgettable Model (promptforget)",
        "",
        "## Model description",
        f"Backbone `{cfg.get('backbone', '?')}` adapted with {cfg.get('adapt', '?')} "
        f"(r={cfg.get('lora_r', '?')}); one learnable prompt ({cfg.get('prompt_tokens', '?')} token(s)) per class "
        "prepended before CLS; linear head on CLS. A class is known only while its prompt exists; forgetting "
        "deletes the prompt from the weights file.",
        "",
        f"- classes still known: {', '.join(kept)}",
        f"- classes forgotten: {', '.join(audit['forgotten_classes'])}",
        "",
        "## Intended use and limits",
        "Classification over the classes still known. Forgetting is by design (prompt deletion); the audit "
        "below measures what remains extractable from the shared weights, and should be re-run after every "
        "forget. The head keeps a row for every original class; serve with the head mask on.",
        "",
        "## Training",
        "```json", json.dumps({k: cfg[k] for k in sorted(cfg) if k != "class_names"}, indent=2), "```",
        "",
        "## Unlearning audit (audited vs retrained reference)",
        "",
        "| metric | audited | reference | verdict |",
        "|---|---:|---:|---|",
    ]
    body += [f"| {r['metric']} | {_fmt(r['audited'])} | {_fmt(r['reference'])} | {r['verdict']} |" for r in rows]
    body += ["", f"Full definitions, signs and ideal values: `{REPORT_MD}` / `{REPORT_JSON}`.", ""]
    return "\n".join(front + body)


def write_report(audit: dict, out_dir: str | os.PathLike, config: dict | None = None, dataset: str | None = None,
                 with_plots: bool = True) -> dict[str, str]:
    """Write audit.json, audit.md, plots and README.md (model card) into ``out_dir``. Returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = table(audit)
    figs = plots(audit, out) if with_plots else {}
    record = {"table": rows, "metrics": {k: vars(v) for k, v in METRICS.items()}, "figures": figs, "audit": audit}
    atomic_write_json(out / REPORT_JSON, record)
    atomic_write_text(out / REPORT_MD, markdown(audit, rows, figs))
    atomic_write_text(out / MODEL_CARD, model_card(audit, rows, config, dataset))
    return {"json": str(out / REPORT_JSON), "markdown": str(out / REPORT_MD), "model_card": str(out / MODEL_CARD), **figs}
