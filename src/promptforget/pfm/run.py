"""A PFM run directory end to end: train one from a dataset and config knobs, rebuild the split it was
trained on, evaluate it. Heavy imports happen inside the functions."""

from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path

from promptforget.store.layout import (DATA_NAME, TRAIN_LOG_NAME, is_pfm_run, read_split_record, require_pfm_run,
                                      split_record)


def stratified_cap(ds, n: int | None, seed: int):
    """At most ``n`` examples of ``ds``, every class kept in proportion (``ds`` itself if it is small enough)."""
    if n is None or n >= len(ds):
        return ds
    if n < len(ds.class_names):
        raise ValueError(f"cannot keep {n} examples of {len(ds.class_names)} classes")
    kept, _ = ds.train_test_split(test_size=len(ds) - n, seed=seed)
    return kept


def load_split(run_dir: Path, data_root=None):
    """The (train, test) split a run was trained with, rebuilt from its data.json, from wherever its data is
    now (``data_root``: see :func:`promptforget.data.sources.resolve_dataset`)."""
    from promptforget.data import load_splits
    from promptforget.data.sources import resolve_dataset

    info = read_split_record(run_dir)
    columns = {k: info[k] for k in ("text_column", "label_column") if k in info}
    train, test = load_splits(resolve_dataset(info, run_dir, data_root), info["test_size"], info["seed"], **columns)
    return stratified_cap(train, info.get("max_train"), info["seed"]), test


def check_run_dir(out: Path, overwrite: bool) -> None:
    """Refuse an ``out`` that :func:`prepare_run_dir` would refuse, touching nothing (checked before any loading)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise ValueError(f"run directory {out} exists and is not empty (use --overwrite)")
        if not is_pfm_run(out):
            raise ValueError(f"{out} is not a promptforget run directory (no run config); refusing to overwrite it")


def prepare_run_dir(out: Path, overwrite: bool) -> None:
    """A fresh, empty run directory. ``overwrite`` replaces an old run whole (its ledger included: a
    new model's ledger must not continue an old model's chain), and never a directory that is not a run."""
    check_run_dir(out, overwrite)
    if out.exists() and any(out.iterdir()):
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def train_run(out, dataset: str = "bbc_news", *, test_size: float = 0.2, max_train: int | None = None,
              overwrite: bool = False, backbone: str | None = None, report_to: str = "none",
              text_column: str | None = None, label_column: str | None = None, **knobs) -> Path:
    """Train a PFM on ``dataset`` into the run directory ``out``. ``knobs`` are :class:`PFMConfig` fields
    (its defaults for the rest; ``seed`` also draws the split); the class names come from the data, and
    ``backbone=None`` means minilm for text, dinov2-s14 for images. ``report_to``: see utils/tracking.py.
    ``text_column`` / ``label_column``: csv:, jsonl: and hf: columns (default: found by name). At the end the
    held-out accuracy is logged, tracked (``eval/accuracy``) and kept in ``train_log.json``."""
    import torch
    from accelerate.logging import get_logger

    from promptforget.data import load_splits
    from promptforget.data.sources import source_record
    from promptforget.pfm.config import PFMConfig
    from promptforget.pfm.model import PFMModel
    from promptforget.pfm.train import fit
    from promptforget.pfm.card import write_model_card
    from promptforget.pfm.exact import dataset_sha256
    from promptforget.store.layout import MANIFEST_KEY
    from promptforget.utils.dist import is_main_process, launch_state
    from promptforget.utils.io import atomic_write_json
    from promptforget.utils.tracking import Tracker, resolve_report_to

    out = Path(out)
    cfg = PFMConfig(**knobs)  # bad knobs fail here, before any data is loaded
    resolve_report_to(report_to)
    check_run_dir(out, overwrite)  # cheap checks first: the backbone takes seconds to load
    columns = {"text_column": text_column, "label_column": label_column}
    train, test = load_splits(dataset, test_size, cfg.seed, **columns)
    train = stratified_cap(train, max_train, cfg.seed)
    is_text = hasattr(train, "texts")
    cfg = replace(cfg, backbone=backbone or ("minilm" if is_text else "dinov2-s14"), class_names=list(train.class_names))
    model = PFMModel(cfg)
    # Rank 0 alone prepares and writes the run directory (if it refuses, torchrun stops the other ranks).
    main = is_main_process()
    if main:
        prepare_run_dir(out, overwrite)  # after every input check: a bad argument deletes nothing
    launch_state()  # the launch's state, which accelerate's logger reads
    log = get_logger("promptforget.pfm")  # under accelerate launch / torchrun: rank 0 speaks
    log.info("[train] %s: %d examples, %d classes; backbone %s (%s); trainable parameters %s", dataset, len(train),
             len(cfg.class_names), cfg.backbone, model.encoder.family, f"{model.num_parameters():,}")
    tracker = Tracker(report_to if main else "none", out, "pfm-train", cfg.to_dict())

    def epoch_end(epoch: int, losses: dict) -> None:
        probe = f", adversarial probe {losses['probe']:.4f}" if "probe" in losses else ""
        probe += f", confusion {losses['confusion']:.4f}" if "confusion" in losses else ""
        log.info("[train] epoch %d: loss %.4f (ce %.4f, kl %.4f%s)", epoch, losses["loss"], losses["ce"], losses["kl"], probe)
        tracker.log({k: v for k, v in losses.items() if k != "epoch"}, epoch, prefix="train/")

    t0 = time.perf_counter()
    inputs = model.encode_dataset(train.inputs)
    history = fit(model, inputs, torch.as_tensor(train.labels), on_epoch_end=epoch_end)
    seconds = time.perf_counter() - t0
    if not main:  # every rank trained the same model; rank 0 writes it
        tracker.finish()
        return out
    held_out = held_out_accuracy(model, test)
    if held_out is not None:
        tracker.log({"accuracy": held_out, "n_test": len(test)}, len(history), prefix="eval/")
    tracker.finish()
    model.save_pretrained(out)
    # The training examples' hash: an exact forget retrains on this data and checks it is unchanged.
    # Where the data is, relative to the run and absolute, with its hash: the run works from any directory.
    atomic_write_json(out / DATA_NAME, {**split_record(dataset, test_size, cfg.seed, max_train, **columns),
                                        "source": source_record(dataset, out), MANIFEST_KEY: dataset_sha256(train)})
    atomic_write_json(out / TRAIN_LOG_NAME, {"history": history, "train_seconds": seconds, "n_train": len(train),
                                             "held_out_accuracy": held_out, "n_test": len(test)})
    write_model_card(out)
    log.info("[train] done in %.1fs -> %s", seconds, out)
    if held_out is not None:
        chance = 1 / len(cfg.class_names)
        log.info("[train] held-out accuracy %.3f on %d examples (chance %.3f); `promptforget evaluate %s` for "
                 "the forgetting protocol", held_out, len(test), chance, out)
    return out


def held_out_accuracy(model, test, batch_size: int = 64) -> float | None:
    """Accuracy of ``model`` on the held-out split (None when it is empty)."""
    import torch

    from promptforget.pfm.evaluate import batched_logits

    if len(test) == 0:
        return None
    logits = batched_logits(model, model.encode_dataset(test.inputs), batch_size=batch_size)
    return float((logits.argmax(1) == torch.as_tensor(test.labels)).float().mean())


def evaluate_run(run_dir: Path, ks=None, max_combinations=50, protocol=True, probes=True, max_eval=None, batch_size=64,
                 progress=True, data_root=None) -> dict:
    """The run's current state on its held-out split, the k-combination forgetting protocol and the probe modes."""
    import torch

    from promptforget.pfm.evaluate import SharedPasses, evaluate_probes, evaluate_protocol, evaluate_state
    from promptforget.pfm.model import PFMModel

    require_pfm_run(run_dir)
    _, test = load_split(run_dir, data_root)  # the data first: it fails in a moment, the model takes seconds
    model = PFMModel.from_pretrained(run_dir)
    test = stratified_cap(test, max_eval, model.config.seed)
    inputs = model.encode_dataset(test.inputs)
    labels = torch.as_tensor(test.labels)
    t0 = time.perf_counter()
    passes = SharedPasses(model, inputs, batch_size)  # prompt sets the three parts have in common run once
    report = {"run_dir": str(run_dir), "n_test": len(test), "state": evaluate_state(model, inputs, labels, batch_size, passes)}
    if model.config.objective == "plain":  # no prompts: nothing to forget, only the utility figure
        protocol = probes = False
    if protocol and len(model.active_classes) >= 2:
        report["protocol"] = evaluate_protocol(model, inputs, labels, ks, max_combinations, model.config.seed, batch_size,
                                               progress, passes)
    if probes and len(model.active_classes) >= 2:
        report["probes"] = evaluate_probes(model, inputs, labels, model.config.seed, batch_size, passes=passes)
    report["eval_seconds"] = time.perf_counter() - t0
    return report


def track_evaluation(run_dir: Path, report: dict, report_to: str = "auto") -> None:
    """The evaluation's accuracies as tracker scalars (``eval/no_mask/retained_acc``, ``eval/protocol/k=1/...``),
    beside the training curves under ``RUN/logs``."""
    from promptforget.utils.tracking import Tracker

    state = report["state"]
    values = {f"{view}/{k}": v for view in ("no_mask", "head_masked") for k, v in state.get(view, {}).items()}
    values |= {k: v for k, v in state.items() if isinstance(v, float)}  # the analytic family's accuracies
    for k, r in report.get("protocol", {}).get("by_k", {}).items():
        values |= {f"protocol/k={k}/{name}": r[name]["mean"] for name in ("retained_acc", "forgotten_acc") if name in r}
    values |= {f"probes/{k}": v["acc"] for k, v in report.get("probes", {}).items() if isinstance(v, dict) and "acc" in v}
    tracker = Tracker(report_to, run_dir, "pfm-evaluate")
    tracker.log({k: v for k, v in values.items() if v == v}, 0, prefix="eval/")  # NaN (no such samples) left out
    tracker.finish()
