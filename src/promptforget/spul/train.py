"""Stage 1: LoRA fine-tune of a causal LM on the full training set (forget + retain), loss on the
label tokens only, then merge the adapter so that the unlearning methods start from a plain model."""

from __future__ import annotations

from functools import partial

import torch

from promptforget.spul import ops
from promptforget.spul.config import FinetuneConfig
from promptforget.spul.tasks import check_label_tokens, collate, encode_examples
from promptforget.unlearn.loop import train_loop
from promptforget.unlearn.parallel import make_accelerator


def lora_wrap(model, r: int, alpha: int, dropout: float, target_modules, seed: int):
    from peft import LoraConfig, get_peft_model

    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [t for t in target_modules if t not in names]
    if missing:
        raise ValueError(f"LoRA target module(s) {missing} not found in {type(model).__name__}")
    torch.manual_seed(seed)  # LoRA A init
    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules), task_type="CAUSAL_LM")
    with ops.quiet_peft():
        return get_peft_model(model, cfg)


class LabelCE:
    """Stage 1's objective: cross-entropy of the true label tokens. Its single term is named "loss",
    so the history logs the loss once; the training set comes in as the loop's forget data."""

    def __init__(self, model):
        self.model = model
        self.weights = {"loss": 1.0}

    def loss_terms(self, batch: dict | None, retain: dict | None, counts: dict) -> dict[str, torch.Tensor]:
        return {"loss": ops.label_ce(ops.label_logits(self.model, batch), batch["label_ids"], counts["forget_labels"])}


def finetune(
    model, tokenizer, task, examples: list[dict], config: FinetuneConfig | None = None, callback=None,
    merge: bool = True, accelerator=None,
):
    """Fine-tune ``model`` with LoRA on ``examples``; returns ``(model, history)``.

    With ``merge=True`` the adapter is merged and the plain HF model is returned (weights updated in
    place, no copy); otherwise the PEFT model is returned (``save_pretrained`` gives the adapter).
    Under ``accelerate launch`` each global batch is split across the processes (``unlearn.parallel``).
    """
    cfg = config or FinetuneConfig()
    if not examples:
        raise ValueError("no training examples")
    check_label_tokens(tokenizer, task.labels)
    acc = make_accelerator(accelerator)
    encoded = encode_examples(tokenizer, task, examples, cfg.max_length)
    peft_model = lora_wrap(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.target_modules, cfg.seed)
    peft_model.to(acc.device)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    peft_model.train()
    history = train_loop(
        LabelCE(peft_model), params, encoded, [], partial(collate, pad_id=tokenizer.pad_token_id),
        counts=ops.label_counts, batch_size=cfg.batch_size, epochs=cfg.epochs, lr=cfg.lr,
        weight_decay=cfg.weight_decay, warmup_ratio=cfg.warmup_ratio, seed=cfg.seed, accelerator=acc,
        callback=callback, desc="stage-1 LoRA",
    )
    peft_model.eval()
    trainable = sum(p.numel() for p in params)
    if merge:
        model = peft_model.merge_and_unload()
        model.requires_grad_(False)
        model.eval()
        return model, {"steps": history, "trainable_parameters": trainable}
    return peft_model, {"steps": history, "trainable_parameters": trainable}
