"""Prompt formats and tokenisation for label-token classification with a causal LM.

An example is encoded as ``prompt + label`` where the label is one or more tokens. We record where the
label tokens sit so that losses and metrics read exactly the logits that predict them (teacher forcing):
the logit at sequence position ``p - 1`` predicts the token at position ``p``.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field

SENTIMENT_QUESTION = "What is the sentiment of the given text?"


@dataclass
class SentimentTask:
    """``### Text: {text}\\n\\n### Question: ...\\n\\n### Sentiment: {label}``."""

    labels: tuple[str, ...] = ("positive", "negative")
    question: str = SENTIMENT_QUESTION
    name: str = "sentiment"
    truncate_field: str = field(default="text", init=False)

    def format_prompt(self, ex: dict) -> str:
        return f"### Text: {ex['text']}\n\n### Question: {self.question}\n\n### Sentiment:"

    def to_dict(self) -> dict:
        return {"kind": "sentiment", "labels": list(self.labels), "question": self.question}


@dataclass
class TextTask:
    """A prompt template with ``{text}`` (see :mod:`promptforget.spul.templates`); the label word follows it."""

    labels: tuple[str, ...]
    template: str
    name: str = "text"
    truncate_field: str = field(default="text", init=False)

    def format_prompt(self, ex: dict) -> str:
        return self.template.format(text=ex["text"])

    def to_dict(self) -> dict:
        return {"kind": "text", "name": self.name, "labels": list(self.labels), "template": self.template}


@dataclass
class MultipleChoiceTask:
    """``### Question: {q}\\n\\n### Choices:\\nA. ..\\nB. ..\\n\\n### Answer: {letter}``."""

    num_choices: int = 4
    name: str = "multiple_choice"
    truncate_field: str = field(default="question", init=False)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(string.ascii_uppercase[: self.num_choices])

    def format_prompt(self, ex: dict) -> str:
        opts = "\n".join(f"{string.ascii_uppercase[i]}. {c}" for i, c in enumerate(ex["choices"]))
        return f"### Question: {ex['question']}\n\n### Choices:\n{opts}\n\n### Answer:"

    def to_dict(self) -> dict:
        return {"kind": "multiple_choice", "num_choices": self.num_choices}


def task_from_dict(d: dict):
    if d.get("kind") == "sentiment":
        return SentimentTask(labels=tuple(d["labels"]), question=d.get("question", SENTIMENT_QUESTION))
    if d.get("kind") == "text":
        return TextTask(labels=tuple(d["labels"]), template=d["template"], name=d.get("name", "text"))
    if d.get("kind") == "multiple_choice":
        return MultipleChoiceTask(num_choices=int(d["num_choices"]))
    raise ValueError(f"unknown task kind {d.get('kind')!r}; expected 'sentiment', 'text' or 'multiple_choice'")


def label_token_ids(tokenizer, word: str) -> list[int]:
    """Token ids of a label as it follows the prompt (``":"`` then a space, then the word)."""
    ids = tokenizer.encode(" " + word, add_special_tokens=False)
    if not ids:
        raise ValueError(f"label {word!r} tokenises to nothing")
    return ids


def check_label_tokens(tokenizer, words) -> dict[str, list[int]]:
    """Map each label word to its token ids; first tokens must differ so predictions are decidable.

    Multi-token labels are supported (teacher-forced over all their tokens); a label set whose words
    share a first token is rejected because the label-position argmax could not tell them apart.
    """
    ids = {w: label_token_ids(tokenizer, w) for w in words}
    firsts: dict[int, str] = {}
    for w, t in ids.items():
        if t[0] in firsts:
            raise ValueError(f"labels {firsts[t[0]]!r} and {w!r} start with the same token {t[0]}; choose distinct label words")
        firsts[t[0]] = w
    return ids


def multi_token_note(tokenizer, words) -> str | None:
    """One line naming the label words the tokenizer splits into several tokens, and how they are
    scored; None when every word is one token."""
    split = {w: len(label_token_ids(tokenizer, w)) for w in words}
    split = {w: n for w, n in split.items() if n > 1}
    if not split:
        return None
    named = ", ".join(f"{w!r} ({n} tokens)" for w, n in split.items())
    return (f"label words split into several tokens: {named}; they are trained and scored on all their tokens "
            "(correct = every token is the argmax) and the predicted class is read from the first token")


def encode_example(tokenizer, task, ex: dict, label_word: str, max_length: int) -> dict:
    """Token ids of ``prompt + label`` with the label's token span; the free-text field is truncated
    (never the label or the template) so the whole sequence fits in ``max_length`` tokens."""
    label_ids = label_token_ids(tokenizer, label_word)
    ex = dict(ex)
    prompt_ids = tokenizer.encode(task.format_prompt(ex), add_special_tokens=True)
    for _ in range(4):  # decode/re-encode can shift by a token or two, so retry a few times
        excess = len(prompt_ids) + len(label_ids) - max_length
        if excess <= 0:
            break
        field_ids = tokenizer.encode(ex[task.truncate_field], add_special_tokens=False)
        if excess >= len(field_ids):
            raise ValueError(
                f"max_length={max_length} is too short for the prompt template of example {ex.get('id')!r}"
            )
        ex[task.truncate_field] = tokenizer.decode(field_ids[: len(field_ids) - excess - 1])
        prompt_ids = tokenizer.encode(task.format_prompt(ex), add_special_tokens=True)
    else:
        raise ValueError(f"could not truncate example {ex.get('id')!r} to max_length={max_length}")
    return {
        "input_ids": prompt_ids + label_ids,
        "label_start": len(prompt_ids),
        "label_ids": label_ids,
        "prompt_len": len(prompt_ids),
    }


def encode_examples(tokenizer, task, examples, max_length: int, label_words=None) -> list[dict]:
    """Encode examples with their true label (or ``label_words[i]`` when given, e.g. generic labels)."""
    out = []
    for i, ex in enumerate(examples):
        word = ex["label"] if label_words is None else label_words[i]
        if label_words is None and word not in task.labels:
            raise ValueError(f"example {ex.get('id')!r} has label {word!r}, not one of {list(task.labels)}")
        enc = encode_example(tokenizer, task, ex, word, max_length)
        enc["true_label"] = ex["label"]
        out.append(enc)
    return out


def collate(encoded: list[dict], pad_id: int):
    """Right-padded batch: input_ids, attention_mask, label_pos (B, L), label_ids (B, L; -100 pad)."""
    import torch

    if not encoded:
        raise ValueError("cannot collate an empty batch")
    T = max(len(e["input_ids"]) for e in encoded)
    L = max(len(e["label_ids"]) for e in encoded)
    B = len(encoded)
    input_ids = torch.full((B, T), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((B, T), dtype=torch.long)
    label_pos = torch.zeros((B, L), dtype=torch.long)
    label_ids = torch.full((B, L), -100, dtype=torch.long)
    for i, e in enumerate(encoded):
        n = len(e["input_ids"])
        input_ids[i, :n] = torch.tensor(e["input_ids"])
        attention_mask[i, :n] = 1
        k = len(e["label_ids"])
        label_pos[i, :k] = torch.arange(e["label_start"], e["label_start"] + k)
        label_pos[i, k:] = e["label_start"]  # padding slots point at a valid position; masked by -100
        label_ids[i, :k] = torch.tensor(e["label_ids"])
    return {"input_ids": input_ids, "attention_mask": attention_mask, "label_pos": label_pos, "label_ids": label_ids}
