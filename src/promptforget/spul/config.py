"""Knobs for stage-1 fine-tuning and for SPUL (defaults follow Bhaila et al., NAACL 2025)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


def _check_positive(obj, *names):
    for n in names:
        v = getattr(obj, n)
        if not v > 0:
            raise ValueError(f"{type(obj).__name__}.{n} must be > 0, got {v!r}")


class _Dictable:
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s): {sorted(unknown)}")
        return cls(**d)


@dataclass
class FinetuneConfig(_Dictable):
    """Stage 1: LoRA fine-tune of the causal LM on forget + retain, loss on the label tokens only."""

    lora_r: int = 16
    lora_alpha: int = 64
    lora_dropout: float = 0.1
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    lr: float = 1e-4
    weight_decay: float = 0.0
    epochs: int = 2
    batch_size: int = 16
    warmup_ratio: float = 0.0
    max_length: int = 128
    seed: int = 0

    def __post_init__(self):
        _check_positive(self, "lora_r", "lora_alpha", "lr", "epochs", "batch_size", "max_length")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")


@dataclass
class SPULConfig(_Dictable):
    """SPUL: P-tuning soft prompt on a frozen LLM; loss = L_f + alpha * L_r + beta * L_kl.

    ``batch_size`` forget examples and as many retain examples (cycled) make one step; an epoch is one
    pass over the forget set. ``kl_reference='cache'`` stores the unprompted label-position
    log-probabilities of the retain set once (one forward pass, no second model); ``'recompute'``
    recomputes them per step from the same frozen model without the prompt (no cache memory).
    """

    num_virtual_tokens: int = 30
    encoder_hidden_size: int = 128
    alpha: float = 1.0
    beta: float = 0.5
    generic_labels: list[str] = field(default_factory=lambda: ["neutral", "unknown"])
    lr: float = 1e-4
    weight_decay: float = 0.0
    epochs: int = 10
    batch_size: int = 32
    warmup_ratio: float = 0.1
    max_length: int = 128
    kl_reference: str = "cache"
    seed: int = 0

    def __post_init__(self):
        _check_positive(self, "num_virtual_tokens", "encoder_hidden_size", "lr", "epochs", "batch_size", "max_length")
        if self.alpha < 0 or self.beta < 0:
            raise ValueError(f"alpha and beta must be >= 0, got alpha={self.alpha}, beta={self.beta}")
        if not self.generic_labels:
            raise ValueError("generic_labels must name at least one label word")
        if self.kl_reference not in ("cache", "recompute"):
            raise ValueError(f"kl_reference must be 'cache' or 'recompute', got {self.kl_reference!r}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
