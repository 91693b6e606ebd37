"""Exact forgetting: retrain the shared weights from scratch without the forgotten classes' data.

The instant forget deletes a class's prompt (its bytes are gone), but the shared weights -- LoRA, head,
the other prompts -- were trained on the class's data and may still carry evidence of it (the audit's
key-recovery and probe attacks read it). An exact forget adds what only a retrain gives: the artefact is
replaced by the run's recipe (same config, seed, backbone) trained on the recorded split minus every
sample of every forgotten class, with their prompts then deleted -- the audit's retrain reference
(:mod:`promptforget.audit.reference`), made the model itself.

    exact_forget(run, classes)  data check -> instant forget (exact_requested) -> run_exact
    run_exact(run)              retrain for every open request at once (coalesced), then install it

The data must be the data the run was trained on: ``train_run`` records ``train_manifest_sha256`` in
``data.json`` (a hash over the ordered training examples and labels); an exact forget rebuilds the split,
compares the hash, and refuses (:class:`ExactUnavailableError`, nothing written) when the data is gone
or changed. The ledger's ``exact`` entry carries the retrain's config hash and the manifest hash of the
examples it used. Crash safety and the ledger protocol: :mod:`promptforget.store.durable`.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from promptforget.store import durable
from promptforget.store.durable import ForgetError
from promptforget.store.layout import (CONFIG_NAME, MANIFEST_KEY, WEIGHTS_NAME, read_config_record,
                                       read_split_record)
from promptforget.store.ledger import LedgerKey, load_key


class ExactUnavailableError(ForgetError):
    """The run's training data cannot be rebuilt as it was: an exact forget cannot be done."""

    status = 409


def examples_sha256(inputs, labels, class_names: list[str]) -> str:
    """SHA-256 over the ordered examples (text bytes or image pixels, with shape and dtype) and labels."""
    h = hashlib.sha256(b"promptforget-train-manifest-v1\0")
    h.update(json.dumps(list(class_names), ensure_ascii=True).encode("ascii"))
    labels = np.asarray(labels, dtype=np.int64)
    if isinstance(inputs, np.ndarray):
        h.update(f"image {inputs.dtype.str} {list(inputs.shape[1:])}\0".encode("ascii"))
        for x, y in zip(np.ascontiguousarray(inputs), labels):
            h.update(struct.pack("<q", int(y)))
            h.update(x.tobytes())
    else:
        h.update(b"text\0")
        for t, y in zip(inputs, labels):
            b = t.encode("utf-8")
            h.update(struct.pack("<qQ", int(y), len(b)))
            h.update(b)
    return h.hexdigest()


def dataset_sha256(ds) -> str:
    return examples_sha256(ds.inputs, ds.labels, ds.class_names)


def config_sha256(record: dict) -> str:
    """Hash of the recipe a retrain follows: the run's config and backbone record (``pfm_config.json``)."""
    return hashlib.sha256(json.dumps(record, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def exact_training_data(run_dir: str | os.PathLike, data_root=None):
    """The training split the run was trained on, rebuilt and checked against its recorded manifest hash.
    :class:`ExactUnavailableError` when it cannot be (no hash recorded, data missing or changed). ``data_root``:
    where the data is if it moved apart from the run (else ``$PROMPTFORGET_DATA_ROOT``; data/sources.py)."""
    from promptforget.pfm.run import load_split

    run_dir = Path(run_dir)
    try:
        record = read_split_record(run_dir)
    except FileNotFoundError as e:
        raise ExactUnavailableError(f"exact forget refused: {e}; nothing was changed") from None
    if MANIFEST_KEY not in record:
        raise ExactUnavailableError(
            f"exact forget refused: {run_dir} records no {MANIFEST_KEY} (trained before exact forgetting "
            "existed), so its training data cannot be checked; retrain the run to use --exact; nothing was changed")
    try:
        train, _ = load_split(run_dir, data_root)
    except (OSError, ValueError, KeyError) as e:
        raise ExactUnavailableError(f"exact forget refused: the training data {record['dataset']!r} is unavailable "
                                    f"({e}); nothing was changed") from None
    if list(train.class_names) != read_config_record(run_dir)["config"]["class_names"] or \
            dataset_sha256(train) != record[MANIFEST_KEY]:
        raise ExactUnavailableError(f"exact forget refused: the training data {record['dataset']!r} is not the data "
                                    "the run was trained on (its manifest hash differs); nothing was changed")
    return train


def retrain(run_dir: str | os.PathLike, forgotten: list[str], train=None, progress: bool = False):
    """The run's recipe trained on its split minus every sample of ``forgotten``, those prompts then deleted.
    Returns ``(model, artefact bytes, {"config_sha256", "train_manifest_sha256", "n_train", "train_seconds"})``."""
    import torch

    from promptforget.pfm.config import PFMConfig
    from promptforget.pfm.model import PFMModel
    from promptforget.pfm.train import fit

    run_dir = Path(run_dir)
    train = exact_training_data(run_dir) if train is None else train
    record = read_config_record(run_dir)
    cfg = PFMConfig.from_dict(record["config"])
    drop = [cfg.class_names.index(c) for c in forgotten]
    kept = train.subset(np.flatnonzero(~np.isin(train.labels, drop)))
    if len(kept) == 0:
        raise ExactUnavailableError("exact forget refused: no training examples are left without the forgotten classes")
    model = PFMModel(cfg)
    if model.backbone_sha256 != record["backbone"]["sha256"]:
        raise ExactUnavailableError(f"exact forget refused: the backbone {cfg.backbone!r} is not the one the run was "
                                    "trained on (its weights hash differs); nothing was changed")
    t0 = time.perf_counter()
    # prompt_layer > 0: the frozen lower blocks run once per example here, not once per epoch.
    inputs = model.encode_dataset(kept.inputs)

    def epoch_end(epoch: int, log: dict) -> None:
        durable.crash("mid_exact_training")

    fit(model, inputs, torch.as_tensor(kept.labels), progress=progress, on_epoch_end=epoch_end)
    seconds = time.perf_counter() - t0
    if forgotten:
        model.forget(forgotten)
    with tempfile.TemporaryDirectory(prefix="promptforget-exact-") as d:
        model.save_pretrained(d)  # the same writer as `train`, so the bytes are what a retrain saves
        raw = (Path(d) / WEIGHTS_NAME).read_bytes()
        if json.loads((Path(d) / CONFIG_NAME).read_text()) != record:
            raise ExactUnavailableError("exact forget refused: the retrained model's config record differs from the "
                                        "run's; nothing was changed")
    info = {"config_sha256": config_sha256(record), "train_manifest_sha256": dataset_sha256(kept),
            "n_train": len(kept), "train_seconds": seconds}
    return model, raw, info


def run_exact(run_dir: str | os.PathLike, key: LedgerKey | None = None, on_model: Callable | None = None,
              progress: bool = False, log: Callable[[str], None] = print, train=None, data_root=None) -> dict | None:
    """Retrain once for every open exact request and install the result; again if a forget came in while it
    trained. Returns the last ``exact`` ledger entry, or None when no request was open.

    ``on_model(model)``: called with the retrained model once its artefact is in place, before the ledger
    commit (a service swaps it in). ``train``: the checked training split, if the caller has it."""
    key = key if key is not None else load_key()
    run_dir = Path(run_dir)
    done = None
    while True:
        start = durable.exact_start(run_dir, key)
        if start is None:
            return done
        train = exact_training_data(run_dir, data_root) if train is None else train
        log(f"[exact] retraining {run_dir} without {start['classes']} (requests {start['request_ids']}) ...")
        model, raw, info = retrain(run_dir, start["classes"], train, progress)
        swap_in = (lambda m=model: on_model(m)) if on_model else None
        entry = durable.install_exact(run_dir, raw, start, info["config_sha256"], info["train_manifest_sha256"],
                                      info["n_train"], on_artefact=swap_in, key=key)
        if entry is None:
            log("[exact] a forget came in during the retrain; retraining again to cover it")
            continue
        log(f"[exact] done in {info['train_seconds']:.1f}s of training on {info['n_train']} examples "
            f"(ledger seq {entry['seq']}, covers {entry['request_ids']})")
        done = {**entry, "train_seconds": info["train_seconds"]}


def exact_forget(run_dir: str | os.PathLike, classes, reason: str = "", request_id: str | None = None,
                 source: str = "cli", key: LedgerKey | None = None, retrain_now: bool = True,
                 on_artefact: Callable[[list[str]], None] | None = None, progress: bool = False,
                 log: Callable[[str], None] = print, data_root=None) -> tuple[durable.ForgetResult, dict | None]:
    """Check the data, forget ``classes`` instantly with ``exact_requested``, then (``retrain_now``) run the
    exact retrain. Returns the instant forget's result and the ``exact`` entry (None if not run here)."""
    key = key if key is not None else load_key()
    train = exact_training_data(run_dir, data_root)  # refuse before anything is written
    r = durable.forget(run_dir, classes, reason=reason, request_id=request_id, source=source,
                       on_artefact=on_artefact, key=key, exact=True)
    done = run_exact(run_dir, key, progress=progress, log=log, train=train) if retrain_now else None
    return r, done
