"""Knobs of a Pre-Forgettable Model (defaults follow the published recipe)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

ADAPT_MODES = ("lora", "frozen", "full")
PROMPT_INITS = ("normal", "zeros", "cls")
PROMPT_STYLES = ("token", "prefix")
OBJECTIVES = ("pfm", "plain")
LR_SCHEDULES = ("constant", "cosine")
VIEW_B_SIZES = ("uniform", "harmonic")


@dataclass
class PFMConfig:
    # Backbone: hub name, local directory, or alias (minilm, dinov2-s14).
    backbone: str = "minilm"
    adapt: str = "lora"  # lora on query/value | frozen backbone | full fine-tune
    lora_r: int = 4
    lora_alpha: int = 4
    lora_dropout: float = 0.1
    # Class prompts: `prompt_tokens` learnable tokens per class, prepended before CLS, no position embedding.
    prompt_tokens: int = 1
    prompt_init: str = "normal"  # N(0,1) as in the paper
    # token: prompts are input tokens (the paper). prefix: prompts are only extra keys/values in each
    # attention layer, so C prompts add no MLP work (see pfm/prefix.py).
    prompt_style: str = "token"
    # Insert the prompts before block `prompt_layer` (0 = at the input, the paper). Blocks below it are
    # frozen and never see a prompt, so their output is computed once per example and cached: a speed
    # knob for CPUs. Forgetting is unchanged: the prompt is still the only key to its class.
    prompt_layer: int = 0
    # Objective: view A (own + random wrong prompts, CE) + view B (only wrong prompts, KL to uniform).
    kl_weight: float = 1.0
    # How many wrong prompts a view-B sample sees: "uniform" over 0..C-1 (the paper) or "harmonic",
    # P(k) ~ 1/(k+1), which trains more on no prompt / one wrong prompt: the case that leaks when
    # most classes are forgotten.
    view_b_sizes: str = "uniform"
    # "pfm": the objective above. "plain": cross-entropy with no prompt at all, i.e. an ordinary LoRA
    # fine-tune of the same backbone and head: the utility reference a PFM is compared against.
    objective: str = "pfm"
    # Decoy keys (off by default; not in the paper). The audit's key-recovery attack shows that a fresh,
    # optimised prompt can unlock a forgotten class through the shared LoRA and head. With
    # decoy_share > 0, that share of view-B samples also sees a fresh random prompt, pushed `decoy_steps`
    # signed-gradient steps of `decoy_eps` (per coordinate) towards the sample's class as the adversary
    # would, and must still answer uniformly: the shared weights learn to give nothing to a foreign key.
    decoy_share: float = 0.0
    decoy_steps: int = 0
    decoy_eps: float = 0.1
    # Optimisation. lr_schedule: "constant" (as published) or "cosine" (decays to 0 over the run).
    lr: float = 1e-3
    lr_schedule: str = "constant"
    batch_size: int = 32
    epochs: int = 10
    seed: int = 42
    # Inputs.
    max_length: int = 128  # text: tokens per example (truncation)
    image_size: int | None = None  # images: side in pixels (None = backbone default)
    class_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.adapt not in ADAPT_MODES:
            raise ValueError(f"adapt must be one of {ADAPT_MODES}, got {self.adapt!r}")
        if self.prompt_style not in PROMPT_STYLES:
            raise ValueError(f"prompt_style must be one of {PROMPT_STYLES}, got {self.prompt_style!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.prompt_init not in PROMPT_INITS:
            raise ValueError(f"prompt_init must be one of {PROMPT_INITS}, got {self.prompt_init!r}")
        for name in ("lora_r", "prompt_tokens", "batch_size", "max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.prompt_layer < 0:
            raise ValueError(f"prompt_layer must be >= 0, got {self.prompt_layer}")
        if not 0.0 <= self.decoy_share <= 1.0:
            raise ValueError(f"decoy_share must be in [0, 1], got {self.decoy_share}")
        if self.decoy_steps < 0 or self.decoy_eps < 0:
            raise ValueError(f"decoy_steps and decoy_eps must be >= 0, got {self.decoy_steps}, {self.decoy_eps}")
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        if self.view_b_sizes not in VIEW_B_SIZES:
            raise ValueError(f"view_b_sizes must be one of {VIEW_B_SIZES}, got {self.view_b_sizes!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.image_size is not None and self.image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {self.image_size}")
        if len(set(self.class_names)) != len(self.class_names):
            raise ValueError("class_names must be unique")
        if any(not isinstance(c, str) or not c for c in self.class_names):
            raise ValueError("class_names must be non-empty strings")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PFMConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown PFMConfig keys: {sorted(unknown)}")
        return cls(**d)
