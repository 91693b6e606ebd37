"""Knobs of ``promptforget audit``: the attacks' budgets, the membership-inference sets, the U-LiRA
shadows. Every field is a command-line flag (see utils/config.py); torch-free."""

from __future__ import annotations

from dataclasses import dataclass, field

from promptforget.utils.config import ConfigMixin

DEFAULT_NS = (1, 5, 25, 100)


@dataclass
class AuditConfig(ConfigMixin):
    reference_epochs: int | None = field(default=None, metadata={
        "help": "override the reference's epochs (None: the run's)"})
    ns: list[int] = field(default_factory=lambda: list(DEFAULT_NS), metadata={
        "nargs": "+", "help": "adversary sample counts"})
    key_steps: int = field(default=100, metadata={"help": "key-recovery optimiser steps"})
    key_lr: float = field(default=1e-2, metadata={"help": "key-recovery learning rate"})
    relearn_steps: int = field(default=50, metadata={"help": "relearning optimiser steps"})
    relearn_lr: float = field(default=1e-3, metadata={"help": "relearning learning rate"})
    n_retain: int = field(default=100, metadata={"help": "retained-class samples in the adversary's set"})
    max_eval_retain: int = field(default=300, metadata={"help": "retained-class test samples checked during attacks"})
    eval_every: int = field(default=10, metadata={"help": "attack steps between evaluations"})
    threshold: float = field(default=0.5, metadata={"help": "accuracy that counts as 'recovered'"})
    max_eval: int | None = field(default=None, metadata={"help": "use at most N held-out samples (stratified)"})
    max_mia: int = field(default=1000, metadata={"help": "retain-train samples used as shadow members"})
    ulira_shadows: int = field(default=0, metadata={"help": "U-LiRA shadow models (even; 0 = skip)"})
    ulira_epochs: int = field(default=1, metadata={"help": "epochs of each U-LiRA shadow"})
    ulira_pool: int | None = field(default=None, metadata={"help": "subsample train+test to N for U-LiRA shadows"})
    retained_probes: list[str] | None = field(default=None, metadata={
        "nargs": "*", "help": "probe modes on retained-class samples (None: all; none given = skip)"})
    attacks: bool = field(default=True, metadata={"help": "key recovery, relearning and linear probes"})
    plots: bool = field(default=True, metadata={"help": "draw the report's plots"})
    batch_size: int = field(default=64, metadata={"help": "examples per forward pass"})
    seed: int = 0

    def __post_init__(self):
        if any(n < 1 for n in self.ns):
            raise ValueError("--ns values must be >= 1")
        if self.ulira_shadows and (self.ulira_shadows < 2 or self.ulira_shadows % 2):
            raise ValueError("--ulira-shadows must be an even number >= 2 (or 0 to skip)")
