"""The gold reference for an unlearning audit: retrain from scratch without the forgotten data.

For PFM: the same config (backbone, LoRA, prompt count, epochs, lr, seed, and the same class list, so
the head has the same shape and every class index means the same thing), trained with the PFM
objective on the training split minus every sample of the forgotten classes; then the forgotten
classes' prompts -- which only ever served as wrong-prompt distractors -- are deleted, exactly as in
the audited model. Every audit figure is reported beside this model's.

Several references (:func:`train_pfm_references`): the same recipe with seeds seed+1, seed+2, ...
(:func:`reference_seed_list`; never the audited run's own seed, which would correlate reference 0 with the
audited model and shrink the spread); their spread makes every verdict's prediction interval. Each is saved
under OUT/seed-K/ and reused when already there.
They reuse the audited model's encoded inputs (with prompt_layer > 0: the frozen lower blocks' output, computed
once) and one pristine backbone, copied per reference instead of loaded from disk.

For SPUL the reference is stage 1 fine-tuned on the retain set only (built by the SPUL package).
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path
from typing import Sequence

import torch

from promptforget.audit.config import AuditConfig

REFERENCE_META = "reference.json"
DEFAULT_REFERENCE_SEEDS = AuditConfig.reference_seeds


def train_pfm_reference(config, train_inputs: dict[str, torch.Tensor], train_labels, forgotten: Sequence[str],
                        out_dir: str | os.PathLike | None = None, progress: bool = True, encoder=None,
                        config_overrides: dict | None = None, seed: int | None = None):
    """Train the retrain-from-scratch reference. Returns the model (with the forgotten prompts deleted).

    ``encoder``: an already loaded (pristine, un-adapted) EncoderParts to reuse; default loads the backbone.
    ``config_overrides``: recipe changes (e.g. fewer epochs for a quick audit) -- recorded in the metadata.
    ``seed``: the reference's training seed (default: the audited run's; :func:`train_pfm_references` gives
    each reference one of :func:`reference_seed_list`).
    """
    from promptforget.pfm.config import PFMConfig
    from promptforget.pfm.model import PFMModel
    from promptforget.pfm.train import fit
    from promptforget.utils.io import atomic_write_json

    seed_override = {} if seed is None else {"seed": int(seed)}
    cfg = PFMConfig.from_dict({**copy.deepcopy(config.to_dict()), **(config_overrides or {}), **seed_override})
    forgotten = list(forgotten)
    if not forgotten:
        raise ValueError("train_pfm_reference: no forgotten classes given")
    idx = [cfg.class_names.index(c) if c in cfg.class_names else None for c in forgotten]
    if None in idx:
        raise ValueError(f"forgotten classes {forgotten} are not all in the config's classes {cfg.class_names}")
    labels = torch.as_tensor(train_labels)
    keep = ~torch.isin(labels, torch.tensor(idx))
    if int(keep.sum()) == 0:
        raise ValueError("train_pfm_reference: no training samples left after removing the forgotten classes")
    model = PFMModel(cfg, encoder=encoder)
    t0 = time.perf_counter()
    history = fit(model, {k: v[keep] for k, v in train_inputs.items()}, labels[keep], progress=progress)
    seconds = time.perf_counter() - t0
    model.forget(forgotten)
    if out_dir is not None:
        out = Path(out_dir)
        model.save_pretrained(out)
        atomic_write_json(out / REFERENCE_META, {
            "kind": "retrain-from-scratch reference",
            "forgotten_classes": forgotten,
            "n_train": int(keep.sum()),
            "config_overrides": config_overrides or {},
            "seed": cfg.seed,
            "history": history,
            "train_seconds": seconds,
        })
    return model


def reference_seed_list(audited_seed: int, k: int) -> list[int]:
    """The training seeds of k retrained references: audited_seed+1 .. audited_seed+k, disjoint from the audited
    run's (U-LiRA's shadows start at audited_seed+100)."""
    return [audited_seed + 1 + i for i in range(k)]


def reference_dir(out_dir: str | os.PathLike, seed: int) -> Path:
    return Path(out_dir) / f"seed-{seed}"


def train_pfm_references(config, train_inputs: dict[str, torch.Tensor], train_labels, forgotten: Sequence[str],
                         out_dir: str | os.PathLike | None = None, reference_seeds: int = DEFAULT_REFERENCE_SEEDS,
                         progress: bool = True, config_overrides: dict | None = None, log=print) -> list:
    """``reference_seeds`` references retrained with :func:`reference_seed_list` (config.seed+1, ...); those saved
    under ``out_dir/seed-K/`` are loaded instead of retrained. Returns the models, in seed order."""
    from promptforget.backbones.encoder import load_encoder
    from promptforget.pfm.model import PFMModel
    from promptforget.store.layout import WEIGHTS_NAME

    if reference_seeds < 1:
        raise ValueError(f"reference_seeds must be >= 1, got {reference_seeds}")
    pristine = None
    models = []
    for seed in reference_seed_list(config.seed, reference_seeds):
        d = reference_dir(out_dir, seed) if out_dir is not None else None
        if d is not None and (d / WEIGHTS_NAME).is_file():
            log(f"[audit] reusing the reference in {d}")
            ref = PFMModel.from_pretrained(d)
            if sorted(ref.forgotten_classes) != sorted(forgotten):
                raise ValueError(f"the saved reference in {d} forgot {ref.forgotten_classes}, not {list(forgotten)}")
            models.append(ref)
            continue
        if pristine is None:
            pristine = load_encoder(config.backbone)
        log(f"[audit] training the retrain-from-scratch reference, seed {seed} ...")
        models.append(train_pfm_reference(config, train_inputs, train_labels, forgotten, d, progress=progress,
                                          encoder=copy.deepcopy(pristine), config_overrides=config_overrides,
                                          seed=seed))
    return models
