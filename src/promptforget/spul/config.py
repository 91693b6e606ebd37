"""Knobs for stage-1 fine-tuning and for SPUL, and the task data a SPUL or baseline run works on. Every
field is a command-line flag (see utils/config.py).

Defaults are the settings of the measured SmolLM2-135M runs in docs/results.md (stage 1: lr 5e-4, 2
epochs; SPUL: lr 3e-3, 20 epochs of batch 8, alpha 2), not the paper's lr 1e-4 / 10 epochs of batch 32,
which on a forget set of a few dozen examples is a handful of steps that change nothing."""

from __future__ import annotations

from dataclasses import dataclass

from promptforget.data.registry import PROMPTING, dataset_help, get_dataset
from promptforget.utils.config import ConfigMixin, check_positive, knob

KL_REFERENCES = ("cache", "recompute")


@dataclass
class DataConfig(ConfigMixin):
    """Which task data a run uses, which part of it is forgotten, and how it is fed to the model.

    ``spul finetune`` records it (with a hash of the examples and the template) in its run directory;
    the commands that start from that run read it from there.
    """

    data: str = knob("rotten_tomatoes", "task data: " + dataset_help(PROMPTING), aliases=("--dataset",))
    data_file: str | None = knob(None, "old spelling: --data jsonl --data-file FILE is --data jsonl:FILE")
    text_column: str | None = knob(None, "csv:/jsonl:/hf: column with the text (default: found by name)")
    label_column: str | None = knob(None, "csv:/jsonl:/hf: column with the label (any JSON scalar; default: found)")
    template: str | None = knob(None, "prompt template: sentiment | topic | mcqa | FILE (text with {text}, or JSON "
                                "{prompt, label_words}); default: mcqa for bigbench, sentiment when every label is "
                                "positive/negative/neutral, else topic")
    bigbench_forget: str | None = knob(None, "for --data bigbench: task JSON whose examples are forgotten")
    bigbench_retain: str | None = knob(None, "for --data bigbench: task JSON whose examples are retained")
    max_choices: int = knob(4, "bigbench: keep at most this many choices")
    n_train: int | None = knob(None, "subsample the training split (label-balanced)", aliases=("--max-train",))
    n_test: int | None = knob(None, "subsample the test split")
    test_size: float = knob(0.2, "held-out share")
    seed: int = knob(0, "seed of training and of the forget set (and of the split unless --split-seed)")
    split_seed: int | None = knob(None, "seed of the train/test split and the subsamples (default: --seed)")
    max_length: int = knob(128, "max tokens per prompt+label (text is truncated)")
    eval_batch_size: int = knob(32, "examples per evaluation forward pass")
    forget: str | None = knob(None, "forget set: entity:Name1,Name2 (examples that mention the names, as in the SPUL "
                              "paper; entity:auto picks the most frequent names) | cluster:K:N[:MIN_SIZE] | "
                              "random:FRACTION | ids:FILE_OR_LIST (bigbench: the forget task is the forget set)")
    min_forget: int = knob(20, "fewest forget examples accepted on each of train and test (the test side is "
                           "what shows forgetting generalises)")

    def __post_init__(self):
        get_dataset(self.data, PROMPTING)  # an unknown name fails here, with the list of names
        check_positive(self, "max_choices", "max_length", "eval_batch_size")
        if not 0 < self.test_size < 1:
            raise ValueError(f"test_size must be in (0, 1), got {self.test_size}")
        if self.min_forget < 1:
            raise ValueError(f"min_forget must be >= 1, got {self.min_forget}")

    @property
    def data_seed(self) -> int:
        return self.seed if self.split_seed is None else self.split_seed


@dataclass
class FinetuneConfig(ConfigMixin):
    """Stage 1: LoRA fine-tune of the causal LM on forget + retain, loss on the label tokens only."""

    lora_r: int = 16
    lora_alpha: int = 64
    lora_dropout: float = 0.1
    target_modules: list[str] = knob(["q_proj", "v_proj"], "modules that get LoRA")
    lr: float = 5e-4
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
    alpha: float = knob(2.0, "weight of the retain CE loss")
    beta: float = knob(0.5, "weight of the retain KL loss")
    generic_labels: list[str] = knob(["neutral", "unknown"], "label words the forget set is steered to")
    # lr 1e-3 x 10 epochs: measured on all three tasks of docs/results.md's sweep and the best per retain
    # point on BBC; 20 epochs collapsed retain accuracy there. On Rotten Tomatoes lr 1e-4 x 30 epochs did
    # better, at 3x the steps.
    lr: float = knob(1e-3, "AdamW learning rate of the prompt encoder")
    weight_decay: float = 0.0
    epochs: int = knob(10, "passes over the forget set")
    batch_size: int = knob(8, "forget examples per step (and as many retain examples)")
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
