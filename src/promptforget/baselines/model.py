"""Fine-tuning unlearning baselines on the stage-1 model: GA, RL, GA+KL, GA+GD (Bhaila et al. 2025).

The KL reference (stage-1 distribution) is the same model with the LoRA adapter disabled, cached
once over the retain set before training, so no second model copy exists.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

from promptforget.baselines.config import BaselineConfig
from promptforget.spul import ops
from promptforget.spul.tasks import check_label_tokens, encode_examples
from promptforget.spul.train import lora_wrap
from promptforget.utils.io import atomic_write_json


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
        acc = ops.make_accelerator(accelerator)
        self.peft_model.to(acc.device)
        tok, pad = self.tokenizer, self.tokenizer.pad_token_id
        generic = None
        if cfg.method == "rl":
            generic = ops.draw_generic_labels(len(forget_examples), cfg.generic_labels, cfg.seed)
        forget_enc = encode_examples(tok, self.task, forget_examples, cfg.max_length, label_words=generic)
        retain_enc = encode_examples(tok, self.task, retain_examples, cfg.max_length) if needs_retain else []
        ref = None
        if cfg.method == "ga_kl" and needs_retain:
            with self.peft_model.disable_adapter():  # stage-1 model = this model without the adapter
                ref = ops.cache_label_logprobs(self.scorer(), retain_enc, pad, cfg.batch_size)

        params = self.trainable_parameters()
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        total = cfg.epochs * -(-len(forget_enc) // cfg.batch_size)
        sched = ops.cosine_schedule(opt, total, cfg.warmup_ratio)
        retain_iter = ops.cycle_batches(retain_enc, cfg.batch_size, pad, cfg.seed) if retain_enc else None
        self.peft_model.train()
        history, step = [], 0
        bar = tqdm(total=total, desc=f"baseline {cfg.method}", leave=False, disable=not acc.is_local_main_process)
        for epoch in range(cfg.epochs):
            for fb_all in ops.iterate_batches(forget_enc, cfg.batch_size, pad, shuffle=True, seed=cfg.seed + epoch):
                rb_all = next(retain_iter) if retain_iter is not None else None
                fb, rb = ops.local_rows(fb_all, acc), ops.local_rows(rb_all, acc)
                opt.zero_grad(set_to_none=True)
                parts = torch.zeros(2)
                if fb is not None or rb is not None:
                    l_forget = l_retain = torch.zeros((), device=acc.device)
                    if fb is not None:
                        l_forget = ops.label_ce(ops.label_logits(self.peft_model, fb), fb["label_ids"], ops.label_count(fb_all["label_ids"]))
                    if rb is not None:
                        r_logits = ops.label_logits(self.peft_model, rb)
                        if cfg.method == "ga_gd":
                            l_retain = ops.label_ce(r_logits, rb["label_ids"], ops.label_count(rb_all["label_ids"]))
                        else:
                            l_retain = ops.label_kl(ref[rb["index"].to(ref.device)], r_logits[:, 0], len(rb_all["input_ids"]))
                    # GA ascends the true-label CE; RL descends towards the random generic label.
                    loss = (l_forget if cfg.method == "rl" else -l_forget) + cfg.retain_weight * l_retain
                    if loss.requires_grad:
                        loss.backward()
                    parts = torch.stack([l_forget, l_retain]).detach().cpu()
                ops.sum_gradients(params, acc)
                opt.step()
                sched.step()
                l_forget, l_retain = ops.global_sum(parts.to(acc.device), acc).tolist()
                sign = 1.0 if cfg.method == "rl" else -1.0
                info = {"step": step, "epoch": epoch, "loss": sign * l_forget + cfg.retain_weight * l_retain,
                        "l_forget": l_forget, "l_retain": l_retain}
                history.append(info)
                bar.update(1)
                bar.set_postfix(l_forget=f"{l_forget:.3f}", l_retain=f"{l_retain:.3f}")
                if callback is not None:
                    callback(step, info)
                step += 1
        bar.close()
        self.peft_model.eval()
        return {"steps": history, "generic_labels": generic}

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        self.peft_model.save_pretrained(str(path), safe_serialization=True)
        atomic_write_json(path / "baseline_config.json", {"task": self.task.to_dict(), "config": self.config.to_dict()})

    def unload(self):
        """Remove the LoRA layers (without merging) and return the untouched stage-1 model."""
        return self.peft_model.unload()
