"""Knobs of an analytic run: frozen backbone -> feature map -> (random projection) -> exact statistics -> head."""

from __future__ import annotations

from dataclasses import dataclass

from promptforget.analytic.head import HEADS
from promptforget.utils.config import ConfigMixin, knob

FEATURE_MAPS = ("cls", "mean", "cls+mean", "last-k")


@dataclass
class AnalyticConfig(ConfigMixin):
    backbone: str = knob("minilm", "hub name, local directory, or alias minilm | dinov2-s14")
    # Defaults: the best single setting over BBC News, Rotten Tomatoes (3 classes) and MNIST-5k, 3 seeds each
    # (benchmarks/analytic_accuracy.py, docs/results.md).
    feature_map: str = knob("last-k", "final CLS state, mean token state, both, or the mean token state of each "
                            "of the last k blocks", choices=FEATURE_MAPS)
    last_k: int = knob(3, "feature_map=last-k: how many of the last blocks (at most all of them)")
    max_length: int = knob(128, "text: tokens per example (truncated and padded to it)")
    image_size: int | None = knob(None, "images: side in pixels (None: the backbone's own)")
    projection_dim: int = knob(0, "M > 0: a seeded random ternary projection to M features with a ReLU "
                               "(RanPAC-style); 0 = none")
    head: str = knob("ridge", "ridge = one-vs-rest ridge (lambda by GCV), lda = shrinkage LDA (OAS; a faster solve)",
                     choices=HEADS)
    shrinkage: float | None = knob(None, "lda: shrinkage in [0, 1] (None: OAS from the retained statistics)")
    ridge_lambda: float | None = knob(None, "ridge: lambda on standardised features (None: GCV from the retained "
                                      "statistics)")
    # 12 bits: steps of 2.4e-4, values clipped at +-128; exact int64 statistics for up to 2**25 examples.
    scale_bits: int = knob(12, "fixed point: features are rounded to multiples of 2**-scale_bits")
    batch_size: int = knob(32, "examples per forward pass (every pass has this shape)")
    seed: int = knob(42, "draws the split and the random projection")
    id_salt: str = knob("", "salt of the example-id hashes in the artefact ('' = drawn at train time)")
    class_names: list[str] = knob([], "every class of the training data (set by train)")

    def __post_init__(self):
        if self.feature_map not in FEATURE_MAPS:
            raise ValueError(f"feature_map must be one of {FEATURE_MAPS}, got {self.feature_map!r}")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
        for name in ("last_k", "max_length", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"AnalyticConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.projection_dim < 0:
            raise ValueError(f"projection_dim must be >= 0, got {self.projection_dim}")
        if not 0 <= self.scale_bits <= 18:
            raise ValueError(f"scale_bits must be in 0..18, got {self.scale_bits}")
        if self.shrinkage is not None and not 0.0 <= self.shrinkage <= 1.0:
            raise ValueError(f"shrinkage must be in [0, 1], got {self.shrinkage}")
        if self.ridge_lambda is not None and not self.ridge_lambda > 0:
            raise ValueError(f"ridge_lambda must be > 0, got {self.ridge_lambda}")

    def head_settings(self, backbone_sha256: str) -> dict:
        return {"head": self.head, "scale_bits": self.scale_bits, "shrinkage": self.shrinkage,
                "ridge_lambda": self.ridge_lambda, "backbone_sha256": backbone_sha256}
