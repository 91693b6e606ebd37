"""The analytic classifier: a frozen backbone, fixed-point features, exact statistics, a closed-form head.

    model, raw = AnalyticModel.fit(config, texts_or_images, labels, ids)    # one pass, no gradient
    model.predict(["..."])                  # forgotten classes have no head row: never answered
    model.save_pretrained(run_dir); AnalyticModel.from_pretrained(run_dir)

Forgetting goes through the run directory (``promptforget forget RUN --classes C`` / ``--examples ID``):
the artefact minus the rows, the statistics minus their sums, the head solved again
(:func:`promptforget.analytic.artefact.without`). The result is byte for byte what training on the
remaining data writes.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path

import numpy as np
import torch
from torch import nn

from promptforget.analytic import artefact
from promptforget.analytic.config import AnalyticConfig
from promptforget.analytic.features import FeatureExtractor
from promptforget.analytic.stats import dequantize
from promptforget.store.layout import ANALYTIC_CONFIG_NAME, WEIGHTS_NAME
from promptforget.utils.io import atomic_write_bytes, atomic_write_json

FORMAT_VERSION = 1


class AnalyticModel(nn.Module):
    """Holds the frozen backbone (as a module, so ``.to``/``.eval`` work) and the head of the artefact."""

    masked_by_ledger: list[str] = []  # from_pretrained: classes left out because the ledger forgot them

    def __init__(self, config: AnalyticConfig, raw_artefact: bytes, encoder=None):
        super().__init__()
        self.config = config
        self.extractor = FeatureExtractor(config, encoder)
        self.backbone = self.extractor.encoder.model
        self.load_artefact(raw_artefact)

    # ----------------------------------------------------------------- the head
    def load_artefact(self, raw: bytes) -> None:
        """Serve the head of ``raw`` (an analytic ``model.safetensors``), replacing the current one by
        assignment, so a prediction that already holds the old head finishes with it."""
        parsed = artefact.parse(raw, self.config.class_names)
        self.artefact_sha256 = hashlib.sha256(raw).hexdigest()
        self._head = (torch.from_numpy(parsed.weight), torch.from_numpy(parsed.bias), list(parsed.active))
        self.head_info = {k: v for k, v in parsed.metadata.items() if k in ("head", "shrinkage", "ridge_lambda")}
        self.n_examples = len(parsed.labels)

    @property
    def encoder(self):
        return self.extractor.encoder

    @property
    def class_names(self) -> list[str]:
        return list(self.config.class_names)

    @property
    def num_classes(self) -> int:
        return len(self.config.class_names)

    @property
    def active_classes(self) -> list[str]:
        return [self.config.class_names[i] for i in self._head[2]]

    @property
    def forgotten_classes(self) -> list[str]:
        active = set(self._head[2])
        return [c for i, c in enumerate(self.config.class_names) if i not in active]

    def apply_forget(self, run_dir, active: list[str]) -> bool:
        """After a durable forget replaced the artefact: serve its head (every row changes in an exact
        forget, not only the forgotten classes'). True when the served head changed."""
        raw = (Path(run_dir) / WEIGHTS_NAME).read_bytes()
        if hashlib.sha256(raw).hexdigest() == self.artefact_sha256:
            return False
        self.load_artefact(raw)
        if self.masked_by_ledger:
            self.forget(self.masked_by_ledger)
        return True

    def forget(self, classes) -> list[str]:
        """In memory only: drop the classes' head rows (a durable, exact forget also re-solves the other
        rows; the service then loads that artefact). Returns the classes dropped."""
        names = [classes] if isinstance(classes, str) else list(classes)
        idx = [self.config.class_names.index(c) for c in names if c in self.active_classes]
        w, b, active = self._head
        keep = [j for j, i in enumerate(active) if i not in idx]
        self._head = (w[keep], b[keep], [active[j] for j in keep])
        return [self.config.class_names[i] for i in idx]

    # ----------------------------------------------------------------- predictions
    def preprocess(self, raw):
        return self.extractor.preprocess(raw)

    def features(self, inputs: dict[str, torch.Tensor]) -> np.ndarray:
        """The dequantised features the head reads: the same fixed point (and projection) as training."""
        from promptforget.analytic.stats import quantize

        device = next(self.backbone.parameters()).device
        f = self.extractor.float_features({k: v.to(device) for k, v in inputs.items()}).float().cpu().numpy()
        return dequantize(self.extractor.project(quantize(f, self.config.scale_bits)), self.config.scale_bits)

    @torch.inference_mode()
    def forward(self, inputs: dict[str, torch.Tensor], mask_forgotten: bool = True) -> torch.Tensor:
        """Scores over every original class, ``-inf`` for a class without a head row. ``mask_forgotten`` is
        accepted for the service's sake; there is nothing to unmask: a forgotten class has no weights."""
        w, b, active = self._head
        x = torch.from_numpy(self.features(inputs))
        out = torch.full((x.shape[0], self.num_classes), float("-inf"), dtype=torch.float64)
        out[:, active] = x @ w.T + b
        return out

    def predict_proba(self, raw, batch_size: int = 64) -> np.ndarray:
        """Probabilities [N, C] over every original class (0 for forgotten ones)."""
        out = [torch.softmax(self(self.preprocess(raw[i : i + batch_size])), dim=-1).numpy()
               for i in range(0, len(raw), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.num_classes))

    def predict(self, raw, batch_size: int = 64) -> list[str]:
        return [self.config.class_names[i] for i in self.predict_proba(raw, batch_size).argmax(axis=1)]

    def num_parameters(self, trainable_only: bool = True) -> int:
        w, b, _ = self._head
        return int(w.numel() + b.numel()) if trainable_only else sum(p.numel() for p in self.parameters())

    # ----------------------------------------------------------------- fit, save, load
    @classmethod
    def fit(cls, config: AnalyticConfig, raw, labels, ids, encoder=None,
            progress: bool = False) -> tuple["AnalyticModel", "artefact.Built"]:
        """One pass of the backbone over ``raw`` (labels: indices into ``config.class_names``; ids: one unique
        string per example). Returns the model and its artefact (``.model``: the bytes of model.safetensors,
        ``.shards``: its features files)."""
        from promptforget.data.text import unique_ids

        if not config.id_salt:
            raise ValueError("AnalyticConfig.id_salt is empty: train_run draws one (or set it)")
        unique_ids([str(i) for i in ids], "the training data")
        extractor = FeatureExtractor(config, encoder)
        q = extractor.fixed_point(raw, progress=progress)
        rows = artefact.Rows(np.array([list(artefact.example_id_sha256(config.id_salt, str(i))) for i in ids], np.uint8
                                      ).reshape(len(ids), 32), np.asarray(labels, dtype=np.int64), q)
        built = artefact.build(rows, config.class_names, config.head_settings(backbone_sha256(extractor)))
        return cls(config, built.model, extractor.encoder), built

    @staticmethod
    def new_salt() -> str:
        return secrets.token_hex(16)

    def save_pretrained(self, run_dir: str | os.PathLike, built: "artefact.Built") -> Path:
        """Write the run's config, the features files, then ``model.safetensors`` (which names them)."""
        from promptforget.store.artefact import remove_unreferenced_files

        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_dir / ANALYTIC_CONFIG_NAME, config_record(self.config, self.extractor))
        built.write(run_dir)
        atomic_write_bytes(run_dir / WEIGHTS_NAME, built.model)
        remove_unreferenced_files(run_dir, built.model)
        return run_dir / WEIGHTS_NAME

    @classmethod
    def from_pretrained(cls, run_dir: str | os.PathLike, backbone: str | None = None,
                        ledger_key=None) -> "AnalyticModel":
        """Load a run. The ledger rules: a class it (or its anchor) says is forgotten has no head row here
        whatever the artefact holds (``masked_by_ledger``), and an artefact that still holds an example
        the ledger forgot is refused (its head was solved with it): restore the ledger's artefact."""
        from promptforget.analytic.run import ledger_example_hash
        from promptforget.store.anchor import claimed_forgotten
        from promptforget.store.ledger import Ledger, LedgerError, committed

        run_dir = Path(run_dir)
        record = read_record(run_dir)
        config = AnalyticConfig.from_dict(record["config"])
        if backbone is not None:
            config.backbone = backbone
        raw = (run_dir / WEIGHTS_NAME).read_bytes()
        try:
            gone = {h for e in committed(Ledger(run_dir).read()) for h in e.get("examples", [])}
        except LedgerError as e:  # which examples were forgotten cannot be told: serve nothing
            raise ValueError(f"{run_dir}: the deletion ledger cannot be read ({e}); refusing to serve a model whose "
                             "forgotten examples cannot be checked") from None
        if gone:
            rows = artefact.parse(raw, config.class_names).id_sha256
            if any(ledger_example_hash(bytes(r), ledger_key) in gone for r in rows):
                raise ValueError(f"{run_dir}: the artefact holds examples the ledger says are forgotten (an older "
                                 "artefact?); refusing to serve it: restore the artefact of the ledger's head")
        model = cls(config, raw)
        masked = [c for c in claimed_forgotten(run_dir, ledger_key) if c in model.active_classes]
        if masked:
            model.forget(masked)
            model.masked_by_ledger = masked
        expected = record["backbone"]["sha256"]
        if backbone_sha256(model.extractor) != expected:
            raise ValueError(f"backbone mismatch: {config.backbone!r} is not the backbone the run was trained on "
                             f"({record['backbone']['name_or_path']!r}, sha256 {expected[:12]}...)")
        return model.eval()


def backbone_sha256(extractor: FeatureExtractor) -> str:
    if getattr(extractor, "_sha", None) is None:
        from promptforget.backbones.encoder import state_dict_sha256

        extractor._sha = state_dict_sha256(extractor.encoder.model)
    return extractor._sha


def config_record(config: AnalyticConfig, extractor: FeatureExtractor) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "family": "analytic",
        "config": config.to_dict(),
        "backbone": {"name_or_path": config.backbone, "family": extractor.encoder.family,
                     "modality": extractor.modality, "sha256": backbone_sha256(extractor)},
        "feature_dim": extractor.dim,
        "weights_file": WEIGHTS_NAME,
        "note": "which classes are known is defined by the class statistics present in the weights file",
    }


def read_record(run_dir: Path) -> dict:
    path = run_dir / ANALYTIC_CONFIG_NAME
    if not path.is_file() or not (run_dir / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(f"{run_dir} is not an analytic run directory: missing {path.name} or {WEIGHTS_NAME}")
    record = json.loads(path.read_text())
    if record.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported format_version {record.get('format_version')!r}")
    return record
