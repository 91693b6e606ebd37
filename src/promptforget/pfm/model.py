"""Pre-Forgettable Model: encoder + LoRA + one learnable prompt per class + linear head on CLS.

Sequence fed to the blocks:  [prompt_c1 .. prompt_ck | CLS | tokens...]
Prompts carry no position embedding, so their order does not matter; which prompts a sample sees is
an index tensor plus a key mask, so variable-size prompt sets run as one batched forward.

Forgetting class c = deleting ``prompts[c]``. The weights file holds the prompts and is the single
source of truth for which classes are still known, so a forget is one atomic file replacement.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from promptforget.backbones.encoder import EncoderParts, load_encoder, resolve_backbone, state_dict_sha256
from promptforget.pfm import gated, prefix
from promptforget.pfm.config import PFMConfig
from promptforget.store import durable
from promptforget.store.anchor import claimed_forgotten
from promptforget.store.artefact import Safetensors
from promptforget.store.layout import (CLASS_ADAPTER_PREFIX, CONFIG_NAME, PROMPT_PREFIX, WEIGHTS_NAME, active_classes,
                                      class_from_key, class_key, class_tensor_names, read_config_record)
from promptforget.store.ledger import LedgerKey
from promptforget.utils.io import atomic_write_bytes, atomic_write_json, read_regular_file

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


def mask_classes(logits: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """Logits with the columns of ``classes`` set to -inf (the head mask for forgotten classes)."""
    if not len(classes):
        return logits
    return logits.index_fill(1, torch.tensor(list(classes), device=logits.device), float("-inf"))


class UnknownClassError(ValueError):
    """A class name that the model never had, or has already forgotten."""


class PFMModel(nn.Module):
    masked_by_ledger: tuple[str, ...] | list[str] = ()  # from_pretrained: prompts left out because the ledger forgot them

    def __init__(self, config: PFMConfig, encoder: EncoderParts | None = None):
        super().__init__()
        config.validate()
        if len(config.class_names) < 2:
            raise ValueError("a PFM needs at least 2 classes (config.class_names)")
        self.config = config
        self.encoder = encoder if encoder is not None else load_encoder(config.backbone)
        self.backbone = self.encoder.model  # registered as a submodule: .to(), .parameters(), DDP see it
        # Hash of the pretrained weights, before any adapter: a run dir stores it, loading checks it.
        self.backbone_sha256 = state_dict_sha256(self.encoder.model)
        n_blocks = len(self.encoder.blocks)
        if config.prompt_layer >= n_blocks:
            raise ValueError(f"prompt_layer {config.prompt_layer} must be below the backbone's {n_blocks} blocks")
        # LoRA and head initialisation follow config.seed (without disturbing the caller's RNG state).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self._setup_adaptation()
            d, t = self.encoder.hidden_size, config.prompt_tokens
            g = torch.Generator().manual_seed(config.seed)
            self.prompts = nn.ParameterDict({class_key(c): nn.Parameter(self._init_prompt(t, d, g)) for c in config.class_names})
            self.head = nn.Linear(d, len(config.class_names))
            # adapt="gated": one LoRA per class, switched on by its prompt, deleted with it (pfm/gated.py).
            self.class_adapters = nn.ModuleDict(
                {class_key(c): gated.ClassAdapter(self._gated_shapes, config.lora_r, g) for c in config.class_names}
                if config.adapt == "gated" else {})
        if config.prompt_style == "prefix":
            prefix.install(self.encoder.model)

    # ----------------------------------------------------------------- construction
    def _setup_adaptation(self) -> None:
        model, cfg = self.encoder.model, self.config
        if cfg.adapt == "full":
            if cfg.prompt_layer:
                raise ValueError("adapt='full' trains every block, so prompt_layer must be 0 (nothing to cache)")
            model.requires_grad_(True)
            return
        model.requires_grad_(False)
        self._gated_shapes: list[tuple[int, int]] = []
        if cfg.adapt == "gated":
            self._gated_shapes = gated.install(model, self.encoder.block_module_names(cfg.prompt_layer))
        if cfg.adapt == "lora":
            from peft import LoraConfig, inject_adapter_in_model

            lora = LoraConfig(
                r=cfg.lora_r,
                lora_alpha=cfg.lora_alpha,
                lora_dropout=cfg.lora_dropout,
                # blocks below prompt_layer stay frozen: their cached output must not depend on training
                target_modules=self.encoder.block_module_names(cfg.prompt_layer),
            )
            inject_adapter_in_model(lora, model)
            for name, p in model.named_parameters():
                p.requires_grad_("lora_" in name)

    def _init_prompt(self, t: int, d: int, g: torch.Generator) -> torch.Tensor:
        if self.config.prompt_init == "zeros":
            return torch.zeros(t, d)
        if self.config.prompt_init == "cls" and self.encoder.modality == "image":
            return self.encoder.model.embeddings.cls_token.detach()[0, :1].repeat(t, 1).clone()
        return torch.randn(t, d, generator=g)

    # ----------------------------------------------------------------- classes
    @property
    def class_names(self) -> list[str]:
        return list(self.config.class_names)

    @property
    def num_classes(self) -> int:
        return len(self.config.class_names)

    @property
    def active_classes(self) -> list[str]:
        return active_classes(self.config.class_names, [PROMPT_PREFIX + k for k in self.prompts.keys()])

    @property
    def forgotten_classes(self) -> list[str]:
        active = set(self.active_classes)
        return [c for c in self.config.class_names if c not in active]

    def class_index(self, name: str) -> int:
        try:
            return self.config.class_names.index(name)
        except ValueError:
            raise UnknownClassError(f"unknown class {name!r}; classes are {self.config.class_names}") from None

    def prompt_of(self, name: str) -> torch.Tensor:
        """The prompt tensor [T, D] of an active class (read-only view)."""
        key = class_key(name)
        if key not in self.prompts:
            self.class_index(name)  # raises for unknown names
            raise UnknownClassError(f"class {name!r} has been forgotten: its prompt no longer exists")
        return self.prompts[key].detach()

    def apply_forget(self, run_dir, active: list[str]) -> bool:
        """After a durable forget replaced the artefact: drop the prompts it no longer holds (the rest of
        the weights are unchanged by an instant forget). True when a prompt was dropped."""
        stale = [c for c in self.active_classes if c not in active]
        if stale:
            self.forget(stale)  # replaces the prompt dict by assignment (RCU)
        return bool(stale)

    def forget(self, classes: str | Iterable[str]) -> list[str]:
        """Delete the prompts of ``classes`` (in memory). All-or-nothing: on any bad name nothing changes.

        The ParameterDict is replaced, not mutated, so a concurrent forward that already took a reference
        to the old bank finishes on it and every later forward sees the new one.
        """
        names = [classes] if isinstance(classes, str) else list(classes)
        if not names:
            raise ValueError("forget: no classes given")
        if len(set(names)) != len(names):
            raise ValueError(f"forget: duplicate class names in {names}")
        active = set(self.active_classes)
        for n in names:
            self.class_index(n)
            if n not in active:
                raise UnknownClassError(f"class {n!r} is already forgotten")
        if len(active) - len(names) < 1:
            raise ValueError("forget: at least one class must remain (forgetting every class leaves no model)")
        drop = {class_key(n) for n in names}
        # Adapters first: a forward that reads the new adapters with the old prompts runs a prompt without its
        # adapter for a moment, never an adapter without its prompt.
        self.class_adapters = nn.ModuleDict({k: v for k, v in self.class_adapters.items() if k not in drop})
        self.prompts = nn.ParameterDict({k: v for k, v in self.prompts.items() if k not in drop})
        return names

    def adapter_parameters(self) -> list[nn.Parameter]:
        """The adapted weights besides prompts and head: the shared LoRA, or the remaining classes' adapters."""
        params = [p for n, p in self.backbone.named_parameters() if "lora_" in n]
        return params + list(self.class_adapters.parameters())

    # ----------------------------------------------------------------- forward
    def forward(
        self,
        inputs: dict[str, torch.Tensor],
        prompt_ids: torch.Tensor | None = None,
        prompt_mask: torch.Tensor | None = None,
        mask_forgotten: bool = False,
        decoy_prompts: torch.Tensor | None = None,
        decoy_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits [B, C] over all original classes.

        prompt_ids  [B, S] class indices of the prompts each sample sees (default: every active prompt)
        prompt_mask [B, S] which of those slots are real (False = padding of a smaller prompt set)
        mask_forgotten: set logits of forgotten classes to -inf (the head still has their rows). Off here: the
        forward is the raw view training and the audit read; predict/predict_proba mask by default.
        decoy_prompts [B, T, D], decoy_mask [B]: one extra prompt per sample that belongs to no class
        (training with decoy keys, see PFMConfig.decoy_share); it joins the sample's set where the mask is True.
        """
        prompts = self.prompts  # one read: a concurrent forget() swaps the whole dict
        tokens, key_mask = self.features(inputs)
        b, device = tokens.shape[0], tokens.device
        active = [i for i, c in enumerate(self.config.class_names) if class_key(c) in prompts]
        if prompt_ids is None:
            # A plain fine-tune (the utility reference) was trained, and is used, without prompts.
            bank_ids = [] if self.config.objective == "plain" else active
            prompt_ids = torch.tensor(bank_ids, dtype=torch.long, device=device).expand(b, -1)
        if prompt_mask is None:
            prompt_mask = torch.ones_like(prompt_ids, dtype=torch.bool)
        prompt_mask = prompt_mask.to(device=device, dtype=torch.bool)
        prompt_ids = prompt_ids.to(device)
        s, t = prompt_ids.shape[1], self.config.prompt_tokens

        start = self.config.prompt_layer
        if s > 0 or decoy_prompts is not None:
            # Map class index -> row of the bank of prompts that still exist (-1 = forgotten).
            row = torch.full((self.num_classes,), -1, dtype=torch.long, device=device)
            row[torch.tensor(active, dtype=torch.long, device=device)] = torch.arange(len(active), device=device)
            rows = row[prompt_ids]
            if bool(((rows < 0) & prompt_mask).any()):
                raise UnknownClassError("a prompt set refers to a forgotten class")
            bank_prompts = tuple(prompts[class_key(self.config.class_names[i])] for i in active)
            bank = torch.stack(bank_prompts).to(tokens.dtype)  # [A, T, D]
            if decoy_prompts is not None:
                # Each sample's decoy becomes bank row A + i, in one extra slot of its set.
                if decoy_prompts.shape != (b, t, bank.shape[-1]):
                    raise ValueError(f"decoy_prompts must be [B={b}, T={t}, D={bank.shape[-1]}], got {tuple(decoy_prompts.shape)}")
                dm = torch.ones(b, dtype=torch.bool, device=device) if decoy_mask is None else decoy_mask.to(device).bool()
                rows = torch.cat([rows, len(active) + torch.arange(b, device=device).unsqueeze(1)], dim=1)
                prompt_mask = torch.cat([prompt_mask, dm.unsqueeze(1)], dim=1)
                bank = torch.cat([bank, decoy_prompts.to(device, bank.dtype)])
                s += 1
            if self.config.prompt_style == "prefix":
                bank_kv = None if decoy_prompts is not None else prefix.bank_projections(self.encoder, bank, start, bank_prompts)
                with prefix.prefix_context(self.encoder, bank, rows, prompt_mask, key_mask, start, bank_kv):
                    hidden = self.encoder.encode(tokens, key_mask, start)
                return self._logits(hidden[:, 0], active, mask_forgotten)
            with self._class_adapters_on(active, rows, prompt_mask):
                cls = self._encode_with_prompt_tokens(tokens, key_mask, bank, rows, prompt_mask, start)
            return self._logits(cls, active, mask_forgotten)
        hidden = self.encoder.encode(tokens, key_mask, start)
        return self._logits(hidden[:, 0], active, mask_forgotten)

    def _class_adapters_on(self, active: list[int], rows: torch.Tensor, prompt_mask: torch.Tensor):
        """adapt="gated": each sample's forward runs the adapters of the classes in its prompt set (bank
        rows ``rows`` where ``prompt_mask``). A prompt without an adapter (an attacker's fresh key) gates nothing."""
        adapters = self.class_adapters  # one read, as for the prompts
        keys = [class_key(self.config.class_names[i]) for i in active]
        gated_rows = [a for a, k in enumerate(keys) if k in adapters]
        if not gated_rows:
            return gated.gated([], rows, 0.0, 0.0)
        width = len(active) + rows.shape[0] + 1  # bank rows, decoys, and a last column for padded slots
        member = torch.zeros(rows.shape[0], width, dtype=torch.bool, device=rows.device)
        member.scatter_(1, torch.where(prompt_mask, rows, width - 1), True)
        cfg = self.config
        return gated.gated([adapters[keys[a]] for a in gated_rows], member[:, gated_rows], cfg.lora_alpha / cfg.lora_r,
                           cfg.lora_dropout)

    # Most forwards a token-style batch is split into, grouped by prompt-set size (see below).
    prompt_size_groups = 8

    def _encode_with_prompt_tokens(self, tokens, key_mask, bank, rows, prompt_mask, start: int) -> torch.Tensor:
        """CLS states [B, D] of the samples with their prompts prepended as tokens.

        Padding every sample to the batch's largest set would push about C slots per sample where the
        sets hold C/2 on average (sizes are drawn per sample), so the batch is sorted by set size and
        cut into a few groups, each run as its own forward padded only to its own largest set. A
        masked slot is an absent key, so each sample's result is that of one padded forward (up to
        float rounding); prompts carry no position, so moving the real slots to the front changes nothing.
        """
        t = self.config.prompt_tokens
        front = (~prompt_mask).to(torch.uint8).argsort(dim=1, stable=True)  # real slots first
        rows, prompt_mask = rows.gather(1, front), prompt_mask.gather(1, front)
        sizes = prompt_mask.sum(1)
        parts, order = [tokens.new_zeros(0, tokens.shape[-1])], [sizes.new_zeros(0)]
        for idx in self.size_groups(sizes, tokens.shape[1], t, self.prompt_size_groups):
            s = int(sizes[idx].max())
            p = bank[rows[idx, :s].clamp(min=0)].reshape(len(idx), s * t, bank.shape[-1])
            pm = prompt_mask[idx, :s].repeat_interleave(t, dim=1)
            with gated.rows_selected(idx):
                hidden = self.encoder.encode(torch.cat([p, tokens[idx]], 1), torch.cat([pm, key_mask[idx]], 1), start)
            parts.append(hidden[:, s * t])  # CLS sits right after the prompts
            order.append(idx)
        return torch.cat(parts)[torch.cat(order).argsort()]

    @staticmethod
    def size_groups(sizes: torch.Tensor, seq_len: int, tokens_per_prompt: int, max_groups: int) -> list[torch.Tensor]:
        """Row indices cut into at most ``max_groups`` groups of neighbouring set sizes, so that the
        tokens the groups push (rows x (seq_len + tokens_per_prompt x the group's largest set)) are fewest.
        Exact dynamic programme over the sorted sizes (a batch holds tens of rows: microseconds)."""
        sorted_sizes, perm = sizes.sort(stable=True)
        if len(perm) == 0:
            return []
        s = sorted_sizes.cpu().numpy().astype(np.float64)
        n = len(s)
        i, j = np.arange(n + 1)[:, None], np.arange(n + 1)[None, :]
        width = seq_len + tokens_per_prompt * s[np.maximum(j - 1, 0)]
        cost = np.where(j > i, (j - i) * width, np.where(j == i, 0.0, np.inf))  # rows i..j-1 as one group
        best, cuts = cost[0], []
        for _ in range(max_groups - 1):
            total = best[:, None] + cost
            cuts.append(total.argmin(0))
            best = total.min(0)
        groups, end = [], n
        for cut in reversed(cuts):
            start = int(cut[end])
            if start < end:
                groups.append(perm[start:end])
            end = start
        if end > 0:
            groups.append(perm[:end])
        return groups[::-1]

    def features(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token states where the prompts go in ([B, L, D], key mask [B, L]): the embeddings, or with
        prompt_layer > 0 the output of the frozen lower blocks (taken as given if already cached)."""
        if "hidden_states" in inputs:
            return inputs["hidden_states"], inputs["key_mask"].bool()
        tokens, key_mask = self.encoder.embed(inputs)
        if self.config.prompt_layer:
            with torch.no_grad():
                tokens = self.encoder.run_blocks(tokens, key_mask, 0, self.config.prompt_layer)
        return tokens, key_mask

    def _logits(self, cls: torch.Tensor, active: list[int], mask_forgotten: bool) -> torch.Tensor:
        logits = self.head(cls)
        if mask_forgotten:
            kept = set(active)
            logits = mask_classes(logits, [i for i in range(self.num_classes) if i not in kept])
        return logits

    # ----------------------------------------------------------------- inputs
    def preprocess(self, raw: Sequence[str] | np.ndarray, pad_to_max_length: bool = False) -> dict[str, torch.Tensor]:
        """Raw texts (list of str) or images (uint8 array [N,H,W] or [N,H,W,3]) -> model inputs."""
        if self.encoder.modality == "text":
            if isinstance(raw, str) or not all(isinstance(x, str) for x in raw):
                raise ValueError("text backbone: inputs must be a list of strings")
            padding = "max_length" if pad_to_max_length else True
            enc = self.tokenizer(
                list(raw), padding=padding, truncation=True, max_length=self.config.max_length, return_tensors="pt"
            )
            return {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        return {"pixel_values": self.image_preprocessor(raw)}

    def encode_dataset(self, raw, chunk: int = 256) -> dict[str, torch.Tensor]:
        """Preprocess a whole dataset once (texts padded to max_length; batches trim the padding).

        With prompt_layer > 0 this also runs the frozen lower blocks once and returns their output
        (``hidden_states``, ``key_mask``), so training and evaluation only run the blocks above.
        """
        if len(raw) == 0:
            raise ValueError("encode_dataset: no inputs")
        parts = []
        device = next(self.parameters()).device
        for i in range(0, len(raw), chunk):
            x = self.preprocess(raw[i : i + chunk], pad_to_max_length=True)
            if self.config.prompt_layer:
                was_training = self.training
                self.eval()  # no dropout in the cached features
                h, m = self.features({k: v.to(device) for k, v in x.items()})
                self.train(was_training)
                x = {"hidden_states": h.cpu(), "key_mask": m.cpu()}
            parts.append(x)
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    @property
    def tokenizer(self):
        if getattr(self, "_tokenizer", None) is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(resolve_backbone(self.config.backbone))
        return self._tokenizer

    @property
    def image_preprocessor(self):
        if getattr(self, "_image_preprocessor", None) is None:
            from promptforget.backbones.image_processing import HFImagePreprocessor, ImagePreprocessor

            preprocessor = HFImagePreprocessor if self.config.image_processor == "hf" else ImagePreprocessor
            self._image_preprocessor = preprocessor.for_backbone(
                resolve_backbone(self.config.backbone), image_size=self.config.image_size
            )
        return self._image_preprocessor

    @torch.no_grad()
    def predict_proba(self, raw, mask_forgotten: bool = True, batch_size: int = 64) -> np.ndarray:
        """Class probabilities [N, C] (over all original classes) with the full remaining prompt bank.

        Forgotten classes get probability 0 (the head mask, as the service and the export apply it).
        ``mask_forgotten=False`` is for research only (what the head alone still says about them): use
        :meth:`predict_proba_unmasked` so that the choice is explicit where it is made.
        """
        was_training = self.training
        self.eval()
        try:
            out = []
            for i in range(0, len(raw), batch_size):
                inputs = self.preprocess(raw[i : i + batch_size])
                out.append(torch.softmax(self(inputs, mask_forgotten=mask_forgotten), dim=-1).float().cpu())
            return torch.cat(out).numpy() if out else np.zeros((0, self.num_classes), np.float32)
        finally:
            self.train(was_training)

    def predict(self, raw, mask_forgotten: bool = True, batch_size: int = 64) -> list[str]:
        """Class names; a forgotten class is never returned (``mask_forgotten=False``: research only)."""
        probs = self.predict_proba(raw, mask_forgotten=mask_forgotten, batch_size=batch_size)
        return [self.config.class_names[i] for i in probs.argmax(axis=1)]

    def predict_proba_unmasked(self, raw, batch_size: int = 64) -> np.ndarray:
        """Research only: probabilities without the head mask, so forgotten classes can still score (what
        ``evaluate`` reports as "no head mask"). Nothing that leaves the library should use this."""
        return self.predict_proba(raw, mask_forgotten=False, batch_size=batch_size)

    # ----------------------------------------------------------------- parameters
    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """What a run directory stores: LoRA (or full backbone), prompts, head. Never the frozen backbone."""
        sd: dict[str, torch.Tensor] = {}
        if self.config.adapt == "lora":
            for n, p in self.encoder.model.named_parameters():
                if "lora_" in n:
                    sd[f"backbone.{n}"] = p
        elif self.config.adapt == "full":
            for n, p in self.encoder.model.state_dict().items():
                sd[f"backbone.{n}"] = p
        for k, p in self.prompts.items():
            sd[PROMPT_PREFIX + k] = p
        for n, p in self.class_adapters.named_parameters():
            sd[CLASS_ADAPTER_PREFIX + n] = p
        sd["head.weight"], sd["head.bias"] = self.head.weight, self.head.bias
        return {k: v.detach().cpu().contiguous() for k, v in sd.items()}

    def num_parameters(self, trainable_only: bool = True) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    # ----------------------------------------------------------------- save / load
    def save_pretrained(self, run_dir: str | os.PathLike) -> Path:
        """Write ``pfm_config.json`` and ``model.safetensors`` atomically. Returns the weights path."""
        from safetensors.torch import save

        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_dir / CONFIG_NAME, self._config_record())
        meta = {"format": "promptforget-pfm", "format_version": str(FORMAT_VERSION), "backbone_sha256": self.backbone_sha256}
        atomic_write_bytes(run_dir / WEIGHTS_NAME, save(self.trainable_state_dict(), metadata=meta))
        return run_dir / WEIGHTS_NAME

    def _config_record(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "config": self.config.to_dict(),
            "backbone": {
                "name_or_path": self.config.backbone,
                "family": self.encoder.family,
                "modality": self.encoder.modality,
                "sha256": self.backbone_sha256,
            },
            "weights_file": WEIGHTS_NAME,
            "note": "which classes are forgotten is defined by the prompts present in the weights file",
        }

    @classmethod
    def from_pretrained(cls, run_dir: str | os.PathLike, backbone: str | None = None,
                        ledger_key: LedgerKey | None = None) -> "PFMModel":
        """Load a run directory. ``backbone`` overrides where to find the frozen backbone (same weights).

        The weights are read into memory (a copy: a file overwritten in place later cannot change them), and
        the ledger rules: a class that the run's ledger or its anchor (found with ``ledger_key`` or the
        environment) says is forgotten is left out even when the artefact still holds its prompt; such
        classes are listed in ``masked_by_ledger`` (and a warning is logged)."""
        import warnings

        from safetensors.torch import load as load_safetensors

        run_dir = Path(run_dir)
        cfg_path, w_path = run_dir / CONFIG_NAME, run_dir / WEIGHTS_NAME
        for p in (cfg_path, w_path):
            if not p.is_file():
                raise FileNotFoundError(f"{run_dir} is not a PFM run directory: missing {p.name}")
        record = read_config_record(run_dir)
        if record.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{cfg_path}: unsupported format_version {record.get('format_version')!r}")
        config = PFMConfig.from_dict(record["config"])
        if backbone is not None:
            config.backbone = backbone
        raw = read_regular_file(w_path)  # never a symlink; never a memory map of a file others can overwrite
        meta = Safetensors.parse(raw, str(w_path)).metadata or {}
        model = cls(config)
        expected = record["backbone"]["sha256"]
        if model.backbone_sha256 != expected or meta.get("backbone_sha256") != expected:
            raise ValueError(
                f"backbone mismatch: {config.backbone!r} has weights sha256 {model.backbone_sha256[:12]}..., "
                f"the run was trained on {expected[:12]}... ({record['backbone']['name_or_path']!r})"
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # frombuffer on read-only bytes: cloned right away
            sd = {k: v.clone() for k, v in load_safetensors(raw).items()}
        del raw
        present = {k[len(PROMPT_PREFIX):] for k in sd if k.startswith(PROMPT_PREFIX)}
        unknown = present - {class_key(c) for c in config.class_names}
        if unknown:
            raise ValueError(f"{w_path}: prompts for classes not in the config: {sorted(map(class_from_key, unknown))}")
        masked = [c for c in config.class_names if c in set(claimed_forgotten(run_dir, ledger_key)) and class_key(c) in present]
        if masked:
            if len(masked) == len(present):
                raise ValueError(f"{run_dir}: the ledger says every class in the artefact is forgotten ({masked})")
            log.warning("%s: the artefact holds the prompts of %s, which the ledger says are forgotten; they are "
                        "left out (the artefact was replaced outside the ledger)", run_dir, masked)
            present -= {class_key(c) for c in masked}
            for c in masked:
                sd = {k: v for k, v in sd.items() if k not in class_tensor_names(c, list(sd))}
        model.prompts = nn.ParameterDict({k: nn.Parameter(sd[PROMPT_PREFIX + k]) for k in model.prompts.keys() if k in present})
        model.class_adapters = nn.ModuleDict({k: v for k, v in model.class_adapters.items() if k in present})
        stray = [k for k in sd if k.startswith(CLASS_ADAPTER_PREFIX) and k.split(".")[1] not in present]
        if stray:
            raise ValueError(f"{w_path}: adapter tensors of a class without a prompt: {stray[:3]}")
        own = model.trainable_state_dict()
        missing = [k for k in own if k not in sd]
        if missing:
            raise ValueError(f"{w_path}: missing tensors {missing[:5]}{'...' if len(missing) > 5 else ''}")
        with torch.no_grad():
            bb = dict(model.encoder.model.named_parameters()) | dict(model.encoder.model.named_buffers())
            for k, v in sd.items():
                if k.startswith("backbone."):
                    target = bb.get(k[len("backbone."):])
                    if target is None or target.shape != v.shape:
                        raise ValueError(f"{w_path}: tensor {k} does not fit the backbone")
                    target.copy_(v)
            for n, p in model.class_adapters.named_parameters():
                v = sd[CLASS_ADAPTER_PREFIX + n]
                if v.shape != p.shape:
                    raise ValueError(f"{w_path}: tensor {CLASS_ADAPTER_PREFIX + n} has shape {tuple(v.shape)}, "
                                     f"expected {tuple(p.shape)}")
                p.copy_(v)
            model.head.weight.copy_(sd["head.weight"])
            model.head.bias.copy_(sd["head.bias"])
        model.masked_by_ledger = masked
        model.eval()
        return model


def forget_run(
    run_dir: str | os.PathLike,
    classes: Sequence[str],
    model: PFMModel | None = None,
    reason: str = "",
    request_id: str | None = None,
) -> PFMModel:
    """Forget ``classes`` in a saved run: delete their prompts from the weights file and record it in the
    run's deletion ledger, durably (``promptforget.store.durable.forget``, the path the service uses).

    On a bad class name nothing on disk changes. After it returns, the old weights file has been
    replaced (renamed over), so the deleted prompts' bytes are in no file of the run directory.
    Returns ``model`` with the prompts dropped in memory too, or the run loaded afresh.
    """
    def drop_from_memory(active: list[str]) -> None:
        if model is not None:
            stale = [c for c in model.active_classes if c not in active]
            if stale:
                model.forget(stale)

    durable.forget(run_dir, classes, reason=reason, request_id=request_id, source="python", on_artefact=drop_from_memory)
    return model if model is not None else PFMModel.from_pretrained(run_dir)
