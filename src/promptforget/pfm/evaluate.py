"""PFM evaluation: the paper's forgetting protocol and the probe modes.

Protocol: for k in {1, floor(C/2), C-1}, for every combination of k classes (at most
``max_combinations``, sampled with a seed when there are more), remove those prompts from the bank
(without touching the model) and measure accuracy on test samples of retained classes and of the
removed classes. Reported as mean and std over combinations, with and without masking the removed
classes in the head. Also the *argmin* accuracy on the removed classes (how often a removed sample's
class is the least likely one): a model that answers a forgotten class below chance by pushing it to the
bottom still knows it, and an attacker reads the argmin. Both at chance (1/C) is what forgetting looks like.
The mean hides a class that is still answered: each combination also reports its worst removed class (max
per-class accuracy and max per-class argmin accuracy), and each k the worst over all its combinations, with a
95% Wilson interval over that class's samples.

Probes (what a model reveals with other prompt sets), on samples of the classes given:
  full          every active prompt (normal inference)
  own           only the sample's own prompt
  all_wrong     every active prompt except the sample's own
  none          no prompt at all
  random_wrong  one random active prompt that is not the sample's own
  best_single   the single prompt j used for all samples, best accuracy over j (j reported)
Each probe but best_single also reports argmin_acc (the sample's class is the least likely one).

The three share their passes (:class:`SharedPasses`): a prompt set that every sample sees is run once
per evaluation. The full bank serves the state and the full probe; the bank without class c serves the
protocol's k=1 combination (c,) and the all_wrong probe of c's samples; one prompt j serves the k=C-1
combination that leaves j, best_single's j, and the own and random_wrong probes of the samples that
meet j. With prefix-style prompts the bank's keys/values are projected once per evaluation too.
"""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import torch
from tqdm.auto import tqdm

from promptforget.pfm import prefix
from promptforget.pfm.model import mask_classes
from promptforget.pfm.train import trim_padding

PROBES = ("full", "own", "all_wrong", "none", "random_wrong", "best_single")


@torch.no_grad()
def batched_logits(model, inputs, prompt_ids=None, prompt_mask=None, batch_size: int = 64, mask_forgotten=False):
    """Logits [N, C] for pre-encoded inputs, with per-sample prompt sets (or the full bank if None)."""
    model.eval()
    n = len(next(iter(inputs.values())))
    device = next(model.parameters()).device
    out = []
    for i in range(0, n, batch_size):
        sl = slice(i, i + batch_size)
        x = trim_padding({k: v[sl].to(device) for k, v in inputs.items()})
        ids = None if prompt_ids is None else prompt_ids[sl]
        m = None if prompt_mask is None else prompt_mask[sl]
        out.append(model(x, prompt_ids=ids, prompt_mask=m, mask_forgotten=mask_forgotten).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, model.num_classes)


class SharedPasses:
    """Logits [N, C] of every sample of ``inputs`` when all of them see one prompt set, each set run
    once: asking again returns the stored logits (up to ``max_bytes`` of them; past that, sets run again)."""

    def __init__(self, model, inputs, batch_size: int = 64, max_bytes: int = 256 * 2**20):
        self.model, self.inputs, self.batch_size, self.max_bytes = model, inputs, batch_size, max_bytes
        self.n = len(next(iter(inputs.values())))
        self.logits: dict[tuple[int, ...], torch.Tensor] = {}

    def __call__(self, prompt_set) -> torch.Tensor:
        key = tuple(sorted(int(i) for i in prompt_set))
        if key not in self.logits:
            ids = torch.tensor(key, dtype=torch.long).reshape(1, -1).expand(self.n, -1)
            with prefix.reuse_bank_projections():
                logits = batched_logits(self.model, self.inputs, ids, torch.ones_like(ids, dtype=torch.bool), self.batch_size)
            if sum(x.nbytes for x in self.logits.values()) + logits.nbytes > self.max_bytes:
                return logits
            self.logits[key] = logits
        return self.logits[key]

    def has(self, prompt_sets) -> bool:
        return all(tuple(sorted(int(i) for i in s)) in self.logits for s in prompt_sets)

    def per_sample(self, sets: list[tuple[int, ...]], which: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Row ``rows[i]`` of the logits of ``sets[which[i]]``: each sample under its own set."""
        out = torch.empty(len(rows), self.model.num_classes)
        for j, s in enumerate(sets):
            hit = which == j
            if bool(hit.any()):
                out[hit] = self(s)[rows[hit]]
        return out


def _acc(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels).float().mean()) if len(labels) else float("nan")


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> list[float] | None:
    """95% Wilson score interval of a proportion (sound at 0 and 1, unlike the normal approximation)."""
    if n == 0:
        return None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def _worst_class(logits: torch.Tensor, labels: torch.Tensor, classes, class_names: list[str]) -> dict:
    """The removed class answered most often (top-1) and the one most often at the bottom (argmin)."""
    out = {}
    for key, pred in (("acc", logits.argmax(1)), ("argmin_acc", logits.argmin(1))):
        per = {c: (int((pred[labels == c] == c).sum()), int((labels == c).sum())) for c in classes if (labels == c).any()}
        if not per:
            continue
        c = max(per, key=lambda i: per[i][0] / per[i][1])
        out[key] = {"class": class_names[c], "value": per[c][0] / per[c][1], "n": per[c][1],
                    "ci95": wilson_interval(*per[c])}
    return out


def _per_class(pred: torch.Tensor, labels: torch.Tensor, class_names: list[str]) -> dict[str, float]:
    return {
        c: float((pred[labels == i] == i).float().mean()) if (labels == i).any() else float("nan")
        for i, c in enumerate(class_names)
    }


def evaluate_state(model, inputs, labels, batch_size: int = 64, passes: SharedPasses | None = None) -> dict:
    """Accuracy of the model as it is now: on samples of active classes vs forgotten classes,
    without and with the forgotten classes masked in the head (one forward pass for both)."""
    labels = torch.as_tensor(labels)
    passes = passes or SharedPasses(model, inputs, batch_size)
    active = [model.class_index(c) for c in model.active_classes]
    is_active = torch.isin(labels, torch.tensor(active))
    logits = passes(() if model.config.objective == "plain" else active)  # what a default forward sees
    masked = mask_classes(logits, [model.class_index(c) for c in model.forgotten_classes])
    res = {"active_classes": model.active_classes, "forgotten_classes": model.forgotten_classes}
    for tag, lg in (("no_mask", logits), ("head_masked", masked)):
        res[tag] = {
            "overall_acc": _acc(lg, labels),
            "retained_acc": _acc(lg[is_active], labels[is_active]),
            "forgotten_acc": _acc(lg[~is_active], labels[~is_active]),
        }
    # How often a forgotten sample's own class is the least likely answer: near 1 is recognition, not
    # forgetting (chance is 1/C). Only without the head mask: masked, a forgotten class is last by construction.
    res["no_mask"]["forgotten_argmin_acc"] = _acc(-logits[~is_active], labels[~is_active])
    res["per_class_acc"] = _per_class(logits.argmax(1), labels, model.class_names)
    res["class_counts"] = {c: int((labels == i).sum()) for i, c in enumerate(model.class_names)}
    res["chance_acc"] = 1.0 / model.num_classes
    forgotten = [model.class_index(c) for c in model.forgotten_classes]
    res["worst_forgotten_class"] = _worst_class(logits, labels, forgotten, model.class_names) if forgotten else {}
    return res


def forgetting_combinations(classes: list[int], k: int, max_combinations: int, seed: int) -> list[tuple[int, ...]]:
    """All k-subsets of ``classes``, or ``max_combinations`` distinct ones drawn with ``seed``."""
    total = math.comb(len(classes), k)
    if total <= max_combinations:
        return list(itertools.combinations(classes, k))
    rng = random.Random(seed)
    seen: set[tuple[int, ...]] = set()
    while len(seen) < max_combinations:
        seen.add(tuple(sorted(rng.sample(classes, k))))
    return sorted(seen)


def default_ks(num_active: int) -> list[int]:
    return sorted({k for k in (1, num_active // 2, num_active - 1) if 1 <= k <= num_active - 1})


def evaluate_protocol(
    model, inputs, labels, ks=None, max_combinations: int = 50, seed: int = 42, batch_size: int = 64, progress=True,
    passes: SharedPasses | None = None,
) -> dict:
    """The paper's protocol, simulated on the active prompt bank (the model itself is not modified)."""
    labels = torch.as_tensor(labels)
    passes = passes or SharedPasses(model, inputs, batch_size)
    active = [model.class_index(c) for c in model.active_classes]
    ks = default_ks(len(active)) if ks is None else list(ks)
    for k in ks:
        if not 1 <= k <= len(active) - 1:
            raise ValueError(f"k={k} out of range: between 1 and {len(active) - 1} of {len(active)} active classes")
    results = {}
    jobs = [(k, combo) for k in ks for combo in forgetting_combinations(active, k, max_combinations, seed + k)]
    rows: dict[int, list[dict]] = {k: [] for k in ks}
    for k, combo in tqdm(jobs, desc="forget combinations", disable=not progress, leave=False):
        logits = passes([a for a in active if a not in combo])
        forgot = torch.isin(labels, torch.tensor(combo))
        kept = torch.isin(labels, torch.tensor([a for a in active if a not in combo]))
        masked = mask_classes(logits, combo)
        worst = _worst_class(logits, labels, combo, model.class_names)
        rows[k].append(
            {
                "forgotten": [model.class_names[i] for i in combo],
                "retained_acc": _acc(logits[kept], labels[kept]),
                "forgotten_acc": _acc(logits[forgot], labels[forgot]),
                "forgotten_argmin_acc": _acc(-logits[forgot], labels[forgot]),
                "retained_acc_head_masked": _acc(masked[kept], labels[kept]),
                "forgotten_acc_head_masked": _acc(masked[forgot], labels[forgot]),
                "worst_forgotten_acc": worst.get("acc", {}).get("value", float("nan")),
                "worst_forgotten_argmin_acc": worst.get("argmin_acc", {}).get("value", float("nan")),
                "worst_forgotten": worst,
            }
        )
    for k in ks:
        summary = {"k": k, "combinations": len(rows[k]), "total_combinations": math.comb(len(active), k)}
        for key in ("retained_acc", "forgotten_acc", "forgotten_argmin_acc", "retained_acc_head_masked",
                    "forgotten_acc_head_masked", "worst_forgotten_acc", "worst_forgotten_argmin_acc"):
            vals = np.array([r[key] for r in rows[k]], dtype=float)
            summary[key] = {"mean": float(np.nanmean(vals)), "std": float(np.nanstd(vals))}
        # the worst removed class over every combination of this k, next to the means above
        summary["worst_forgotten"] = {
            key: max((r["worst_forgotten"][key] for r in rows[k] if key in r["worst_forgotten"]),
                     key=lambda w: w["value"], default=None)
            for key in ("acc", "argmin_acc")
        }
        summary["runs"] = rows[k]
        results[str(k)] = summary
    return {"ks": ks, "max_combinations": max_combinations, "seed": seed, "by_k": results}


def evaluate_probes(model, inputs, labels, seed: int = 42, batch_size: int = 64, probes=PROBES,
                    passes: SharedPasses | None = None) -> dict:
    """Accuracy under each probe mode, on samples whose class still has a prompt (see module doc)."""
    labels = torch.as_tensor(labels)
    for probe in probes:
        if probe not in PROBES:
            raise ValueError(f"unknown probe {probe!r}; choose from {PROBES}")
    passes = passes or SharedPasses(model, inputs, batch_size)
    active = [model.class_index(c) for c in model.active_classes]
    sel = torch.isin(labels, torch.tensor(active))
    rows = sel.nonzero().squeeze(1)  # rows of `inputs` the probes score
    y = labels[sel]
    n = len(y)
    g = torch.Generator().manual_seed(seed)
    a = torch.tensor(active)
    own_pos = (a.unsqueeze(0) == y.unsqueeze(1)).float().argmax(1)  # position of each sample's class in `active`
    singles = [(j,) for j in active]
    all_but = [tuple(i for i in active if i != j) for j in active]
    # One prompt per sample: from the single-prompt passes when they are (or will be) run anyway, else one pass.
    use_singles = "best_single" in probes or passes.has(singles)

    def one_prompt_each(pos: torch.Tensor) -> torch.Tensor:
        if use_singles:
            return passes.per_sample(singles, pos, rows)
        ids = a[pos].unsqueeze(1)
        x = {k: v[sel] for k, v in inputs.items()}
        return batched_logits(model, x, ids, torch.ones_like(ids, dtype=torch.bool), batch_size)

    out: dict[str, dict] = {}
    for probe in probes:
        if probe == "full":
            logits = passes(active)[rows]
        elif probe == "own":
            logits = one_prompt_each(own_pos)
        elif probe == "all_wrong":
            if passes.has(all_but):  # the protocol's k=1 passes
                logits = passes.per_sample(all_but, own_pos, rows)
            else:
                bank = a.expand(n, -1)
                x = {k: v[sel] for k, v in inputs.items()}
                logits = batched_logits(model, x, bank, bank != y.unsqueeze(1), batch_size)
        elif probe == "none":
            logits = passes(())[rows]
        elif probe == "random_wrong":
            # Uniform over the active classes other than y: draw a position among the A-1 wrong ones.
            pos = torch.randint(0, len(active) - 1, (n,), generator=g)
            logits = one_prompt_each(pos + (pos >= own_pos).long())
        else:  # best_single
            accs = {model.class_names[j]: _acc(passes([j])[rows], y) for j in active}
            best = max(accs, key=accs.get)
            out[probe] = {"acc": accs[best], "prompt": best, "per_prompt": accs}
            continue
        out[probe] = {"acc": _acc(logits, y), "argmin_acc": _acc(-logits, y)}
    out["chance_acc"] = 1.0 / model.num_classes
    out["n_samples"] = n
    return out
