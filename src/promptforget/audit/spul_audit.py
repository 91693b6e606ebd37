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
  * sequence-level LLM membership inference (LOSS, ZLib, Min-K%, Min-K%++) on the training text
    (prompt + true label), forget-train vs forget-test; the prompted model is scored with its prompt;
  * black-box extraction: the forget-train queries sent plain, paraphrased and wrapped in prompt
    injections that ask for the original label; share answered with the true label.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from promptforget.audit import blackbox, llm_mia, mia
from promptforget.audit.report import MODELS, Metric, is_number, markdown, model_card, table, write_files
from promptforget.spul import ops
from promptforget.spul.evaluate import evaluate_splits, predict
from promptforget.spul.tasks import check_label_tokens, encode_examples

SPLITS = ("train_retain", "train_forget", "test_retain", "test_forget")

SPUL_METRICS: dict[str, Metric] = {
    **{f"acc_{s}": Metric(f"teacher-forced accuracy on {s.replace('_', '-')} (full-vocabulary argmax at the label "
                          "position equals the true label)",
                          "higher = answered" + (" (utility)" if "retain" in s else " (not forgotten)"),
                          "the original's value" if "retain" in s else "reference value", 0.03,
                          kind="utility" if "retain" in s else "leak")
       for s in SPLITS},
    **{f"mia_auc_{f}": Metric(f"ROC-AUC of the label-position {f.replace('m_', 'modified ')} score, forget-train "
                              "(members) vs forget-test", "0.5 = no signal; > 0.5 = training examples recognisable",
                              "reference value (about 0.5)", 0.05)
       for f in ("confidence", "loss", "entropy", "m_entropy")},
    "mia_efficacy": Metric("SalUn MIA-efficacy: share of forget-train that an RBF-SVC on the label confidence, fitted "
                           "on retain-train (members) vs test-retain (non-members), calls non-member",
                           "higher = forget set looks unseen", "reference value", 0.05, direction=-1),
    **{f"llm_auc_{s}": Metric(f"ROC-AUC of the sequence {s} score (higher = member) of prompt + true label, "
                              "forget-train vs forget-test", "0.5 = no signal", "reference value (about 0.5)", 0.05)
       for s in llm_mia.SCORES},
    "blackbox_plain": Metric("share of forget-train queries answered with the true label, sent as they are",
                             "higher = leakage", "reference value", 0.05),
    "blackbox_paraphrase": Metric("as blackbox_plain, mean over the paraphrased queries", "higher = leakage",
                                  "reference value", 0.05),
    "blackbox_injection": Metric("as blackbox_plain, mean over prompt-injection templates asking for the original "
                                 "label", "higher = leakage", "reference value", 0.05),
    "blackbox_best": Metric("the adversary's best query family (max of the above)", "higher = leakage",
                            "reference value", 0.05),
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


def training_texts(task, examples: Sequence[dict]) -> list[str]:
    """What stage 1 was trained on: the prompt followed by the true label (see tasks.encode_example)."""
    return [f"{task.format_prompt(ex)} {ex['label']}" for ex in examples]


def blackbox_predictor(scorer, tokenizer, task, examples: Sequence[dict], max_length: int, batch_size: int = 32):
    """``predict_many(texts) -> labels`` through the task prompt, as a black-box user sees the model:
    ``texts[i]`` replaces the free-text field of ``examples[i]`` (its other fields, e.g. answer choices, stay)."""
    field = task.truncate_field

    def predict_many(texts: list[str]) -> list[str]:
        queries = [{**ex, field: t} for ex, t in zip(examples, texts)]
        return predict(scorer, tokenizer, task, queries, max_length, batch_size)[0]

    return predict_many


def audit_model(name: str, scorer, lm, tokenizer, task, split: dict, *, prefix_embeds=None, max_length: int = 128,
                batch_size: int = 32, llm_max_length: int = 256, seed: int = 0) -> dict:
    """Every figure of one model. ``scorer`` maps a batch to label logits; ``lm`` is the HF causal LM used
    for sequence scores, with ``prefix_embeds`` (the soft prompt) prepended when given."""
    res: dict = {"name": name}
    res["accuracy"] = evaluate_splits(scorer, tokenizer, task, {s: split[s] for s in SPLITS}, max_length, batch_size)
    probs, labels = {}, {}
    for key, s in (("retain_train", "train_retain"), ("test", "test_retain"), ("forget_train", "train_forget"),
                   ("forget_test", "test_forget")):
        if split[s]:
            probs[key], labels[key] = label_distribution(scorer, tokenizer, task, split[s], max_length, batch_size)
    res["mia"] = mia.population_audit(probs, labels, seed=seed)
    res["mia_scores"] = {k: mia.membership_features(probs[k], labels[k])["confidence"].tolist()
                         for k in ("forget_train", "forget_test") if k in probs}
    if split["test_forget"]:
        # Sequence scores need full-vocabulary logits at every position: keep those batches small.
        kw = dict(max_length=llm_max_length, batch_size=min(batch_size, 8), prefix_embeds=prefix_embeds)
        members = llm_mia.llm_mia_scores(lm, tokenizer, training_texts(task, split["train_forget"]), **kw)
        holdout = llm_mia.llm_mia_scores(lm, tokenizer, training_texts(task, split["test_forget"]), **kw)
        res["llm_mia"] = llm_mia.aucs_from_scores(members, holdout)
    forget = split["train_forget"]
    res["blackbox"] = blackbox.blackbox_leakage(
        None, [ex[task.truncate_field] for ex in forget], [ex["label"] for ex in forget],
        predict_many=blackbox_predictor(scorer, tokenizer, task, forget, max_length, batch_size))
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
            ax.bar(x + i * w, [flat[n].get(k) if is_number(flat[n].get(k)) else 0 for k in keys], w, label=n)
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
    on ``split`` (the four SPUL splits), beside ``reference`` (an HF causal LM: stage 1 trained on the
    retain set only) when given. Returns the audit record (see :func:`write_spul_report`)."""
    missing = [s for s in SPLITS if s not in split]
    if missing:
        raise ValueError(f"split is missing {missing}")
    for s in ("train_retain", "train_forget", "test_retain"):
        if not split[s]:
            raise ValueError(f"the {s} split is empty; the audit needs it")
    tok, task = spul.tokenizer, spul.task
    kw = dict(max_length=max_length, batch_size=batch_size, seed=seed)
    with torch.no_grad():
        prompt = spul.prompts(1)[0].detach()
    targets = [("audited", spul.scorer(prompted=True), spul.model, prompt),
               ("original", spul.scorer(prompted=False), spul.model, None)]
    if reference is not None:
        reference.eval()
        targets.append(("reference", lambda b: ops.label_logits(reference, b), reference, None))
    models = {}
    for name, scorer, lm, prefix in targets:
        progress(f"[audit] {name} ...")
        models[name] = audit_model(name, CachedScorer(scorer), lm, tok, task, split, prefix_embeds=prefix, **kw)
    return {"kind": "spul", "models": models, "split_sizes": {s: len(split[s]) for s in SPLITS},
            "task": task.to_dict(), "spul_config": spul.config.to_dict()}
