"""Stage 1: LoRA fine-tune of a causal LM on the full training set (forget + retain), loss on the
label tokens only, then merge the adapter so that the unlearning methods start from a plain model."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from promptforget.spul import ops
from promptforget.spul.config import FinetuneConfig
from promptforget.spul.tasks import check_label_tokens, encode_examples


def lora_wrap(model, r: int, alpha: int, dropout: float, target_modules, seed: int):
    from peft import LoraConfig, get_peft_model

    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [t for t in target_modules if t not in names]
    if missing:
        raise ValueError(f"LoRA target module(s) {missing} not found in {type(model).__name__}")
    torch.manual_seed(seed)  # LoRA A init
    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules), task_type="CAUSAL_LM")
    return get_peft_model(model, cfg)


def finetune(
    model, tokenizer, task, examples: list[dict], config: FinetuneConfig | None = None, callback=None,
    merge: bool = True, accelerator=None,
):
    """Fine-tune ``model`` with LoRA on ``examples``; returns ``(model, history)``.

    With ``merge=True`` the adapter is merged and the plain HF model is returned (weights updated in
    place, no copy); otherwise the PEFT model is returned (``save_pretrained`` gives the adapter).
    Under ``accelerate launch`` each global batch is split across the processes (``ops.local_rows``).
    """
    cfg = config or FinetuneConfig()
    if not examples:
        raise ValueError("no training examples")
    check_label_tokens(tokenizer, task.labels)
    acc = ops.make_accelerator(accelerator)
    encoded = encode_examples(tokenizer, task, examples, cfg.max_length)
    peft_model = lora_wrap(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.target_modules, cfg.seed)
    peft_model.to(acc.device)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = cfg.epochs * -(-len(encoded) // cfg.batch_size)
    sched = ops.cosine_schedule(opt, total, cfg.warmup_ratio)
    peft_model.train()
    history, step = [], 0
    bar = tqdm(total=total, desc="stage-1 LoRA", leave=False, disable=not acc.is_local_main_process)
    for epoch in range(cfg.epochs):
        for b_all in ops.iterate_batches(encoded, cfg.batch_size, tokenizer.pad_token_id, shuffle=True, seed=cfg.seed + epoch):
            b = ops.local_rows(b_all, acc)
            opt.zero_grad(set_to_none=True)
            loss = torch.zeros(())
            if b is not None:
                loss = ops.label_ce(ops.label_logits(peft_model, b), b["label_ids"], ops.label_count(b_all["label_ids"]))
                loss.backward()
            ops.sum_gradients(params, acc)
            opt.step()
            sched.step()
            loss = ops.global_sum(loss.detach().to(acc.device), acc)
            info = {"step": step, "epoch": epoch, "loss": loss.item(), "lr": sched.get_last_lr()[0]}
            history.append(info)
            bar.update(1)
            bar.set_postfix(loss=f"{info['loss']:.3f}")
            if callback is not None:
                callback(step, info)
            step += 1
    bar.close()
    peft_model.eval()
    trainable = sum(p.numel() for p in params)
    if merge:
        model = peft_model.merge_and_unload()
        model.requires_grad_(False)
        model.eval()
        return model, {"steps": history, "trainable_parameters": trainable}
    return peft_model, {"steps": history, "trainable_parameters": trainable}
