"""``promptforget audit RUN_DIR``: membership inference, residual-knowledge attacks, report, model card."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from promptforget.audit.pfm_audit import DEFAULT_NS

AUDIT_DIR = "audit"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "audit",
        help="audit a PFM or SPUL run's forgetting against a retrained reference (MIA, extraction attacks, probes)",
        description="Audit a Pre-Forgettable Model run. If the run still knows every class, --forget names the "
        "classes to forget (in memory; the run is not modified) and 'before' figures are reported too. "
        "Every figure is reported beside the retrain-from-scratch reference's. Writes audit.json, audit.md, "
        "plots and a model card (README.md) into the output directory. "
        "Given a `spul unlearn` run instead, audits the prompted model beside the stage-1 model without the "
        "prompt and beside stage 1 retrained on the retain set (--train-reference, or --reference DIR): "
        "4-split accuracy, label-position and sequence-level (LOSS, ZLib, Min-K%%, Min-K%%++) membership "
        "inference, black-box paraphrase and prompt-injection queries. Only --reference, --train-reference, "
        "--no-reference, --reference-epochs, --batch-size, --seed, --no-plots and --out apply to SPUL runs.",
    )
    p.add_argument("run_dir")
    p.add_argument("--forget", nargs="+", default=None, help="classes to forget for the audit (default: those the run forgot)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--reference", default=None, help="run directory of an already trained reference")
    g.add_argument("--train-reference", action="store_true",
                   help="train the reference (same recipe without the forgotten classes) into OUT/reference, "
                   "or reuse the one already there")
    g.add_argument("--no-reference", action="store_true", help="audit without a reference (figures cannot be judged)")
    p.add_argument("--reference-epochs", type=int, default=None, help="override the reference's epochs (default: the run's)")
    p.add_argument("--ns", type=int, nargs="+", default=list(DEFAULT_NS), help="adversary sample counts (default 1 5 25 100)")
    p.add_argument("--key-steps", type=int, default=100, help="key-recovery optimiser steps (default 100)")
    p.add_argument("--key-lr", type=float, default=1e-2)
    p.add_argument("--relearn-steps", type=int, default=50, help="relearning optimiser steps (default 50)")
    p.add_argument("--relearn-lr", type=float, default=1e-3)
    p.add_argument("--n-retain", type=int, default=100, help="retained-class samples in the adversary's set (default 100)")
    p.add_argument("--max-eval-retain", type=int, default=300, help="retained-class test samples checked during attacks")
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--threshold", type=float, default=0.5, help="accuracy that counts as 'recovered' (default 0.5)")
    p.add_argument("--max-eval", type=int, default=None, help="use at most N held-out samples (stratified)")
    p.add_argument("--max-mia", type=int, default=1000, help="retain-train samples used as shadow members (default 1000)")
    p.add_argument("--ulira-shadows", type=int, default=0, help="U-LiRA shadow models (even; 0 = skip, default)")
    p.add_argument("--ulira-epochs", type=int, default=1, help="epochs of each U-LiRA shadow (default 1)")
    p.add_argument("--ulira-pool", type=int, default=None, help="subsample train+test to N for U-LiRA shadows")
    p.add_argument("--retained-probes", nargs="*", default=None,
                   help="probe modes on retained-class samples (default: all; none given = skip)")
    p.add_argument("--no-attacks", action="store_true", help="skip key recovery, relearning and linear probes")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help=f"output directory (default RUN_DIR/{AUDIT_DIR})")
    p.set_defaults(func=cmd_audit)


def cmd_audit(args) -> int:

    import torch

    from promptforget.audit.pfm_audit import audit_pfm, pfm_ulira
    from promptforget.audit.reference import train_pfm_reference
    from promptforget.audit.report import write_report
    from promptforget.pfm.cli import _stratified_cap, load_split
    from promptforget.store.layout import WEIGHTS_NAME, read_split_record
    from promptforget.pfm.evaluate import PROBES
    from promptforget.pfm.model import PFMModel

    run_dir = Path(args.run_dir)
    out = Path(args.out) if args.out else run_dir / AUDIT_DIR
    if is_spul_run(run_dir):
        return audit_spul_run(args, run_dir, out)
    if any(n < 1 for n in args.ns):
        raise ValueError("--ns values must be >= 1")
    if args.ulira_shadows and (args.ulira_shadows < 2 or args.ulira_shadows % 2):
        raise ValueError("--ulira-shadows must be an even number >= 2 (or 0 to skip)")
    t0 = time.perf_counter()
    model = PFMModel.from_pretrained(run_dir)
    forgotten = model.forgotten_classes or list(args.forget or [])
    if not forgotten:
        raise ValueError("the run has forgotten nothing: pass --forget CLASS [CLASS ...]")
    for c in forgotten:
        model.class_index(c)  # unknown names fail here, before any expensive work
    train, test = load_split(run_dir)
    test = _stratified_cap(test, args.max_eval, model.config.seed)
    print(f"[audit] {run_dir}: forgetting {forgotten}; {len(train)} train / {len(test)} test samples", flush=True)
    xtr, ytr = model.encode_dataset(train.inputs), torch.as_tensor(train.labels)
    xte, yte = model.encode_dataset(test.inputs), torch.as_tensor(test.labels)

    reference = None
    if args.reference:
        reference = PFMModel.from_pretrained(args.reference)
    elif args.train_reference:
        ref_dir = out / "reference"
        if (ref_dir / WEIGHTS_NAME).is_file():
            reference = PFMModel.from_pretrained(ref_dir)
            print(f"[audit] reusing the reference in {ref_dir}", flush=True)
        else:
            overrides = {"epochs": args.reference_epochs} if args.reference_epochs is not None else None
            print("[audit] training the retrain-from-scratch reference ...", flush=True)
            reference = train_pfm_reference(model.config, xtr, ytr, forgotten, ref_dir, config_overrides=overrides)
    elif not args.no_reference:
        raise ValueError("give --reference DIR, --train-reference, or --no-reference")

    audit = audit_pfm(model, xtr, ytr, xte, yte, forget=forgotten, reference=reference, ns=args.ns,
                      max_mia=args.max_mia, attacks=not args.no_attacks, key_steps=args.key_steps, key_lr=args.key_lr,
                      relearn_steps=args.relearn_steps, relearn_lr=args.relearn_lr, n_retain=args.n_retain,
                      max_eval_retain=args.max_eval_retain,
                      eval_every=args.eval_every, retained_probes=PROBES if args.retained_probes is None else args.retained_probes,
                      threshold=args.threshold, seed=args.seed, batch_size=args.batch_size)
    if args.ulira_shadows:
        import copy

        kw = dict(n_shadow=args.ulira_shadows, config_overrides={"epochs": args.ulira_epochs},
                  max_pool=args.ulira_pool, seed=args.seed)
        audited = model
        if not model.forgotten_classes:
            audited = copy.deepcopy(model)
            audited.forget(forgotten)
        targets = {"audited": audited} | ({"reference": reference} if reference is not None else {})
        print(f"[audit] U-LiRA: training {args.ulira_shadows} shadow models ...", flush=True)
        for name, res in pfm_ulira(model.config, xtr, ytr, xte, yte, targets, forgotten, **kw).items():
            audit["models"][name]["ulira"] = res
    audit["run_dir"] = str(run_dir)
    audit["settings"] = {k: v for k, v in vars(args).items() if k != "func"}
    audit["audit_seconds"] = time.perf_counter() - t0
    dataset = read_split_record(run_dir).get("dataset")
    paths = write_report(audit, out, config=model.config.to_dict(), dataset=dataset, with_plots=not args.no_plots)
    print((out / "audit.md").read_text().split("## Definitions")[0])
    print(f"[audit] done in {audit['audit_seconds']:.0f}s -> {paths['json']}")
    return 0


# --- SPUL runs ---------------------------------------------------------------------------------------
def is_spul_run(run_dir: Path) -> bool:
    """A ``promptforget spul unlearn`` run: it holds the soft prompt and the forget split's ids."""
    return (run_dir / "prompt" / "spul_config.json").is_file() and (run_dir / "forget_split.json").is_file()


def _split_from_ids(train: list[dict], test: list[dict], ids: dict) -> dict:
    by_id = {ex["id"]: ex for ex in train + test}
    missing = [i for v in ids.values() for i in v if i not in by_id]
    if missing:
        raise ValueError(f"{len(missing)} example id(s) of the forget split are not in the run's data "
                         f"(first: {missing[0]!r}); has the data changed since the run?")
    return {name: [by_id[i] for i in v] for name, v in ids.items()}


def _stage1_run(model_path: str) -> tuple[str, dict]:
    """The base model and fine-tuning config of the stage-1 run whose ``model/`` the SPUL run used."""
    import json

    cfg_path = Path(model_path).parent / "config.json"
    if not cfg_path.is_file():
        raise ValueError(f"cannot train the reference: {cfg_path} (the stage-1 run's config) not found; "
                         "train it yourself with `spul finetune` on the retain set and pass --reference DIR")
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("command") != "spul finetune" or "finetune" not in cfg:
        raise ValueError(f"{cfg_path} is not a `spul finetune` run config")
    return cfg["args"]["model"], cfg["finetune"]


def audit_spul_run(args, run_dir: Path, out: Path) -> int:
    """``promptforget audit SPUL_RUN``: the SPUL prompt, the stage-1 model it sits on, and stage 1
    retrained on the retain set only (the reference), audited side by side."""
    import json

    from promptforget.audit.spul_audit import audit_spul, write_spul_report
    from promptforget.backbones.causal_lm import load_causal_lm
    from promptforget.spul.cli import data_from_args
    from promptforget.spul.config import FinetuneConfig
    from promptforget.spul.model import SPUL
    from promptforget.spul.train import finetune

    t0 = time.perf_counter()
    run_cfg = json.loads((run_dir / "config.json").read_text())
    run_args = argparse.Namespace(**run_cfg["args"])
    forget_split = json.loads((run_dir / "forget_split.json").read_text())
    task, train, test = data_from_args(run_args)
    split = _split_from_ids(train, test, forget_split["ids"])
    print(f"[audit] SPUL run {run_dir}: " + ", ".join(f"{k} {len(v)}" for k, v in split.items()), flush=True)

    reference = None
    if args.reference:
        ref_path = Path(args.reference)
        reference, _ = load_causal_lm(str(ref_path / "model" if (ref_path / "model").is_dir() else ref_path))
    elif args.train_reference:
        ref_dir = out / "reference" / "model"
        if (ref_dir / "config.json").is_file():
            print(f"[audit] reusing the reference in {ref_dir}", flush=True)
            reference, _ = load_causal_lm(str(ref_dir))
        else:
            base, ft = _stage1_run(run_args.model)
            if args.reference_epochs is not None:
                ft = {**ft, "epochs": args.reference_epochs}
            print(f"[audit] training the reference: stage 1 ({base}) on the {len(split['train_retain'])} retain "
                  "examples only ...", flush=True)
            reference, ref_tok = load_causal_lm(base)
            reference, _ = finetune(reference, ref_tok, task, split["train_retain"], FinetuneConfig.from_dict(ft))
            reference.save_pretrained(str(ref_dir), safe_serialization=True)
            ref_tok.save_pretrained(str(ref_dir))
    elif not args.no_reference:
        raise ValueError("give --reference DIR, --train-reference, or --no-reference")

    model, tok = load_causal_lm(run_args.model)
    spul = SPUL.from_pretrained(model, tok, run_dir / "prompt")
    audit = audit_spul(spul, split, reference, max_length=run_args.max_length, batch_size=args.batch_size,
                       seed=args.seed, progress=lambda m: print(m, flush=True))
    audit.update(run_dir=str(run_dir), forget_info=forget_split["info"], stage1_model=run_args.model,
                 settings={k: v for k, v in vars(args).items() if k != "func"},
                 audit_seconds=time.perf_counter() - t0)
    paths = write_spul_report(audit, out, with_plots=not args.no_plots)
    print((out / "audit.md").read_text().split("## Definitions")[0])
    print(f"[audit] done in {audit['audit_seconds']:.0f}s -> {paths['json']}")
    return 0
