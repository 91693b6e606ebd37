"""SPUL: a P-tuning soft prompt that makes a frozen causal LM forget chosen training examples.

Loss per step (forget batch F, retain batch R):
    L = CE(prompted label logits on F, generic labels)          # L_f
      + alpha * CE(prompted label logits on R, true labels)      # L_r
      + beta  * KL(p_unprompted(R) || p_prompted(R))             # L_kl, at the label position
Only the prompt encoder trains. The unprompted distribution comes from the same frozen model without
the prompt (cached once, or recomputed), so no second copy of the LLM is ever held.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from promptforget.spul import ops
from promptforget.spul.config import SPULConfig
from promptforget.spul.tasks import check_label_tokens, encode_examples, task_from_dict
from promptforget.utils.io import atomic_write_json

SPUL_META = "spul_config.json"


class SPUL:
    """Soft-prompt unlearner around a (stage-1) causal LM that stays frozen.

    >>> spul = SPUL(model, tokenizer, SentimentTask(), SPULConfig(epochs=3))
    >>> history = spul.forget(forget_examples, retain_examples)
    >>> spul.save_pretrained("run/prompt")   # PEFT adapter (safetensors) + spul_config.json
    """

    def __init__(self, model, tokenizer, task, config: SPULConfig | None = None, peft_model=None):
        from peft import PromptEncoderConfig, get_peft_model

        self.config = config or SPULConfig()
        self.task = task
        self.tokenizer = tokenizer
        if tokenizer.pad_token_id is None:
            raise ValueError("tokenizer has no pad token; set tokenizer.pad_token (e.g. to the EOS token)")
        # Label words and generic words must be decodable at the label position.
        check_label_tokens(tokenizer, list(task.labels) + [w for w in self.config.generic_labels if w not in task.labels])
        model.requires_grad_(False)
        model.eval()
        if peft_model is None:
            peft_cfg = PromptEncoderConfig(
                task_type="CAUSAL_LM",
                num_virtual_tokens=self.config.num_virtual_tokens,
                encoder_hidden_size=self.config.encoder_hidden_size,
                encoder_reparameterization_type="MLP",
            )
            torch.manual_seed(self.config.seed)  # the prompt encoder's initialisation
            peft_model = get_peft_model(model, peft_cfg)
        self.peft_model = peft_model
        self.model = ops.hf_model(peft_model)  # the one and only LLM, shared, frozen

    # --- scoring -------------------------------------------------------------------------------
    def prompts(self, batch_size: int) -> torch.Tensor:
        return self.peft_model.get_prompt(batch_size=batch_size)

    def label_logits(self, batch: dict, prompted: bool = True) -> torch.Tensor:
        prompts = self.prompts(batch["input_ids"].shape[0]) if prompted else None
        return ops.label_logits(self.model, batch, prompts)

    def scorer(self, prompted: bool = True) -> Callable[[dict], torch.Tensor]:
        return lambda b: self.label_logits(b, prompted)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.peft_model.prompt_encoder.parameters() if p.requires_grad]

    # --- training ------------------------------------------------------------------------------
    def forget(self, forget_examples: list[dict], retain_examples: list[dict], callback=None, accelerator=None) -> dict:
        """Train the soft prompt. ``callback(step, info)`` is called after every optimiser step.

        Runs under Hugging Face Accelerate: started with ``accelerate launch`` (or torchrun) it splits
        every global batch of ``config.batch_size`` rows across the processes and takes the same steps
        as one process would (see ``ops.local_rows``).
        """
        cfg = self.config
        if not forget_examples:
            raise ValueError("the forget set is empty; nothing to unlearn")
        if not retain_examples and (cfg.alpha > 0 or cfg.beta > 0):
            raise ValueError("the retain set is empty but alpha/beta > 0 need retain examples")
        acc = ops.make_accelerator(accelerator)
        self.peft_model.to(acc.device)
        tok, pad = self.tokenizer, self.tokenizer.pad_token_id
        generic = ops.draw_generic_labels(len(forget_examples), cfg.generic_labels, cfg.seed)
        forget_enc = encode_examples(tok, self.task, forget_examples, cfg.max_length, label_words=generic)
        retain_enc = encode_examples(tok, self.task, retain_examples, cfg.max_length) if retain_examples else []

        ref = None
        if cfg.beta > 0 and cfg.kl_reference == "cache":
            ref = ops.cache_label_logprobs(self.scorer(prompted=False), retain_enc, pad, cfg.batch_size)

        params = self.trainable_parameters()
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        steps_per_epoch = -(-len(forget_enc) // cfg.batch_size)
        total = steps_per_epoch * cfg.epochs
        sched = ops.cosine_schedule(opt, total, cfg.warmup_ratio)
        retain_iter = ops.cycle_batches(retain_enc, cfg.batch_size, pad, cfg.seed) if retain_enc else None

        self.peft_model.prompt_encoder.train()
        history, step = [], 0
        bar = tqdm(total=total, desc="SPUL", leave=False, disable=not acc.is_local_main_process)
        for epoch in range(cfg.epochs):
            for fb_all in ops.iterate_batches(forget_enc, cfg.batch_size, pad, shuffle=True, seed=cfg.seed + epoch):
                rb_all = next(retain_iter) if retain_iter is not None else None
                # Normalisers come from the global batch; each process sums over its own rows.
                n_f = ops.label_count(fb_all["label_ids"])
                n_r = ops.label_count(rb_all["label_ids"]) if rb_all is not None else 1
                n_kl = len(rb_all["input_ids"]) if rb_all is not None else 1
                fb, rb = ops.local_rows(fb_all, acc), ops.local_rows(rb_all, acc)
                opt.zero_grad(set_to_none=True)
                parts = torch.zeros(3)
                if fb is not None or rb is not None:
                    l_f, l_r, l_kl = self._loss_terms(fb, rb, ref, n_f, n_r, n_kl)
                    loss = l_f + cfg.alpha * l_r + cfg.beta * l_kl
                    loss.backward()
                    parts = torch.stack([l_f, l_r, l_kl]).detach().cpu()
                ops.sum_gradients(params, acc)
                opt.step()
                sched.step()
                l_f, l_r, l_kl = ops.global_sum(parts.to(acc.device), acc).tolist()
                info = {
                    "step": step, "epoch": epoch, "loss": l_f + cfg.alpha * l_r + cfg.beta * l_kl, "l_f": l_f,
                    "l_r": l_r, "l_kl": l_kl, "lr": sched.get_last_lr()[0],
                }
                history.append(info)
                bar.update(1)
                bar.set_postfix(l_f=f"{l_f:.3f}", l_r=f"{l_r:.3f}", kl=f"{l_kl:.3f}")
                if callback is not None:
                    callback(step, info)
                step += 1
        bar.close()
        self.peft_model.prompt_encoder.eval()
        return {"steps": history, "generic_labels": generic, "kl_cache_shape": list(ref.shape) if ref is not None else None}

    def _loss_terms(self, fb, rb, ref, n_f, n_r, n_kl):
        """(L_f, L_r, L_kl) of this process's rows, each a sum divided by the global batch's count."""
        pad = self.tokenizer.pad_token_id
        # One forward over forget + retain together: bigger matmuls, one prompt-encoder pass.
        parts = [b for b in (fb, rb) if b is not None]
        both = _concat_batches(*parts, pad) if len(parts) == 2 else parts[0]
        logits = self.label_logits(both)
        nf = fb["input_ids"].shape[0] if fb is not None else 0
        zero = logits.sum() * 0.0  # keeps the graph for a process whose share of one set is empty
        l_f = ops.label_ce(logits[:nf], fb["label_ids"], n_f) if fb is not None else zero
        l_r = l_kl = zero
        if rb is not None:
            l_r = ops.label_ce(logits[nf:], rb["label_ids"], n_r)
            if self.config.beta > 0:
                if ref is not None:
                    ref_b = ref[rb["index"].to(ref.device)]
                else:
                    with torch.no_grad():
                        ref_b = torch.log_softmax(self.label_logits(rb, prompted=False)[:, 0], dim=-1)
                l_kl = ops.label_kl(ref_b, logits[nf:, 0], n_kl)
        return l_f, l_r, l_kl

    # --- persistence ---------------------------------------------------------------------------
    def save_pretrained(self, path: str | Path) -> None:
        """PEFT adapter (``adapter_model.safetensors`` + ``adapter_config.json``) plus our task/config."""
        path = Path(path)
        self.peft_model.save_pretrained(str(path), safe_serialization=True)
        atomic_write_json(path / SPUL_META, {"task": self.task.to_dict(), "config": self.config.to_dict()})

    @classmethod
    def from_pretrained(cls, model, tokenizer, path: str | Path) -> "SPUL":
        from peft import PeftModel

        path = Path(path)
        meta_path = path / SPUL_META
        if not meta_path.exists():
            raise FileNotFoundError(f"{meta_path} not found; is {path} a directory written by SPUL.save_pretrained?")
        meta = json.loads(meta_path.read_text())
        peft_model = PeftModel.from_pretrained(model, str(path))
        peft_model.eval()
        return cls(model, tokenizer, task_from_dict(meta["task"]), SPULConfig.from_dict(meta["config"]), peft_model=peft_model)


def _concat_batches(a: dict, b: dict, pad_id: int) -> dict:
    T = max(a["input_ids"].shape[1], b["input_ids"].shape[1])
    L = max(a["label_pos"].shape[1], b["label_pos"].shape[1])

    def pad(x, width, value):
        return torch.nn.functional.pad(x, (0, width - x.shape[1]), value=value)

    return {
        "input_ids": torch.cat([pad(a["input_ids"], T, pad_id), pad(b["input_ids"], T, pad_id)]),
        "attention_mask": torch.cat([pad(a["attention_mask"], T, 0), pad(b["attention_mask"], T, 0)]),
        "label_pos": torch.cat([_pad_pos(a["label_pos"], L), _pad_pos(b["label_pos"], L)]),
        "label_ids": torch.cat([pad(a["label_ids"], L, -100), pad(b["label_ids"], L, -100)]),
    }


def _pad_pos(pos: torch.Tensor, width: int) -> torch.Tensor:
    if pos.shape[1] == width:
        return pos
    return torch.cat([pos, pos[:, :1].expand(-1, width - pos.shape[1])], dim=1)
