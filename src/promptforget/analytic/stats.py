"""Exact sufficient statistics: fixed-point features, integer sums and Gram matrix.

Every feature is rounded to a multiple of ``2**-scale_bits`` and clipped so that its integer form ``q``
has ``|q| <= 2**19``. Sums and the Gram matrix are then exact int64: a Gram entry of N examples is at most
``N * 2**38``, below ``2**63`` for ``N < 2**25`` (33.5 million examples). Integer addition is exact and
order-free, so subtracting an example's (or a class's) rows gives bit for bit the statistics of the data
without them, in whatever order rows were added, by however many processes.

The Gram matrix is computed with float64 BLAS on chunks of ``2**15`` rows: each product is at most
``2**38`` and each partial sum at most ``2**53``, so every float64 intermediate is an exact integer
whatever order the BLAS kernel sums in; the chunks are added as int64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Q_BITS = 19
MAX_ABS_Q = 2**Q_BITS
MAX_EXAMPLES = 2 ** (63 - 2 * Q_BITS) - 1  # N * MAX_ABS_Q**2 < 2**63
EXACT_ROWS = 2 ** (53 - 2 * Q_BITS)  # rows per float64 GEMM whose sums stay exact


def quantize(x, scale_bits: int) -> np.ndarray:
    """Features (float) -> fixed-point int32, ``round(x * 2**scale_bits)`` clipped to ``+-2**19``."""
    x = np.asarray(x, dtype=np.float64)
    if not np.isfinite(x).all():
        raise ValueError("features hold NaN or infinite values (a broken backbone or input?): cannot quantise them")
    q = np.rint(x * float(2**scale_bits))
    return np.clip(q, -MAX_ABS_Q, MAX_ABS_Q).astype(np.int32)


def dequantize(q: np.ndarray, scale_bits: int) -> np.ndarray:
    return np.asarray(q, dtype=np.float64) * (2.0**-scale_bits)


def exact_gram(q: np.ndarray) -> np.ndarray:
    """``q.T @ q`` as exact int64 (see the module docstring)."""
    q = np.asarray(q)
    if q.size and int(np.abs(q.astype(np.int64)).max()) > MAX_ABS_Q:
        raise ValueError(f"fixed-point features exceed 2**{Q_BITS}: the Gram matrix would not be exact")
    out = np.zeros((q.shape[1], q.shape[1]), dtype=np.int64)
    for i in range(0, q.shape[0], EXACT_ROWS):
        f = q[i : i + EXACT_ROWS].astype(np.float64)
        out += (f.T @ f).astype(np.int64)
    return out


@dataclass
class ExactStats:
    """Per-class counts and sums (over the config's classes; a class without examples has count 0) and
    the Gram matrix of every example, all exact integers."""

    counts: np.ndarray  # int64 [C]
    sums: np.ndarray  # int64 [C, D]
    gram: np.ndarray  # int64 [D, D]

    @classmethod
    def of_rows(cls, q: np.ndarray, labels: np.ndarray, num_classes: int) -> "ExactStats":
        q, labels = np.asarray(q), np.asarray(labels, dtype=np.int64)
        if len(q) > MAX_EXAMPLES:
            raise ValueError(f"{len(q)} examples: exact int64 statistics hold at most {MAX_EXAMPLES:,}")
        sums = np.zeros((num_classes, q.shape[1]), dtype=np.int64)
        np.add.at(sums, labels, q.astype(np.int64))
        return cls(np.bincount(labels, minlength=num_classes).astype(np.int64), sums, exact_gram(q))

    def minus(self, q: np.ndarray, labels: np.ndarray) -> "ExactStats":
        """The statistics without the rows ``q`` (which must be among the ones added)."""
        gone = ExactStats.of_rows(q, labels, len(self.counts))
        return ExactStats(self.counts - gone.counts, self.sums - gone.sums, self.gram - gone.gram)

    @property
    def n(self) -> int:
        return int(self.counts.sum())
