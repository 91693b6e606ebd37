"""Export an analytic run as a directory plain ``transformers`` loads (``trust_remote_code=True``).

    OUT_DIR/
      config.json            model_type "promptforget-analytic", auto_map to the shipped code, the encoder's
                             config, id2label over the classes the run still knows (a forgotten class has no
                             weights, so it is not named), the feature map and fixed-point settings
      modeling_analytic.py   shipped model code (torch + transformers only)
      model.safetensors      the frozen encoder, the head of the active classes (and the projection, if any)
      README.md              the run's model card
      tokenizer / preprocessor  the base model's; the tokenizer's model_max_length is the run's max_length

No statistics and no example features leave the run: the export can predict, not forget.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import torch

from promptforget.analytic.model import AnalyticModel
from promptforget.backbones.encoder import resolve_backbone
from promptforget.pfm.card import HUB_IDS
from promptforget.pfm.export import AUTO_MODEL, check_export_dir, save_preprocessing, write_atomically
from promptforget.store.layout import WEIGHTS_NAME
from promptforget.utils.io import atomic_write_bytes, atomic_write_json

CODE_FILE = "modeling_analytic.py"
MODEL_CLASS = {"text": "AnalyticForSequenceClassification", "image": "AnalyticForImageClassification"}


def export_run(run_dir: str | os.PathLike, out_dir: str | os.PathLike, backbone: str | None = None) -> Path:
    out_dir = Path(out_dir)
    check_export_dir(out_dir)
    model = AnalyticModel.from_pretrained(run_dir, backbone=backbone)
    return write_atomically(out_dir, lambda staging: write_export(model, Path(run_dir), staging))


def write_export(model: AnalyticModel, run_dir: Path, out_dir: Path) -> None:
    from safetensors.torch import save

    cfg, enc = model.config, model.encoder
    modality = enc.modality
    base_path = resolve_backbone(cfg.backbone)
    atomic_write_bytes(out_dir / CODE_FILE, (resources.files("promptforget.analytic.hf_export") / CODE_FILE).read_bytes())
    encoder_config = enc.model.config.to_dict()
    for k in ("_attn_implementation", "_name_or_path"):
        encoder_config.pop(k, None)
    active = model.active_classes
    extractor = model.extractor
    projection = extractor._projection if cfg.projection_dim else None
    if cfg.projection_dim and projection is None:
        from promptforget.analytic.features import projection_matrix

        projection = projection_matrix(extractor.base_dim, cfg.projection_dim, cfg.seed)
    tokenizer = extractor._tokenizer if modality == "text" else None
    if modality == "text" and tokenizer is None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(base_path)
    config = {
        "model_type": "promptforget-analytic",
        "architectures": [MODEL_CLASS[modality]],
        "auto_map": {"AutoConfig": "modeling_analytic.AnalyticHFConfig", "AutoModel": f"modeling_analytic.{MODEL_CLASS[modality]}",
                     AUTO_MODEL[modality]: f"modeling_analytic.{MODEL_CLASS[modality]}"},
        "encoder_config": encoder_config, "modality": modality,
        "id2label": {str(i): c for i, c in enumerate(active)}, "label2id": {c: i for i, c in enumerate(active)},
        "feature_map": cfg.feature_map, "last_k": extractor.last_k, "max_length": cfg.max_length,
        "pad_token_id": tokenizer.pad_token_id if tokenizer is not None else 0,
        "scale_bits": cfg.scale_bits, "feature_dim": extractor.base_dim, "projection_dim": cfg.projection_dim,
        "projection_shift": projection[1] if projection is not None else 0,
        "base_model_hub_id": HUB_IDS.get(cfg.backbone), "base_model_sha256": extractor._sha,
        "promptforget": {"source_run": run_dir.resolve().name, "family": "analytic",
                         "artefact_sha256": model.artefact_sha256},
    }
    atomic_write_json(out_dir / "config.json", config)
    w, b, _ = model._head
    weights = {f"encoder.{k}": v.detach().cpu().contiguous() for k, v in enc.model.state_dict().items()}
    weights["classifier.weight"], weights["classifier.bias"] = w.clone(), b.clone()
    if projection is not None:
        weights["projection"] = torch.from_numpy(projection[0].copy())
    atomic_write_bytes(out_dir / WEIGHTS_NAME, save(weights, metadata={"format": "pt"}))
    save_preprocessing(base_path, modality, out_dir, cfg.max_length)
    card = run_dir / "README.md"
    if card.is_file():
        atomic_write_bytes(out_dir / "README.md", card.read_bytes())
