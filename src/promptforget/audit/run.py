"""Audit a run directory: a PFM run (its forgotten classes, or ``forget`` forgotten in memory) or a
``spul unlearn`` run, each beside a retrain-from-scratch reference, into a report directory
(audit.json, audit.md, plots, model card). Heavy imports happen inside the functions."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Sequence

from promptforget.audit.config import AuditConfig
from promptforget.store.layout import AUDIT_DIR, run_family

log = logging.getLogger("promptforget.audit")


def is_spul_run(run_dir: Path) -> bool:
    """A ``promptforget spul unlearn`` run: it holds the soft prompt and the forget split's ids."""
    return (run_dir / "prompt" / "spul_config.json").is_file() and (run_dir / "forget_split.json").is_file()


def audit_run(run_dir, config: AuditConfig, *, out=None, forget: Sequence[str] | None = None,
              reference: str | None = None, train_reference: bool = False, no_reference: bool = False) -> dict:
    """Audit ``run_dir`` into ``out`` (default ``RUN_DIR/audit``). The reference is a trained run
    directory (``reference``), trained into ``OUT/reference`` (``train_reference``, reused if there), or
    knowingly absent (``no_reference``). Returns the report's paths, ``out`` included."""
    run_dir = Path(run_dir)
    out = Path(out) if out else run_dir / AUDIT_DIR
    settings = {"run_dir": str(run_dir), "forget": forget, "reference": reference, "train_reference": train_reference,
                "no_reference": no_reference, "out": str(out), **config.to_dict()}
    if run_family(run_dir) == "analytic":  # its reference is recomputed bit for bit: no option to choose
        return audit_analytic_run(run_dir, out, forget)
    if not (reference or train_reference or no_reference):
        raise ValueError("give --reference DIR, --train-reference, or --no-reference")
    audit = audit_spul_run if is_spul_run(run_dir) else audit_pfm_run
    return audit(run_dir, out, config, forget=forget, reference=reference, train_reference=train_reference,
                 settings=settings)


def audit_analytic_run(run_dir: Path, out: Path, forget=None) -> dict:
    """An analytic run beside its recomputed retrain (:mod:`promptforget.audit.analytic_audit`)."""
    from promptforget.audit.analytic_audit import audit_run as audit_analytic
    from promptforget.store.ledger import load_key

    if forget:
        raise ValueError("an analytic run is audited on what its ledger forgot: forget with `promptforget forget` "
                         "first (--forget is for PFM runs)")
    if out != run_dir / AUDIT_DIR:
        raise ValueError("an analytic run's audit is written into RUN_DIR/audit (--out is for PFM and SPUL runs)")
    t0 = time.perf_counter()
    audit_analytic(run_dir, load_key())
    return {"out": str(out), "json": str(out / "audit.json"), "audit_seconds": time.perf_counter() - t0}


def audit_pfm_run(run_dir: Path, out: Path, config: AuditConfig, *, forget=None, reference=None,
                  train_reference=False, settings=None) -> dict:
    import torch

    from promptforget.audit.pfm_audit import audit_pfm, pfm_ulira
    from promptforget.audit.reference import train_pfm_references
    from promptforget.audit.pfm_audit import write_report
    from promptforget.pfm.card import write_model_card
    from promptforget.pfm.evaluate import PROBES
    from promptforget.pfm.model import PFMModel
    from promptforget.pfm.run import load_split, stratified_cap
    from promptforget.store.layout import read_split_record

    t0 = time.perf_counter()
    model = PFMModel.from_pretrained(run_dir)
    forgotten = model.forgotten_classes or list(forget or [])
    if not forgotten:
        raise ValueError("the run has forgotten nothing: pass --forget CLASS [CLASS ...]")
    for c in forgotten:
        model.class_index(c)  # unknown names fail here, before any expensive work
    train, test = load_split(run_dir)
    test = stratified_cap(test, config.max_eval, model.config.seed)
    log.info("[audit] %s: forgetting %s; %d train / %d test samples", run_dir, forgotten, len(train), len(test))
    xtr, ytr = model.encode_dataset(train.inputs), torch.as_tensor(train.labels)
    xte, yte = model.encode_dataset(test.inputs), torch.as_tensor(test.labels)
    ulira_shadows = config.ulira_shadows
    if ulira_shadows and not bool(torch.isin(yte, torch.tensor([model.class_index(c) for c in forgotten])).any()):
        log.warning("[audit] U-LiRA skipped: the held-out split has no samples of %s (its non-members)", forgotten)
        ulira_shadows = 0

    references = None
    if reference:
        references = [PFMModel.from_pretrained(reference)]
    elif train_reference:
        overrides = {"epochs": config.reference_epochs} if config.reference_epochs is not None else None
        log.info("[audit] %d retrain-from-scratch reference(s) in %s (saved ones are reused) ...",
                 config.reference_seeds, out / "reference")
        references = train_pfm_references(model.config, xtr, ytr, forgotten, out / "reference",
                                          reference_seeds=config.reference_seeds, config_overrides=overrides)

    c = config
    audit = audit_pfm(model, xtr, ytr, xte, yte, forget=forgotten, reference=references, ns=c.ns,
                      max_mia=c.max_mia, attacks=c.attacks, key_steps=c.key_steps, key_budgets=c.key_budgets,
                      key_restarts=c.key_restarts, key_lr=c.key_lr, relearn_steps=c.relearn_steps,
                      relearn_lr=c.relearn_lr, attack_seeds=c.attack_seeds, n_retain=c.n_retain,
                      max_eval_retain=c.max_eval_retain, eval_every=c.eval_every,
                      retained_probes=PROBES if c.retained_probes is None else c.retained_probes,
                      threshold=c.threshold, seed=c.seed, batch_size=c.batch_size)
    if ulira_shadows:
        import copy

        audited = model
        if not model.forgotten_classes:
            audited = copy.deepcopy(model)
            audited.forget(forgotten)
        targets = {"audited": audited} | ({"reference": references} if references else {})
        log.info("[audit] U-LiRA: training %d shadow models with the run's recipe ...", ulira_shadows)
        shadows = pfm_ulira(model.config, xtr, ytr, xte, yte, targets, forgotten, n_shadow=ulira_shadows,
                            seed=c.seed, log=log.info)
        for name, res in shadows.items():
            audit["models"][name]["ulira"] = res
    audit["run_dir"] = str(run_dir)
    audit["settings"] = settings or config.to_dict()
    audit["audit_seconds"] = time.perf_counter() - t0
    dataset = read_split_record(run_dir).get("dataset")
    paths = write_report(audit, out, config=model.config.to_dict(), dataset=dataset, with_plots=c.plots)
    # The run's own card carries the verdicts (read from audit/audit.json) when the audit lives in the run.
    if Path(out).resolve() == (Path(run_dir) / AUDIT_DIR).resolve():
        write_model_card(run_dir)
    return {**paths, "out": out, "audit_seconds": audit["audit_seconds"]}


def stage1_run(model_path: str) -> tuple[str, dict]:
    """The base model and fine-tuning config of the stage-1 run whose ``model/`` the SPUL run used."""
    cfg_path = Path(model_path).parent / "config.json"
    if not cfg_path.is_file():
        raise ValueError(f"cannot train the reference: {cfg_path} (the stage-1 run's config) not found; "
                         "train it yourself with `spul finetune` on the retain set and pass --reference DIR")
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("command") != "spul finetune" or "finetune" not in cfg:
        raise ValueError(f"{cfg_path} is not a `spul finetune` run config")
    return cfg["args"]["model"], cfg["finetune"]


def spul_run_inputs(run_dir: Path):
    """A SPUL run's inputs: from its stage-1 record when it names one, else (older runs) from its own flags."""
    from promptforget.spul.config import DataConfig
    from promptforget.spul.runs import RunInputs, resolve_inputs
    from promptforget.utils.config import config_from_args

    cfg = json.loads((run_dir / "config.json").read_text())
    if "stage1_run" in cfg:
        return resolve_inputs(run_dir, {})
    return RunInputs(model=cfg["args"]["model"], data=config_from_args(DataConfig, cfg["args"]))


def check_reference_model(reference: Path, inputs) -> None:
    """A reference fine-tuned from another base model than the audited run's is not its reference."""
    cfg_path = reference / "config.json"
    if inputs.base_model is None or not cfg_path.is_file():
        return
    base = json.loads(cfg_path.read_text()).get("model")
    if base is not None and base != inputs.base_model:
        raise ValueError(f"--reference {reference} was fine-tuned from {base!r}, the audited run from {inputs.base_model!r}")


def audit_spul_run(run_dir: Path, out: Path, config: AuditConfig, *, forget=None, reference=None,
                   train_reference=False, settings=None) -> dict:
    """The SPUL prompt, the stage-1 model it sits on, and stage 1 retrained on the retain set only (the
    reference), audited side by side. ``forget`` does not apply: the run's forget split is audited."""
    from promptforget.audit.reference import reference_seed_list
    from promptforget.audit.spul_audit import audit_spul, write_spul_report
    from promptforget.backbones.causal_lm import load_causal_lm
    from promptforget.spul.config import FinetuneConfig
    from promptforget.spul.model import SPUL
    from promptforget.spul.pipeline import prepare
    from promptforget.spul.train import finetune

    t0 = time.perf_counter()
    inputs = spul_run_inputs(run_dir)
    data = inputs.data
    forget_split = json.loads((run_dir / "forget_split.json").read_text())
    inputs.forget_ids, inputs.forget_info = forget_split["ids"], forget_split["info"]
    td, split = prepare(inputs)
    task = td.task
    split = {k: v for k, v in split.items() if k != "info"}
    log.info("[audit] SPUL run %s: %s", run_dir, ", ".join(f"{k} {len(v)}" for k, v in split.items()))

    references = None
    if reference:
        ref_path = Path(reference)
        check_reference_model(ref_path, inputs)
        references = [load_causal_lm(str(ref_path / "model" if (ref_path / "model").is_dir() else ref_path))[0]]
    elif train_reference:
        base, ft = stage1_run(inputs.model)
        if config.reference_epochs is not None:
            ft = {**ft, "epochs": config.reference_epochs}
        references = []
        # Stage 1 retrained on the retain set only, once per seed (never stage 1's own seed): their spread
        # makes the prediction interval.
        for seed in reference_seed_list(ft["seed"], config.reference_seeds):
            ref_dir = out / "reference" / f"seed-{seed}" / "model"
            if (ref_dir / "config.json").is_file():
                log.info("[audit] reusing the reference in %s", ref_dir)
                references.append(load_causal_lm(str(ref_dir))[0])
                continue
            log.info("[audit] training reference seed %d: stage 1 (%s) on the %d retain examples only ...", seed,
                     base, len(split["train_retain"]))
            ref, ref_tok = load_causal_lm(base)
            ref, _ = finetune(ref, ref_tok, task, split["train_retain"], FinetuneConfig.from_dict({**ft, "seed": seed}))
            ref.save_pretrained(str(ref_dir), safe_serialization=True)
            ref_tok.save_pretrained(str(ref_dir))
            references.append(ref)

    model, tok = load_causal_lm(inputs.model)
    spul = SPUL.from_pretrained(model, tok, run_dir / "prompt")
    audit = audit_spul(spul, split, references, max_length=data.max_length, batch_size=config.batch_size,
                       seed=config.seed, progress=log.info)
    audit.update(run_dir=str(run_dir), forget_info=forget_split["info"], stage1_model=inputs.model,
                 settings=settings or config.to_dict(), audit_seconds=time.perf_counter() - t0)
    paths = write_spul_report(audit, out, with_plots=config.plots)
    return {**paths, "out": out, "audit_seconds": audit["audit_seconds"]}
