"""PFM training loop: plain PyTorch, under HF Accelerate so `accelerate launch` spreads it over devices."""

from __future__ import annotations

from typing import Callable

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from promptforget.pfm.objective import pfm_loss, plain_loss


class TensorDictDataset(Dataset):
    """Pre-encoded inputs (dict of tensors with a leading N axis) plus labels."""

    def __init__(self, inputs: dict[str, torch.Tensor], labels: torch.Tensor):
        n = len(labels)
        for k, v in inputs.items():
            if len(v) != n:
                raise ValueError(f"input {k!r} has {len(v)} rows but there are {n} labels")
        self.inputs, self.labels = inputs, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return {k: v[i] for k, v in self.inputs.items()}, self.labels[i]


def trim_padding(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Cut text batches to their longest real sequence: inputs are stored padded to max_length."""
    mask = inputs.get("attention_mask", inputs.get("key_mask"))
    if mask is None:
        return inputs
    n = int(mask.sum(dim=1).max())
    return {k: v[:, :n] for k, v in inputs.items()}


def fit(
    model,
    inputs: dict[str, torch.Tensor],
    labels: torch.Tensor,
    *,
    accelerator=None,
    progress: bool = True,
    on_epoch_end: Callable[[int, dict], None] | None = None,
) -> list[dict]:
    """Train ``model`` (a PFMModel with all its prompts) with the PFM objective. Returns per-epoch logs."""
    from accelerate import Accelerator, DataLoaderConfiguration

    from promptforget.utils.dist import launch_state

    cfg = model.config
    if model.forgotten_classes:
        raise ValueError("fit: the model has forgotten classes; train a fresh model instead")
    labels = torch.as_tensor(labels, dtype=torch.long)
    if len(labels) == 0:
        raise ValueError("fit: empty training set")
    if labels.min() < 0 or labels.max() >= model.num_classes:
        raise ValueError(f"fit: labels must be in [0, {model.num_classes - 1}]")

    torch.manual_seed(cfg.seed)
    # split_batches: cfg.batch_size is the global batch, cut across processes, so a run on N devices
    # takes the same steps as a run on one.
    if accelerator is None:
        launch_state()
    acc = accelerator or Accelerator(
        cpu=not torch.cuda.is_available(), dataloader_config=DataLoaderConfiguration(split_batches=True)
    )
    if cfg.batch_size % acc.num_processes:
        raise ValueError(f"batch_size {cfg.batch_size} must be divisible by the {acc.num_processes} processes")
    loader = DataLoader(
        TensorDictDataset(inputs, labels),
        batch_size=cfg.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    probe_weight = cfg.probe_weight if cfg.objective == "pfm" else 0.0
    if probe_weight > 0:
        # Registered on the model so that DDP averages its gradients too; removed after training.
        model.adversary = torch.nn.Linear(model.encoder.hidden_size, model.num_classes)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    model, optimizer, loader = acc.prepare(model, optimizer, loader)
    total_steps = max(1, cfg.epochs * len(loader))
    schedule = None
    if cfg.lr_schedule == "cosine":  # from the rate to 0 over the run, no warm-up
        from transformers import get_cosine_schedule_with_warmup

        schedule = get_cosine_schedule_with_warmup(optimizer, 0, total_steps)
    # Prompt-set sampling has its own stream, identical on every process; each keeps its shard of the
    # global batch (see sample_prompt_sets), so N processes sample what one process would.
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    decoy = (cfg.decoy_share, cfg.decoy_steps, cfg.decoy_eps)  # pfm_loss skips it when the share is 0

    history = []
    for epoch in range(cfg.epochs):
        model.train()
        totals = {"loss": 0.0, "ce": 0.0, "kl": 0.0}
        if probe_weight > 0:
            totals.update({"probe": 0.0, **({"confusion": 0.0} if cfg.probe_mode == "confusion" else {})})
        steps = 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not (progress and acc.is_local_main_process), leave=False)
        for batch_inputs, batch_labels in bar:
            local = len(batch_labels)
            shard = (acc.process_index * local, local * acc.num_processes)
            if cfg.objective == "plain":
                loss, parts = plain_loss(model, trim_padding(batch_inputs), batch_labels)
            else:
                loss, parts = pfm_loss(model, trim_padding(batch_inputs), batch_labels, gen, cfg.kl_weight, shard, decoy,
                                       cfg.view_b_sizes, probe_weight, cfg.probe_mode)
            optimizer.zero_grad(set_to_none=True)
            acc.backward(loss)
            optimizer.step()
            if schedule is not None:
                schedule.step()
            totals["loss"] += loss.item()
            for key in totals.keys() - {"loss"}:
                totals[key] += parts[key].item()
            steps += 1
            bar.set_postfix(loss=f"{loss.item():.3f}")
        log = {"epoch": epoch + 1, **{k: v / max(steps, 1) for k, v in totals.items()},
               "lr": optimizer.param_groups[0]["lr"]}
        history.append(log)
        if on_epoch_end is not None and acc.is_main_process:
            on_epoch_end(epoch + 1, log)
    core = acc.unwrap_model(model)
    if probe_weight > 0:
        del core.adversary  # a training-time adversary, never part of the model
    core.eval()
    return history
