"""Experiment tracking through Accelerate's trackers (TensorBoard, MLflow), beside the run's JSON logs.

``--report-to auto`` (the default) writes TensorBoard event files under ``RUN/logs/`` when TensorBoard is
installed and tracks nothing otherwise; ``mlflow`` logs to ``$MLFLOW_TRACKING_URI`` (default: ``RUN/mlruns``).
Only the main process of a multi-process launch writes (Accelerate's trackers see to that).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

REPORT_TO = ("auto", "tensorboard", "mlflow", "none")
LOGS_DIR = "logs"


def resolve_report_to(report_to: str) -> str:
    """``auto`` -> ``tensorboard`` when it is installed, else ``none``; an explicit choice must be installed."""
    if report_to not in REPORT_TO:
        raise ValueError(f"--report-to must be one of {', '.join(REPORT_TO)}, got {report_to!r}")
    installed = {"tensorboard": importlib.util.find_spec("tensorboard") is not None,
                 "mlflow": importlib.util.find_spec("mlflow") is not None}
    if report_to == "auto":
        return "tensorboard" if installed["tensorboard"] else "none"
    if report_to != "none" and not installed[report_to]:
        raise ValueError(f"--report-to {report_to}: the {report_to} package is not installed "
                         f"(pip install {report_to}, or --report-to none)")
    return report_to


class Tracker:
    """One run's tracker: ``log(values, step)`` and ``finish()``; a no-op for ``none``."""

    def __init__(self, report_to: str, run_dir: str | os.PathLike, run_name: str, config: dict | None = None):
        self.kind = resolve_report_to(report_to)
        self._tracker = None
        if self.kind == "none":
            return
        run_dir = Path(run_dir)
        if self.kind == "tensorboard":
            from accelerate.tracking import TensorBoardTracker

            self._tracker = TensorBoardTracker(run_name, run_dir / LOGS_DIR)
        else:
            from accelerate.tracking import MLflowTracker

            os.environ.setdefault("MLFLOW_TRACKING_URI", (run_dir / "mlruns").resolve().as_uri())
            self._tracker = MLflowTracker(experiment_name=run_name, logging_dir=str(run_dir))
        self._tracker.start()
        if config:
            self._tracker.store_init_configuration(_scalars(config))

    @property
    def logging_dir(self) -> str | None:
        return getattr(self._tracker, "logging_dir", None)

    def log(self, values: dict, step: int, prefix: str = "") -> None:
        """Numbers of ``values`` (others skipped) as ``prefix + name`` at ``step``."""
        if self._tracker is not None:
            numbers = {prefix + k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            self._tracker.log(numbers, step=step)

    def step_callback(self, prefix: str = "train/"):
        """A ``callback(step, info)`` for the training loops."""
        return lambda step, info: self.log({k: v for k, v in info.items() if k not in ("step", "epoch")}, step, prefix)

    def finish(self) -> None:
        if self._tracker is not None:
            self._tracker.finish()
            self._tracker = None


def _scalars(config: dict) -> dict:
    """Hyperparameters as trackers take them: scalars kept, lists and None as text."""
    return {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in config.items()}
