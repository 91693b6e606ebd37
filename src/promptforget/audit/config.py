"""Knobs of ``promptforget audit``: the attacks' budgets, the membership-inference sets, the U-LiRA
shadows. Every field is a command-line flag (see utils/config.py); torch-free."""

from __future__ import annotations

from dataclasses import dataclass

from promptforget.utils.config import ConfigMixin, knob

DEFAULT_NS = (1, 5, 25, 100)
DEFAULT_KEY_BUDGETS = (30, 100, 300)


@dataclass
class AuditConfig(ConfigMixin):
    reference_seeds: int = knob(5, "retrain the reference N times (seeds seed+1..seed+N, never the audited run's); "
                                   "their spread makes the prediction interval (t, N-1 df: 3 is the least that "
                                   "gives a verdict, 5 halves what 3 cost in width); saved ones under "
                                   "OUT/reference/seed-K/ are reused")
    reference_epochs: int | None = knob(None, "override the reference's epochs (None: the run's)")
    ns: list[int] = knob(list(DEFAULT_NS), "adversary sample counts", nargs="+")
    key_steps: int = knob(max(DEFAULT_KEY_BUDGETS), "key-recovery optimiser steps (the largest budget)")
    key_budgets: list[int] | None = knob(None, "step budgets at which key recovery's J is read "
                                         "(None: 30 100 300, those <= --key-steps)", nargs="+")
    key_restarts: int = knob(3, "key-recovery tries per class; the attacker keeps the one with the lowest loss "
                                "on its own labelled set")
    key_lr: float = knob(1e-2, "key-recovery learning rate")
    relearn_steps: int = knob(50, "relearning optimiser steps")
    relearn_lr: float = knob(1e-3, "relearning learning rate")
    attack_seeds: int = knob(3, "relearning and linear-probe runs (seed, seed+1, ...)")
    n_retain: int = knob(100, "retained-class samples in the adversary's set")
    max_eval_retain: int = knob(300, "retained-class test samples checked during attacks")
    eval_every: int = knob(10, "attack steps between evaluations")
    threshold: float = knob(0.5, "accuracy that counts as 'recovered'")
    max_eval: int | None = knob(None, "use at most N held-out samples (stratified)")
    max_mia: int = knob(1000, "retain-train samples used as shadow members")
    ulira_shadows: int = knob(16, "U-LiRA shadows, even, >= 8 (half trained with half the class's samples then "
                                  "forgotten, half retrained without it; always the run's own recipe): each costs "
                                  "one training of the run; 0 = skip")
    retained_probes: list[str] | None = knob(None, "probe modes on retained-class samples (None: all; the flag "
                                             "with no mode: skip)", nargs="*")
    attacks: bool = knob(True, "key recovery, relearning and linear probes")
    plots: bool = knob(True, "draw the report's plots")
    batch_size: int = knob(64, "examples per forward pass")
    seed: int = 0

    def __post_init__(self):
        if any(n < 1 for n in self.ns):
            raise ValueError("--ns values must be >= 1")
        if self.ulira_shadows and (self.ulira_shadows < 8 or self.ulira_shadows % 2):
            raise ValueError("--ulira-shadows must be an even number >= 8 (half in, half out), or 0 to skip")
        for name in ("reference_seeds", "key_steps", "key_restarts", "attack_seeds"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
        if self.key_budgets is not None and any(b < 1 or b > self.key_steps for b in self.key_budgets):
            raise ValueError(f"--key-budgets must lie in 1..--key-steps ({self.key_steps})")
