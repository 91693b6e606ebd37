"""The PFM audit: every attack on the audited (forgotten) model, on the retrained reference, and the
headline figures of the original model before the forget, in one JSON-ready dict.

Sets (from the run's own split): retain-train / forget-train = training samples of retained /
forgotten classes; test / forget-test = held-out samples of retained / forgotten classes.
"""

from __future__ import annotations

import copy
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from promptforget.audit import key_recovery as kr
from promptforget.audit.lira import lira_attack, run_lira, scaled_logit
from promptforget.audit.mia import membership_features, population_audit
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
        "retain_train": (kr._take(xtr, rtr), ytr[rtr]),
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
    feats_tr = kr.cls_features(model, kr._take(xtr, probe_pool), batch_size)
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
    xp, yp = kr._take(x, pool), y[pool]
    fidx = [cfg.class_names.index(c) for c in forgotten]
    template = PFMModel(cfg)  # built once (backbone load), deep-copied per shadow

    def fit_shadow(idx):
        m = copy.deepcopy(template)
        fit(m, kr._take(xp, idx), yp[idx], progress=False)
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
