"""The PFM audit: every attack on the audited (forgotten) model, on the retrained reference, and the
headline figures of the original model before the forget, in one JSON-ready dict; and its report
(metric definitions, flattening and plots; the report engine in :mod:`promptforget.audit.report` does the rest).

Sets (from the run's own split): retain-train / forget-train = training samples of retained /
forgotten classes; test / forget-test = held-out samples of retained / forgotten classes.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from promptforget.audit import key_recovery as kr
from promptforget.audit.lira import lira_attack, run_lira, scaled_logit
from promptforget.audit.mia import membership_features, population_audit
from promptforget.audit.report import Metric, markdown, model_card, table, write_files
from promptforget.pfm.evaluate import PROBES, batched_logits, evaluate_probes, evaluate_state
from promptforget.pfm.model import mask_classes

DEFAULT_NS = (1, 5, 25, 100)


def _probs(logits: torch.Tensor) -> np.ndarray:
    return torch.softmax(logits.double(), dim=1).numpy()


def forgotten_probes(model, inputs, labels, forgotten: list[int], batch_size: int = 64) -> dict:
    """Accuracy on forgotten-class samples under the probe modes that still apply (no own prompt exists).

    The library's :func:`evaluate_probes` covers samples of active classes; for a forgotten class the
    own-prompt modes vanish, and "all wrong" is the full remaining bank.
    """
    labels = torch.as_tensor(labels)
    sel = torch.isin(labels, torch.tensor(forgotten))
    x, y = {k: v[sel] for k, v in inputs.items()}, labels[sel]
    n = len(y)
    if n == 0:
        return {}

    def acc(ids, mask):
        return float((batched_logits(model, x, ids, mask, batch_size).argmax(1) == y).float().mean())

    active = [model.class_index(c) for c in model.active_classes]
    bank = torch.tensor(active).expand(n, -1)
    out = {"all_wrong": {"acc": acc(bank, torch.ones_like(bank, dtype=torch.bool))},
           "none": {"acc": acc(torch.zeros(n, 0, dtype=torch.long), torch.zeros(n, 0, dtype=torch.bool))}}
    per = {}
    for j in active:
        ids = torch.full((n, 1), j, dtype=torch.long)
        per[model.class_names[j]] = acc(ids, torch.ones_like(ids, dtype=torch.bool))
    best = max(per, key=per.get)
    out["best_single"] = {"acc": per[best], "prompt": best, "per_prompt": per}
    out["n_samples"] = n
    return out


def _mia(logits: dict, labels: dict, forgotten: list[int], masked: bool, seed: int) -> tuple[dict, dict]:
    probs = {k: _probs(mask_classes(v, forgotten) if masked else v) for k, v in logits.items() if len(v)}
    labels = {k: labels[k].numpy() for k in probs}
    res = population_audit(probs, labels, seed=seed)
    # Keep the forget-set feature values: the report draws their histograms.
    scores = {}
    for name in ("forget_train", "forget_test"):
        if name in probs:
            f = membership_features(probs[name], labels[name])
            scores[name] = {k: f[k].tolist() for k in ("confidence", "m_entropy", "entropy")}
    return res, scores


def audit_model(model, data: dict, forgotten_names: Sequence[str], ns: Sequence[int] = DEFAULT_NS, *,
                attacks: bool = True, key_steps: int = 100, key_lr: float = 1e-2, relearn_steps: int = 50,
                relearn_lr: float = 1e-3, n_retain: int = 100, max_eval_retain: int = 300, eval_every: int = 10, threshold: float = 0.5,
                seed: int = 0, batch_size: int = 64, retained_probes: Sequence[str] = PROBES,
                progress: bool = True) -> dict:
    """All figures for one model. ``data``: train/test inputs+labels and the MIA subsample of retain-train."""
    fidx = [model.class_index(c) for c in forgotten_names]
    xtr, ytr, xte, yte = data["train_inputs"], data["train_labels"], data["test_inputs"], data["test_labels"]
    res: dict = {"state": evaluate_state(model, xte, yte, batch_size), "forgotten_classes_audited": list(forgotten_names)}
    if len(model.active_classes) >= 2 and retained_probes:
        res["probes_retained"] = evaluate_probes(model, xte, yte, seed, batch_size, probes=tuple(retained_probes))
    if any(c not in model.active_classes for c in forgotten_names):
        res["probes_forgotten"] = forgotten_probes(model, xte, yte, fidx, batch_size)
    ftr, fte = torch.isin(ytr, torch.tensor(fidx)), torch.isin(yte, torch.tensor(fidx))
    rtr = torch.nonzero(~ftr).squeeze(1)
    rtr = rtr[torch.randperm(len(rtr), generator=torch.Generator().manual_seed(seed))[: data.get("max_mia", 1000)]]
    sets = {
        "retain_train": (kr.take_rows(xtr, rtr), ytr[rtr]),
        "test": ({k: v[~fte] for k, v in xte.items()}, yte[~fte]),
        "forget_train": ({k: v[ftr] for k, v in xtr.items()}, ytr[ftr]),
        "forget_test": ({k: v[fte] for k, v in xte.items()}, yte[fte]),
    }
    logits = {k: batched_logits(model, x, batch_size=batch_size) for k, (x, _) in sets.items() if len(sets[k][1])}
    labels = {k: y for k, (_, y) in sets.items()}
    res["mia"], res["mia_scores"] = {}, {}
    for masked in (False, True):
        tag = "head_masked" if masked else "no_mask"
        res["mia"][tag], res["mia_scores"][tag] = _mia(logits, labels, fidx, masked, seed)
    if not attacks:
        return res
    # Residual-knowledge attacks: only meaningful once the class's prompt is gone.
    res["key_recovery"], res["relearn"], res["linear_probe"] = {}, {}, {}
    max_n = int(ftr.sum())
    # CLS features only for what the linear probe can use: max(ns) training samples per class.
    rng = np.random.default_rng(seed)
    ynp = ytr.numpy()
    probe_pool = np.concatenate([rng.choice(np.flatnonzero(ynp == c), min(max(ns), int((ynp == c).sum())), replace=False)
                                 for c in np.unique(ynp)])
    feats_tr = kr.cls_features(model, kr.take_rows(xtr, probe_pool), batch_size)
    feats_te = kr.cls_features(model, xte, batch_size)
    for n in ns:
        if n > max_n:
            continue
        ad = kr.build_attack_data(xtr, ytr, xte, yte, fidx, n, n_retain=n_retain, max_eval_retain=max_eval_retain,
                                  seed=seed + n)
        if len(forgotten_names) == 1:
            res["key_recovery"][str(n)] = kr.key_recovery(model, forgotten_names[0], ad, key_steps, key_lr, eval_every,
                                                          batch_size, threshold, seed, progress)
        res["relearn"][str(n)] = kr.relearn_attack(model, ad, "head+lora" if model.config.adapt == "lora" else "head",
                                                   relearn_steps, relearn_lr, eval_every, batch_size, threshold, seed, progress)
        res["linear_probe"][str(n)] = kr.linear_probe(feats_tr, ynp[probe_pool], feats_te, yte.numpy(), fidx, n, seed)
    return res


def audit_pfm(model, train_inputs, train_labels, test_inputs, test_labels, forget: Sequence[str] | None = None,
              reference=None, ns: Sequence[int] = DEFAULT_NS, max_mia: int = 1000, progress: bool = True,
              **attack_kw) -> dict:
    """Audit a PFM. If ``model`` still has every prompt, ``forget`` names the classes to forget (in a copy);
    if it has already forgotten classes, those are audited and no "before" figures exist."""
    train_labels, test_labels = torch.as_tensor(train_labels), torch.as_tensor(test_labels)
    run_attacks = attack_kw.pop("attacks", True)
    if model.forgotten_classes:
        if forget and sorted(forget) != sorted(model.forgotten_classes):
            raise ValueError(f"the run has already forgotten {model.forgotten_classes}; --forget {list(forget)} disagrees")
        original, forgotten = None, model.forgotten_classes
        audited = model
    else:
        if not forget:
            raise ValueError("the model has forgotten nothing: name the classes to forget (--forget)")
        forgotten = list(forget)
        original = model
        audited = copy.deepcopy(model)
        audited.forget(forgotten)
    if reference is not None and sorted(reference.forgotten_classes) != sorted(forgotten):
        raise ValueError(f"reference forgot {reference.forgotten_classes}, the audited model {forgotten}")
    data = {"train_inputs": train_inputs, "train_labels": train_labels, "test_inputs": test_inputs,
            "test_labels": test_labels, "max_mia": max_mia}
    out = {"class_names": model.class_names, "forgotten_classes": forgotten, "ns": list(ns),
           "n_train": len(train_labels), "n_test": len(test_labels), "models": {}}
    jobs = [("audited", audited, True)] + ([("reference", reference, True)] if reference is not None else [])
    jobs += [("original", original, False)] if original is not None else []
    for name, m, attacks in tqdm(jobs, desc="audit", disable=not progress, leave=False):
        out["models"][name] = audit_model(m, data, forgotten, ns, attacks=attacks and run_attacks, progress=progress, **attack_kw)
    return out


def pfm_ulira(config, train_inputs, train_labels, test_inputs, test_labels, targets: dict, forgotten: Sequence[str],
              n_shadow: int = 4, config_overrides: dict | None = None, max_pool: int | None = None, seed: int = 0,
              progress: bool = True) -> dict:
    """U-LiRA on class forgetting: shadows train on random halves of train+test, then forget the class.

    ``targets``: {name: model} (the audited model, the reference); the same shadows serve every target.
    The attack separates forget-train from forget-test samples. Returns {name: result}.
    Costs ``n_shadow`` trainings: keep ``config_overrides`` small (e.g. {"epochs": 1}) on CPU.
    """
    from promptforget.pfm.config import PFMConfig
    from promptforget.pfm.model import PFMModel
    from promptforget.pfm.train import fit

    cfg = PFMConfig.from_dict({**config.to_dict(), **(config_overrides or {})})
    x = {k: torch.cat([train_inputs[k], test_inputs[k]]) for k in train_inputs}
    y = torch.cat([torch.as_tensor(train_labels), torch.as_tensor(test_labels)])
    is_member = np.r_[np.ones(len(train_labels), bool), np.zeros(len(test_labels), bool)]
    pool = np.arange(len(y))
    if max_pool is not None and max_pool < len(pool):
        pool = np.sort(np.random.default_rng(seed).choice(pool, max_pool, replace=False))
    xp, yp = kr.take_rows(x, pool), y[pool]
    fidx = [cfg.class_names.index(c) for c in forgotten]
    template = PFMModel(cfg)  # built once (backbone load), deep-copied per shadow

    def fit_shadow(idx):
        m = copy.deepcopy(template)
        fit(m, kr.take_rows(xp, idx), yp[idx], progress=False)
        m.forget(list(forgotten))
        return m

    def score(m):
        return scaled_logit(batched_logits(m, xp).numpy(), yp.numpy())

    shadows = run_lira(fit_shadow, score, len(pool), n_shadow, seed, progress)
    is_f = np.isin(yp.numpy(), fidx)
    members, nonmembers = np.flatnonzero(is_f & is_member[pool]), np.flatnonzero(is_f & ~is_member[pool])
    if len(members) == 0 or len(nonmembers) == 0:
        raise ValueError("U-LiRA: the pool needs forgotten-class samples from both train and test")
    out = {}
    for name, target_model in targets.items():
        target = score(target_model)
        res = {"online": lira_attack(target, shadows, members, nonmembers, online=True),
               "offline": lira_attack(target, shadows, members, nonmembers, online=False),
               "config_overrides": config_overrides or {}, "pool_size": int(len(pool))}
        out[name] = res
    return out


# --- report ------------------------------------------------------------------------------------------
# Each metric id maps to its definition. ``{n}`` is the adversary's number of forgotten-class samples.
METRICS: dict[str, Metric] = {
    "retained_acc": Metric("accuracy on held-out samples of retained classes, full prompt bank, no head mask",
                           "higher is better (utility)", "the original model's value", 0.02, kind="utility"),
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
                           "higher = forget set looks unseen", "reference value", 0.05, direction=-1),
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
                                      "reference value", 10, direction=-1, none_is_infinite=True),
    "relearn_j_n{n}": Metric("Youden's J of the forgotten class after a few fine-tuning steps of head (+LoRA) on the "
                             "adversary's set, no prompt for the class", "higher = easier relearning",
                             "reference value", 0.05),
    "linear_probe_acc_n{n}": Metric("forgotten-class test accuracy of a logistic-regression probe on the frozen CLS "
                                    "features, n labelled samples per class", "higher = class separable in the features",
                                    "reference value", 0.05),
    "ulira_auc": Metric("U-LiRA (online) ROC-AUC, forget-train vs forget-test, shadows trained then forgotten",
                        "0.5 = no signal", "reference value (about 0.5)", 0.05),
}


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


def report_table(audit: dict) -> list[dict]:
    return table({name: flatten(res) for name, res in audit["models"].items()}, METRICS)


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


def write_report(audit: dict, out_dir: str | os.PathLike, config: dict | None = None, dataset: str | None = None,
                 with_plots: bool = True) -> dict[str, str]:
    """Write audit.json, audit.md, plots and README.md (model card) into ``out_dir``. Returns the paths."""
    rows = report_table(audit)
    figures = plots(audit, out_dir) if with_plots else {}
    c = len(audit["class_names"])
    intro = (f"Run: `{audit.get('run_dir', '-')}`; {c} classes (chance {1 / c:.3f}); {audit['n_train']} train / "
             f"{audit['n_test']} test samples. *audited* = after the forget, *reference* = retrained from scratch "
             "without the forgotten classes (gold standard), *original* = before the forget. Unlearning is as good "
             "as retraining on a row when audited ~= reference (within the tolerance).")
    text = markdown(f"Unlearning audit: {', '.join(audit['forgotten_classes'])} forgotten", intro, rows,
                    "reference" in audit["models"], figures, audit.get("settings"))
    cfg = config or {}
    kept = [c for c in audit["class_names"] if c not in audit["forgotten_classes"]]
    sections = {
        "Model description":
            f"Backbone `{cfg.get('backbone', '?')}` adapted with {cfg.get('adapt', '?')} "
            f"(r={cfg.get('lora_r', '?')}); one learnable prompt ({cfg.get('prompt_tokens', '?')} token(s)) per class "
            "prepended before CLS; linear head on CLS. A class is known only while its prompt exists; forgetting "
            "deletes the prompt from the weights file.\n\n"
            f"- classes still known: {', '.join(kept)}\n"
            f"- classes forgotten: {', '.join(audit['forgotten_classes'])}",
        "Intended use and limits":
            "Classification over the classes still known. Forgetting is by design (prompt deletion); the audit "
            "below measures what remains extractable from the shared weights, and should be re-run after every "
            "forget. The head keeps a row for every original class; serve with the head mask on.",
        "Training": "```json\n" + json.dumps({k: cfg[k] for k in sorted(cfg) if k != "class_names"}, indent=2) + "\n```",
    }
    card = model_card("Pre-Forgettable Model (promptforget)", sections, rows,
                      tags=["machine-unlearning", "pre-forgettable-model", "prompt-tuning"],
                      base_model=cfg.get("backbone"), dataset=dataset)
    return write_files(out_dir, audit, rows, METRICS, text, card, figures)
