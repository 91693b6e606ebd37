"""The run's model card, ``RUN_DIR/README.md``, through ``huggingface_hub.ModelCard`` / ``ModelCardData``.

Regenerated whole from the run's files each time (idempotent): ``pfm_config.json``, ``data.json``,
``train_log.json``, ``evaluation.json`` and ``audit/audit.json`` when present, and the deletion ledger.
So train, forget and audit all call :func:`write_model_card` and the card always describes the run as it
is now. Torch-free, like the forget path that calls it.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from promptforget.store import layout
from promptforget.store.ledger import GENESIS, Ledger, LedgerError, committed, request_state
from promptforget.utils.io import atomic_write_text

CARD_NAME = "README.md"
AUDIT_JSON = "audit.json"
TAGS = ["promptforget", "machine-unlearning", "pre-forgettable-model", "prompt-tuning"]
PIPELINE = {"text": "text-classification", "image": "image-classification"}
# Where the offline copies behind the aliases come from upstream (the sha256 pins the exact weights).
HUB_IDS = {"minilm": "sentence-transformers/all-MiniLM-L6-v2"}

FORGET_GUARANTEE = """\
Forgetting a class deletes its prompt: `model.safetensors` is replaced atomically by a copy without
that tensor, and the deletion is recorded in the hash-chained ledger (`forget_ledger.jsonl`) before and
after. From then on the prompt's bytes are in no file of the run, the model can no longer be given the
class's key, and serving masks the class in the head. What a forget does **not** guarantee: the shared
weights (LoRA, head) were trained with the class and may still hold evidence of it, which an attacker
with white-box access might recover (for example by optimising a new prompt). `promptforget audit`
measures exactly that against a model retrained without the class; see its verdicts below when present."""


def write_model_card(
    run_dir: str | os.PathLike,
    evaluation: dict | None = None,
    audit: dict | None = None,
    forget_events: list[dict] | None = None,
) -> Path:
    """Write ``RUN_DIR/README.md`` atomically and return its path.

    evaluation: an ``evaluation.json`` record (default: the run's, if any).
    audit: an ``audit/audit.json`` record (default: the run's, if any).
    forget_events: the ledger's commit entries (default: read from the run's ledger).
    """
    card = build_model_card(run_dir, evaluation, audit, forget_events)
    path = Path(run_dir) / CARD_NAME
    atomic_write_text(path, str(card))
    return path


def build_model_card(run_dir, evaluation: dict | None = None, audit: dict | None = None,
                     forget_events: list[dict] | None = None, base_model: str | None = None):
    """The card as a ``ModelCard``; ``base_model`` replaces the backbone's id (an export names its own copy)."""
    from huggingface_hub import ModelCard, ModelCardData

    from promptforget.data.sources import dataset_label

    run_dir = layout.require_pfm_run(run_dir)
    record = layout.read_config_record(run_dir)
    config, backbone = record["config"], record["backbone"]
    class_names = list(config["class_names"])
    evaluation = evaluation if evaluation is not None else _read_json(run_dir / layout.EVAL_NAME)
    audit = audit if audit is not None else _read_json(run_dir / layout.AUDIT_DIR / AUDIT_JSON)
    split = _read_json(run_dir / layout.DATA_NAME) or {}
    train_log = _read_json(run_dir / layout.TRAIN_LOG_NAME) or {}
    ledger = ledger_summary(run_dir, forget_events)
    forgotten = ledger["forgotten_classes"] or forgotten_on_disk(run_dir, class_names)
    modality = backbone.get("modality", "text")
    dataset = dataset_label(split["dataset"]) if split.get("dataset") else "unknown"  # a name, not csv:PATH
    if base_model:  # an export: its own name for the backbone, never a path of this machine
        config = {**config, "backbone": base_model}
    base_model = base_model or base_model_id(backbone["name_or_path"])

    data = ModelCardData(
        model_name=run_dir.resolve().name,
        base_model=base_model,
        library_name="promptforget",
        pipeline_tag=PIPELINE.get(modality),
        tags=TAGS,
        datasets=[dataset] if split.get("dataset") else None,
        metrics=["accuracy"],
        eval_results=eval_results(evaluation, audit, PIPELINE.get(modality, "classification"), dataset) or None,
        # promptforget's own metadata
        classes=class_names,
        forgotten_classes=forgotten,
        base_model_sha256=backbone.get("sha256"),
        ledger_head_sha256=ledger["head_sha256"],
    )
    body = "\n\n".join(part for part in (
        f"# {run_dir.resolve().name}",
        description(config, backbone, base_model, class_names, forgotten),
        results_section(evaluation),
        forgetting_section(ledger),
        "## What a forget guarantees\n\n" + FORGET_GUARANTEE,
        audit_section(audit),
        training_section(config, split, train_log),
    ) if part)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}\n")


# ---------------------------------------------------------------------- sources
def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def base_model_id(name_or_path: str) -> str:
    """The backbone's Hub id when known, else its resolved local path: never a promptforget alias."""
    if name_or_path in HUB_IDS:
        return HUB_IDS[name_or_path]
    if name_or_path == "dinov2-s14":  # a local rebuild from ONNX: its directory is the truth
        from promptforget.backbones.dinov2.cache import DEFAULT_NAME, cache_root

        return str(cache_root() / DEFAULT_NAME)
    return name_or_path


def forgotten_on_disk(run_dir: Path, class_names: list[str]) -> list[str]:
    from promptforget.store.artefact import Safetensors

    weights = run_dir / layout.WEIGHTS_NAME
    names = Safetensors.parse(weights.read_bytes(), str(weights)).names()
    active = set(layout.active_classes(class_names, names))
    return [c for c in class_names if c not in active]


def ledger_summary(run_dir: Path, forget_events: list[dict] | None) -> dict:
    """Forgotten classes with the commits that forgot them, and the ledger's head hash."""
    error, entries = None, []
    try:
        entries = Ledger(run_dir).read()
    except LedgerError as e:
        error = str(e)
    events = forget_events if forget_events is not None else committed(entries)
    # instant (prompt deleted), retraining (an exact forget is running) or exact (retrained without the data)
    states = {e.get("request_id"): (request_state(entries, e.get("request_id")) or {}).get("state", "instant")
              for e in events}
    return {
        "events": events,
        "states": states,
        "forgotten_classes": [c for e in events for c in e.get("classes", [])],
        "entries": len(entries),
        "head_sha256": entries[-1]["entry_sha256"] if entries else GENESIS,
        "error": error,
    }


def _number(x) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def eval_results(evaluation: dict | None, audit: dict | None, task: str, dataset: str) -> list:
    """model-index entries: full-bank, retained and forgotten accuracy; the audit's metrics with verdicts."""
    from huggingface_hub import EvalResult

    def result(metric_type: str, name: str, value) -> EvalResult | None:
        value = _number(value)
        if value is None:
            return None
        return EvalResult(task_type=task, dataset_type=dataset, dataset_name=dataset, dataset_split="test",
                          metric_type=metric_type, metric_name=name, metric_value=value)

    out = []
    state = (evaluation or {}).get("state", {})
    plain, masked = state.get("no_mask", {}), state.get("head_masked", {})
    out += [
        result("accuracy", "full-bank accuracy", plain.get("overall_acc")),
        result("accuracy", "retained-class accuracy", masked.get("retained_acc")),
        result("accuracy", "forgotten-class accuracy (no head mask)", plain.get("forgotten_acc")),
    ]
    for k, r in ((evaluation or {}).get("protocol") or {}).get("by_k", {}).items():
        out += [
            result("accuracy", f"protocol k={k}: retained accuracy", r.get("retained_acc", {}).get("mean")),
            result("accuracy", f"protocol k={k}: forgotten accuracy", r.get("forgotten_acc", {}).get("mean")),
        ]
    for row in (audit or {}).get("table", []):
        out.append(result(str(row.get("metric")), f"audit {row.get('metric')} (verdict: {row.get('verdict')})",
                          row.get("audited")))
    return [r for r in out if r is not None]


# ---------------------------------------------------------------------- sections
def description(config: dict, backbone: dict, base_model: str, class_names: list[str], forgotten: list[str]) -> str:
    known = [c for c in class_names if c not in set(forgotten)]
    return (
        f"A Pre-Forgettable Model trained with promptforget: backbone `{base_model}` "
        f"(sha256 `{backbone.get('sha256', '?')}`) adapted with {config.get('adapt')} "
        f"(r={config.get('lora_r')}), one learnable prompt of {config.get('prompt_tokens')} token(s) per class "
        f"({config.get('prompt_style')} style, from block {config.get('prompt_layer')}), a linear head on CLS. "
        "A class is known only while its prompt exists.\n\n"
        f"- classes still known ({len(known)}): {', '.join(known) or '-'}\n"
        f"- classes forgotten ({len(forgotten)}): {', '.join(forgotten) or 'none'}\n\n"
        "`promptforget export RUN --out DIR` writes a directory that plain transformers loads "
        "(`AutoModelFor...Classification.from_pretrained(DIR, trust_remote_code=True)`) with the LoRA as a PEFT "
        "adapter in `DIR/adapter`; forgotten classes have no prompt there and their logits are -inf."
    )


def _fmt(x) -> str:
    n = _number(x)
    return "-" if n is None else f"{n:.3f}"


def results_section(evaluation: dict | None) -> str:
    if not evaluation:
        return "## Results\n\nNot evaluated yet (`promptforget evaluate RUN` writes `evaluation.json`)."
    state = evaluation.get("state", {})
    lines = ["## Results", "", f"On {evaluation.get('n_test', '?')} held-out samples, with every remaining prompt:",
             "", "| head | overall | retained classes | forgotten classes |", "|---|---:|---:|---:|"]
    for tag in ("no_mask", "head_masked"):
        r = state.get(tag, {})
        lines.append(f"| {tag} | {_fmt(r.get('overall_acc'))} | {_fmt(r.get('retained_acc'))} | "
                     f"{_fmt(r.get('forgotten_acc'))} |")
    return "\n".join(lines)


def forgetting_section(ledger: dict) -> str:
    lines = ["## Forgetting"]
    if ledger["error"]:
        lines += ["", f"The deletion ledger could not be read: {ledger['error']}"]
    if not ledger["events"]:
        lines += ["", "No class has been forgotten."]
    else:
        lines += ["", "| classes | ledger seq | request id | time (UTC) | source | reason | state |",
                  "|---|---:|---|---|---|---|---|"]
        for e in ledger["events"]:
            state = ledger.get("states", {}).get(e.get("request_id"), "instant")
            lines.append(f"| {', '.join(e.get('classes', []))} | {e.get('seq')} | `{e.get('request_id')}` | "
                         f"{e.get('time')} | {e.get('source', '-')} | {e.get('reason') or '-'} | {state} |")
        lines += ["", "State: `instant` = the prompt is deleted; `exact` = the shared weights were also retrained "
                  "from scratch without the class's data (`promptforget forget --exact`); `retraining` = an exact "
                  "forget is under way."]
    lines += ["", f"Ledger: {ledger['entries']} entries, head `{ledger['head_sha256']}` "
                  "(`promptforget ledger verify RUN` checks the chain and the weights file against it)."]
    return "\n".join(lines)


def audit_section(audit: dict | None) -> str:
    if not audit:
        return ""
    lines = ["## Unlearning audit (audited vs retrained reference)", "",
             "| metric | audited | reference | verdict |", "|---|---:|---:|---|"]
    for row in audit.get("table", []):
        lines.append(f"| `{row.get('metric')}` | {_fmt(row.get('audited'))} | {_fmt(row.get('reference'))} | "
                     f"{row.get('verdict')} |")
    lines += ["", f"Details: `{layout.AUDIT_DIR}/{AUDIT_JSON}`."]
    return "\n".join(lines)


def training_section(config: dict, split: dict, train_log: dict) -> str:
    lines = ["## Training"]
    if split:
        lines.append(f"\nDataset `{split.get('dataset')}` (test share {split.get('test_size')}, seed {split.get('seed')}, "
                     f"max_train {split.get('max_train')}).")
    history = train_log.get("history") or []
    if history:
        last = history[-1]
        lines.append(f"\n{len(history)} epochs on {train_log.get('n_train', '?')} examples in "
                     f"{train_log.get('train_seconds', 0):.0f} s; final loss {_fmt(last.get('loss'))}.")
    shown = {k: v for k, v in sorted(config.items()) if k != "class_names"}
    lines += ["", "```json", json.dumps(shown, indent=2), "```"]
    return "\n".join(lines)
