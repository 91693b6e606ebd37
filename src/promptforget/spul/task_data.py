"""The examples a SPUL or baseline run works on: read a data source (the registry's prompting names:
built-ins, ``csv:FILE``, ``jsonl:FILE``, ``hf:REPO``, ``bigbench``), split and subsample it, turn each
label into its template's label word, and build the task that prompts with them.

Examples are dicts ``{"id", "text", "label", ...}`` (``question``/``choices`` for multiple choice), the
label already the word the model answers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from promptforget.data.registry import PROMPTING, get_dataset
from promptforget.spul.config import DataConfig
from promptforget.spul.templates import Template, resolve_template

SENTIMENT_SETS = ("rotten_tomatoes", "sst2", "yelp_polarity")
FILE_SOURCES = ("csv", "jsonl", "hf")


@dataclass
class TaskData:
    task: object
    train: list[dict]
    test: list[dict]
    template: Template
    source: str  # the data source as a later command can read it again (file paths absolute)

    @property
    def sha256(self) -> str:
        return examples_sha256(self.train, self.test)


def data_source(data: DataConfig) -> str:
    """``data.data`` as one ``name[:LOCATION]`` with file paths made absolute (``--data jsonl --data-file F``,
    the old spelling, is ``jsonl:F``)."""
    if data.data_file:
        if data.data != "jsonl":
            raise ValueError(f"--data-file goes with --data jsonl; write --data jsonl:{data.data_file} "
                             f"(got --data {data.data})")
        return f"jsonl:{Path(data.data_file).resolve()}"
    spec = get_dataset(data.data, PROMPTING)
    location = data.data.partition(":")[2]
    if spec.location and not location:
        raise ValueError(f"--data {spec.name} needs a location: --data {spec.usage}")
    if spec.name in ("csv", "jsonl"):
        return f"{spec.name}:{Path(location).resolve()}"
    if spec.name == "hf" and Path(location).exists():
        return f"hf:{Path(location).resolve()}"
    return data.data if spec.location else spec.name


def examples_sha256(train: list[dict], test: list[dict]) -> str:
    """A hash of the examples (ids, texts, labels, in order): a later command checks it to know it works on
    the very split the stage-1 run was trained and evaluated on."""
    h = hashlib.sha256()
    for part in (train, test):
        for ex in part:
            h.update(json.dumps([str(ex["id"]), ex.get("text", ex.get("question")), ex.get("choices"), ex["label"]],
                                ensure_ascii=False).encode())
        h.update(b"\x00")
    return h.hexdigest()


def load_task(data: DataConfig, template: Template | None = None) -> TaskData:
    """The task and the train/test examples of ``data``; ``template`` (a run's saved one) replaces
    ``data.template``."""
    from promptforget.data.splits import split_examples, subsample

    source = data_source(data)
    name, _, location = source.partition(":")
    if (data.text_column or data.label_column) and name not in FILE_SOURCES:
        raise ValueError(f"--text-column / --label-column apply to csv:, jsonl: and hf: data, not --data {name}")
    seed = data.data_seed
    if name == "bigbench":
        return _bigbench(data, template, source)
    if name in SENTIMENT_SETS:
        from promptforget.data.sentiment import SENTIMENT_LABELS, load_sentiment

        train, test = load_sentiment(name, n_train=data.n_train, n_test=data.n_test, test_size=data.test_size, seed=seed)
        order = SENTIMENT_LABELS
    else:
        if name == "bbc_news":
            train, test = _bbc_news(), None
        elif name == "hf":
            train, test = _hub_rows(location, data)
        else:
            train, test = _file_rows(Path(location), name, data), None
        if test is None:
            train, test = split_examples(train, data.test_size, seed)
        train, test = subsample(train, data.n_train, seed), subsample(test, data.n_test, seed)
        order = None
    raw = sorted({ex["label"] for ex in train + test}, key=lambda v: (order.index(v) if order and v in order else 99, v))
    template = template or resolve_template(data.template, name, raw)
    words = [template.word(v) for v in raw]
    if len(set(words)) < 2:
        raise ValueError(f"{source}: need at least two distinct labels, got {words}")
    if len(set(words)) < len(words):
        raise ValueError(f"template {template.name}: two labels map to the same word ({words})")
    train, test = ([{**ex, "label": template.word(ex["label"])} for ex in part] for part in (train, test))
    labels = tuple(words) if order else tuple(sorted(words))
    return TaskData(template.task(labels), train, test, template, source)


def _bigbench(data: DataConfig, template: Template | None, source: str) -> TaskData:
    from promptforget.data.bigbench import load_bigbench_task
    from promptforget.data.splits import split_examples, subsample
    from promptforget.spul.tasks import MultipleChoiceTask
    from promptforget.spul.templates import load_template

    template = template or load_template(data.template or "mcqa")
    if template.name != "mcqa":
        raise ValueError(f"--data bigbench is multiple choice: it takes the mcqa template, not {template.name!r}")
    if not (data.bigbench_forget and data.bigbench_retain):
        raise ValueError("--data bigbench needs --bigbench-forget and --bigbench-retain task files")
    train, test = [], []
    for path in (data.bigbench_forget, data.bigbench_retain):
        exs = load_bigbench_task(path, max_choices=data.max_choices, seed=data.data_seed)
        tr, te = split_examples(exs, data.test_size, data.data_seed)
        train += subsample(tr, data.n_train // 2 if data.n_train else None, data.data_seed, stratify=False)
        test += subsample(te, data.n_test // 2 if data.n_test else None, data.data_seed, stratify=False)
    n_choices = max(len(ex["choices"]) for ex in train + test)
    return TaskData(MultipleChoiceTask(num_choices=n_choices), train, test, template, source)


def _bbc_news() -> list[dict]:
    from promptforget.data.text import load_bbc_news

    ds = load_bbc_news()
    return [{"id": f"bbc-{i}", "text": t, "label": ds.class_names[y]} for i, (t, y) in enumerate(zip(ds.texts, ds.labels))]


def _rows(table, where: str, data: DataConfig, id_prefix: str = "row") -> list[dict]:
    """Example dicts from a ``datasets`` table: the text and label columns found or named, labels as
    strings (any JSON scalar; a ``ClassLabel`` by its names), ``id`` from an ``id`` column if there is one."""
    from datasets import ClassLabel

    from promptforget.data.text import find_text_columns

    if len(table) == 0:
        raise ValueError(f"{where}: no rows")
    text_col, label_col = find_text_columns(table, where, data.text_column, data.label_column)
    feature = table.features[label_col]
    names = feature.names if isinstance(feature, ClassLabel) else None
    rows = []
    for i, r in enumerate(table.to_list()):
        text, label = r[text_col], r[label_col]
        if text is None or label is None or isinstance(label, (list, dict)):
            raise ValueError(f"{where}: row {i + 1} lacks a text ({text_col!r}) or a scalar label ({label_col!r})")
        label = names[label] if names else str(label)
        ex_id = str(r["id"]) if r.get("id") is not None else f"{id_prefix}-{i}"
        rows.append({**r, "id": ex_id, "text": str(text), "label": label})
    ids = [r["id"] for r in rows]
    if len(set(ids)) < len(ids):
        raise ValueError(f"{where}: the id column has duplicates")
    return rows


def _file_rows(path: Path, fmt: str, data: DataConfig) -> list[dict]:
    from promptforget.data.files import load_table

    return _rows(load_table(path, fmt), str(path), data)


def _hub_rows(repo: str, data: DataConfig) -> tuple[list[dict], list[dict] | None]:
    """The source's own test (else validation) split where it has one."""
    from promptforget.data.hub import fetch_hub_dataset

    parts = fetch_hub_dataset(repo)
    if "train" not in parts:
        raise ValueError(f"{repo}: no 'train' split (splits: {list(parts)})")
    test_split = next((s for s in ("test", "validation") if s in parts), None)
    train = _rows(parts["train"], repo, data, "train")
    return train, (_rows(parts[test_split], repo, data, test_split) if test_split else None)
