"""Knobs for the fine-tuning unlearning baselines (GA, RL, GA+KL, GA+GD)."""

from __future__ import annotations

from dataclasses import dataclass

from promptforget.utils.config import ConfigMixin, check_positive, knob

METHODS = ("ga", "rl", "ga_kl", "ga_gd")


@dataclass
class BaselineConfig(ConfigMixin):
    """One epoch over the forget set by default; updates are LoRA on the stage-1 model (the same
    adapter shape as stage 1), so the stage-1 weights stay intact and can serve as the KL reference.

    - ``ga``: maximise CE of the true label on forget examples.
    - ``rl``: minimise CE towards a random generic label on forget examples.
    - ``ga_kl``: GA + ``retain_weight`` * KL(p_stage1 || p) at the label position on retain examples.
    - ``ga_gd``: GA + ``retain_weight`` * CE of the true label on retain examples.
    """

    method: str = knob("ga", "which baseline", choices=METHODS)
    lr: float = knob(5e-4, "the lr of the measured baseline runs in docs/results.md")
    epochs: int = knob(1, "passes over the forget set")
    batch_size: int = 8
    retain_weight: float = knob(1.0, "weight of the KL (ga_kl) or retain CE (ga_gd) term")
    generic_labels: list[str] = knob(["neutral", "unknown"], "rl: labels drawn for forget examples")
    lora_r: int = 16
    lora_alpha: int = 64
    lora_dropout: float = 0.1
    target_modules: list[str] = knob(["q_proj", "v_proj"], "modules that get LoRA")
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    max_length: int = 128
    seed: int = 0

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown baseline {self.method!r}; choose from {list(METHODS)}")
        check_positive(self, "lr", "epochs", "batch_size", "lora_r", "lora_alpha", "max_length")
        if self.retain_weight < 0:
            raise ValueError(f"retain_weight must be >= 0, got {self.retain_weight}")
        if not self.generic_labels:
            raise ValueError("generic_labels must name at least one label word")
