"""``promptforget spul finetune|unlearn|evaluate``.

Each command writes a run directory: ``config.json`` (what was asked), ``results.json`` (what came
out), plus weights: ``model/`` (stage-1 merged model, safetensors), ``prompt/`` (SPUL soft prompt as a
PEFT adapter, loadable with ``PeftModel.from_pretrained(base_model, "RUN/prompt")``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from promptforget.utils.dist import is_main_process

DATA_CHOICES = ("rotten_tomatoes", "sst2", "yelp_polarity", "jsonl", "bigbench")


# --- shared argument groups (also used by ``promptforget baseline``) -----------------------------
def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2", help="HF name, directory or .gguf (default: offline SmolLM2-135M-Instruct)")
    p.add_argument("--out", required=True, help="run directory to write (created)")


def add_data_args(p: argparse.ArgumentParser, forget: bool = True) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", default="rotten_tomatoes", choices=DATA_CHOICES)
    g.add_argument("--data-file", help="for --data jsonl: one {\"id\", \"text\", \"label\"} object per line")
    g.add_argument("--bigbench-forget", help="for --data bigbench: task JSON whose examples are forgotten")
    g.add_argument("--bigbench-retain", help="for --data bigbench: task JSON whose examples are retained")
    g.add_argument("--max-choices", type=int, default=4, help="bigbench: keep at most this many choices")
    g.add_argument("--n-train", type=int, default=None, help="subsample the training split (label-balanced)")
    g.add_argument("--n-test", type=int, default=None, help="subsample the test split")
    g.add_argument("--test-size", type=float, default=0.2)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--max-length", type=int, default=128, help="max tokens per prompt+label (text is truncated)")
    if forget:
        g.add_argument(
            "--forget",
            help="forget set: entity:Name1,Name2 | cluster:K:N[:MIN_SIZE] | random:FRACTION | ids:FILE_OR_LIST "
            "(not used with --data bigbench, where the forget task is the forget set)",
        )


def load_data(data: str, seed: int = 0, n_train=None, n_test=None, test_size: float = 0.2, data_file=None,
              bigbench_forget=None, bigbench_retain=None, max_choices: int = 4):
    """Return ``(task, train, test)``; for bigbench, examples carry ``task`` so the forget split can
    be taken by task name."""
    from promptforget.spul.tasks import MultipleChoiceTask, SentimentTask

    if data == "bigbench":
        from promptforget.data.bigbench import load_bigbench_task
        from promptforget.data.sentiment import subsample, train_test_split

        if not (bigbench_forget and bigbench_retain):
            raise ValueError("--data bigbench needs --bigbench-forget and --bigbench-retain task files")
        train, test = [], []
        for path in (bigbench_forget, bigbench_retain):
            exs = load_bigbench_task(path, max_choices=max_choices, seed=seed)
            tr, te = train_test_split(exs, test_size, seed)
            train += subsample(tr, n_train // 2 if n_train else None, seed, stratify=False)
            test += subsample(te, n_test // 2 if n_test else None, seed, stratify=False)
        n_choices = max(len(ex["choices"]) for ex in train + test)
        return MultipleChoiceTask(num_choices=n_choices), train, test
    if data == "jsonl":
        from promptforget.data.sentiment import subsample, train_test_split

        if not data_file:
            raise ValueError("--data jsonl needs --data-file")
        rows = []
        for i, line in enumerate(Path(data_file).read_text(encoding="utf-8").splitlines()):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{data_file}:{i + 1}: not valid JSON ({exc})") from None
            if not {"text", "label"} <= set(r):
                raise ValueError(f"{data_file}:{i + 1}: each line needs 'text' and 'label'")
            r.setdefault("id", f"row-{i}")
            rows.append(r)
        labels = tuple(sorted({r["label"] for r in rows}))
        if len(labels) < 2:
            raise ValueError(f"{data_file}: need at least two distinct labels, got {list(labels)}")
        train, test = train_test_split(rows, test_size, seed)
        return SentimentTask(labels=labels), subsample(train, n_train, seed), subsample(test, n_test, seed)
    from promptforget.data.sentiment import load_sentiment

    train, test = load_sentiment(data, n_train=n_train, n_test=n_test, test_size=test_size, seed=seed)
    return SentimentTask(), train, test


def data_from_args(args):
    return load_data(args.data, args.seed, args.n_train, args.n_test, args.test_size, args.data_file,
                     args.bigbench_forget, args.bigbench_retain, args.max_choices)


def forget_splits(args, train, test) -> dict:
    """The four evaluation splits from ``--forget`` (or, for bigbench, from the task membership)."""
    from promptforget.spul.forget_sets import build_forget_split

    if args.data == "bigbench":
        forget_task = _task_name(args.bigbench_forget)
        split = {
            "train_forget": [ex for ex in train if ex["task"] == forget_task],
            "train_retain": [ex for ex in train if ex["task"] != forget_task],
            "test_forget": [ex for ex in test if ex["task"] == forget_task],
            "test_retain": [ex for ex in test if ex["task"] != forget_task],
        }
        split["info"] = {"spec": f"bigbench task {forget_task}", "n_train_forget": len(split["train_forget"]),
                         "n_test_forget": len(split["test_forget"])}
        return split
    if not getattr(args, "forget", None):
        raise ValueError("--forget is required (entity:NAMES, cluster:K:N, random:FRACTION or ids:FILE)")
    return build_forget_split(args.forget, train, test, seed=args.seed)


def _task_name(path) -> str:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return data.get("name") or Path(path).stem


def split_ids(split: dict) -> dict:
    return {k: [ex["id"] for ex in v] for k, v in split.items() if k != "info"}


def write_run(out: Path, config: dict, results: dict) -> None:
    from promptforget.utils.io import atomic_write_json

    atomic_write_json(out / "config.json", config)
    atomic_write_json(out / "results.json", results)


def _args_dict(args) -> dict:
    return {k: v for k, v in vars(args).items() if k != "func"}


def _eval_four(scorer, tokenizer, task, split, max_length, batch_size):
    from promptforget.spul.evaluate import evaluate_splits

    names = ("train_retain", "train_forget", "test_retain", "test_forget")
    return evaluate_splits(scorer, tokenizer, task, {n: split[n] for n in names}, max_length, batch_size)


# --- handlers -----------------------------------------------------------------------------------
def cmd_finetune(args) -> int:
    from promptforget.backbones.causal_lm import count_parameters, load_causal_lm
    from promptforget.spul import ops
    from promptforget.spul.config import FinetuneConfig
    from promptforget.spul.evaluate import evaluate_splits
    from promptforget.spul.train import finetune

    out = Path(args.out)
    cfg = FinetuneConfig(lr=args.lr, epochs=args.epochs, batch_size=args.batch_size, max_length=args.max_length,
                         seed=args.seed, lora_r=args.lora_r, lora_alpha=args.lora_alpha)
    task, train, test = data_from_args(args)
    model, tok = load_causal_lm(args.model)
    t0 = time.time()
    model, hist = finetune(model, tok, task, train, cfg)
    secs = time.time() - t0
    if not is_main_process():  # under accelerate launch every rank trained the same model; rank 0 writes
        return 0
    model.save_pretrained(str(out / "model"), safe_serialization=True)
    tok.save_pretrained(str(out / "model"))
    ev = evaluate_splits(lambda b: ops.label_logits(model, b), tok, task, {"train": train, "test": test},
                         args.max_length, args.eval_batch_size)
    results = {"evaluation": ev, "train_seconds": secs, "history": hist["steps"],
               "trainable_parameters": hist["trainable_parameters"], "parameters": count_parameters(model)}
    write_run(out, {"command": "spul finetune", "args": _args_dict(args), "finetune": cfg.to_dict(),
                    "task": task.to_dict()}, results)
    print(json.dumps({"out": str(out), "train_acc": ev["train"]["accuracy"], "test_acc": ev["test"]["accuracy"]}))
    return 0


def run_unlearner(args, make_unlearner, save_as: str, command: str, config_key: str, cfg) -> int:
    """The flow shared by ``spul unlearn`` and ``baseline NAME``: build the forget split, load the
    stage-1 model, run ``make_unlearner(model, tokenizer, task).forget``, save, evaluate, write the run."""
    from promptforget.backbones.causal_lm import load_causal_lm
    from promptforget.spul.evaluate import generation_check
    from promptforget.utils.io import atomic_write_json

    out = Path(args.out)
    task, train, test = data_from_args(args)
    split = forget_splits(args, train, test)
    model, tok = load_causal_lm(args.model)
    unlearner = make_unlearner(model, tok, task)
    t0 = time.time()
    hist = unlearner.forget(split["train_forget"], split["train_retain"])
    secs = time.time() - t0
    if not is_main_process():
        return 0
    unlearner.save_pretrained(out / save_as)
    atomic_write_json(out / "forget_split.json", {"info": split["info"], "ids": split_ids(split)})
    ev = _eval_four(unlearner.scorer(), tok, task, split, args.max_length, args.eval_batch_size)
    gen = generation_check(unlearner.peft_model, tok, task, split["train_forget"][:3] + split["train_retain"][:3],
                           args.max_length)
    results = {"evaluation": ev, "generation_check": gen, "train_seconds": secs, "history": hist["steps"],
               "trainable_parameters": sum(p.numel() for p in unlearner.trainable_parameters())}
    write_run(out, {"command": command, "args": _args_dict(args), config_key: cfg.to_dict(), "task": task.to_dict(),
                    "forget": split["info"]}, results)
    print(json.dumps({"out": str(out), **{k: v["accuracy"] for k, v in ev.items() if isinstance(v, dict)}}))
    return 0


def generic_labels(args) -> list[str]:
    return [w.strip() for w in args.generic_labels.split(",") if w.strip()]


def cmd_unlearn(args) -> int:
    from promptforget.spul.config import SPULConfig
    from promptforget.spul.model import SPUL

    cfg = SPULConfig(lr=args.lr, epochs=args.epochs, batch_size=args.batch_size, alpha=args.alpha, beta=args.beta,
                     num_virtual_tokens=args.num_virtual_tokens, encoder_hidden_size=args.encoder_hidden_size,
                     max_length=args.max_length, seed=args.seed, kl_reference=args.kl_reference,
                     generic_labels=generic_labels(args))
    return run_unlearner(args, lambda m, tok, task: SPUL(m, tok, task, cfg), "prompt", "spul unlearn", "spul", cfg)


def cmd_evaluate(args) -> int:
    from promptforget.backbones.causal_lm import load_causal_lm
    from promptforget.spul import ops
    from promptforget.spul.evaluate import generation_check

    out = Path(args.out)
    task, train, test = data_from_args(args)
    split = forget_splits(args, train, test)
    model, tok = load_causal_lm(args.model)
    gen_model = model
    if args.prompt and args.adapter:
        raise ValueError("give --prompt (SPUL) or --adapter (baseline LoRA), not both")
    if args.prompt:
        from promptforget.spul.model import SPUL

        spul = SPUL.from_pretrained(model, tok, args.prompt)
        scorer, gen_model = spul.scorer(), spul.peft_model
    elif args.adapter:
        from peft import PeftModel

        gen_model = PeftModel.from_pretrained(model, args.adapter)
        gen_model.eval()
        scorer = lambda b: ops.label_logits(gen_model, b)  # noqa: E731
    else:
        scorer = lambda b: ops.label_logits(model, b)  # noqa: E731
    ev = _eval_four(scorer, tok, task, split, args.max_length, args.eval_batch_size)
    gen = generation_check(gen_model, tok, task, split["train_forget"][:3] + split["train_retain"][:3], args.max_length)
    write_run(out, {"command": "spul evaluate", "args": _args_dict(args), "task": task.to_dict(), "forget": split["info"]},
              {"evaluation": ev, "generation_check": gen})
    print(json.dumps({"out": str(out), **{k: v["accuracy"] for k, v in ev.items() if isinstance(v, dict)}}))
    return 0


def register(subparsers) -> None:
    spul = subparsers.add_parser("spul", help="SPUL: soft-prompt unlearning for frozen causal LLMs")
    sub = spul.add_subparsers(dest="spul_command", metavar="STEP")

    p = sub.add_parser("finetune", help="stage 1: LoRA fine-tune on the task, merge, save the model")
    add_model_args(p)
    add_data_args(p, forget=False)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--lora-alpha", type=int, default=64)
    p.add_argument("--eval-batch-size", type=int, default=32)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("unlearn", help="train a soft prompt that makes the (frozen) model forget the forget set")
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--alpha", type=float, default=1.0, help="weight of the retain CE loss")
    p.add_argument("--beta", type=float, default=0.5, help="weight of the retain KL loss")
    p.add_argument("--num-virtual-tokens", type=int, default=30)
    p.add_argument("--encoder-hidden-size", type=int, default=128)
    p.add_argument("--generic-labels", default="neutral,unknown")
    p.add_argument("--kl-reference", default="cache", choices=("cache", "recompute"))
    p.add_argument("--eval-batch-size", type=int, default=32)
    p.set_defaults(func=cmd_unlearn)

    p = sub.add_parser("evaluate", help="4-split accuracy/F1 of a model, optionally with a SPUL prompt or LoRA adapter")
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--prompt", help="SPUL prompt directory (RUN/prompt)")
    p.add_argument("--adapter", help="baseline LoRA adapter directory (RUN/adapter)")
    p.add_argument("--eval-batch-size", type=int, default=32)
    p.set_defaults(func=cmd_evaluate)

    def _need_step(args):
        spul.print_help()
        return 2

    spul.set_defaults(func=_need_step)
