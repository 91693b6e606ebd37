"""Pre-Forgettable Models: one learnable prompt per class; forgetting a class = deleting its prompt."""

from promptforget.pfm.config import PFMConfig
from promptforget.pfm.model import PFMModel, UnknownClassError, forget_run
from promptforget.pfm.train import fit

__all__ = ["PFMConfig", "PFMModel", "UnknownClassError", "fit", "forget_run"]
