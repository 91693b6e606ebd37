"""The analytic family: forgetting that is exact and instant.

A frozen backbone's fixed-point features, exact integer sufficient statistics (counts, sums, Gram
matrix) and a head solved from them in closed form. Forgetting a class or a single example subtracts its
rows and solves again: the artefact is byte for byte what training on the remaining data writes, so the
proof is a recomputation anyone holding the retained data can run. Heavy modules load on use.
"""

from __future__ import annotations

from promptforget.analytic.config import AnalyticConfig

__all__ = ["AnalyticConfig", "AnalyticModel"]


def __getattr__(name: str):
    if name == "AnalyticModel":
        from promptforget.analytic.model import AnalyticModel

        return AnalyticModel
    raise AttributeError(f"module 'promptforget.analytic' has no attribute {name!r}")
