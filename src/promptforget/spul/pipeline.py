"""SPUL and baseline runs end to end: load the task data, take the forget split, train, evaluate the four
splits, and write the run directory: ``config.json`` (what was asked), ``results.json`` (what came out)
and the weights (``model/``, ``prompt/`` or ``adapter/``). Heavy imports happen inside the functions."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from promptforget.spul.config import DataConfig, FinetuneConfig
from promptforget.utils.dist import is_main_process

FOUR_SPLITS = ("train_retain", "train_forget", "test_retain", "test_forget")


def load_task_data(data: DataConfig):
    """Return ``(task, train, test)``; for bigbench, examples carry ``task`` so the forget split can
    be taken by task name."""
    from promptforget.spul.tasks import MultipleChoiceTask, SentimentTask

    if data.data == "bigbench":
        from promptforget.data.bigbench import load_bigbench_task
        from promptforget.data.splits import split_examples, subsample

        if not (data.bigbench_forget and data.bigbench_retain):
            raise ValueError("--data bigbench needs --bigbench-forget and --bigbench-retain task files")
        train, test = [], []
        for path in (data.bigbench_forget, data.bigbench_retain):
            exs = load_bigbench_task(path, max_choices=data.max_choices, seed=data.seed)
            tr, te = split_examples(exs, data.test_size, data.seed)
            train += subsample(tr, data.n_train // 2 if data.n_train else None, data.seed, stratify=False)
            test += subsample(te, data.n_test // 2 if data.n_test else None, data.seed, stratify=False)
        n_choices = max(len(ex["choices"]) for ex in train + test)
        return MultipleChoiceTask(num_choices=n_choices), train, test
    if data.data == "jsonl":
        from promptforget.data.splits import split_examples, subsample

        if not data.data_file:
            raise ValueError("--data jsonl needs --data-file")
        rows = _read_labelled_jsonl(data.data_file)
        labels = tuple(sorted({r["label"] for r in rows}))
        if len(labels) < 2:
            raise ValueError(f"{data.data_file}: need at least two distinct labels, got {list(labels)}")
        train, test = split_examples(rows, data.test_size, data.seed)
        return (SentimentTask(labels=labels), subsample(train, data.n_train, data.seed),
                subsample(test, data.n_test, data.seed))
    from promptforget.data.sentiment import load_sentiment

    train, test = load_sentiment(data.data, n_train=data.n_train, n_test=data.n_test, test_size=data.test_size,
                                 seed=data.seed)
    return SentimentTask(), train, test


def _read_labelled_jsonl(path) -> list[dict]:
    from promptforget.data.files import iter_jsonl

    rows = []
    for number, r in iter_jsonl(path):
        if not {"text", "label"} <= set(r):
            raise ValueError(f"{path}:{number}: each line needs 'text' and 'label'")
        r.setdefault("id", f"row-{number - 1}")
        rows.append(r)
    return rows


def forget_split(data: DataConfig, train, test) -> dict:
    """The four evaluation splits from ``data.forget`` (or, for bigbench, from the task membership)."""
    from promptforget.spul.forget_sets import build_forget_split

    if data.data == "bigbench":
        forget_task = _task_name(data.bigbench_forget)
        split = {
            "train_forget": [ex for ex in train if ex["task"] == forget_task],
            "train_retain": [ex for ex in train if ex["task"] != forget_task],
            "test_forget": [ex for ex in test if ex["task"] == forget_task],
            "test_retain": [ex for ex in test if ex["task"] != forget_task],
        }
        split["info"] = {"spec": f"bigbench task {forget_task}", "n_train_forget": len(split["train_forget"]),
                         "n_test_forget": len(split["test_forget"])}
        return split
    if not data.forget:
        raise ValueError("--forget is required (entity:NAMES, cluster:K:N, random:FRACTION or ids:FILE)")
    return build_forget_split(data.forget, train, test, seed=data.seed)


def _task_name(path) -> str:
    task = json.loads(Path(path).read_text(encoding="utf-8"))
    return task.get("name") or Path(path).stem


def split_ids(split: dict) -> dict:
    return {k: [ex["id"] for ex in v] for k, v in split.items() if k != "info"}


def write_run(out: Path, config: dict, results: dict) -> None:
    from promptforget.utils.io import atomic_write_json

    atomic_write_json(out / "config.json", config)
    atomic_write_json(out / "results.json", results)


def evaluate_four(scorer, tokenizer, task, split: dict, data: DataConfig) -> dict:
    from promptforget.spul.evaluate import evaluate_splits

    return evaluate_splits(scorer, tokenizer, task, {n: split[n] for n in FOUR_SPLITS}, data.max_length,
                           data.eval_batch_size)


def _generation_check(model, tokenizer, task, split: dict, data: DataConfig):
    from promptforget.spul.evaluate import generation_check

    return generation_check(model, tokenizer, task, split["train_forget"][:3] + split["train_retain"][:3],
                            data.max_length)


def accuracies(evaluation: dict) -> dict:
    return {k: v["accuracy"] for k, v in evaluation.items() if isinstance(v, dict)}


def finetune_run(out, model_name: str, data: DataConfig, config: FinetuneConfig, record: dict) -> dict | None:
    """Stage 1: LoRA fine-tune ``model_name`` on the task, merge, save ``out/model``; ``record`` (what
    was asked) opens ``config.json``. Returns the results (None on a rank other than 0)."""
    from promptforget.backbones.causal_lm import count_parameters, load_causal_lm
    from promptforget.spul import ops
    from promptforget.spul.evaluate import evaluate_splits
    from promptforget.spul.train import finetune

    out = Path(out)
    task, train, test = load_task_data(data)
    model, tok = load_causal_lm(model_name)
    t0 = time.time()
    model, hist = finetune(model, tok, task, train, config)
    secs = time.time() - t0
    if not is_main_process():  # under accelerate launch every rank trained the same model; rank 0 writes
        return None
    model.save_pretrained(str(out / "model"), safe_serialization=True)
    tok.save_pretrained(str(out / "model"))
    ev = evaluate_splits(lambda b: ops.label_logits(model, b), tok, task, {"train": train, "test": test},
                         data.max_length, data.eval_batch_size)
    results = {"evaluation": ev, "train_seconds": secs, "history": hist["steps"],
               "trainable_parameters": hist["trainable_parameters"], "parameters": count_parameters(model)}
    write_run(out, {**record, "finetune": config.to_dict(), "task": task.to_dict()}, results)
    return results


def unlearn_run(out, model_name: str, data: DataConfig, make_unlearner: Callable, save_as: str,
                record: dict) -> dict | None:
    """The flow shared by ``spul unlearn`` and ``baseline NAME``: build the forget split, load the
    stage-1 model, run ``make_unlearner(model, tokenizer, task).forget``, save it to ``out/save_as``,
    evaluate the four splits, write the run. Returns the results (None on a rank other than 0)."""
    from promptforget.backbones.causal_lm import load_causal_lm
    from promptforget.utils.io import atomic_write_json

    out = Path(out)
    task, train, test = load_task_data(data)
    split = forget_split(data, train, test)
    model, tok = load_causal_lm(model_name)
    unlearner = make_unlearner(model, tok, task)
    t0 = time.time()
    hist = unlearner.forget(split["train_forget"], split["train_retain"])
    secs = time.time() - t0
    if not is_main_process():
        return None
    unlearner.save_pretrained(out / save_as)
    atomic_write_json(out / "forget_split.json", {"info": split["info"], "ids": split_ids(split)})
    results = {"evaluation": evaluate_four(unlearner.scorer(), tok, task, split, data),
               "generation_check": _generation_check(unlearner.peft_model, tok, task, split, data),
               "train_seconds": secs, "history": hist["steps"],
               "trainable_parameters": sum(p.numel() for p in unlearner.trainable_parameters())}
    write_run(out, {**record, "task": task.to_dict(), "forget": split["info"]}, results)
    return results


def evaluate_run(out, model_name: str, data: DataConfig, record: dict, prompt=None, adapter=None) -> dict:
    """Four-split accuracy/F1 of ``model_name``, with a SPUL ``prompt`` or a baseline LoRA ``adapter``
    directory, or neither (the stage-1 model itself)."""
    from promptforget.backbones.causal_lm import load_causal_lm
    from promptforget.spul import ops

    if prompt and adapter:
        raise ValueError("give --prompt (SPUL) or --adapter (baseline LoRA), not both")
    task, train, test = load_task_data(data)
    split = forget_split(data, train, test)
    model, tok = load_causal_lm(model_name)
    gen_model = model
    if prompt:
        from promptforget.spul.model import SPUL

        spul = SPUL.from_pretrained(model, tok, prompt)
        scorer, gen_model = spul.scorer(), spul.peft_model
    elif adapter:
        from peft import PeftModel

        gen_model = PeftModel.from_pretrained(model, adapter)
        gen_model.eval()
        scorer = lambda b: ops.label_logits(gen_model, b)  # noqa: E731
    else:
        scorer = lambda b: ops.label_logits(model, b)  # noqa: E731
    results = {"evaluation": evaluate_four(scorer, tok, task, split, data),
               "generation_check": _generation_check(gen_model, tok, task, split, data)}
    write_run(Path(out), {**record, "task": task.to_dict(), "forget": split["info"]}, results)
    return results
