"""Fine-tuning unlearning baselines on the stage-1 model: GA, RL, GA+KL, GA+GD (Bhaila et al. 2025).

Each method is a small objective for the shared unlearning loop: a term on the forget rows (the true
label's CE, ascended; RL descends towards a random generic label instead) and, for GA+KL and GA+GD,
a term on the retain rows. The KL reference (stage-1 distribution) is the same model with the LoRA
adapter disabled, cached once over the retain set before training, so no second model copy exists.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch

from promptforget.baselines.config import BaselineConfig
from promptforget.spul import ops
from promptforget.spul.tasks import check_label_tokens, collate, encode_examples
from promptforget.spul.train import lora_wrap
from promptforget.unlearn.loop import train_loop
from promptforget.unlearn.parallel import make_accelerator
from promptforget.utils.io import atomic_write_json


class GradientAscent:
    """GA: climb the forget rows' cross-entropy (weight -1). ``l_retain`` stays 0 unless a subclass
    adds a retain term."""

    forget_weight = -1.0

    def __init__(self, model, retain_weight: float, kl_cache: torch.Tensor | None = None):
        self.model, self.kl_cache = model, kl_cache
        self.weights = {"l_forget": self.forget_weight, "l_retain": retain_weight}

    def loss_terms(self, forget: dict | None, retain: dict | None, counts: dict) -> dict[str, torch.Tensor]:
        terms = {}
        if forget is not None:
            logits = ops.label_logits(self.model, forget)
            terms["l_forget"] = ops.label_ce(logits, forget["label_ids"], counts["forget_labels"])
        if retain is not None:
            terms["l_retain"] = self.retain_loss(ops.label_logits(self.model, retain), retain, counts)
        return terms

    def retain_loss(self, logits: torch.Tensor, retain: dict, counts: dict) -> torch.Tensor:
        raise ValueError(f"{type(self).__name__} takes no retain batches")


class RandomLabels(GradientAscent):
    """RL: descend the cross-entropy towards the generic label drawn for each forget row (the forget
    set is encoded with those labels)."""

    forget_weight = 1.0


class GradientAscentKL(GradientAscent):
    """GA+KL: GA plus KL(p_stage1 || p) at the label position of the retain rows (``kl_cache``)."""

    def retain_loss(self, logits, retain, counts):
        ref = self.kl_cache[retain["index"].to(self.kl_cache.device)]
        return ops.label_kl(ref, logits[:, 0], counts["retain_rows"])


class GradientDifference(GradientAscent):
    """GA+GD: GA plus the retain rows' true-label cross-entropy."""

    def retain_loss(self, logits, retain, counts):
        return ops.label_ce(logits, retain["label_ids"], counts["retain_labels"])


OBJECTIVES = {"ga": GradientAscent, "rl": RandomLabels, "ga_kl": GradientAscentKL, "ga_gd": GradientDifference}


class Baseline:
    """``Baseline(model, tokenizer, task, BaselineConfig(method="ga_kl")).forget(forget, retain)``."""

    def __init__(self, model, tokenizer, task, config: BaselineConfig | None = None):
        self.config = cfg = config or BaselineConfig()
        self.task, self.tokenizer = task, tokenizer
        if tokenizer.pad_token_id is None:
            raise ValueError("tokenizer has no pad token; set tokenizer.pad_token (e.g. to the EOS token)")
        words = list(task.labels) + ([w for w in cfg.generic_labels if w not in task.labels] if cfg.method == "rl" else [])
        check_label_tokens(tokenizer, words)
        model.requires_grad_(False)
        self.peft_model = lora_wrap(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.target_modules, cfg.seed)

    def scorer(self):
        return lambda b: ops.label_logits(self.peft_model, b)

    def trainable_parameters(self):
        return [p for p in self.peft_model.parameters() if p.requires_grad]

    def forget(self, forget_examples: list[dict], retain_examples: list[dict], callback=None, accelerator=None) -> dict:
        """Fine-tune the LoRA adapter with the baseline's loss; data parallel under Accelerate like SPUL."""
        cfg = self.config
        if not forget_examples:
            raise ValueError("the forget set is empty; nothing to unlearn")
        needs_retain = cfg.method in ("ga_kl", "ga_gd") and cfg.retain_weight > 0
        if needs_retain and not retain_examples:
            raise ValueError(f"{cfg.method} needs retain examples")
        acc = make_accelerator(accelerator)
        self.peft_model.to(acc.device)
        tok, pad = self.tokenizer, self.tokenizer.pad_token_id
        generic = None
        if cfg.method == "rl":
            generic = ops.draw_generic_labels(len(forget_examples), cfg.generic_labels, cfg.seed)
        forget_enc = encode_examples(tok, self.task, forget_examples, cfg.max_length, label_words=generic)
        retain_enc = encode_examples(tok, self.task, retain_examples, cfg.max_length) if needs_retain else []
        kl_cache = None
        if cfg.method == "ga_kl" and needs_retain:
            with self.peft_model.disable_adapter():  # stage-1 model = this model without the adapter
                kl_cache = ops.cache_label_logprobs(self.scorer(), retain_enc, pad, cfg.batch_size)

        self.peft_model.train()
        history = train_loop(
            OBJECTIVES[cfg.method](self.peft_model, cfg.retain_weight, kl_cache), self.trainable_parameters(),
            forget_enc, retain_enc, partial(collate, pad_id=pad), counts=ops.label_counts,
            batch_size=cfg.batch_size, epochs=cfg.epochs, lr=cfg.lr, weight_decay=cfg.weight_decay,
            warmup_ratio=cfg.warmup_ratio, seed=cfg.seed, accelerator=acc, callback=callback,
            desc=f"baseline {cfg.method}",
        )
        self.peft_model.eval()
        return {"steps": history, "generic_labels": generic}

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        self.peft_model.save_pretrained(str(path), safe_serialization=True)
        atomic_write_json(path / "baseline_config.json", {"task": self.task.to_dict(), "config": self.config.to_dict()})

    def unload(self):
        """Remove the LoRA layers (without merging) and return the untouched stage-1 model."""
        return self.peft_model.unload()
