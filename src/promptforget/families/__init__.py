"""Model families behind one small protocol, so that the CLI, the service and the audit name none of them.

A run directory says its family by its config file (``store.layout.run_family``): ``pfm`` (the paper's
method: prompts per class; instant forget; exact forget by retraining) or ``analytic`` (frozen features,
exact statistics, closed-form head; every forget exact and instant, classes and single examples).

    fam = family_of(run_dir)
    fam.train(out, dataset, **options); fam.load(run_dir).predict(...)
    store.durable.forget(run_dir, classes, examples=..., rewrite=fam.rewrite(run_dir, key))
    fam.evaluate(run_dir); fam.write_card(run_dir)

Adding a family: a class with these members, one entry in :data:`FAMILIES`, its config file's name in
``store.layout.CONFIG_NAMES``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from promptforget.store.layout import run_family


class Family(Protocol):
    name: str
    exact_forget: bool  # every forget leaves the artefact a retrain without the data would write
    forgets_examples: bool

    def train(self, out, dataset: str, **options) -> Path: ...
    def load(self, run_dir, backbone: str | None = None, ledger_key=None): ...  # never serves what the ledger forgot
    def rewrite(self, run_dir, key): ...  # a store.durable.ArtefactRewrite, or None (drop class tensors)
    def evaluate(self, run_dir, **options) -> dict: ...
    def write_card(self, run_dir) -> Path: ...
    def recompute(self, run_dir, key) -> dict: ...  # retrain without what the ledger forgot; compare hashes
    def export(self, run_dir, out, backbone: str | None = None) -> Path: ...  # loads with plain transformers


class PFMFamily:
    name, exact_forget, forgets_examples = "pfm", False, False

    def train(self, out, dataset, **options):
        from promptforget.pfm.run import train_run

        return train_run(out, dataset, **options)

    def load(self, run_dir, backbone=None, ledger_key=None):
        from promptforget.pfm.model import PFMModel

        return PFMModel.from_pretrained(run_dir, backbone=backbone, ledger_key=ledger_key)

    def rewrite(self, run_dir, key):
        return None

    def evaluate(self, run_dir, **options):
        from promptforget.pfm.run import evaluate_run

        return evaluate_run(Path(run_dir), **options)

    def write_card(self, run_dir):
        from promptforget.pfm.card import write_model_card

        return write_model_card(run_dir)

    def export(self, run_dir, out, backbone=None):
        from promptforget.pfm.export import export_run

        return export_run(run_dir, out, backbone=backbone)

    def recompute(self, run_dir, key):
        raise ValueError("--recompute needs an analytic run: a PFM retrain (SGD over many steps) is not reproducible "
                         "bit for bit; its exact forget is checked by `promptforget audit` against retrains")


class AnalyticFamily:
    name, exact_forget, forgets_examples = "analytic", True, True

    def train(self, out, dataset, **options):
        from promptforget.analytic.run import train_run

        return train_run(out, dataset, **options)

    def load(self, run_dir, backbone=None, ledger_key=None):
        from promptforget.analytic.model import AnalyticModel

        return AnalyticModel.from_pretrained(run_dir, backbone=backbone, ledger_key=ledger_key)

    def rewrite(self, run_dir, key):
        from promptforget.analytic.run import rewrite_for

        return rewrite_for(run_dir, key)

    def evaluate(self, run_dir, **options):
        """Accuracy only: PFM's forgetting protocol and probe modes (``ks``, ``probes``...) test prompts,
        and a forgotten class here has no weights to probe."""
        from promptforget.analytic.run import evaluate_run

        kept = ("max_eval", "batch_size", "progress", "data_root")
        return evaluate_run(run_dir, **{k: v for k, v in options.items() if k in kept})

    def write_card(self, run_dir):
        from promptforget.analytic.card import write_model_card

        return write_model_card(run_dir)

    def recompute(self, run_dir, key):
        from promptforget.analytic.run import recompute

        return recompute(run_dir, key)

    def export(self, run_dir, out, backbone=None):
        from promptforget.analytic.export import export_run

        return export_run(run_dir, out, backbone=backbone)


FAMILIES: dict[str, Family] = {"pfm": PFMFamily(), "analytic": AnalyticFamily()}


def family_of(run_dir: str | os.PathLike) -> Family:
    """The family of the run in ``run_dir``; a one-line FileNotFoundError when it holds no run."""
    name = run_family(run_dir)
    if name is None:
        raise FileNotFoundError(f"{run_dir} is not a promptforget run directory (no pfm_config.json or "
                                "analytic_config.json)")
    return FAMILIES[name]
