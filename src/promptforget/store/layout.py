"""What a run directory holds, in one place. Torch-free: the forget path, the ledger and the
CLI's fast commands read runs without importing a model.

    RUN_DIR/
      pfm_config.json       a PFM run: the PFMConfig, the backbone's name and sha256
      analytic_config.json  an analytic run (promptforget.analytic): its AnalyticConfig, the backbone
      model.safetensors     PFM: LoRA, head and the class prompts (and per-class adapters); analytic: the
                            exact statistics, each example's fixed-point features and the solved head.
                            Either way the class-owned tensors present ARE the known classes
      data.json             the recorded split (dataset, test_size, seed, max_train) and the training
                            examples' hash (train_manifest_sha256, checked by an exact forget)
      train_log.json        training history
      forget_ledger.jsonl   the deletion ledger (store.ledger)
      evaluation.json       `promptforget evaluate`
      audit/                `promptforget audit`
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from promptforget.utils import strictjson

CONFIG_NAME = "pfm_config.json"
ANALYTIC_CONFIG_NAME = "analytic_config.json"
CONFIG_NAMES = {"pfm": CONFIG_NAME, "analytic": ANALYTIC_CONFIG_NAME}  # family -> its config file
WEIGHTS_NAME = "model.safetensors"
DATA_NAME = "data.json"
TRAIN_LOG_NAME = "train_log.json"
LEDGER_NAME = "forget_ledger.jsonl"
EVAL_NAME = "evaluation.json"
AUDIT_DIR = "audit"
AUDIT_JSON = "audit.json"  # the latest audit report in AUDIT_DIR (audit/report.py writes it)
PROMPT_PREFIX = "prompts."
CLASS_ADAPTER_PREFIX = "class_adapters."  # adapt="gated": CLASS_ADAPTER_PREFIX + class_key + ".lora_A.0", ...
CLASS_STATS_PREFIX = "classes."  # analytic: CLASS_STATS_PREFIX + class_key + ".count" / ".sum" / ".weight" / ".bias"
MANIFEST_KEY = "train_manifest_sha256"  # in data.json: SHA-256 over the ordered training examples and labels


def class_key(class_name: str) -> str:
    """A class name as a key without '.', which ``nn.ParameterDict`` forbids ("St. Louis"); reversible."""
    return class_name.replace("%", "%25").replace(".", "%2E")


def class_from_key(key: str) -> str:
    return key.replace("%2E", ".").replace("%25", "%")


def prompt_tensor_name(class_name: str) -> str:
    """Name of a class's prompt tensor in ``model.safetensors``."""
    return PROMPT_PREFIX + class_key(class_name)


def class_stats_name(class_name: str) -> str:
    """The tensor whose presence makes a class known in an analytic run: its example count."""
    return CLASS_STATS_PREFIX + class_key(class_name) + ".count"


def class_tensor_names(class_name: str, tensor_names) -> list[str]:
    """Every tensor among ``tensor_names`` that belongs to the class: its prompt and, in a run with per-class
    adapters, its adapter; in an analytic run its statistics and head row. A forget removes all of them."""
    own = (CLASS_ADAPTER_PREFIX + class_key(class_name) + ".", CLASS_STATS_PREFIX + class_key(class_name) + ".")
    return [n for n in tensor_names if n == prompt_tensor_name(class_name) or n.startswith(own)]


def class_marker(class_name: str, tensor_names) -> str | None:
    """The class's identifying tensor among ``tensor_names`` (PFM: its prompt; analytic: its sum), or None."""
    names = set(tensor_names)
    for n in (prompt_tensor_name(class_name), CLASS_STATS_PREFIX + class_key(class_name) + ".sum"):
        if n in names:
            return n
    return None


def active_classes(class_names: list[str], tensor_names) -> list[str]:
    """The classes whose prompt (PFM) or statistics (analytic) are among ``tensor_names``, in the config's order."""
    present = set(tensor_names)
    return [c for c in class_names if prompt_tensor_name(c) in present or class_stats_name(c) in present]


def run_family(run_dir: str | os.PathLike) -> str | None:
    """Which model family a run directory holds (by its config file), or None when it is no run."""
    found = [f for f, name in CONFIG_NAMES.items() if (Path(run_dir) / name).is_file()]
    return found[0] if len(found) == 1 else None


def config_path(run_dir: str | os.PathLike) -> Path:
    family = run_family(run_dir)
    return Path(run_dir) / CONFIG_NAMES[family or "pfm"]


def is_pfm_run(run_dir: str | os.PathLike) -> bool:
    """Whether ``run_dir`` is a run directory of any family (the name predates the analytic family)."""
    return run_family(run_dir) is not None


def require_pfm_run(run_dir: str | os.PathLike) -> Path:
    """``run_dir`` if it holds a run of any family, else a one-line FileNotFoundError."""
    run_dir = Path(run_dir)
    for path in (config_path(run_dir), run_dir / WEIGHTS_NAME):
        if not path.is_file():
            raise FileNotFoundError(f"{run_dir} is not a promptforget run directory: missing {path.name}")
    return run_dir


def read_config_record(run_dir: str | os.PathLike) -> dict:
    """The whole config record (format_version, config, backbone, ...) of a run of either family."""
    path = config_path(run_dir)
    try:
        record = strictjson.loads(path.read_bytes(), 16 * 1024 * 1024, 32)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
        raise ValueError(f"{path}: not a promptforget run config (no 'config' object)")
    return record


def class_names(run_dir: str | os.PathLike) -> list[str]:
    """Every class the run was trained on (forgotten ones included)."""
    return list(read_config_record(require_pfm_run(run_dir))["config"]["class_names"])


def read_split_record(run_dir: str | os.PathLike) -> dict:
    """The split a run was trained with: ``{"dataset", "test_size", "seed", "max_train"}``."""
    path = Path(run_dir) / DATA_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: missing {DATA_NAME} (was it created by `promptforget train`?)")
    return json.loads(path.read_text())


def split_record(dataset: str, test_size: float, seed: int, max_train: int | None, **columns) -> dict:
    """``columns``: ``text_column`` / ``label_column`` when the user named them (kept only then)."""
    return {"dataset": dataset, "test_size": test_size, "seed": seed, "max_train": max_train,
            **{k: v for k, v in columns.items() if v is not None}}
