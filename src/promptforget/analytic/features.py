"""Fixed-point features from a frozen backbone, reproducible bit for bit.

An example's features must not depend on which other examples share its forward pass or on how many
processes ran it, or the statistics of "the data minus one example" would differ by a rounding from a
fresh run on that data. So every forward pass has the same shape: texts are padded to ``max_length``,
and every batch holds exactly ``batch_size`` examples (the last one is filled with copies of its final
example, whose rows are dropped). Under ``accelerate launch`` / torchrun, process r runs batches
r, r + W, ... and the features are gathered in order.

The optional random projection (RanPAC-style, Zhou et al. / McDonnell et al., NeurIPS 2023) is integer
arithmetic too: a seeded sparse ternary matrix (Achlioptas, 2003), a ReLU, and a right shift that keeps
every value within the fixed-point bound. It depends on the seed alone, never on data.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from promptforget.analytic.config import AnalyticConfig
from promptforget.analytic.stats import MAX_ABS_Q, quantize


def projection_matrix(dim_in: int, dim_out: int, seed: int) -> tuple[np.ndarray, int]:
    """The seeded ternary projection ``R [dim_in, dim_out]`` (+1 and -1 with probability 1/6 each) and the
    right shift that keeps ``relu(q @ R) >> shift`` within ``+-2**19`` for any ``|q| <= 2**19``."""
    rng = np.random.default_rng([seed, dim_in, dim_out, 0x5EED])
    u = rng.random((dim_in, dim_out))
    r = np.where(u < 1 / 6, 1, np.where(u > 5 / 6, -1, 0)).astype(np.int8)
    nnz = max(int(np.abs(r).sum(axis=0).max()), 1)
    return r, math.ceil(math.log2(nnz)) if nnz > 1 else 0


def project(q: np.ndarray, r: np.ndarray, shift: int) -> np.ndarray:
    """``relu(q @ r) >> shift`` in exact integer arithmetic (float64 products and sums stay below 2**53)."""
    h = (np.asarray(q, dtype=np.float64) @ r.astype(np.float64)).astype(np.int64)
    out = np.right_shift(np.maximum(h, 0), shift)
    assert int(out.max(initial=0)) <= MAX_ABS_Q
    return out.astype(np.int32)


class FeatureExtractor:
    """The frozen backbone and the feature map of an :class:`AnalyticConfig`."""

    def __init__(self, config: AnalyticConfig, encoder=None):
        from promptforget.backbones.encoder import load_encoder

        self.config = config
        self.encoder = encoder if encoder is not None else load_encoder(config.backbone)
        self.encoder.model.eval().requires_grad_(False)
        self._tokenizer = self._images = None
        self._projection = None

    @property
    def modality(self) -> str:
        return self.encoder.modality

    @property
    def base_dim(self) -> int:
        d = self.encoder.hidden_size
        return {"cls": d, "mean": d, "cls+mean": 2 * d, "last-k": self.last_k * d}[self.config.feature_map]

    @property
    def last_k(self) -> int:
        """The blocks a last-k map reads: ``last_k``, at most every block the backbone has."""
        return min(self.config.last_k, len(self.encoder.blocks))

    @property
    def dim(self) -> int:
        return self.config.projection_dim or self.base_dim

    # ------------------------------------------------------------------ inputs
    def preprocess(self, raw) -> dict[str, torch.Tensor]:
        from promptforget.backbones.encoder import resolve_backbone

        if self.modality == "text":
            if isinstance(raw, str) or not all(isinstance(x, str) for x in raw):
                raise ValueError("text backbone: inputs must be a list of strings")
            if self._tokenizer is None:
                from transformers import AutoTokenizer

                self._tokenizer = AutoTokenizer.from_pretrained(resolve_backbone(self.config.backbone))
            enc = self._tokenizer(list(raw), padding="max_length", truncation=True, max_length=self.config.max_length,
                                  return_tensors="pt")
            return {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        if self._images is None:
            from promptforget.backbones.image_processing import ImagePreprocessor

            self._images = ImagePreprocessor.for_backbone(resolve_backbone(self.config.backbone),
                                                          image_size=self.config.image_size)
        return {"pixel_values": self._images(np.asarray(raw))}

    # ------------------------------------------------------------------ features
    @torch.inference_mode()
    def float_features(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The feature map of one batch, float32 ``[B, base_dim]``."""
        enc, fmap = self.encoder, self.config.feature_map
        tokens, mask = enc.embed(inputs)
        keep = self.last_k if fmap == "last-k" else 1
        h, states = tokens, []
        blocks = list(enc.blocks)
        for i, block in enumerate(blocks):
            h = enc.run_blocks(h, mask, i, i + 1)
            if i >= len(blocks) - keep:
                states.append(enc.final_norm(h))
        w = mask[:, 1:, None].float()  # token states after CLS, padding left out

        def mean(s):
            return (s[:, 1:] * w).sum(1) / w.sum(1).clamp_min(1.0)

        final = states[-1]
        if fmap == "cls":
            return final[:, 0]
        if fmap == "mean":
            return mean(final)
        if fmap == "cls+mean":
            return torch.cat([final[:, 0], mean(final)], dim=1)
        return torch.cat([mean(s) for s in states], dim=1)

    def fixed_point(self, raw, progress: bool = False) -> np.ndarray:
        """Every example's fixed-point features, int32 ``[N, dim]`` (projected when the config says so)."""
        from tqdm.auto import tqdm

        from promptforget.utils.dist import launch_state

        n, b = len(raw), self.config.batch_size
        if n == 0:
            raise ValueError("no examples to compute features of")
        state = launch_state()
        device = state.device
        self.encoder.model.to(device)
        mine = list(range(state.process_index, math.ceil(n / b), state.num_processes))
        out = []
        for k in tqdm(mine, desc="[features]", unit="batch", disable=not progress or not state.is_main_process):
            idx = np.minimum(np.arange(k * b, (k + 1) * b), n - 1)  # a short last batch repeats its final example
            inputs = self.preprocess([raw[i] for i in idx] if not isinstance(raw, np.ndarray) else raw[idx])
            f = self.float_features({key: v.to(device) for key, v in inputs.items()}).float().cpu().numpy()
            out.append((k, quantize(f, self.config.scale_bits)[: min(b, n - k * b)]))
        if state.num_processes > 1:
            from accelerate.utils import gather_object

            out = gather_object(out)
        q = np.concatenate([part for _, part in sorted(out, key=lambda kv: kv[0])])
        return self.project(q)

    def project(self, q: np.ndarray) -> np.ndarray:
        if not self.config.projection_dim:
            return q
        if self._projection is None:
            self._projection = projection_matrix(q.shape[1], self.config.projection_dim, self.config.seed)
        return project(q, *self._projection)
