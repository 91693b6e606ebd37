"""Knobs of ``promptforget audit``: the attacks' budgets, the membership-inference sets, the U-LiRA
shadows. Every field is a command-line flag (see utils/config.py); torch-free."""

from __future__ import annotations

from dataclasses import dataclass

from promptforget.utils.config import ConfigMixin, knob

DEFAULT_NS = (1, 5, 25, 100)


@dataclass
class AuditConfig(ConfigMixin):
    reference_epochs: int | None = knob(None, "override the reference's epochs (None: the run's)")
    ns: list[int] = knob(list(DEFAULT_NS), "adversary sample counts", nargs="+")
    key_steps: int = knob(100, "key-recovery optimiser steps")
    key_lr: float = knob(1e-2, "key-recovery learning rate")
    relearn_steps: int = knob(50, "relearning optimiser steps")
    relearn_lr: float = knob(1e-3, "relearning learning rate")
    n_retain: int = knob(100, "retained-class samples in the adversary's set")
    max_eval_retain: int = knob(300, "retained-class test samples checked during attacks")
    eval_every: int = knob(10, "attack steps between evaluations")
    threshold: float = knob(0.5, "accuracy that counts as 'recovered'")
    max_eval: int | None = knob(None, "use at most N held-out samples (stratified)")
    max_mia: int = knob(1000, "retain-train samples used as shadow members")
    ulira_shadows: int = knob(0, "U-LiRA shadow models (even; 0 = skip)")
    ulira_epochs: int = knob(1, "epochs of each U-LiRA shadow")
    ulira_pool: int | None = knob(None, "subsample train+test to N for U-LiRA shadows")
    retained_probes: list[str] | None = knob(None, "probe modes on retained-class samples (None: all; the flag "
                                             "with no mode: skip)", nargs="*")
    attacks: bool = knob(True, "key recovery, relearning and linear probes")
    plots: bool = knob(True, "draw the report's plots")
    batch_size: int = knob(64, "examples per forward pass")
    seed: int = 0

    def __post_init__(self):
        if any(n < 1 for n in self.ns):
            raise ValueError("--ns values must be >= 1")
        if self.ulira_shadows and (self.ulira_shadows < 2 or self.ulira_shadows % 2):
            raise ValueError("--ulira-shadows must be an even number >= 2 (or 0 to skip)")
