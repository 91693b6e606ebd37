"""Task templates: how an example is put to the causal LM (``{text}`` filled in, the label word
follows) and which word stands for each label of the data.

Built-ins: ``sentiment`` (the SPUL paper's prompt), ``topic``, ``mcqa`` (BIG-bench multiple choice). A
template file is either plain text (the prompt, with ``{text}``) or JSON ``{"prompt": "...{text}...",
"label_words": {"<label in the data>": "<word>"}}``. A run saves the template it used in ``template.json``.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass, field
from pathlib import Path

from promptforget.spul.tasks import SENTIMENT_QUESTION, SentimentTask, TextTask

TOPIC_PROMPT = "### Text: {text}\n\n### Question: What is the topic of the given text?\n\n### Topic:"
SENTIMENT_PROMPT = "### Text: {text}\n\n### Question: " + SENTIMENT_QUESTION + "\n\n### Sentiment:"
BUILTIN = {"sentiment": SENTIMENT_PROMPT, "topic": TOPIC_PROMPT, "mcqa": None}
SENTIMENT_WORDS = {"positive", "negative", "neutral"}
FIELDS = ("text",)


@dataclass
class Template:
    name: str
    prompt: str | None  # None for mcqa: the multiple-choice format is fixed
    label_words: dict[str, str] = field(default_factory=dict)  # label in the data -> word the model answers

    def to_dict(self) -> dict:
        return {"name": self.name, "prompt": self.prompt, "label_words": dict(self.label_words)}

    @classmethod
    def from_dict(cls, d: dict) -> "Template":
        return cls(d["name"], d.get("prompt"), dict(d.get("label_words") or {}))

    def word(self, label: str) -> str:
        return self.label_words.get(label, label)

    def task(self, labels):
        """The task object for label words ``labels`` (already mapped through :meth:`word`)."""
        if self.name == "mcqa":
            raise ValueError("the mcqa template needs multiple-choice data (--data bigbench)")
        if self.prompt == SENTIMENT_PROMPT:
            return SentimentTask(labels=tuple(labels))
        return TextTask(labels=tuple(labels), template=self.prompt, name=self.name)


def check_prompt(prompt: str, where: str) -> None:
    """A prompt must fill ``{text}`` and nothing else (``{{`` ``}}`` for literal braces)."""
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(prompt) if f is not None]
    except ValueError as e:
        raise ValueError(f"template {where}: {e} (write {{{{ and }}}} for literal braces)") from None
    unknown = sorted({n for n in names if n not in FIELDS})
    if unknown:
        raise ValueError(f"template {where}: unknown field(s) {', '.join('{' + n + '}' for n in unknown)}; "
                         f"only {{text}} is filled (write {{{{ and }}}} for literal braces)")
    if "text" not in names:
        raise ValueError(f"template {where}: the prompt has no {{text}} field")


def load_template(spec: str) -> Template:
    """A built-in name or a template file."""
    if spec in BUILTIN:
        return Template(spec, BUILTIN[spec])
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"unknown template {spec!r}: use {', '.join(BUILTIN)} or a template file")
    raw = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            d = json.loads(raw)
        except json.JSONDecodeError as e:
            raise ValueError(f"template {path}: not valid JSON ({e.msg})") from None
        if not isinstance(d, dict) or not isinstance(d.get("prompt"), str):
            raise ValueError(f'template {path}: expected {{"prompt": "...{{text}}...", "label_words": {{...}}}}')
        unknown = sorted(set(d) - {"prompt", "label_words"})
        if unknown:
            raise ValueError(f"template {path}: unknown key(s) {unknown}; expected prompt and label_words")
        words = d.get("label_words") or {}
        if not isinstance(words, dict) or not all(isinstance(w, str) and w.strip() for w in words.values()):
            raise ValueError(f"template {path}: label_words must map each label to a non-empty word")
        prompt, words = d["prompt"], {str(k): v.strip() for k, v in words.items()}
    else:
        prompt, words = raw.rstrip("\n"), {}
    check_prompt(prompt, str(path))
    return Template(path.stem, prompt, words)


def default_template(dataset: str, labels) -> str:
    """The template a dataset gets when none is named: ``mcqa`` for BIG-bench, ``sentiment`` for the
    sentiment sets and for data whose labels are all sentiment words, else ``topic``."""
    if dataset == "bigbench":
        return "mcqa"
    if {str(v).lower() for v in labels} <= SENTIMENT_WORDS:
        return "sentiment"
    return "topic"


def resolve_template(spec: str | None, dataset: str, labels) -> Template:
    template = load_template(spec or default_template(dataset, labels))
    known = {str(v) for v in labels}
    extra = sorted(set(template.label_words) - known)
    if extra and dataset != "bigbench":
        raise ValueError(f"template {template.name}: label_words names labels not in the data: {extra[:5]} "
                         f"(labels: {sorted(known)[:10]})")
    return template
