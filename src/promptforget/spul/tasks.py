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
    enc = encode_examples(tokenizer, task, [ex], max_length, label_words=[label_word])[0]
    del enc["true_label"]
    return enc


def encode_examples(tokenizer, task, examples, max_length: int, label_words=None) -> list[dict]:
    """Encode examples with their true label (or ``label_words[i]`` when given, e.g. generic labels): what
    :func:`encode_example` gives for each, with one batched tokenizer call per step for all of them."""
    words = [ex["label"] if label_words is None else label_words[i] for i, ex in enumerate(examples)]
    for ex, word in zip(examples, words):
        if label_words is None and word not in task.labels:
            raise ValueError(f"example {ex.get('id')!r} has label {word!r}, not one of {list(task.labels)}")
    if not examples:
        return []
    label_ids = {w: label_token_ids(tokenizer, w) for w in dict.fromkeys(words)}
    exs = [dict(ex) for ex in examples]
    field = task.truncate_field

    def encode(texts, special: bool) -> list[list[int]]:
        return tokenizer(texts, add_special_tokens=special)["input_ids"]

    def excess(i: int) -> int:
        return len(prompts[i]) + len(label_ids[words[i]]) - max_length

    prompts = encode([task.format_prompt(ex) for ex in exs], True)
    todo = list(range(len(exs)))
    for _ in range(4):  # decode/re-encode can shift by a token or two, so retry a few times
        todo = [i for i in todo if excess(i) > 0]
        if not todo:
            break
        fields = encode([exs[i][field] for i in todo], False)
        cut = []
        for i, ids in zip(todo, fields):
            if excess(i) >= len(ids):
                raise ValueError(f"max_length={max_length} is too short for the prompt template of example "
                                 f"{exs[i].get('id')!r}")
            cut.append(ids[: len(ids) - excess(i) - 1])
        for i, text in zip(todo, tokenizer.batch_decode(cut)):
            exs[i][field] = text
        for i, ids in zip(todo, encode([task.format_prompt(exs[i]) for i in todo], True)):
            prompts[i] = ids
    else:
        raise ValueError(f"could not truncate example {exs[todo[0]].get('id')!r} to max_length={max_length}")
    return [{"input_ids": p + label_ids[w], "label_start": len(p), "label_ids": label_ids[w], "prompt_len": len(p),
             "true_label": ex["label"]} for p, w, ex in zip(prompts, words, examples)]


def collate(encoded: list[dict], pad_id: int):
    """Right-padded batch: input_ids, attention_mask, label_pos (B, L), label_ids (B, L; -100 pad)."""
    import torch
    from torch.nn.utils.rnn import pad_sequence

    if not encoded:
        raise ValueError("cannot collate an empty batch")

    def pad(rows, value):
        return pad_sequence([torch.as_tensor(r, dtype=torch.long) for r in rows], batch_first=True, padding_value=value)

    input_ids = pad([e["input_ids"] for e in encoded], pad_id)
    attention_mask = pad([[1] * len(e["input_ids"]) for e in encoded], 0)
    label_ids = pad([e["label_ids"] for e in encoded], -100)
    starts = torch.tensor([e["label_start"] for e in encoded])
    # padding slots point at the label start, a valid position; their -100 label masks them
    label_pos = starts[:, None] + torch.arange(label_ids.shape[1]) * (label_ids != -100)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "label_pos": label_pos, "label_ids": label_ids}
