"""Fine-tuning unlearning baselines for SPUL: gradient ascent (GA), random labels (RL), GA+KL, GA+GD."""

from promptforget.baselines.config import METHODS, BaselineConfig

__all__ = ["METHODS", "BaselineConfig", "Baseline"]


def __getattr__(name):
    if name == "Baseline":
        from promptforget.baselines.model import Baseline

        return Baseline
    raise AttributeError(name)
