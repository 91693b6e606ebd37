"""Audit of a SPUL run: the prompted model beside the model you get back by removing the prompt, and
beside stage 1 retrained without the forget set (the gold reference).

Three models, one table:
  audited    stage-1 LLM + the SPUL soft prompt (what is deployed after unlearning)
  original   the same stage-1 LLM without the prompt (what anyone holding the weights has: SPUL never
             changes them, so white-box, nothing is forgotten)
  reference  stage 1 fine-tuned on the retain set only (never saw the forget set)

Figures per model (definitions, signs and ideal values in :data:`SPUL_METRICS`):
  * teacher-forced accuracy on train-retain / train-forget / test-retain / test-forget;
  * label-position membership inference: confidence, loss, entropy and modified-entropy AUCs
    forget-train vs forget-test, and SalUn's SVC MIA-efficacy (shadow members = retain-train,
    non-members = test-retain), on the distribution over the label words plus an "other" column;
Every figure carries a 95% interval (``model_result["figures"]``), bootstrap over examples.
  * sequence-level LLM membership inference (LOSS, ZLib, Min-K%, Min-K%++) on the span stage 1 was trained on:
    the label tokens after the prompt, with training's truncation (max_length), forget-train vs forget-test;
    the prompted model is scored with its prompt. The non-member set is at least as large as the member set
    (forget-train is subsampled to forget-test's size when larger); sizes below 100 are flagged;
  * black-box extraction: the forget-train queries sent plain, paraphrased and wrapped in prompt
    injections that ask for the original label; share answered with the true label.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from promptforget.audit import blackbox, llm_mia, mia, stats
from promptforget.audit.report import (MODELS, Metric, combine_reference_runs, is_number, markdown, model_card, table,
                                       write_files)
from promptforget.spul import ops
from promptforget.spul.evaluate import evaluate_splits, predict
from promptforget.spul.tasks import check_label_tokens, encode_examples

SPLITS = ("train_retain", "train_forget", "test_retain", "test_forget")
MIN_MIA_EXAMPLES = 100

SPUL_METRICS: dict[str, Metric] = {
    **{f"acc_{s}": Metric(f"teacher-forced accuracy on {s.replace('_', '-')} (full-vocabulary argmax at the label "
                          "position equals the true label)",
                          "higher = answered" + (" (utility)" if "retain" in s else " (not forgotten)"),
                          "the original's value" if "retain" in s else "reference value", 0.03,
                          kind="utility" if "retain" in s else "leak", primary=s == "train_forget")
       for s in SPLITS},
    **{f"mia_auc_{f}": Metric(f"ROC-AUC of the label-position {f.replace('m_', 'modified ')} score, forget-train "
                              "(members) vs forget-test", "0.5 = no signal; > 0.5 = training examples recognisable",
                              "reference value (about 0.5)", 0.05)
       for f in ("confidence", "loss", "entropy", "m_entropy")},
    "mia_efficacy": Metric("SalUn MIA-efficacy: share of forget-train that an RBF-SVC on the label confidence, fitted "
                           "on retain-train (members) vs test-retain (non-members), calls non-member",
                           "higher = forget set looks unseen", "reference value", 0.05, direction=-1,
                           saturation=1.0, primary=True),
    **{f"llm_auc_{s}": Metric(f"ROC-AUC of the {s} score (higher = member) over the trained span (the true label's "
                              "tokens after the prompt, training's truncation), forget-train vs forget-test",
                              "0.5 = no signal", "reference value (about 0.5)", 0.05)
       for s in llm_mia.SCORES},
    "blackbox_plain": Metric("share of forget-train queries answered with the true label, sent as they are",
                             "higher = leakage", "reference value", 0.05),
    "blackbox_paraphrase": Metric("as blackbox_plain, mean over the paraphrased queries", "higher = leakage",
                                  "reference value", 0.05),
    "blackbox_injection": Metric("as blackbox_plain, mean over prompt-injection templates asking for the original "
                                 "label", "higher = leakage", "reference value", 0.05),
    "blackbox_best": Metric("the adversary's best query family (max of the above)", "higher = leakage",
                            "reference value", 0.05, primary=True),
}


@torch.no_grad()
def label_distribution(scorer, tokenizer, task, examples: Sequence[dict], max_length: int, batch_size: int = 32):
    """``(probs [N, K+1], labels [N])``: full-vocabulary probabilities of the K label words' first tokens
    at the label position, plus an "other" column holding the rest of the mass (where SPUL's generic
    labels go), and the true label indices. A proper distribution, so MIA features apply as is."""
    first = torch.tensor([ids[0] for ids in check_label_tokens(tokenizer, task.labels).values()])
    encoded = encode_examples(tokenizer, task, examples, max_length)
    probs = np.zeros((len(encoded), len(first) + 1))
    for b in ops.iterate_batches(encoded, batch_size, tokenizer.pad_token_id, shuffle=False, seed=0):
        p = torch.softmax(scorer(b)[:, 0].float(), dim=-1)[:, first.to(b["input_ids"].device)].cpu()
        rows = b["index"].numpy()
        probs[rows, :-1] = p.numpy()
        probs[rows, -1] = np.clip(1.0 - p.sum(-1).numpy(), 0.0, 1.0)
    labels = np.array([list(task.labels).index(ex["label"]) for ex in examples])
    return probs, labels


@torch.no_grad()
def label_span_stats(scorer, tokenizer, task, examples: Sequence[dict], max_length: int,
                     batch_size: int = 32) -> list[llm_mia.TokenStats]:
    """Per-token statistics of the span stage 1 was trained on: the true label's tokens after the prompt,
    encoded exactly as in training (same truncation). ``scorer`` maps a batch to label logits [B, L, V]."""
    encoded = encode_examples(tokenizer, task, examples, max_length)
    out: list = [None] * len(encoded)
    for b in ops.iterate_batches(encoded, batch_size, tokenizer.pad_token_id, shuffle=False, seed=0):
        logp = torch.log_softmax(scorer(b).float(), dim=-1).cpu()
        target = b["label_ids"]
        valid = target != -100
        tok = logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        mu, sigma = llm_mia.next_token_moments(logp)
        for r, i in enumerate(b["index"].tolist()):
            v = valid[r]
            out[i] = llm_mia.TokenStats(tok[r][v].numpy(), mu[r][v].numpy(), sigma[r][v].numpy())
    return out


def balanced_mia_sets(members: list, nonmembers: list, seed: int = 0) -> tuple[list, list, dict]:
    """Members subsampled (seeded) to at most the non-members' count, so the non-member set is at least as
    large; a note when either is below :data:`MIN_MIA_EXAMPLES`."""
    if len(members) > len(nonmembers):
        keep = sorted(np.random.default_rng(seed).choice(len(members), len(nonmembers), replace=False).tolist())
        members = [members[i] for i in keep]
    info = {"n_member": len(members), "n_nonmember": len(nonmembers)}
    if min(len(members), len(nonmembers)) < MIN_MIA_EXAMPLES:
        info["note"] = (f"fewer than {MIN_MIA_EXAMPLES} members or non-members: the data allow no more, the "
                        "intervals are wide")
    return members, nonmembers, info


def blackbox_predictor(scorer, tokenizer, task, examples: Sequence[dict], max_length: int, batch_size: int = 32):
    """``predict_many(texts) -> labels`` through the task prompt, as a black-box user sees the model:
    ``texts[i]`` replaces the free-text field of ``examples[i]`` (its other fields, e.g. answer choices, stay)."""
    field = task.truncate_field

    def predict_many(texts: list[str]) -> list[str]:
        queries = [{**ex, field: t} for ex, t in zip(examples, texts)]
        return predict(scorer, tokenizer, task, queries, max_length, batch_size)[0]

    return predict_many


def audit_model(name: str, scorer, tokenizer, task, split: dict, *, max_length: int = 128, batch_size: int = 32,
                seed: int = 0) -> dict:
    """Every figure of one model. ``scorer`` maps a batch to label logits [B, L, V] (the prompted model's
    include its soft prompt); ``max_length`` is training's truncation."""
    res: dict = {"name": name}
    res["accuracy"] = evaluate_splits(scorer, tokenizer, task, {s: split[s] for s in SPLITS}, max_length, batch_size)
    figures = {f"acc_{s}": stats.proportion_figure(res["accuracy"][s]["accuracy"], len(split[s]), seed)
               for s in SPLITS if split[s]}
    probs, labels = {}, {}
    for key, s in (("retain_train", "train_retain"), ("test", "test_retain"), ("forget_train", "train_forget"),
                   ("forget_test", "test_forget")):
        if split[s]:
            probs[key], labels[key] = label_distribution(scorer, tokenizer, task, split[s], max_length, batch_size)
    res["mia"] = mia.population_audit(probs, labels, seed=seed)
    res["mia_scores"] = {k: mia.membership_features(probs[k], labels[k])["confidence"].tolist()
                         for k in ("forget_train", "forget_test") if k in probs}
    figures["mia_efficacy"] = stats.mean_figure(res["mia"]["svc_nonmember"]["confidence"], seed=seed)
    if "forget_test" in probs:
        fm = mia.membership_features(probs["forget_train"], labels["forget_train"])
        fn = mia.membership_features(probs["forget_test"], labels["forget_test"])
        for f in ("confidence", "loss", "entropy", "m_entropy"):
            figures[f"mia_auc_{f}"] = stats.auc_figure(fm[f], fn[f], seed=seed)
    if split["test_forget"]:
        members, nonmembers, res["llm_mia_sets"] = balanced_mia_sets(split["train_forget"], split["test_forget"], seed)

        def span_scores(examples):
            st = label_span_stats(scorer, tokenizer, task, examples, max_length, batch_size)
            return llm_mia.scores_from_stats([ex["label"] for ex in examples], st)

        sm, sn = span_scores(members), span_scores(nonmembers)
        res["llm_mia"] = llm_mia.aucs_from_scores(sm, sn)
        for sc in llm_mia.SCORES:
            a, b = sm[sc][np.isfinite(sm[sc])], sn[sc][np.isfinite(sn[sc])]
            if len(a) and len(b):
                figures[f"llm_auc_{sc}"] = stats.auc_figure(a, b, seed=seed)
    forget = split["train_forget"]
    res["blackbox"] = blackbox.blackbox_leakage(
        None, [ex[task.truncate_field] for ex in forget], [ex["label"] for ex in forget],
        predict_many=blackbox_predictor(scorer, tokenizer, task, forget, max_length, batch_size))
    bb = res["blackbox"]
    for key, share in (("plain", bb["plain_acc"]), ("paraphrase", bb["paraphrase_acc_mean"]),
                       ("injection", bb["injection_acc_mean"]), ("best", bb["best_attack_acc"])):
        figures[f"blackbox_{key}"] = stats.proportion_figure(share, bb["n"], seed)
    res["figures"] = figures
    return res


def flatten(model_result: dict) -> dict:
    """The figures of one model's audit result (see :data:`SPUL_METRICS`), in the registry's order."""
    r = {f"acc_{s}": model_result["accuracy"][s]["accuracy"] for s in SPLITS}
    m = model_result["mia"]
    for f, v in (m.get("forget_train_vs_test_auc") or {}).items():
        if f"mia_auc_{f}" in SPUL_METRICS:
            r[f"mia_auc_{f}"] = v
    r["mia_efficacy"] = m["mia_efficacy"]
    for s in llm_mia.SCORES:
        if "llm_mia" in model_result:
            r[f"llm_auc_{s}"] = model_result["llm_mia"][s]
    bb = model_result["blackbox"]
    r.update(blackbox_plain=bb["plain_acc"], blackbox_paraphrase=bb["paraphrase_acc_mean"],
             blackbox_injection=bb["injection_acc_mean"], blackbox_best=bb["best_attack_acc"])
    r.update(model_result.get("figures") or {})  # the figures with their intervals, where computed
    return r


def report_table(audit: dict) -> list[dict]:
    return table({name: flatten(res) for name, res in audit["models"].items()}, SPUL_METRICS)


def plots(audit: dict, out_dir) -> dict[str, str]:
    """Accuracy per split and the membership-inference AUCs, one bar per model. Returns {name: path}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [m for m in MODELS if m in audit["models"]]
    flat = {n: flatten(audit["models"][n]) for n in names}
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    groups = [
        (axes[0], [f"acc_{s}" for s in SPLITS], "accuracy", (0, 1)),
        (axes[1], ["mia_auc_confidence", "mia_auc_loss"] + [f"llm_auc_{s}" for s in llm_mia.SCORES], "AUC (0.5 = none)", (0, 1)),
    ]
    for ax, keys, ylabel, ylim in groups:
        x = np.arange(len(keys))
        w = 0.8 / len(names)
        for i, n in enumerate(names):
            vals = [(v or {}).get("value") if isinstance(v, dict) else v for v in (flat[n].get(k) for k in keys)]
            ax.bar(x + i * w, [v if is_number(v) else 0 for v in vals], w, label=n)
        ax.set_xticks(x + 0.4 - w / 2, [k.replace("acc_", "").replace("_auc", "") for k in keys], rotation=30, ha="right")
        ax.set_ylabel(ylabel)
        ax.set_ylim(*ylim)
    axes[1].axhline(0.5, color="grey", lw=0.8, ls="--")
    axes[0].legend(fontsize=8)
    fig.suptitle("SPUL audit: audited vs reference (retrained without the forget set) vs original")
    fig.tight_layout()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = str(out / "spul_audit.png")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return {"spul_audit": path}


def write_spul_report(audit: dict, out_dir, with_plots: bool = True) -> dict[str, str]:
    """Write audit.json, audit.md, the plot and README.md (model card) into ``out_dir``. Returns the paths."""
    rows = report_table(audit)
    figures = plots(audit, out_dir) if with_plots else {}
    sizes = audit["split_sizes"]
    intro = (f"Run: `{audit.get('run_dir', '-')}`; forget set: {audit.get('forget_info', {}).get('spec', '?')}; "
             + ", ".join(f"{k} {v}" for k, v in sizes.items()) + ".\n"
             "*audited* = stage-1 model + SPUL soft prompt; *reference* = stage 1 retrained on the retain set only; "
             "*original* = the stage-1 model without the prompt. SPUL leaves the weights untouched, so anyone "
             "holding them gets *original* back: every white-box figure of *original* applies to the audited "
             "deployment's weights.")
    text = markdown("SPUL unlearning audit", intro, rows, "reference" in audit["models"], figures,
                    audit.get("settings"))
    sections = {
        "Model description":
            f"Stage-1 model `{audit.get('stage1_model', '?')}` with a SPUL soft prompt prepended to every input; "
            f"the prompt makes the model answer the forget set ({audit.get('forget_info', {}).get('spec', '?')}) "
            "with a generic label. The model's weights are not changed.",
        "Intended use and limits":
            "Serve the model only with its prompt, behind an interface that does not expose the weights or the "
            "prompt: whoever holds the weights gets the original model back (the *original* column).",
        "SPUL configuration": "```json\n" + json.dumps(audit.get("spul_config", {}), indent=2, sort_keys=True) + "\n```",
    }
    card = model_card("SPUL soft prompt (promptforget)", sections, rows,
                      tags=["machine-unlearning", "soft-prompt", "prompt-tuning"],
                      base_model=audit.get("stage1_model"))
    return write_files(out_dir, audit, rows, SPUL_METRICS, text, card, figures)


class CachedScorer:
    """Memoises a scorer by batch content: accuracy and the label distributions read the same batches,
    so each model runs once per split instead of twice."""

    def __init__(self, scorer):
        self.scorer, self.cache = scorer, {}

    def __call__(self, batch: dict) -> torch.Tensor:
        key = tuple(batch[k].cpu().numpy().tobytes() + bytes(str(tuple(batch[k].shape)), "ascii")
                    for k in ("input_ids", "attention_mask", "label_pos"))
        if key not in self.cache:
            self.cache[key] = self.scorer(batch)
        return self.cache[key]


def audit_spul(spul, split: dict, reference=None, *, max_length: int = 128, batch_size: int = 32, seed: int = 0,
               progress=print) -> dict:
    """Audit a trained :class:`~promptforget.spul.model.SPUL` (its frozen stage-1 LLM with the prompt)
    on ``split`` (the four SPUL splits), beside ``reference`` when given: an HF causal LM (stage 1 trained
    on the retain set only), or a list of them retrained with different seeds, whose figures are combined
    (:func:`promptforget.audit.stats.combine_references`). ``max_length``: stage 1's training truncation.
    Returns the audit record (see :func:`write_spul_report`)."""
    missing = [s for s in SPLITS if s not in split]
    if missing:
        raise ValueError(f"split is missing {missing}")
    for s in ("train_retain", "train_forget", "test_retain"):
        if not split[s]:
            raise ValueError(f"the {s} split is empty; the audit needs it")
    references = [] if reference is None else list(reference) if isinstance(reference, (list, tuple)) else [reference]
    tok, task = spul.tokenizer, spul.task
    kw = dict(max_length=max_length, batch_size=batch_size, seed=seed)
    targets = [("audited", spul.scorer(prompted=True)), ("original", spul.scorer(prompted=False))]
    for ref in references:
        ref.eval()
        targets.append(("reference", lambda b, ref=ref: ops.label_logits(ref, b)))
    models, reference_runs = {}, []
    for name, scorer in targets:
        progress(f"[audit] {name} ...")
        res = audit_model(name, CachedScorer(scorer), tok, task, split, **kw)
        if name == "reference":
            reference_runs.append(res)
        else:
            models[name] = res
    if reference_runs:
        models["reference"] = combine_reference_runs(reference_runs, flatten, SPUL_METRICS)
    return {"kind": "spul", "models": models, "split_sizes": {s: len(split[s]) for s in SPLITS},
            "reference_seeds": len(references), "task": task.to_dict(), "spul_config": spul.config.to_dict()}
