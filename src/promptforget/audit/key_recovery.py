"""Residual-knowledge extraction after a PFM forget: what an adversary with a few labelled samples of a
forgotten class can get back. Each attack is run on the audited model AND on the retrained reference
(same recipe, never saw the class); the gap between the two is the residual knowledge.

key recovery   A fresh prompt token is inserted under the forgotten class's key (so the class index
               works again) and only that token is optimised -- backbone, LoRA, head and the other
               prompts frozen -- with cross-entropy on the adversary's set (n samples of the forgotten
               class plus a fixed pool of retained-class samples, so the key must be discriminative,
               not "always say c"). Metric: accuracy on held-out samples of the forgotten class with the
               full prompt bank (recall), the share of retained samples now predicted as the class (FPR), and
               Youden's J = recall - FPR, the headline: a key that just makes the model say "c" for
               everything scores 0, a perfect recovery 1. The attacker makes ``restarts`` tries (fresh
               initialisations and batch orders) and keeps the one with the lowest loss on its own labelled
               set (it holds no other labels). J is read at each budget of a sweep (e.g. 30/100/300 steps:
               one run passes through every smaller budget), with a bootstrap interval over the held-out
               samples. Several forgotten classes are attacked one by one (each against the retained classes).
relearning     No prompt; a few optimiser steps on the head (and LoRA) with the same data.
linear probe   Logistic regression on the CLS features (full remaining prompt bank, frozen model),
               n labelled samples per class; accuracy on held-out samples of the forgotten class (recall)
               beside the share of retained samples it calls a forgotten class (false-positive rate).

Sign: higher recovered accuracy / fewer steps = more residual knowledge. Ideal: equal to the reference.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from promptforget.audit.stats import N_RESAMPLES, mean_figure, youden_figure
from promptforget.pfm.evaluate import batched_logits
from promptforget.store.layout import class_key
from promptforget.pfm.train import trim_padding


@dataclass
class AttackData:
    """The adversary's labelled set and the held-out evaluation sets (pre-encoded inputs)."""

    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor
    eval_forget_inputs: dict[str, torch.Tensor]
    eval_forget_labels: torch.Tensor
    eval_retain_inputs: dict[str, torch.Tensor]
    eval_retain_labels: torch.Tensor


def take_rows(inputs: dict[str, torch.Tensor], idx) -> dict[str, torch.Tensor]:
    """The rows ``idx`` of every tensor of pre-encoded inputs."""
    idx = torch.as_tensor(np.asarray(idx), dtype=torch.long)
    return {k: v[idx] for k, v in inputs.items()}


def attack_indices(labels, forgotten: list[int], n: int, n_retain: int, seed: int = 0, exclude=()) -> np.ndarray:
    """n samples of the forgotten classes (spread over them) + n_retain samples of the other classes
    (``exclude``: classes in neither group, e.g. the other forgotten classes when one is attacked)."""
    y = np.asarray(labels)
    rng = np.random.default_rng(seed)
    is_f = np.isin(y, forgotten)
    f_idx, r_idx = np.flatnonzero(is_f), np.flatnonzero(~is_f & ~np.isin(y, list(exclude)))
    if n < 1 or n > len(f_idx):
        raise ValueError(f"n={n}: the adversary's pool has {len(f_idx)} samples of the forgotten class(es)")
    pick = rng.choice(f_idx, n, replace=False)
    rest = rng.choice(r_idx, min(n_retain, len(r_idx)), replace=False) if n_retain > 0 else np.array([], dtype=int)
    return np.concatenate([pick, rest]).astype(int)


def build_attack_data(train_inputs, train_labels, test_inputs, test_labels, forgotten: list[int], n: int,
                      n_retain: int = 100, max_eval_retain: int = 300, seed: int = 0, exclude=()) -> AttackData:
    train_labels, test_labels = torch.as_tensor(train_labels), torch.as_tensor(test_labels)
    idx = attack_indices(train_labels.numpy(), forgotten, n, n_retain, seed, exclude)
    is_f = torch.isin(test_labels, torch.tensor(forgotten))
    f_idx = torch.nonzero(is_f).squeeze(1)
    r_idx = torch.nonzero(~is_f & ~torch.isin(test_labels, torch.tensor(list(exclude), dtype=torch.long))).squeeze(1)
    if len(f_idx) == 0:
        raise ValueError("the evaluation split has no samples of the forgotten class(es)")
    r_idx = r_idx[torch.randperm(len(r_idx), generator=torch.Generator().manual_seed(seed))[:max_eval_retain]]
    return AttackData(
        take_rows(train_inputs, idx), train_labels[idx],
        take_rows(test_inputs, f_idx), test_labels[f_idx],
        take_rows(test_inputs, r_idx), test_labels[r_idx],
    )


def with_fresh_prompt(model, class_name: str, seed: int = 0, init_scale: float = 1.0):
    """A deep copy of ``model`` where ``class_name`` has a new random prompt, the ONLY trainable tensor."""
    if class_name in model.active_classes:
        raise ValueError(f"class {class_name!r} still has its prompt; key recovery is for forgotten classes")
    model.class_index(class_name)  # unknown names raise
    m = copy.deepcopy(model)
    m.requires_grad_(False)
    t, d = m.config.prompt_tokens, m.encoder.hidden_size
    ref = next(iter(m.prompts.values()))
    fresh = torch.randn(t, d, generator=torch.Generator().manual_seed(seed)) * init_scale
    new = {k: v for k, v in m.prompts.items()}
    new[class_key(class_name)] = torch.nn.Parameter(fresh.to(ref.device, ref.dtype))
    m.prompts = torch.nn.ParameterDict(new)  # forward() looks prompts up by class, order is irrelevant
    m.prompts.requires_grad_(False)
    m.prompts[class_key(class_name)].requires_grad_(True)
    return m


def recovery_hits(pred_forget, forget_labels, pred_retain) -> tuple[np.ndarray, np.ndarray]:
    """Per-example 0/1 arrays: forgotten-class samples answered with their class (recall), and retained-class
    samples answered with a forgotten class (false positives)."""
    pf, yf, pr = (torch.as_tensor(t) for t in (pred_forget, forget_labels, pred_retain))
    hits = (pf == yf).float().numpy()
    flagged = torch.isin(pr, torch.unique(yf)).float().numpy()
    return hits, flagged


def recovery_scores(pred_forget, forget_labels, pred_retain, retain_labels) -> dict:
    """forgotten_acc (recall of the forgotten class), retained_acc, forgotten_fpr (retained samples
    predicted as a forgotten class) and youden = forgotten_acc - forgotten_fpr: 0 for a key that makes
    the model answer the class for everything (or nothing), 1 for a perfect recovery."""
    hits, flagged = recovery_hits(pred_forget, forget_labels, pred_retain)
    fa = float(hits.mean())
    if len(flagged):
        ra = float((torch.as_tensor(pred_retain) == torch.as_tensor(retain_labels)).float().mean())
        fpr = float(flagged.mean())
    else:
        ra = fpr = float("nan")
    return {"forgotten_acc": fa, "retained_acc": ra, "forgotten_fpr": fpr, "youden": fa - fpr}


def _predictions(model, data: AttackData, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    lf = batched_logits(model, data.eval_forget_inputs, batch_size=batch_size).argmax(1)
    lr_ = batched_logits(model, data.eval_retain_inputs, batch_size=batch_size).argmax(1)
    return lf, lr_


def _accs(model, data: AttackData, batch_size: int) -> dict:
    lf, lr_ = _predictions(model, data, batch_size)
    return recovery_scores(lf, data.eval_forget_labels, lr_, data.eval_retain_labels)


def _budget_figures(model, data: AttackData, batch_size: int, seed: int, n_resamples: int = N_RESAMPLES) -> dict:
    """Youden's J and recall with bootstrap intervals over the held-out samples."""
    lf, lr_ = _predictions(model, data, batch_size)
    hits, flagged = recovery_hits(lf, data.eval_forget_labels, lr_)
    return {"youden": youden_figure(hits, flagged, n_resamples, seed),
            "forgotten_acc": mean_figure(hits, n_resamples, seed),
            "forgotten_fpr": mean_figure(flagged, n_resamples, seed) if len(flagged) else None,
            # the per-sample outcomes, for the interval of the maximum over classes (the worst class)
            "hits": hits.astype(int).tolist(), "flagged": flagged.astype(int).tolist()}


@torch.no_grad()
def attacker_loss(model, data: AttackData, batch_size: int = 64) -> float:
    """Cross-entropy on the adversary's own labelled set: all it can rank its restarts by."""
    logits = batched_logits(model, data.inputs, batch_size=batch_size)
    return float(F.cross_entropy(logits, data.labels))


def _optimise(model, params, data: AttackData, steps: int, lr: float, eval_every: int, batch_size: int,
              seed: int, desc: str, progress: bool, budgets=(), on_budget=None) -> list[dict]:
    opt = torch.optim.Adam(params, lr=lr)
    g = torch.Generator().manual_seed(seed)
    n = len(data.labels)
    device = next(model.parameters()).device
    curve = []
    curve.append({"step": 0, **_accs(model, data, batch_size), "loss": None})
    model.eval()  # the adversary attacks the deployed function: no dropout, deterministic
    for step in tqdm(range(1, steps + 1), desc=desc, disable=not progress, leave=False):
        idx = torch.randperm(n, generator=g)[:batch_size]
        x = trim_padding({k: v[idx].to(device) for k, v in data.inputs.items()})
        loss = F.cross_entropy(model(x), data.labels[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % eval_every == 0 or step == steps or step in budgets:
            curve.append({"step": step, **_accs(model, data, batch_size), "loss": float(loss.item())})
        if on_budget is not None and step in budgets:
            on_budget(step, model)
    return curve


def steps_to(curve: list[dict], threshold: float, key: str = "youden") -> int | None:
    """First evaluated step where ``key`` (default: Youden's J of the forgotten class) reaches ``threshold``."""
    for row in curve:
        if row[key] >= threshold:
            return row["step"]
    return None


def _summary(curve: list[dict], threshold: float) -> dict:
    last = curve[-1]
    return {
        "final_forgotten_acc": last["forgotten_acc"],
        "final_retained_acc": last["retained_acc"],
        "final_forgotten_fpr": last["forgotten_fpr"],
        "final_youden": last["youden"],
        "best_youden": max(r["youden"] for r in curve),
        "steps_to_threshold": steps_to(curve, threshold),
        "threshold": threshold,
        "threshold_on": "youden",
        "curve": curve,
    }


def key_recovery(model, class_name: str, data: AttackData, steps: int = 100, lr: float = 1e-2,
                 eval_every: int = 10, batch_size: int = 64, threshold: float = 0.5, seed: int = 0,
                 progress: bool = True, restarts: int = 1, budgets=(), n_resamples: int = N_RESAMPLES) -> dict:
    """Optimise a fresh prompt for a forgotten class; everything else frozen. ``restarts`` tries, the attacker
    keeps the one with the lowest loss on its own set. Returns that try's curve + summary, and per budget
    (``budgets``, each <= ``steps``; ``steps`` itself always) J and recall with intervals."""
    if restarts < 1:
        raise ValueError(f"restarts must be >= 1, got {restarts}")
    budgets = sorted({int(b) for b in budgets if 0 < b <= steps} | {steps})
    best, tries = None, []
    for r in range(restarts):
        try_seed = seed + 1000 * r
        m = with_fresh_prompt(model, class_name, seed=try_seed)
        p = m.prompts[class_key(class_name)]
        at_budget: dict[str, dict] = {}

        def on_budget(step, mod, at_budget=at_budget, try_seed=try_seed):
            at_budget[str(step)] = _budget_figures(mod, data, batch_size, try_seed, n_resamples)

        curve = _optimise(m, [p], data, steps, lr, eval_every, batch_size, try_seed,
                          f"key recovery ({class_name}, try {r + 1}/{restarts})", progress, budgets, on_budget)
        own = attacker_loss(m, data, batch_size)
        tries.append({"seed": try_seed, "attacker_loss": own, "final_youden": curve[-1]["youden"]})
        if best is None or own < best[0]:
            best = (own, curve, at_budget)
    _, curve, at_budget = best
    return {**_summary(curve, threshold), "at_budget": at_budget, "restarts": tries, "class": class_name}


def relearn_attack(model, data: AttackData, train: str = "head+lora", steps: int = 50, lr: float = 1e-3,
                   eval_every: int = 10, batch_size: int = 64, threshold: float = 0.5, seed: int = 0,
                   progress: bool = True) -> dict:
    """Fine-tune the head (``train="head"``) or head + LoRA (``"head+lora"``: the shared LoRA, or with
    per-class adapters the remaining classes' ones) on the adversary's set."""
    if train not in ("head", "head+lora"):
        raise ValueError(f"train must be 'head' or 'head+lora', got {train!r}")
    m = copy.deepcopy(model)
    m.requires_grad_(False)
    params = list(m.head.parameters())
    if train == "head+lora":
        params += m.adapter_parameters()
    for p in params:
        p.requires_grad_(True)
    curve = _optimise(m, params, data, steps, lr, eval_every, batch_size, seed, f"relearn ({train})", progress)
    return _summary(curve, threshold)


@torch.no_grad()
def cls_features(model, inputs: dict[str, torch.Tensor], batch_size: int = 64) -> np.ndarray:
    """The CLS hidden state the head reads (full remaining prompt bank), captured with a hook."""
    feats: list[torch.Tensor] = []
    h = model.head.register_forward_hook(lambda mod, inp, out: feats.append(inp[0].detach().float().cpu()))
    try:
        batched_logits(model, inputs, batch_size=batch_size)
    finally:
        h.remove()
    return torch.cat(feats).numpy() if feats else np.zeros((0, model.encoder.hidden_size), np.float32)


def linear_probe(train_feats, train_labels, test_feats, test_labels, forgotten: list[int], n_per_class: int,
                 seed: int = 0) -> dict:
    """Multinomial logistic regression on n samples per class; accuracy on forgotten / retained test samples."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    ytr, yte = np.asarray(train_labels), np.asarray(test_labels)
    rng = np.random.default_rng(seed)
    idx = np.concatenate([rng.choice(np.flatnonzero(ytr == c), min(n_per_class, int((ytr == c).sum())), replace=False)
                          for c in np.unique(ytr)])
    scaler = StandardScaler().fit(train_feats[idx])
    clf = LogisticRegression(max_iter=2000, C=1.0).fit(scaler.transform(train_feats[idx]), ytr[idx])
    pred = clf.predict(scaler.transform(test_feats))
    f = np.isin(yte, forgotten)
    return {
        "n_per_class": int(n_per_class),
        "forgotten_acc": float((pred[f] == yte[f]).mean()) if f.any() else float("nan"),
        "retained_acc": float((pred[~f] == yte[~f]).mean()) if (~f).any() else float("nan"),
        # retained samples the probe calls a forgotten class: a probe that says "forgotten" for everything
        # has full recall and is worthless
        "forgotten_fpr": float(np.isin(pred[~f], forgotten).mean()) if (~f).any() else float("nan"),
    }
