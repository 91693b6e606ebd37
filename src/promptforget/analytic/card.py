"""An analytic run's model card (``RUN_DIR/README.md``), regenerated whole from the run's files. Torch-free."""

from __future__ import annotations

import json
import os
from pathlib import Path

from promptforget.store import layout
from promptforget.store.ledger import Ledger, LedgerError, committed
from promptforget.utils.io import atomic_write_text

GUARANTEE = """\
Forgetting is **exact and instant**. The model is a frozen backbone, fixed-point features and a linear
head solved in closed form from exact integer sums (per-class counts and sums, one Gram matrix).
Forgetting a class or an example subtracts its rows from those sums and solves the head again, so
`model.safetensors` is then byte for byte what training on the remaining data writes: no trace of the
forgotten data is left in the model beyond what a retrain without it holds (nothing of a class; for an
example, exactly what the other examples give). `promptforget ledger verify RUN --recompute` retrains from
the recorded data minus everything the ledger forgot and compares the hashes: anyone holding the retained
data can check each deletion bit for bit.

**What the run keeps so that a forget needs no raw data:** each training example's fixed-point features
(4 bytes per feature), one file per class under `examples/` (named by its SHA-256, which `model.safetensors`
holds), and a salted hash of each example's id and its label in `model.safetensors`. These are derived from
personal data; a forget rewrites the files of the classes it touches without the forgotten rows and deletes
the old ones, so no file of the run holds their bytes. The ledger records forgotten examples only as keyed hashes (HMAC under the ledger key
when one is set), never their ids."""


def write_model_card(run_dir: str | os.PathLike, evaluation: dict | None = None) -> Path:
    from huggingface_hub import ModelCard, ModelCardData

    from promptforget.data.sources import dataset_label
    from promptforget.pfm.card import HUB_IDS, PIPELINE

    run_dir = layout.require_pfm_run(run_dir)
    record = layout.read_config_record(run_dir)
    cfg, backbone = record["config"], record["backbone"]
    split = _json(run_dir / layout.DATA_NAME) or {}
    log = _json(run_dir / layout.TRAIN_LOG_NAME) or {}
    evaluation = evaluation or _json(run_dir / layout.EVAL_NAME)
    names = Path(run_dir / layout.WEIGHTS_NAME)
    from promptforget.store.artefact import Safetensors

    active = layout.active_classes(cfg["class_names"], Safetensors.read_names(names))
    head = Safetensors.parse(names.read_bytes()).metadata or {}  # re-solved by every forget
    try:
        commits = committed(Ledger(run_dir).read())
    except LedgerError:
        commits = []
    dataset = str(split.get("dataset", "unknown"))
    data = ModelCardData(
        library_name="promptforget", tags=["promptforget", "machine-unlearning", "exact-unlearning", "analytic"],
        pipeline_tag=PIPELINE.get(backbone.get("modality"), None),
        base_model=HUB_IDS.get(backbone["name_or_path"], None),
        datasets=[dataset_label(dataset)],
    )
    forgotten = [c for c in cfg["class_names"] if c not in active]
    from promptforget.store.artefact import referenced_files_of

    shards = [Path(run_dir) / f for f in referenced_files_of(names)]
    size, features_size = names.stat().st_size, sum(f.stat().st_size for f in shards if f.is_file())
    lines = [
        f"# Analytic classifier (promptforget) on {dataset_label(dataset)}", "",
        f"Backbone `{backbone['name_or_path']}` ({backbone.get('family')}, frozen, sha256 `{backbone['sha256'][:16]}...`); "
        f"features `{cfg['feature_map']}`" + (f", random projection to {cfg['projection_dim']}" if cfg.get("projection_dim") else "")
        + f"; head `{cfg['head']}` ({_head_text({k: head[k] for k in ('shrinkage', 'ridge_lambda') if k in head})}).", "",
        f"- classes active: {', '.join(active)}",
        f"- classes forgotten: {', '.join(forgotten) or '-'}",
        f"- forget requests in the ledger: {len(commits)} "
        f"({sum(len(e.get('examples', [])) for e in commits)} single example(s) among them)",
        f"- training examples kept in the artefact: {log.get('n_train', '?')} at training; `model.safetensors` "
        f"{size / 1e6:.2f} MB, their features `examples/` {features_size / 1e6:.2f} MB in {len(shards)} file(s)",
    ]
    if evaluation:
        s = evaluation["state"]
        lines.append(f"- held-out accuracy: {s['overall_acc']:.3f} (retained classes {s['retained_acc']:.3f}, "
                     f"{evaluation['n_test']} examples)")
    lines += ["", "## What forgetting guarantees", "", GUARANTEE, ""]
    card = ModelCard.from_template(data, template_str="---\n{{ card_data }}\n---\n\n" + "\n".join(lines))
    path = Path(run_dir) / "README.md"
    atomic_write_text(path, str(card))
    return path


def _head_text(head: dict) -> str:
    return ", ".join(f"{k} {float(v):.4g}" for k, v in head.items() if k != "head") or "closed form"


def _json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
