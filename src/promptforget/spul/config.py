"""Knobs for stage-1 fine-tuning and for SPUL (defaults follow Bhaila et al., NAACL 2025), and the task
data a SPUL or baseline run works on. Every field is a command-line flag (see utils/config.py)."""

from __future__ import annotations

from dataclasses import dataclass

from promptforget.data.registry import PROMPTING, dataset_names
from promptforget.utils.config import ConfigMixin, check_positive, knob

DATA_CHOICES = tuple(dataset_names(PROMPTING))
KL_REFERENCES = ("cache", "recompute")


@dataclass
class DataConfig(ConfigMixin):
    """Which task data a run uses, which part of it is forgotten, and how it is fed to the model."""

    data: str = knob("rotten_tomatoes", "task data set", choices=DATA_CHOICES)
    data_file: str | None = knob(None, 'for --data jsonl: one {"id", "text", "label"} object per line')
    bigbench_forget: str | None = knob(None, "for --data bigbench: task JSON whose examples are forgotten")
    bigbench_retain: str | None = knob(None, "for --data bigbench: task JSON whose examples are retained")
    max_choices: int = knob(4, "bigbench: keep at most this many choices")
    n_train: int | None = knob(None, "subsample the training split (label-balanced)")
    n_test: int | None = knob(None, "subsample the test split")
    test_size: float = knob(0.2, "held-out share")
    seed: int = knob(0, "seed of the split, the subsamples, the forget set and training")
    max_length: int = knob(128, "max tokens per prompt+label (text is truncated)")
    eval_batch_size: int = knob(32, "examples per evaluation forward pass")
    forget: str | None = knob(None, "forget set: entity:Name1,Name2 | cluster:K:N[:MIN_SIZE] | random:FRACTION | "
                              "ids:FILE_OR_LIST (not used with --data bigbench, where the forget task is the forget set)")

    def __post_init__(self):
        if self.data not in DATA_CHOICES:
            raise ValueError(f"data must be one of {DATA_CHOICES}, got {self.data!r}")
        check_positive(self, "max_choices", "max_length", "eval_batch_size")
        if not 0 < self.test_size < 1:
            raise ValueError(f"test_size must be in (0, 1), got {self.test_size}")


@dataclass
class FinetuneConfig(ConfigMixin):
    """Stage 1: LoRA fine-tune of the causal LM on forget + retain, loss on the label tokens only."""

    lora_r: int = 16
    lora_alpha: int = 64
    lora_dropout: float = 0.1
    target_modules: list[str] = knob(["q_proj", "v_proj"], "modules that get LoRA")
    lr: float = 1e-4
    weight_decay: float = 0.0
    epochs: int = 2
    batch_size: int = 16
    warmup_ratio: float = knob(0.0, "share of the steps with a linear warm-up")
    max_length: int = 128
    seed: int = 0

    def __post_init__(self):
        check_positive(self, "lora_r", "lora_alpha", "lr", "epochs", "batch_size", "max_length")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")


@dataclass
class SPULConfig(ConfigMixin):
    """SPUL: P-tuning soft prompt on a frozen LLM; loss = L_f + alpha * L_r + beta * L_kl.

    ``batch_size`` forget examples and as many retain examples (cycled) make one step; an epoch is one
    pass over the forget set. ``kl_reference='cache'`` stores the unprompted label-position
    log-probabilities of the retain set once (one forward pass, no second model); ``'recompute'``
    recomputes them per step from the same frozen model without the prompt (no cache memory).
    """

    num_virtual_tokens: int = knob(30, "soft-prompt length in tokens")
    encoder_hidden_size: int = knob(128, "hidden size of the P-tuning prompt encoder")
    alpha: float = knob(1.0, "weight of the retain CE loss")
    beta: float = knob(0.5, "weight of the retain KL loss")
    generic_labels: list[str] = knob(["neutral", "unknown"], "label words the forget set is steered to")
    lr: float = 1e-4
    weight_decay: float = 0.0
    epochs: int = 10
    batch_size: int = 32
    warmup_ratio: float = knob(0.1, "share of the steps with a linear warm-up")
    max_length: int = 128
    kl_reference: str = knob("cache", "retain KL target: cached once, or recomputed per step", choices=KL_REFERENCES)
    seed: int = 0

    def __post_init__(self):
        check_positive(self, "num_virtual_tokens", "encoder_hidden_size", "lr", "epochs", "batch_size", "max_length")
        if self.alpha < 0 or self.beta < 0:
            raise ValueError(f"alpha and beta must be >= 0, got alpha={self.alpha}, beta={self.beta}")
        if not self.generic_labels:
            raise ValueError("generic_labels must name at least one label word")
        if self.kl_reference not in KL_REFERENCES:
            raise ValueError(f"kl_reference must be 'cache' or 'recompute', got {self.kl_reference!r}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
