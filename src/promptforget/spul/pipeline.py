"""SPUL and baseline runs end to end: load the task data, take the forget split, train, evaluate the four
splits, and write the run directory: ``config.json`` (what was asked), ``results.json`` (what came out)
and the weights (``model/``, ``prompt/`` or ``adapter/``). Heavy imports happen inside the functions."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from promptforget.spul.config import DataConfig, FinetuneConfig
from promptforget.spul.runs import RunInputs
from promptforget.utils.dist import is_main_process
from promptforget.utils.tracking import Tracker

FOUR_SPLITS = ("train_retain", "train_forget", "test_retain", "test_forget")


def load_task_data(data: DataConfig, template=None):
    """Return ``(task, train, test)`` (see :func:`promptforget.spul.task_data.load_task`); for bigbench,
    examples carry ``task`` so the forget split can be taken by task name."""
    from promptforget.spul.task_data import load_task

    td = load_task(data, template)
    return td.task, td.train, td.test


def forget_split(data: DataConfig, train, test) -> dict:
    """The four evaluation splits from ``data.forget`` (or, for bigbench, from the task membership)."""
    from promptforget.spul.forget_sets import build_forget_split, frequent_capitalised_names

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
        names = frequent_capitalised_names(train, top_k=5)
        hint = f"; entity:auto picks the most frequent names (here: {', '.join(names)})" if names else ""
        raise ValueError("--forget is required (entity:NAMES, cluster:K:N, random:FRACTION or ids:FILE)" + hint)
    return build_forget_split(data.forget, train, test, seed=data.seed, min_size=data.min_forget)


def _task_name(path) -> str:
    task = json.loads(Path(path).read_text(encoding="utf-8"))
    return task.get("name") or Path(path).stem


def split_from_ids(train: list[dict], test: list[dict], ids: dict) -> dict:
    """The forget split a run recorded (by example id), taken again from its data."""
    by_id = {ex["id"]: ex for ex in train + test}
    missing = [i for v in ids.values() for i in v if i not in by_id]
    if missing:
        raise ValueError(f"{len(missing)} example id(s) of the forget split are not in the run's data "
                         f"(first: {missing[0]!r}); has the data changed since the run?")
    return {name: [by_id[i] for i in v] for name, v in ids.items()}


def prepare(inputs: RunInputs):
    """``(task_data, split)`` of a run's inputs: the examples (checked against the stage-1 record's hash)
    and the forget split (the recorded one, else built from ``--forget``)."""
    from promptforget.spul.task_data import load_task

    td = load_task(inputs.data, inputs.template)
    if inputs.data_sha256 and td.sha256 != inputs.data_sha256:
        raise ValueError(f"the data of {td.source} has changed since the stage-1 run {inputs.stage1_run} "
                         "(its examples no longer hash to the recorded sha256)")
    if inputs.forget_ids:
        split = split_from_ids(td.train, td.test, inputs.forget_ids)
        split["info"] = inputs.forget_info
    else:
        split = forget_split(inputs.data, td.train, td.test)
    return td, split


def split_ids(split: dict) -> dict:
    return {k: [ex["id"] for ex in v] for k, v in split.items() if k != "info"}


def _log():
    """The package's logger as accelerate gives it: under a multi-process launch rank 0 speaks."""
    from accelerate.logging import get_logger

    from promptforget.utils.dist import launch_state

    launch_state()  # the launch's state, which accelerate's logger reads
    return get_logger("promptforget.spul")


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


def summary_lines(out, results: dict) -> list[str]:
    """The results as a person reads them: one row per split (``--json`` prints the machine form)."""
    from promptforget.spul.evaluate import OTHER

    lines = [f"{'split':<14}{'n':>6}{'accuracy':>10}{'F1':>8}{'label words only':>18}{'outside label words':>21}"]
    for name, r in results["evaluation"].items():
        if not isinstance(r, dict):
            continue
        outside = r.get("predicted", {}).get(OTHER, 0)
        lines.append(f"{name:<14}{r['n']:>6}{_fmt(r['accuracy']):>10}{_fmt(r['f1_weighted']):>8}"
                     f"{_fmt(r['accuracy_restricted']):>18}{outside:>21}")
    lines.append(f"-> {Path(out) / 'results.json'}")
    return lines


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def stage1_warnings(evaluation: dict, labels: list[str]) -> list[str]:
    """What makes a stage-1 model a poor start for unlearning: accuracy at or below chance, or most predictions
    outside the label words (the model has not learned the task's answer format)."""
    from promptforget.spul.evaluate import OTHER

    chance = 1 / len(labels)
    out = []
    for name in ("train", "test"):
        r = evaluation.get(name)
        if not isinstance(r, dict) or not r.get("n"):
            continue
        if r["accuracy"] <= chance:
            out.append(f"stage 1 scores {r['accuracy']:.3f} on {name} ({r['n']} examples), at or below chance "
                       f"({chance:.3f}): unlearning from it measures nothing")
        outside = r.get("predicted", {}).get(OTHER, 0)
        if outside > r["n"] / 2:
            out.append(f"{outside}/{r['n']} {name} predictions are outside the label words ({', '.join(labels)})")
    if out:
        out.append("train longer (--epochs), with a higher --lr, on more data (--n-train), or check --template")
    return out


def finetune_run(out, model_name: str, data: DataConfig, config: FinetuneConfig, record: dict,
                 report_to: str = "none") -> dict | None:
    """Stage 1: LoRA fine-tune ``model_name`` on the task, merge, save ``out/model``; ``record`` (what
    was asked) opens ``config.json``. Returns the results (None on a rank other than 0)."""
    from promptforget.backbones.causal_lm import count_parameters, load_causal_lm
    from promptforget.spul import ops
    from promptforget.spul.evaluate import evaluate_splits
    from promptforget.spul.train import finetune

    from promptforget.spul.tasks import check_label_tokens, multi_token_note
    from promptforget.spul.task_data import load_task
    from promptforget.utils.io import atomic_write_json

    out = Path(out)
    td = load_task(data)
    task, train, test = td.task, td.train, td.test
    model, tok = load_causal_lm(model_name)
    check_label_tokens(tok, task.labels)  # words sharing a first token: one line, before any training
    note = multi_token_note(tok, task.labels)
    if note:
        _log().warning("note: %s", note)
    tracker = Tracker(report_to if is_main_process() else "none", out, "spul-finetune", config.to_dict())
    t0 = time.time()
    model, hist = finetune(model, tok, task, train, config, callback=tracker.step_callback())
    secs = time.time() - t0
    if not is_main_process():  # under accelerate launch every rank trained the same model; rank 0 writes
        return None
    model.save_pretrained(str(out / "model"), safe_serialization=True)
    tok.save_pretrained(str(out / "model"))
    ev = evaluate_splits(lambda b: ops.label_logits(model, b), tok, task, {"train": train, "test": test},
                         data.max_length, data.eval_batch_size)
    tracker.log(accuracies(ev), len(hist["steps"]), prefix="eval/")
    tracker.finish()
    warnings = stage1_warnings(ev, task.labels)
    for line in warnings:
        _log().warning("WARNING: %s", line)
    # the merged model has no trainable tensor left: "trainable" is what the LoRA trained
    results = {"evaluation": ev, "train_seconds": secs, "history": hist["steps"],
               "trainable_parameters": hist["trainable_parameters"],
               "parameters": {**count_parameters(model), "trainable": hist["trainable_parameters"]},
               "warnings": warnings}
    atomic_write_json(out / "template.json", td.template.to_dict())
    # What the later commands read instead of repeated flags (spul/runs.py).
    recorded = {**data.to_dict(), "data": td.source, "data_file": None, "split_seed": data.data_seed,
                "template": td.template.name if data.template in (None, td.template.name) else str(Path(data.template).resolve()),
                "forget": None}
    from promptforget.data.sources import source_record

    # data_source: where the data is relative to the run too, so a moved run finds it (data/sources.py)
    write_run(out, {**record, "model": model_name, "data": recorded, "data_source": source_record(td.source, out),
                    "data_sha256": td.sha256,
                    "n_train": len(train), "n_test": len(test), "template": td.template.to_dict(),
                    "label_tokens": note, "finetune": config.to_dict(), "task": task.to_dict()}, results)
    return results


def unlearn_run(out, inputs: RunInputs, make_unlearner: Callable, save_as: str, record: dict,
                report_to: str = "none") -> dict | None:
    """The flow shared by ``spul unlearn`` and ``baseline NAME``: build the forget split, load the
    stage-1 model, run ``make_unlearner(model, tokenizer, task).forget``, save it to ``out/save_as``,
    evaluate the four splits, write the run. Returns the results (None on a rank other than 0)."""
    from promptforget.backbones.causal_lm import load_causal_lm
    from promptforget.utils.io import atomic_write_json

    out = Path(out)
    td, split = prepare(inputs)
    task, data = td.task, inputs.data
    model, tok = load_causal_lm(inputs.model)
    unlearner = make_unlearner(model, tok, task)
    config = getattr(unlearner, "config", None)
    tracker = Tracker(report_to if is_main_process() else "none", out, record.get("command", "unlearn").replace(" ", "-"),
                      config.to_dict() if config is not None else None)
    t0 = time.time()
    hist = unlearner.forget(split["train_forget"], split["train_retain"], callback=tracker.step_callback())
    secs = time.time() - t0
    if not is_main_process():
        return None
    unlearner.save_pretrained(out / save_as)
    atomic_write_json(out / "forget_split.json", {"info": split["info"], "ids": split_ids(split)})
    results = {"evaluation": evaluate_four(unlearner.scorer(), tok, task, split, data),
               "generation_check": _generation_check(unlearner.peft_model, tok, task, split, data),
               "train_seconds": secs, "history": hist["steps"],
               "trainable_parameters": sum(p.numel() for p in unlearner.trainable_parameters())}
    tracker.log(accuracies(results["evaluation"]), len(hist["steps"]), prefix="eval/")
    tracker.finish()
    write_run(out, {**record, **_provenance(inputs, td, out), "task": task.to_dict(), "forget": split["info"]}, results)
    return results


def _provenance(inputs: RunInputs, td, out) -> dict:
    """Where a run came from: its stage-1 run (read by the next command given this run; absolute, and relative
    to this run for when both move together) and its data."""
    import os

    if inputs.stage1_run is None:
        return {}
    relative = Path(os.path.relpath(inputs.stage1_run, Path(out).resolve())).as_posix()
    return {"stage1_run": str(inputs.stage1_run), "stage1_run_relative": relative, "model": inputs.base_model,
            "data": inputs.data.to_dict(), "data_sha256": td.sha256}



def evaluate_run(out, inputs: RunInputs, record: dict, prompt=None, adapter=None) -> dict:
    """Four-split accuracy/F1 of the inputs' model, with a SPUL ``prompt`` or a baseline LoRA ``adapter``
    directory, or neither (the stage-1 model itself)."""
    from promptforget.backbones.causal_lm import load_causal_lm
    from promptforget.spul import ops
    from promptforget.spul.runs import check_made_from

    if prompt and adapter:
        raise ValueError("give --prompt (SPUL) or --adapter (baseline LoRA), not both")
    for path in (prompt, adapter):
        if path:
            check_made_from(path, inputs)
    td, split = prepare(inputs)
    task, data = td.task, inputs.data
    model, tok = load_causal_lm(inputs.model)
    gen_model = model
    if prompt:
        from promptforget.spul.model import SPUL

        spul = SPUL.from_pretrained(model, tok, prompt)
        scorer, gen_model = spul.scorer(), spul.peft_model
    elif adapter:
        from peft import PeftModel

        with ops.quiet_peft():
            gen_model = PeftModel.from_pretrained(model, adapter)
        gen_model.eval()
        scorer = lambda b: ops.label_logits(gen_model, b)  # noqa: E731
    else:
        scorer = lambda b: ops.label_logits(model, b)  # noqa: E731
    results = {"evaluation": evaluate_four(scorer, tok, task, split, data),
               "generation_check": _generation_check(gen_model, tok, task, split, data)}
    write_run(Path(out), {**record, **_provenance(inputs, td, out), "task": task.to_dict(), "forget": split["info"]},
              results)
    return results
