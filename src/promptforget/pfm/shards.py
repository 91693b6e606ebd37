"""Class-sharded PFM (experimental): an exact forget that retrains one shard instead of the whole model.

The classes are dealt round robin into ``n_shards`` shards; each shard is a PFM of its own (its own LoRA,
prompts and head) trained only on its classes' examples. No shard ever sees another shard's data, so
forgetting class c exactly means retraining c's shard alone from scratch without c: about 1/S of the data,
and the result is what retraining the whole sharded model without c would give, since the other shards
never saw c's examples.

What this costs: no shard is trained to tell its classes from another shard's, so something else must
choose between shards (``combine``):
- ``routed`` (default): a router -- multinomial logistic regression from the *frozen* pretrained backbone's
  features to the shard -- picks one shard per example, whose softmax gives the probabilities (the other
  shards' classes get 0). The router sees every class, so an exact forget refits it too, from scratch
  on the remaining data: a linear model on features that no training touched, refitted in seconds;
- ``routed_soft``: the router's probabilities weigh each shard's softmax, P(c) = P(shard of c) P_shard(c);
- with nothing trained across shards: ``logits`` (the shards' logits side by side under one softmax; the
  larger logsumexp wins, an energy score), ``prob`` (each shard's softmax side by side, renormalised) or
  ``excess`` (each shard's softmax minus its uniform 1/|shard|: PFM's view B teaches a shard to be uniform
  when no prompt fits).
docs/performance.md ("Class shards") has what each rule costs in accuracy, and the retrain times.

    model = ShardedPFM(config, n_shards=2)   # or shard_epochs=2 * config.epochs: the steps of one model
    x = model.encode_dataset(raw)           # once: the frozen lower blocks are the same in every shard
    model.fit(x, labels)
    model.predict_proba(x)                  # [N, C] over all original classes
    model.exact_forget(["sport"], x, labels)  # retrains the shard of "sport" and the router only

This is a library object for measurement, not a run-directory format: ``forget --exact`` and the service
still retrain the whole recipe (:mod:`promptforget.pfm.exact`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import replace

import numpy as np
import torch

from promptforget.pfm.config import PFMConfig
from promptforget.pfm.model import PFMModel, UnknownClassError
from promptforget.pfm.train import fit

COMBINE_RULES = ("routed", "routed_soft", "logits", "prob", "excess")


def shard_classes(class_names: list[str], n_shards: int) -> list[list[str]]:
    """Classes dealt round robin into ``n_shards`` shards of at least 2 classes (a PFM needs 2)."""
    if not isinstance(n_shards, int) or n_shards < 1:
        raise ValueError(f"n_shards must be a positive integer, got {n_shards!r}")
    if n_shards > len(class_names) // 2:
        raise ValueError(f"n_shards {n_shards} is too many for {len(class_names)} classes: each shard needs at "
                         f"least 2 (at most {max(1, len(class_names) // 2)})")
    return [list(class_names[k::n_shards]) for k in range(n_shards)]


def combine_scores(parts: list[tuple[list[int], torch.Tensor]], num_classes: int, rule: str,
                   router_log_proba: torch.Tensor | None = None) -> torch.Tensor:
    """Class probabilities [N, C] from each shard's (global class indices, logits [N, |shard|]); the routed
    rules also take the router's log-probabilities of the shards [N, S]. Classes no shard holds get 0."""
    if rule not in COMBINE_RULES:
        raise ValueError(f"combine must be one of {COMBINE_RULES}, got {rule!r}")
    routed = rule.startswith("routed")
    if routed and router_log_proba is None:
        raise ValueError(f"combine={rule!r} needs the router's shard log-probabilities")
    if rule == "routed":  # the router's choice alone: 0 for the shard it picks, -inf for the others
        pick = router_log_proba.argmax(1, keepdim=True)
        router_log_proba = torch.full_like(router_log_proba, float("-inf")).scatter(1, pick, 0.0)
    n = parts[0][1].shape[0]
    scores = torch.full((n, num_classes), float("-inf"))
    for k, (idx, logits) in enumerate(parts):
        logits = logits.float().cpu()
        if routed:
            scores[:, idx] = torch.log_softmax(logits, dim=1) + router_log_proba[:, k : k + 1]
        elif rule == "logits":
            scores[:, idx] = logits
        elif rule == "prob":
            scores[:, idx] = torch.log_softmax(logits, dim=1)
        else:  # excess over the shard's uniform, in [-1, 1]: scaled so that the softmax over it is peaked
            scores[:, idx] = (torch.softmax(logits, dim=1) - 1.0 / logits.shape[1]) * 20.0
    return torch.softmax(scores, dim=1)


class ShardRouter:
    """Multinomial logistic regression from frozen features [N, D] to the shard, fitted from scratch and
    deterministically (full-batch L-BFGS from zero weights), so a refit on the same data is the same model."""

    def __init__(self, n_shards: int, weight_decay: float = 1e-3, max_iter: int = 200):
        self.n_shards, self.weight_decay, self.max_iter = n_shards, weight_decay, max_iter
        self.mean = self.scale = self.linear = None

    def fit(self, features: torch.Tensor, shards: torch.Tensor) -> ShardRouter:
        x = features.float()
        self.mean, self.scale = x.mean(0), x.std(0).clamp(min=1e-6)
        x = (x - self.mean) / self.scale
        self.linear = torch.nn.Linear(x.shape[1], self.n_shards)
        torch.nn.init.zeros_(self.linear.weight)
        torch.nn.init.zeros_(self.linear.bias)
        opt = torch.optim.LBFGS(self.linear.parameters(), max_iter=self.max_iter, line_search_fn="strong_wolfe")
        y = torch.as_tensor(shards, dtype=torch.long)

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(self.linear(x), y) + \
                self.weight_decay * self.linear.weight.pow(2).sum()
            loss.backward()
            return loss

        with torch.enable_grad():
            opt.step(closure)
        return self

    @torch.no_grad()
    def log_proba(self, features: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.linear((features.float() - self.mean) / self.scale), dim=1)


class ShardedPFM:
    def __init__(self, config: PFMConfig, n_shards: int, combine: str = "routed", shard_epochs: int | None = None):
        """``shard_epochs``: epochs each shard trains (default ``config.epochs``). A shard holds about 1/S of
        the examples, so at the same epochs it takes 1/S of the optimiser steps; S x epochs gives it the
        whole model's steps (and accuracy) at the whole model's retrain time (docs/performance.md)."""
        config.validate()
        if combine not in COMBINE_RULES:
            raise ValueError(f"combine must be one of {COMBINE_RULES}, got {combine!r}")
        if shard_epochs is not None:
            if not isinstance(shard_epochs, int) or shard_epochs < 1:
                raise ValueError(f"shard_epochs must be a positive integer, got {shard_epochs!r}")
            config = replace(config, epochs=shard_epochs)
        self.config, self.combine = config, combine
        self.class_names = list(config.class_names)
        self.shards = [PFMModel(replace(config, class_names=names))
                       for names in shard_classes(self.class_names, n_shards)]
        self.retrained: list[str] = []  # classes removed by an exact forget (their shard was retrained)
        self.router: ShardRouter | None = None
        self._frozen = None  # the pretrained backbone without adapters: the router's features

    @property
    def n_shards(self) -> int:
        return len(self.shards)

    def shard_of(self, name: str) -> int:
        for k, shard in enumerate(self.shards):
            if name in shard.class_names:
                return k
        if name in self.class_names:
            raise UnknownClassError(f"class {name!r} has been forgotten exactly: no shard holds it")
        raise UnknownClassError(f"unknown class {name!r}; classes are {self.class_names}")

    def encode_dataset(self, raw) -> dict[str, torch.Tensor]:
        """The inputs every shard reads: LoRA sits above ``prompt_layer`` in every shard, so the frozen lower
        blocks (and the tokenizer or image preprocessing) are the same for all of them."""
        return self.shards[0].encode_dataset(raw)

    def _fit_shard(self, k: int, inputs: dict[str, torch.Tensor], labels: np.ndarray, progress: bool) -> float:
        shard = self.shards[k]
        local = {self.class_names.index(c): i for i, c in enumerate(shard.class_names)}
        rows = np.flatnonzero(np.isin(labels, list(local)))
        if len(rows) == 0:
            raise ValueError(f"shard {k} ({shard.class_names}) has no training examples")
        t0 = time.perf_counter()
        sel = torch.as_tensor(rows)
        fit(shard, {key: v[sel] for key, v in inputs.items()},
            torch.as_tensor([local[int(y)] for y in labels[rows]]), progress=progress)
        return time.perf_counter() - t0

    @torch.no_grad()
    def frozen_features(self, inputs: dict[str, torch.Tensor], batch_size: int = 64) -> torch.Tensor:
        """[N, 2D]: the pretrained backbone's (no adapter) final CLS state and mean token state."""
        from promptforget.backbones.encoder import load_encoder

        if self._frozen is None:
            self._frozen = load_encoder(self.config.backbone)
            self._frozen.model.eval()
        enc, start = self._frozen, self.config.prompt_layer
        n, out = len(next(iter(inputs.values()))), []
        for i in range(0, n, batch_size):
            batch = {k: v[i : i + batch_size] for k, v in inputs.items()}
            if "hidden_states" in batch:
                tokens, mask = batch["hidden_states"], batch["key_mask"].bool()
            else:
                tokens, mask = enc.embed(batch)
                start = 0
            hidden = enc.encode(tokens, mask, start).float()
            m = mask.unsqueeze(-1).float()
            out.append(torch.cat([hidden[:, 0], (hidden * m).sum(1) / m.sum(1).clamp(min=1)], dim=1))
        return torch.cat(out)

    def _fit_router(self, inputs: dict[str, torch.Tensor], labels: np.ndarray) -> float:
        """Fit the router from scratch on the examples of the classes the shards still hold."""
        t0 = time.perf_counter()
        shard_of = {self.class_names.index(c): k for k, sh in enumerate(self.shards) for c in sh.class_names}
        rows = np.flatnonzero(np.isin(labels, list(shard_of)))
        if self.n_shards > 1:
            sel = torch.as_tensor(rows)
            features = self.frozen_features({k: v[sel] for k, v in inputs.items()})
            targets = torch.as_tensor([shard_of[int(y)] for y in labels[rows]])
            self.router = ShardRouter(self.n_shards).fit(features, targets)
        return time.perf_counter() - t0

    def fit(self, inputs: dict[str, torch.Tensor], labels, progress: bool = False) -> list[float]:
        """Train every shard on its classes' examples, then the router. ``labels`` index
        ``config.class_names``. Returns each shard's training seconds, the router's last."""
        labels = np.asarray(labels, dtype=np.int64)
        seconds = [self._fit_shard(k, inputs, labels, progress) for k in range(self.n_shards)]
        return seconds + [self._fit_router(inputs, labels)]

    def forget(self, classes: str | Iterable[str]) -> list[str]:
        """Instant forget: delete the classes' prompts in their shards (the shards' weights stay as trained)."""
        names = [classes] if isinstance(classes, str) else list(classes)
        by_shard: dict[int, list[str]] = {}
        for n in names:
            by_shard.setdefault(self.shard_of(n), []).append(n)
        for k, group in by_shard.items():
            if len(self.shards[k].active_classes) - len(group) < 1:
                raise ValueError(f"forget: shard {k} would keep no class; a shard needs at least one")
        for k, group in by_shard.items():
            self.shards[k].forget(group)
        return names

    def exact_forget(self, classes: str | Iterable[str], inputs: dict[str, torch.Tensor], labels,
                     progress: bool = False) -> dict[int | str, float]:
        """Retrain, from scratch and without ``classes``, only the shards that hold them, and the router; on
        the data the model was trained on (``inputs``, ``labels``). Returns the seconds each retrained shard
        took (and ``"router"``). All-or-nothing: a bad name, or a shard left with fewer than 2 classes,
        changes nothing."""
        names = [classes] if isinstance(classes, str) else list(classes)
        if not names or len(set(names)) != len(names):
            raise ValueError(f"exact_forget: give distinct class names, got {names}")
        by_shard: dict[int, list[str]] = {}
        for n in names:
            by_shard.setdefault(self.shard_of(n), []).append(n)
        new_names = {k: [c for c in self.shards[k].class_names if c not in group] for k, group in by_shard.items()}
        for k, kept in new_names.items():
            if len(kept) < 2:
                raise ValueError(f"exact_forget: shard {k} would keep {len(kept)} class(es) {kept}; a shard needs 2 "
                                 "to be retrained as a PFM (use fewer shards)")
        labels = np.asarray(labels, dtype=np.int64)
        seconds, previous, router = {}, list(self.shards), self.router
        try:
            for k, kept in new_names.items():
                self.shards[k] = PFMModel(replace(self.config, class_names=kept))
                seconds[k] = self._fit_shard(k, inputs, labels, progress)
            seconds["router"] = self._fit_router(inputs, labels)
        except BaseException:
            self.shards, self.router = previous, router
            raise
        self.retrained += names
        return seconds

    @torch.no_grad()
    def predict_proba(self, inputs: dict[str, torch.Tensor], combine: str | None = None,
                      batch_size: int = 64) -> np.ndarray:
        """Probabilities [N, C] over all original classes from encoded ``inputs``; exactly forgotten classes
        get 0. Each shard runs with its remaining prompts, as a PFMModel does."""
        rule = combine or self.combine
        if rule.startswith("routed") and self.n_shards > 1 and self.router is None:
            raise ValueError("predict_proba: the router is not fitted (call fit first)")
        n = len(next(iter(inputs.values())))
        out = []
        for shard in self.shards:
            shard.eval()
        for i in range(0, n, batch_size):
            batch = {k: v[i : i + batch_size] for k, v in inputs.items()}
            parts = [([self.class_names.index(c) for c in shard.class_names], shard(batch)) for shard in self.shards]
            routes = None
            if rule.startswith("routed"):  # one shard: it gets every example
                routes = (self.router.log_proba(self.frozen_features(batch)) if self.n_shards > 1
                          else torch.zeros(len(parts[0][1]), 1))
            out.append(combine_scores(parts, len(self.class_names), rule, routes))
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.class_names)), np.float32)
