"""The PFM audit: every attack on the audited (forgotten) model, on the retrained reference, and the
headline figures of the original model before the forget, in one JSON-ready dict; and its report
(metric definitions, flattening and plots; the report engine in :mod:`promptforget.audit.report` does the rest).

Sets (from the run's own split): retain-train / forget-train = training samples of retained /
forgotten classes; test / forget-test = held-out samples of retained / forgotten classes.

Every headline figure carries a 95% interval (``model_result["figures"]``, see :mod:`promptforget.audit.stats`);
the reference's are combined over its retrained seeds (``reference_seeds``).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from promptforget.audit import key_recovery as kr
from promptforget.audit.config import DEFAULT_KEY_BUDGETS, DEFAULT_NS, AuditConfig
from promptforget.audit import stats
from promptforget.audit.lira import run_ulira, scaled_logit, ulira_attack
from promptforget.audit.mia import membership_features, population_audit
from promptforget.audit.report import Metric, combine_reference_runs, markdown, model_card, table, write_files
from promptforget.pfm.evaluate import PROBES, batched_logits, evaluate_probes, evaluate_state
from promptforget.pfm.model import mask_classes

# One set of defaults: AuditConfig's (the CLI's flags).
DEFAULT_KEY_RESTARTS = AuditConfig.key_restarts
DEFAULT_ATTACK_SEEDS = AuditConfig.attack_seeds
DEFAULT_ULIRA_SHADOWS = AuditConfig.ulira_shadows
ULIRA_FPRS = (0.01, 0.001)


log = logging.getLogger("promptforget.audit")


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

    def hits(ids, mask):
        return (batched_logits(model, x, ids, mask, batch_size).argmax(1) == y).float().numpy()

    def probe(h):
        return {"acc": float(h.mean()), "figure": stats.mean_figure(h)}

    active = [model.class_index(c) for c in model.active_classes]
    bank = torch.tensor(active).expand(n, -1)
    out = {"all_wrong": probe(hits(bank, torch.ones_like(bank, dtype=torch.bool))),
           "none": probe(hits(torch.zeros(n, 0, dtype=torch.long), torch.zeros(n, 0, dtype=torch.bool)))}
    per = {}
    for j in active:
        ids = torch.full((n, 1), j, dtype=torch.long)
        per[model.class_names[j]] = hits(ids, torch.ones_like(ids, dtype=torch.bool))
    best = max(per, key=lambda c: per[c].mean())
    out["best_single"] = {**probe(per[best]), "prompt": best, "per_prompt": {c: float(h.mean()) for c, h in per.items()}}
    out["n_samples"] = n
    return out


def _mia(logits: dict, labels: dict, forgotten: list[int], masked: bool, seed: int) -> tuple[dict, dict, dict]:
    """Population MIAs, the forget-set feature values (for the histograms) and the figures with intervals."""
    probs = {k: _probs(mask_classes(v, forgotten) if masked else v) for k, v in logits.items() if len(v)}
    labels = {k: labels[k].numpy() for k in probs}
    res = population_audit(probs, labels, seed=seed)
    feats = {k: membership_features(probs[k], labels[k]) for k in probs}
    scores = {name: {k: feats[name][k].tolist() for k in ("confidence", "m_entropy", "entropy")}
              for name in ("forget_train", "forget_test") if name in feats}
    figures = {"mia_efficacy": stats.mean_figure(res["svc_nonmember"]["confidence"], seed=seed),
               "mia_retain_auc_loss": stats.auc_figure(feats["retain_train"]["loss"], feats["test"]["loss"], seed=seed)}
    if "forget_test" in feats:
        for k in ("confidence", "loss", "entropy", "m_entropy"):
            figures[f"mia_auc_{k}"] = stats.auc_figure(feats["forget_train"][k], feats["forget_test"][k], seed=seed)
        figures["mia_tpr_1pct_confidence"] = stats.tpr_figure(feats["forget_train"]["confidence"],
                                                              feats["forget_test"]["confidence"], 0.01, seed=seed)
    return res, scores, figures


def worst_figure(outcomes: dict[str, np.ndarray | tuple], seed: int = 0) -> dict:
    """The worst forgotten class: the largest rate over classes, with the bootstrap interval of that maximum
    (:func:`stats.max_figure`: not the chosen class's own interval, which the choice biases upwards), its upper
    end covering every class's exact interval. ``outcomes``: per class, its 0/1 hits, or (hits, flagged)
    for Youden's J = recall - FPR."""
    names = list(outcomes)
    groups = [tuple(np.asarray(x, np.float64) for x in (o if isinstance(o, tuple) else (o,)))
              for o in outcomes.values()]
    if len(groups[0]) == 2:
        stat = lambda h, f: h.mean(1) - f.mean(1)  # noqa: E731
        exact = [stats.newcombe(int(h.sum()), len(h), int(f.sum()), len(f)) for h, f in groups]
    else:
        stat = lambda h: h.mean(1)  # noqa: E731
        exact = [stats.clopper_pearson(int(h.sum()), len(h)) for (h,) in groups]
    fig = stats.max_figure(stat, groups, seed=seed, exact=exact)
    fig["worst_class"] = names[fig.pop("worst_index")]
    return fig


def class_figures(logits: torch.Tensor, labels: torch.Tensor, classes: list[int], names: list[str], seed: int = 0) -> dict:
    """Forgotten classes: mean per-class accuracy, and the worst class (max top-1 accuracy, max argmin
    accuracy = how often the class is the least likely one), see :func:`worst_figure`."""
    present = [c for c in classes if (labels == c).any()]
    if not present:
        return {}
    top1 = {names[c]: (logits[labels == c].argmax(1) == c).float().numpy() for c in present}
    argmin = {names[c]: (logits[labels == c].argmin(1) == c).float().numpy() for c in present}
    mean = lambda *xs: np.mean([x.mean(1) for x in xs], axis=0)  # noqa: E731
    n = min(len(h) for h in top1.values())
    hits = list(top1.values())
    mean_fig = stats.figure(float(np.mean([h.mean() for h in hits])), stats.bootstrap_ci(mean, *hits, seed=seed), n,
                            stats.OVER_EXAMPLES)
    if len(hits) == 1:
        mean_fig = stats.mean_figure(hits[0])
    return {"forgotten_class_acc": mean_fig, "forgotten_class_acc_worst": worst_figure(top1, seed),
            "forgotten_class_argmin_acc_worst": worst_figure(argmin, seed)}


def audit_model(model, data: dict, forgotten_names: Sequence[str], ns: Sequence[int] = DEFAULT_NS, *,
                attacks: bool = True, key_steps: int = max(DEFAULT_KEY_BUDGETS), key_budgets: Sequence[int] | None = None,
                key_restarts: int = DEFAULT_KEY_RESTARTS, key_lr: float = 1e-2, relearn_steps: int = 50,
                relearn_lr: float = 1e-3, attack_seeds: int = DEFAULT_ATTACK_SEEDS, n_retain: int = 100,
                max_eval_retain: int = 300, eval_every: int = 10, threshold: float = 0.5, seed: int = 0,
                batch_size: int = 64, retained_probes: Sequence[str] = PROBES, progress: bool = True) -> dict:
    """All figures for one model. ``data``: train/test inputs+labels and the MIA subsample of retain-train.

    ``key_budgets``: the step budgets at which key recovery's J is read (default: those of
    :data:`DEFAULT_KEY_BUDGETS` below ``key_steps``, and ``key_steps``). ``attack_seeds``: relearning and
    linear-probe runs (seed, seed+1, ...), whose mean and t-interval are reported."""
    if attack_seeds < 1 or key_restarts < 1:
        raise ValueError(f"attack_seeds ({attack_seeds}) and key_restarts ({key_restarts}) must be >= 1")
    fidx = [model.class_index(c) for c in forgotten_names]
    xtr, ytr, xte, yte = data["train_inputs"], data["train_labels"], data["test_inputs"], data["test_labels"]
    res: dict = {"state": evaluate_state(model, xte, yte, batch_size), "forgotten_classes_audited": list(forgotten_names),
                 # every model is attacked with these, and the audit checks that they agree
                 "attack_settings": {"ns": list(ns), "attacks": attacks, "key_steps": key_steps,
                                     "key_budgets": None if key_budgets is None else list(key_budgets),
                                     "key_restarts": key_restarts, "key_lr": key_lr, "relearn_steps": relearn_steps,
                                     "relearn_lr": relearn_lr, "attack_seeds": attack_seeds, "n_retain": n_retain,
                                     "max_eval_retain": max_eval_retain, "eval_every": eval_every,
                                     "threshold": threshold, "seed": seed}}
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
    figures = {"retained_acc": stats.mean_figure((logits["test"].argmax(1) == labels["test"]).float().numpy(), seed=seed)}
    if "forget_test" in logits:
        figures["forgotten_acc"] = stats.mean_figure(
            (logits["forget_test"].argmax(1) == labels["forget_test"]).float().numpy(), seed=seed)
        figures.update(class_figures(logits["forget_test"], labels["forget_test"], fidx, model.class_names, seed))
    for probe in ("none", "best_single"):
        if probe in res.get("probes_forgotten", {}):
            figures[f"forgotten_acc_probe_{probe}"] = res["probes_forgotten"][probe]["figure"]
    if "all_wrong" in res.get("probes_retained", {}):
        pr = res["probes_retained"]
        figures["retained_acc_probe_all_wrong"] = stats.proportion_figure(pr["all_wrong"]["acc"], pr["n_samples"], seed)
    res["mia"], res["mia_scores"] = {}, {}
    for masked in (False, True):
        tag = "head_masked" if masked else "no_mask"
        res["mia"][tag], res["mia_scores"][tag], mia_figures = _mia(logits, labels, fidx, masked, seed)
        if not masked:
            figures.update(mia_figures)
    res["figures"] = figures
    if not attacks:
        return res
    # Residual-knowledge attacks: only meaningful once the class's prompt is gone.
    res["key_recovery"], res["relearn"], res["linear_probe"] = {}, {}, {}
    budgets = sorted({b for b in (key_budgets or DEFAULT_KEY_BUDGETS) if b <= key_steps} | {key_steps})
    adapt = "head+lora" if model.config.adapt in ("lora", "gated") else "head"
    # CLS features only for what the linear probe can use: max(ns) training samples per class.
    rng = np.random.default_rng(seed)
    ynp = ytr.numpy()
    probe_pool = np.concatenate([rng.choice(np.flatnonzero(ynp == c), min(max(ns), int((ynp == c).sum())), replace=False)
                                 for c in np.unique(ynp)])
    feats_tr = kr.cls_features(model, kr.take_rows(xtr, probe_pool), batch_size)
    feats_te = kr.cls_features(model, xte, batch_size)
    for n in ns:
        per_class_max = min(int((ytr == c).sum()) for c in fidx)
        if n > per_class_max:
            continue
        key_runs = {}
        log.info("[audit] n=%d: key recovery (%d restarts x %d steps), relearning and a linear probe (%d seeds) ...",
                 n, key_restarts, key_steps, attack_seeds)
        for c, name in zip(fidx, forgotten_names):  # each forgotten class attacked on its own
            ad = kr.build_attack_data(xtr, ytr, xte, yte, [c], n, n_retain=n_retain, max_eval_retain=max_eval_retain,
                                      seed=seed + n, exclude=[f for f in fidx if f != c])
            key_runs[name] = kr.key_recovery(model, name, ad, key_steps, key_lr, eval_every, batch_size, threshold,
                                             seed, progress, restarts=key_restarts, budgets=budgets)
        ad = kr.build_attack_data(xtr, ytr, xte, yte, fidx, n, n_retain=n_retain, max_eval_retain=max_eval_retain,
                                  seed=seed + n)
        runs = [kr.relearn_attack(model, ad, adapt, relearn_steps, relearn_lr, eval_every, batch_size, threshold,
                                  seed + i, progress) for i in range(attack_seeds)]
        res["relearn"][str(n)] = {**runs[0], "final_youden_seeds": [r["final_youden"] for r in runs]}
        probes = [kr.linear_probe(feats_tr, ynp[probe_pool], feats_te, yte.numpy(), fidx, n, seed + i)
                  for i in range(attack_seeds)]
        res["linear_probe"][str(n)] = {**probes[0], "seeds": probes}

        def at(steps, *keys):
            return {c: tuple(run["at_budget"][str(steps)][k] for k in keys) for c, run in key_runs.items()}

        for steps in budgets:  # the largest budget is key_recovery_j_n{n} itself
            if steps != key_steps:
                figures[f"key_recovery_j_s{steps}_n{n}"] = worst_figure(at(steps, "hits", "flagged"), seed)
        figures[f"key_recovery_j_n{n}"] = worst_figure(at(key_steps, "hits", "flagged"), seed)
        worst = figures[f"key_recovery_j_n{n}"]["worst_class"]
        res["key_recovery"][str(n)] = {**key_runs[worst], "worst_class": worst, "per_class": key_runs}
        figures[f"key_recovery_acc_n{n}"] = worst_figure({c: h[0] for c, h in at(key_steps, "hits").items()}, seed)
        figures[f"relearn_j_n{n}"] = stats.seeds_figure(res["relearn"][str(n)]["final_youden_seeds"])
        figures[f"linear_probe_acc_n{n}"] = stats.seeds_figure([p["forgotten_acc"] for p in probes])
        figures[f"linear_probe_fpr_n{n}"] = stats.seeds_figure([p["forgotten_fpr"] for p in probes])
    return res


def audit_pfm(model, train_inputs, train_labels, test_inputs, test_labels, forget: Sequence[str] | None = None,
              reference=None, ns: Sequence[int] = DEFAULT_NS, max_mia: int = 1000, progress: bool = True,
              **attack_kw) -> dict:
    """Audit a PFM. If ``model`` still has every prompt, ``forget`` names the classes to forget (in a copy);
    if it has already forgotten classes, those are audited and no "before" figures exist.

    ``reference``: one retrained reference or a list of them (different seeds, see
    :func:`promptforget.audit.reference.train_pfm_references`); every one is attacked with the same budget,
    and the "reference" figures are their combination (:func:`promptforget.audit.stats.combine_references`).
    ``attack_kw``: see :func:`audit_model`."""
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
        for c in forgotten:
            model.class_index(c)  # unknown names raise
        original = model
        audited = copy.deepcopy(model)
        audited.forget(forgotten)
    references = [] if reference is None else list(reference) if isinstance(reference, (list, tuple)) else [reference]
    for ref in references:
        if sorted(ref.forgotten_classes) != sorted(forgotten):
            raise ValueError(f"reference forgot {ref.forgotten_classes}, the audited model {forgotten}")
    for n in ns:
        smallest = min(int((train_labels == model.class_index(c)).sum()) for c in forgotten)
        if n < 1 or (run_attacks and n > smallest):
            raise ValueError(f"n={n}: the adversary's samples must be between 1 and {smallest}, the forgotten "
                             "class's training samples")
    data = {"train_inputs": train_inputs, "train_labels": train_labels, "test_inputs": test_inputs,
            "test_labels": test_labels, "max_mia": max_mia}
    out = {"class_names": model.class_names, "forgotten_classes": forgotten, "ns": list(ns),
           "n_train": len(train_labels), "n_test": len(test_labels), "reference_seeds": len(references), "models": {}}
    jobs = [("audited", audited, True)] + [("reference", ref, True) for ref in references]
    jobs += [("original", original, False)] if original is not None else []
    reference_runs = []
    for name, m, attacks in tqdm(jobs, desc="audit", disable=not progress, leave=False):
        res = audit_model(m, data, forgotten, ns, attacks=attacks and run_attacks, progress=progress, **attack_kw)
        if name == "reference":
            reference_runs.append(res)
        else:
            out["models"][name] = res
    settings = {name: res["attack_settings"] for name, res in out["models"].items() if name != "original"}
    settings.update({f"reference {k}": r["attack_settings"] for k, r in enumerate(reference_runs)})
    if len({json.dumps(v, sort_keys=True) for v in settings.values()}) > 1:
        raise RuntimeError(f"the audited model and the references were attacked with different settings: {settings}")
    if reference_runs:
        out["models"]["reference"] = combine_reference_runs(reference_runs, flatten, METRICS)
    return out


def pfm_ulira(config, train_inputs, train_labels, test_inputs, test_labels, targets: dict, forgotten: Sequence[str],
              n_shadow: int = DEFAULT_ULIRA_SHADOWS, seed: int = 0, progress: bool = True, encoder=None,
              log=print) -> dict:
    """U-LiRA (Hayes et al. 2024) on class forgetting, as published: can an attacker holding the unlearned
    model tell the forgotten class's training samples (members, unlearned) from its held-out samples
    (non-members), sample by sample, with per-sample Gaussians fitted on shadows?

    Population: the forgotten classes' training and test samples. Shadows (:func:`lira.run_ulira`) use the
    audited run's own recipe (``config``; nothing overridden but the seed, config.seed+100+i): the "in" ones
    are trained on the retained training samples plus a balanced random half of the population and then
    forget the class (prompt deleted: the method under test), the "out" ones retrained without the class
    (prompt deleted likewise). phi = scaled logit of the true class.

    ``targets``: {"audited": model, "reference": [models]}. Each is scored the same way (members = its
    forget-train samples, non-members = the forget-test samples): the references never saw either, so theirs
    are the retraining baseline (about 0.5), combined over the seeds. Intervals: bootstrap over shadow
    models and samples. Returns ``{"audited": result, "reference": result}`` (the latter with references).
    """
    from promptforget.backbones.encoder import load_encoder
    from promptforget.pfm.model import PFMModel
    from promptforget.pfm.train import fit

    refs = targets.get("reference")
    refs = [] if refs is None else list(refs) if isinstance(refs, (list, tuple)) else [refs]
    ytr, yte = torch.as_tensor(train_labels), torch.as_tensor(test_labels)
    fidx = torch.tensor([config.class_names.index(c) for c in forgotten])
    f_tr, f_te = torch.isin(ytr, fidx), torch.isin(yte, fidx)
    if not bool(f_tr.any()) or not bool(f_te.any()):
        raise ValueError("U-LiRA needs training and held-out samples of the forgotten class(es)")
    pop_x = {k: torch.cat([train_inputs[k][f_tr], test_inputs[k][f_te]]) for k in train_inputs}
    pop_y = torch.cat([ytr[f_tr], yte[f_te]])
    members, nonmembers = np.arange(int(f_tr.sum())), np.arange(int(f_tr.sum()), len(pop_y))
    retained_x, retained_y = {k: v[~f_tr] for k, v in train_inputs.items()}, ytr[~f_tr]
    pristine = encoder if encoder is not None else load_encoder(config.backbone)
    record = []

    def fit_unlearn(idx, is_in):
        cfg = config.from_dict({**config.to_dict(), "seed": config.seed + 100 + len(record)})
        m = PFMModel(cfg, encoder=copy.deepcopy(pristine))
        sel = torch.as_tensor(idx, dtype=torch.long)
        x = {k: torch.cat([retained_x[k], pop_x[k][sel]]) for k in retained_x}
        y = torch.cat([retained_y, pop_y[sel]])
        side = f"in: trained with {len(sel)}" if is_in else "out: retrained without"
        log(f"[audit] U-LiRA shadow {len(record) + 1}/{n_shadow} ({side} samples of {', '.join(forgotten)}, "
            "then forgotten)")
        fit(m, x, y, progress=False)
        m.forget(list(forgotten))
        record.append({"in": is_in, "seed": cfg.seed, "class_samples_trained": int(torch.isin(y, fidx).sum()),
                       "forgotten": list(m.forgotten_classes),
                       "recipe": {k: v for k, v in m.config.to_dict().items() if k != "seed"}})
        return m

    def score(m):
        return scaled_logit(batched_logits(m, pop_x).numpy(), pop_y.numpy())

    shadows = run_ulira(fit_unlearn, score, len(pop_y), n_shadow, seed, progress)
    recipes = {json.dumps(s.pop("recipe"), sort_keys=True) for s in record}
    if len(recipes) != 1 or json.loads(recipes.pop()) != {k: v for k, v in config.to_dict().items() if k != "seed"}:
        raise RuntimeError("U-LiRA's shadows must be trained with the audited run's own recipe")
    common = {"n_shadow": n_shadow, "shadows": record, "n_member": len(members), "n_nonmember": len(nonmembers),
              "recipe": {k: v for k, v in config.to_dict().items() if k != "seed"}}
    out = {"audited": {**ulira_attack(score(targets["audited"]), shadows, members, nonmembers, seed=seed), **common}}
    if refs:
        per_ref = [ulira_attack(score(r), shadows, members, nonmembers, seed=seed) for r in refs]
        out["reference"] = {**{key: stats.combine_references([f[key] for f in per_ref]) for key in ulira_keys()},
                            "roc": per_ref[0]["roc"], **common}
    return out


def ulira_keys() -> list[str]:
    return ["auc"] + [f"tpr_at_{fpr:g}_fpr" for fpr in ULIRA_FPRS]


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
    "forgotten_class_acc_worst": Metric("the worst forgotten class: the highest per-class test accuracy among the "
                                        "forgotten classes, full prompt bank (bootstrap over each class's samples)",
                                        "higher = a class still answered", "reference value (about 0)", 0.02,
                                        primary=True),
    "forgotten_class_argmin_acc_worst": Metric("the highest share, over forgotten classes, of a class's test samples "
                                               "whose class is the least likely one (an attacker reads the argmin)",
                                               "higher = the class is still recognised (pushed to the bottom)",
                                               "reference value", 0.05, primary=True),
    "forgotten_acc_probe_none": Metric("accuracy on forgotten-class samples with no prompt at all",
                                       "higher = residual knowledge", "reference value", 0.05),
    "forgotten_acc_probe_best_single": Metric("accuracy on forgotten-class samples with the single remaining prompt "
                                              "that maximises it (chosen with the labels: an upper bound)",
                                              "higher = residual knowledge", "reference value", 0.05),
    "retained_acc_probe_all_wrong": Metric("accuracy on retained-class samples given every prompt except their own "
                                           "(how much a retained class's answer is bound to its own key: context, "
                                           "not about the forgotten data)",
                                           "higher = knowledge not bound to the own key", "chance (1/C)", 0.05,
                                           kind="context"),
    "mia_efficacy": Metric("SalUn MIA-efficacy: share of the forget-train set that an RBF-SVC on the confidence p_y, "
                           "fitted on retain-train (members) vs test (non-members), calls non-member",
                           "higher = forget set looks unseen", "reference value", 0.05, direction=-1,
                           saturation=1.0, primary=True),
    "mia_auc_confidence": Metric("ROC-AUC of the confidence p_y, forget-train (members) vs forget-test",
                                 "0.5 = no signal; >0.5 = training samples of the forgotten class still recognisable",
                                 "reference value (about 0.5)", 0.05),
    "mia_auc_loss": Metric("ROC-AUC of -loss, forget-train vs forget-test", "as above", "reference value (about 0.5)", 0.05),
    "mia_auc_entropy": Metric("ROC-AUC of -entropy of the output, forget-train vs forget-test", "as above",
                              "reference value (about 0.5)", 0.05),
    "mia_auc_m_entropy": Metric("ROC-AUC of -modified entropy (Song & Mittal 2021), forget-train vs forget-test",
                                "as above", "reference value (about 0.5)", 0.05),
    "mia_tpr_1pct_confidence": Metric("TPR at 1% FPR of the confidence p_y, forget-train vs forget-test (the "
                                      "low-FPR regime; an upper bound below 100 forget-test samples)",
                                      "higher = some training samples of the forgotten class surely recognised",
                                      "reference value (about 0.01)", 0.02, logit_tol=math.log(2)),
    "mia_retain_auc_loss": Metric("ROC-AUC of -loss, retain-train vs test: the generalisation gap on the KEPT "
                                  "classes (utility, not residual knowledge of the forgotten ones)",
                                  "0.5 = no overfitting; lower = better", "reference value", 0.05, direction=-1,
                                  kind="context"),
    "key_recovery_j_n{n}": Metric("Youden's J (recall of the forgotten class minus the share of retained samples "
                                  "predicted as it), the largest over the forgotten classes (interval: bootstrap of "
                                  "that maximum), after optimising ONE fresh prompt token (all else frozen) on n "
                                  "labelled forgotten-class samples + a retained-class pool",
                                  "higher = the shared weights still encode the class (residual knowledge); 0 = no "
                                  "better than a constant answer; the attacker's best of its restarts (lowest loss on "
                                  "its own set), the worst forgotten class, at the largest step budget, bootstrap "
                                  "over held-out samples", "reference value", 0.05, primary=True),
    "key_recovery_j_s{s}_n{n}": Metric("Youden's J of key recovery (see key_recovery_j) after steps optimiser "
                                       "steps, at the budgets below the largest, on n labelled forgotten-class samples", "higher = residual knowledge",
                                       "reference value", 0.05),
    "key_recovery_acc_n{n}": Metric("forgotten-class test accuracy (recall) after key recovery (see key_recovery_j)",
                                    "higher = more recovered, but a key that floods every input also scores high",
                                    "reference value", 0.05),
    "key_recovery_steps_n{n}": Metric("optimiser steps until key recovery's Youden's J reaches the threshold "
                                      "(None = not within the budget)", "fewer = easier to recover",
                                      "reference value", 10, direction=-1, none_is_infinite=True),
    "relearn_j_n{n}": Metric("Youden's J of the forgotten class after a few fine-tuning steps of head (+LoRA) on the "
                             "adversary's set, no prompt for the class; mean over seeds (t-interval)",
                             "higher = easier relearning", "reference value", 0.05, primary=True),
    "linear_probe_acc_n{n}": Metric("forgotten-class test accuracy of a logistic-regression probe on the frozen CLS "
                                    "features, n labelled samples per class; mean over seeds (t-interval)",
                                    "higher = class separable in the features", "reference value", 0.05),
    "linear_probe_fpr_n{n}": Metric("share of retained-class test samples the linear probe (see linear_probe_acc) "
                                    "calls a forgotten class, n samples per class; mean over seeds",
                                    "read beside the recall: high recall with high FPR is no recovery",
                                    "reference value", 0.05, kind="context"),
    "ulira_auc": Metric("U-LiRA (online, Hayes et al. 2024) ROC-AUC of the per-sample likelihood ratio on the model "
                        "itself: the forgotten class's training samples (members, unlearned) vs its held-out samples "
                        "(non-members); Gaussians from shadows with the run's recipe, half trained with half the "
                        "class's samples then forgotten, half retrained without it; interval over shadow models and "
                        "samples. Reference column: the same on each retrained reference", "0.5 = the unlearned "
                        "samples look like held-out ones", "reference value (about 0.5)", 0.05),
    "ulira_tpr_1pct_fpr": Metric("U-LiRA TPR at 1% FPR (see ulira_auc)", "higher = some unlearned samples surely "
                                 "recognised", "reference value (about 0.01)", 0.02, primary=True,
                                 logit_tol=math.log(2)),
    "ulira_tpr_0.1pct_fpr": Metric("U-LiRA TPR at 0.1% FPR (see ulira_auc; unresolved below 1000 held-out "
                                   "samples)", "as above", "reference value (about 0.001)", 0.02,
                                   logit_tol=math.log(2)),
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
    ul = model_result.get("ulira") or {}
    for key, mid in (("auc", "ulira_auc"), ("tpr_at_0.01_fpr", "ulira_tpr_1pct_fpr"),
                     ("tpr_at_0.001_fpr", "ulira_tpr_0.1pct_fpr")):
        if key in ul:
            r[mid] = ul[key]
    # the figures with their intervals, where the audit computed them
    r.update(model_result.get("figures") or {})
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

    have = [m for m in ("audited", "reference") if "roc" in models.get(m, {}).get("ulira", {})]
    if have:  # the low-FPR regime is what matters (Carlini et al. 2022): log-log axes
        fig, ax = plt.subplots(figsize=(4.5, 4.2))
        u = models[have[0]]["ulira"]
        # below one held-out sample's worth of FPR nothing is measured: the curve stops at that floor
        floor = 1 / max(int(u.get("n_nonmember") or 1), 1)
        labels = {"audited": "audited", "reference": f"reference, 1st of {audit.get('reference_seeds', 1)} seeds"}
        for m in have:
            roc = models[m]["ulira"]["roc"]
            auc = models[m]["ulira"]["auc"]["value"]
            ax.plot(np.maximum(roc["fpr"], floor / 2), np.maximum(roc["tpr"], 1e-4), color=style[m][0],
                    linestyle=style[m][1], label=f"{labels[m]} (AUC {auc:.2f})")
        ax.plot([floor / 2, 1], [floor / 2, 1], color="grey", lw=0.8, ls=":")
        ax.axvline(floor, color="grey", lw=0.8, ls="--")
        ax.text(floor, 0.9, " 1 / held-out", fontsize=7, color="grey", transform=ax.get_xaxis_transform())
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("false-positive rate")
        ax.set_ylabel("true-positive rate")
        ax.set_title(f"U-LiRA ROC: {u.get('n_member', '?')} unlearned training vs {u.get('n_nonmember', '?')} held-out "
                     "samples", fontsize=8)
        ax.legend(fontsize=7)
        fig.tight_layout()
        paths["ulira_roc"] = str(out / "ulira_roc.png")
        fig.savefig(paths["ulira_roc"], dpi=120)
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
