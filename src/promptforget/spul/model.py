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
from functools import partial
from pathlib import Path
from typing import Callable

import torch

from promptforget.spul import ops
from promptforget.spul.config import SPULConfig
from promptforget.spul.tasks import check_label_tokens, collate, encode_examples, task_from_dict
from promptforget.unlearn.loop import train_loop
from promptforget.unlearn.parallel import make_accelerator
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
            with ops.quiet_peft():
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
        as one process would (see ``promptforget.unlearn.parallel``).
        """
        cfg = self.config
        if not forget_examples:
            raise ValueError("the forget set is empty; nothing to unlearn")
        if not retain_examples and (cfg.alpha > 0 or cfg.beta > 0):
            raise ValueError("the retain set is empty but alpha/beta > 0 need retain examples")
        acc = make_accelerator(accelerator)
        self.peft_model.to(acc.device)
        tok, pad = self.tokenizer, self.tokenizer.pad_token_id
        generic = ops.draw_generic_labels(len(forget_examples), cfg.generic_labels, cfg.seed)
        forget_enc = encode_examples(tok, self.task, forget_examples, cfg.max_length, label_words=generic)
        retain_enc = encode_examples(tok, self.task, retain_examples, cfg.max_length) if retain_examples else []

        kl_cache = None
        if cfg.beta > 0 and cfg.kl_reference == "cache":
            kl_cache = ops.cache_label_logprobs(self.scorer(prompted=False), retain_enc, pad, cfg.batch_size)

        self.peft_model.prompt_encoder.train()
        history = train_loop(
            SPULObjective(self, kl_cache), self.trainable_parameters(), forget_enc, retain_enc,
            partial(collate, pad_id=pad), counts=ops.label_counts, batch_size=cfg.batch_size, epochs=cfg.epochs,
            lr=cfg.lr, weight_decay=cfg.weight_decay, warmup_ratio=cfg.warmup_ratio, seed=cfg.seed,
            accelerator=acc, callback=callback, desc="SPUL",
        )
        self.peft_model.prompt_encoder.eval()
        return {"steps": history, "generic_labels": generic,
                "kl_cache_shape": list(kl_cache.shape) if kl_cache is not None else None}

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
        with ops.quiet_peft():
            peft_model = PeftModel.from_pretrained(model, str(path))
        peft_model.eval()
        return cls(model, tokenizer, task_from_dict(meta["task"]), SPULConfig.from_dict(meta["config"]), peft_model=peft_model)


class SPULObjective:
    """L_f + alpha * L_r + beta * L_kl (the module docstring) on this process's rows, each term a sum
    divided by the global batch's count. ``kl_cache`` holds the unprompted log-probabilities of the
    retain set (None: recompute them per batch)."""

    def __init__(self, spul: SPUL, kl_cache: torch.Tensor | None = None):
        self.spul, self.kl_cache = spul, kl_cache
        self.weights = {"l_f": 1.0, "l_r": spul.config.alpha, "l_kl": spul.config.beta}

    def loss_terms(self, forget: dict | None, retain: dict | None, counts: dict) -> dict[str, torch.Tensor]:
        spul = self.spul
        # One forward over forget + retain together: bigger matmuls, one prompt-encoder pass.
        parts = [b for b in (forget, retain) if b is not None]
        both = _concat_batches(*parts, spul.tokenizer.pad_token_id) if len(parts) == 2 else parts[0]
        logits = spul.label_logits(both)
        n_forget = forget["input_ids"].shape[0] if forget is not None else 0
        terms = {}
        if forget is not None:
            terms["l_f"] = ops.label_ce(logits[:n_forget], forget["label_ids"], counts["forget_labels"])
        if retain is not None:
            terms["l_r"] = ops.label_ce(logits[n_forget:], retain["label_ids"], counts["retain_labels"])
            if spul.config.beta > 0:
                if self.kl_cache is not None:
                    ref = self.kl_cache[retain["index"].to(self.kl_cache.device)]
                else:
                    with torch.no_grad():
                        ref = torch.log_softmax(spul.label_logits(retain, prompted=False)[:, 0], dim=-1)
                terms["l_kl"] = ops.label_kl(ref, logits[n_forget:, 0], counts["retain_rows"])
        return terms


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
