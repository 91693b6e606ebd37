"""Teacher-forced label-position evaluation and a small generation check.

Prediction rule (stated in every result as ``"prediction_rule"``): the argmax over the **full
vocabulary** at each label position, with the true label fed as input (teacher forcing). An example is
correct when every label token is the argmax. The predicted class is the label word whose first token is
the first-position argmax, or ``"<other>"`` (e.g. ``neutral``) when no label word starts with it; this is
what lets forget accuracy fall below chance. ``accuracy_restricted`` additionally reports the argmax
over the candidate labels' first tokens only.
"""

from __future__ import annotations

from typing import Callable

import torch
from sklearn.metrics import f1_score

from promptforget.spul.ops import iterate_batches, quiet_peft
from promptforget.spul.tasks import check_label_tokens, encode_examples

PREDICTION_RULE = "teacher-forced full-vocabulary argmax at the label position(s)"
OTHER = "<other>"


@torch.no_grad()
def predict(scorer: Callable[[dict], torch.Tensor], tokenizer, task, examples, max_length: int, batch_size: int = 32,
            bar=None):
    """Per-example ``(predicted_class, correct, restricted_class)``; ``scorer`` maps a batch to label logits;
    ``bar``: a progress bar advanced by each batch's examples."""
    label_ids = check_label_tokens(tokenizer, task.labels)
    first_to_label = {ids[0]: w for w, ids in label_ids.items()}
    cand_first = torch.tensor([label_ids[w][0] for w in task.labels])
    encoded = encode_examples(tokenizer, task, examples, max_length)
    preds, correct, restricted = [None] * len(encoded), [False] * len(encoded), [None] * len(encoded)
    for b in iterate_batches(encoded, batch_size, tokenizer.pad_token_id, shuffle=False, seed=0):
        logits = scorer(b)
        arg = logits.argmax(-1)  # (B, L)
        valid = b["label_ids"] != -100
        ok = ((arg == b["label_ids"]) | ~valid).all(-1)
        restr = logits[:, 0, cand_first].argmax(-1)
        if bar is not None:
            bar.update(len(b["index"]))
        for j, i in enumerate(b["index"].tolist()):
            correct[i] = bool(ok[j])
            first = int(arg[j, 0])
            preds[i] = encoded[i]["true_label"] if correct[i] else first_to_label.get(first, OTHER)
            if preds[i] == encoded[i]["true_label"] and not correct[i]:
                preds[i] = OTHER  # multi-token label whose later tokens were wrong
            restricted[i] = task.labels[int(restr[j])]
    return preds, correct, restricted


def metrics(examples, preds, correct, restricted) -> dict:
    n = len(examples)
    if n == 0:
        return {"n": 0, "accuracy": None, "f1_weighted": None, "accuracy_restricted": None, "predicted": {}}
    y = [ex["label"] for ex in examples]
    counts: dict[str, int] = {}
    for p in preds:
        counts[p] = counts.get(p, 0) + 1
    labels = sorted(set(y))
    return {
        "n": n,
        "accuracy": sum(correct) / n,
        # Weighted over the true classes; "<other>" predictions count as misses of their true class.
        "f1_weighted": float(f1_score(y, preds, labels=labels, average="weighted", zero_division=0)),
        "accuracy_restricted": sum(r == t for r, t in zip(restricted, y)) / n,
        "predicted": counts,
    }


def evaluate_splits(scorer, tokenizer, task, splits: dict[str, list[dict]], max_length: int, batch_size: int = 32) -> dict:
    """Metrics for each named split (e.g. train_retain, train_forget, test_retain, test_forget), with a
    progress bar over all their examples (it can take minutes on CPU)."""
    from tqdm.auto import tqdm

    from promptforget.utils.dist import is_main_process

    out = {"prediction_rule": PREDICTION_RULE}
    with tqdm(total=sum(map(len, splits.values())), desc="evaluate", unit="ex", leave=False,
              disable=not is_main_process()) as bar:
        for name, exs in splits.items():
            if not exs:
                out[name] = metrics([], [], [], [])
                continue
            bar.set_description(f"evaluate {name}")
            p, c, r = predict(scorer, tokenizer, task, exs, max_length, batch_size, bar)
            out[name] = metrics(exs, p, c, r)
    return out


@torch.no_grad()
def generation_check(model, tokenizer, task, examples, max_length: int, max_new_tokens: int = 4) -> list[dict]:
    """Greedy continuations of a few prompts (no label given). ``model`` is an HF model or a PEFT
    model (soft prompts are applied by PEFT's ``generate``)."""
    from promptforget.spul.tasks import encode_example

    out = []
    for ex in examples:
        enc = encode_example(tokenizer, task, ex, ex["label"], max_length)
        ids = torch.tensor([enc["input_ids"][: enc["prompt_len"]]])
        with quiet_peft():
            gen = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
        new = gen[0, ids.shape[1] :] if gen.shape[1] > ids.shape[1] else gen[0, -max_new_tokens:]
        out.append({"id": ex.get("id"), "label": ex["label"], "generated": tokenizer.decode(new, skip_special_tokens=True)})
    return out
