"""An analytic run directory end to end: train, forget (the artefact rewrite the durable path calls),
evaluate, and the proof by recomputation.

    train_run(out, "bbc_news")                 one pass of the frozen backbone + sums + solve
    rewrite_for(run_dir, key)                  what store.durable.forget calls to subtract rows
    recompute(run_dir, key)                    retrain on the recorded data minus everything the ledger
                                               forgot; the artefact's hash must come out the same
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from promptforget.analytic import artefact
from promptforget.analytic.config import AnalyticConfig
from promptforget.store.layout import DATA_NAME, MANIFEST_KEY, TRAIN_LOG_NAME, WEIGHTS_NAME, split_record
from promptforget.store.ledger import Ledger, LedgerKey, committed, forgotten_by_ledger


def train_run(out, dataset: str = "bbc_news", *, test_size: float = 0.2, max_train: int | None = None,
              overwrite: bool = False, backbone: str | None = None, progress: bool = True, report_to: str = "none",
              heldout: bool = True, text_column: str | None = None, label_column: str | None = None, **knobs) -> Path:
    """Fit an analytic classifier on ``dataset`` into the run directory ``out``. ``knobs``: AnalyticConfig
    fields (``seed`` also draws the split); ``backbone=None``: minilm for text, dinov2-s14 for images.
    ``heldout``: also score the held-out split (``train_log.json``'s ``held_out_accuracy``, the trackers'
    ``eval/accuracy``). ``text_column`` / ``label_column``: as for PFM's ``train_run``."""
    import logging
    from promptforget.analytic.model import AnalyticModel
    from promptforget.data import load_splits
    from promptforget.pfm.exact import dataset_sha256
    from promptforget.data.sources import source_record
    from promptforget.pfm.run import check_run_dir, prepare_run_dir, stratified_cap
    from promptforget.utils.dist import is_main_process
    from promptforget.utils.io import atomic_write_json
    from promptforget.utils.tracking import Tracker, resolve_report_to

    out = Path(out)
    cfg = AnalyticConfig(**knobs)  # bad knobs fail here, before any data is loaded
    resolve_report_to(report_to)
    check_run_dir(out, overwrite)  # cheap checks first: the backbone takes seconds to load
    columns = {"text_column": text_column, "label_column": label_column}
    train, test = load_splits(dataset, test_size, cfg.seed, **columns)
    train = stratified_cap(train, max_train, cfg.seed)
    is_text = hasattr(train, "texts")
    cfg = replace(cfg, backbone=backbone or cfg.backbone if is_text else backbone or "dinov2-s14",
                  class_names=cfg.class_names or list(train.class_names), id_salt=cfg.id_salt or AnalyticModel.new_salt())
    t0 = time.perf_counter()
    model, built = AnalyticModel.fit(cfg, train.inputs, config_labels(train, cfg), train.ids, progress=progress)
    seconds = time.perf_counter() - t0
    if not is_main_process():  # every rank computed its share of the features; rank 0 writes
        return out
    prepare_run_dir(out, overwrite)
    model.save_pretrained(out, built)
    atomic_write_json(out / DATA_NAME, {**split_record(dataset, test_size, cfg.seed, max_train, **columns),
                                        "source": source_record(dataset, out), MANIFEST_KEY: dataset_sha256(train)})
    log = {"train_seconds": seconds, "n_train": len(train), "head": model.head_info, "feature_dim": model.extractor.dim,
           "artefact_bytes": len(built.model) + sum(len(b) for b in built.shards.values())}
    if heldout and len(test):
        t1 = time.perf_counter()
        pred = model.predict(test.inputs)
        log.update(held_out_accuracy=float(np.mean([p == test.class_names[y] for p, y in zip(pred, test.labels)])),
                   n_test=len(test), held_out_seconds=time.perf_counter() - t1)
        tracker = Tracker(report_to, out, "analytic-train", cfg.to_dict() | {"id_salt": "(recorded in the run)"})
        tracker.log({"accuracy": log["held_out_accuracy"], "train_seconds": seconds}, 0, prefix="eval/")
        tracker.finish()
    atomic_write_json(out / TRAIN_LOG_NAME, log)
    if "held_out_accuracy" in log:
        logging.getLogger("promptforget.analytic").info(
            "[train] analytic (%s, %s head): held-out accuracy %.3f on %d examples (chance %.3f); %.1f s -> %s",
            cfg.feature_map, cfg.head, log["held_out_accuracy"], len(test), 1 / len(cfg.class_names), seconds, out)
    from promptforget.analytic.card import write_model_card

    write_model_card(out)
    return out


def config_labels(ds, cfg: AnalyticConfig) -> np.ndarray:
    """``ds``'s labels as indices into ``cfg.class_names`` (a config may list classes the data no longer
    has: training on "the remaining data with the same config" keeps the class order)."""
    where = {c: i for i, c in enumerate(cfg.class_names)}
    missing = sorted(set(ds.class_names[y] for y in set(ds.labels.tolist())) - where.keys())
    if missing:
        raise ValueError(f"the data has classes the config does not list: {missing[:5]}")
    return np.array([where[ds.class_names[y]] for y in ds.labels], dtype=np.int64)


def load_config(run_dir: Path) -> AnalyticConfig:
    from promptforget.analytic.model import read_record

    return AnalyticConfig.from_dict(read_record(Path(run_dir))["config"])


# ---------------------------------------------------------------------- forgetting
_LEDGER_TAG = b"promptforget-forgotten-example\0"


def ledger_example_hash(row_key: bytes, key: LedgerKey | None) -> str:
    """What the ledger records of a forgotten example: HMAC-SHA256 under the ledger key of its row key (a
    salted hash of its id), or without a key a SHA-256 of it. Never the id."""
    if key is not None:
        return hmac.new(key.secret, _LEDGER_TAG + row_key, hashlib.sha256).hexdigest()
    return hashlib.sha256(_LEDGER_TAG + row_key).hexdigest()


@dataclass
class AnalyticRewrite:
    """The analytic family's :class:`~promptforget.store.durable.ArtefactRewrite`: exact subtraction."""

    run_dir: Path
    config: AnalyticConfig
    backbone_sha256: str
    key: LedgerKey | None
    exact: bool = True

    def row_key(self, example_id: str) -> bytes:
        return artefact.example_id_sha256(self.config.id_salt, example_id)

    def ledger_hashes(self, examples: list[str]) -> list[str]:
        return [ledger_example_hash(self.row_key(x), self.key) for x in examples]

    def __call__(self, raw: bytes, classes: list[str], examples: list[str]) -> artefact.Built:
        from numpy.linalg import LinAlgError

        from promptforget.store.durable import ForgetError

        try:
            return artefact.without(self.run_dir, raw, self.config.class_names, classes, [self.row_key(x) for x in examples],
                                    self.config.head_settings(self.backbone_sha256), examples)
        except ForgetError:
            raise
        except (ValueError, LinAlgError) as e:  # e.g. one class left: no head can be solved
            raise ForgetError(f"forget: the model cannot be solved without this data ({e}); nothing was changed") from None


def rewrite_for(run_dir, key: LedgerKey | None) -> AnalyticRewrite:
    from promptforget.analytic.model import read_record

    record = read_record(Path(run_dir))
    return AnalyticRewrite(Path(run_dir), AnalyticConfig.from_dict(record["config"]), record["backbone"]["sha256"], key)


# ---------------------------------------------------------------------- proof by recomputation
def recompute(run_dir, key: LedgerKey | None = None, progress: bool = True, data_root=None,
              keep_bytes: bool = False) -> dict:
    """Train again from the recorded data minus every class and example the ledger forgot, with the run's
    config, and compare the bytes' hash with the artefact's and the ledger's last after-hash.
    ``keep_bytes``: also return the recomputed artefact (``"artefact"``, for the audit's reference)."""
    from promptforget.analytic.model import AnalyticModel
    from promptforget.pfm.exact import exact_training_data

    run_dir = Path(run_dir)
    t0 = time.perf_counter()
    cfg = load_config(run_dir)
    train = exact_training_data(run_dir, data_root)  # refuses missing or changed data
    entries = Ledger(run_dir).read()
    gone_classes = set(forgotten_by_ledger(entries))
    gone_examples = {h for e in committed(entries) for h in e.get("examples", [])}
    rewrite = rewrite_for(run_dir, key)
    labels = config_labels(train, cfg)
    keep = np.array([cfg.class_names[y] not in gone_classes for y in labels])
    matched = 0
    if gone_examples:
        hit = np.array([h in gone_examples for h in rewrite.ledger_hashes(train.ids)])
        keep &= ~hit
        matched = int(hit.sum())
    idx = np.flatnonzero(keep)
    inputs = train.inputs[idx] if isinstance(train.inputs, np.ndarray) else [train.inputs[i] for i in idx]
    _, built = AnalyticModel.fit(cfg, inputs, labels[idx], [train.ids[i] for i in idx], progress=progress)
    sha = hashlib.sha256(built.model).hexdigest()  # names every features file by its hash
    current = hashlib.sha256((run_dir / WEIGHTS_NAME).read_bytes()).hexdigest()
    changes = [e for e in entries if e.get("event") in ("commit", "exact")]
    ledger_sha = changes[-1]["artefact_after_sha256"] if changes else None
    problems = []
    if sha != current:
        problems.append(f"the recomputed artefact (sha256 {sha[:12]}...) differs from the run's ({current[:12]}...)")
    if ledger_sha is not None and ledger_sha != sha:
        problems.append(f"the recomputed artefact differs from the ledger's last after-hash ({ledger_sha[:12]}...)")
    for name, data in built.shards.items():  # the files the run keeps must be the recomputed ones, whole
        path = run_dir / name
        if not path.is_file() or hashlib.sha256(path.read_bytes()).digest() != hashlib.sha256(data).digest():
            problems.append(f"{name} is missing or differs from the recomputed features file")
    stray = sorted(f.name for f in (run_dir / artefact.EXAMPLES_DIR).glob("*")
                   if f"{artefact.EXAMPLES_DIR}/{f.name}" not in built.shards)
    if stray:
        problems.append(f"{artefact.EXAMPLES_DIR}/ holds {len(stray)} file(s) a retrain does not write ({stray[0]}, ...): "
                        "features of forgotten data? the next forget deletes what the artefact does not name")
    if matched != len(gone_examples):
        problems.append(f"{len(gone_examples) - matched} of the ledger's {len(gone_examples)} forgotten examples match "
                        "no training example (another ledger key, or changed data)")
    return {"ok": not problems, "problems": problems, "recomputed_sha256": sha, "artefact_sha256": current,
            "ledger_after_sha256": ledger_sha, "forgotten_classes": sorted(gone_classes),
            "forgotten_examples": len(gone_examples), "n_train": int(keep.sum()),
            "seconds": round(time.perf_counter() - t0, 3), **({"artefact": built} if keep_bytes else {})}


# ---------------------------------------------------------------------- evaluation
def evaluate_run(run_dir, max_eval: int | None = None, batch_size: int = 64, progress: bool = True,
                 data_root=None) -> dict:
    """Held-out accuracy: overall, on retained classes, per class (Wilson 95% intervals), the worst class;
    a forgotten class's samples are counted apart (the model has no answer for it: 0 by construction)."""
    from promptforget.analytic.model import AnalyticModel
    from promptforget.pfm.evaluate import wilson_interval
    from promptforget.pfm.run import load_split, stratified_cap

    run_dir = Path(run_dir)
    model = AnalyticModel.from_pretrained(run_dir)
    _, test = load_split(run_dir, data_root)
    test = stratified_cap(test, max_eval, model.config.seed)
    t0 = time.perf_counter()
    pred = np.array([model.config.class_names.index(c) for c in model.predict(test.inputs, batch_size)])
    y = config_labels(test, model.config)
    names, active = model.class_names, model.active_classes
    per_class = {}
    for i, c in enumerate(names):
        m = y == i
        k = int((pred[m] == i).sum())
        per_class[c] = {"acc": k / max(int(m.sum()), 1), "n": int(m.sum()), "ci95": list(wilson_interval(k, int(m.sum())))}
    retained = np.isin(y, [names.index(c) for c in active])
    worst = min(active, key=lambda c: per_class[c]["acc"])
    state = {
        "family": "analytic", "active_classes": active, "forgotten_classes": model.forgotten_classes,
        "chance_acc": 1 / len(active), "overall_acc": float((pred == y).mean()),
        "retained_acc": float((pred[retained] == y[retained]).mean()),
        "forgotten_answered": float(np.isin(pred, [names.index(c) for c in model.forgotten_classes]).mean()),
        "per_class_acc": {c: v["acc"] for c, v in per_class.items()}, "per_class": per_class,
        "class_counts": {c: v["n"] for c, v in per_class.items()},
        "worst_retained_class": {"class": worst, **per_class[worst]}, "head": model.head_info,
    }
    return {"run_dir": str(run_dir), "n_test": len(test), "state": state, "eval_seconds": time.perf_counter() - t0}


# ---------------------------------------------------------------------- the demo's analytic half
def demo_run(out, dataset: str, forget_class: str | None, *, max_train: int | None = None, **knobs) -> dict:
    """Train an analytic run, forget one class through the durable path, evaluate before and after: the
    figures ``promptforget demo`` prints beside PFM's."""
    from promptforget.analytic.card import write_model_card
    from promptforget.store.durable import forget

    t0 = time.perf_counter()
    train_run(out, dataset, max_train=max_train, overwrite=True, heldout=False, **knobs)
    train_seconds = time.perf_counter() - t0
    before = evaluate_run(out, progress=False)
    cls = forget_class or before["state"]["active_classes"][0]
    r = forget(out, [cls], reason="demo", source="demo", rewrite=rewrite_for(out, None))
    write_model_card(out)
    after = evaluate_run(out, progress=False)
    kept = [c for c in before["state"]["active_classes"] if c != cls]
    counts, pc = before["state"]["class_counts"], before["state"]["per_class_acc"]
    return {"forgotten_class": cls, "train_seconds": train_seconds, "forget_ms": r.timings_ms.get("total"),
            "exact": r.exact_at_commit, "retained_before": sum(pc[c] * counts[c] for c in kept) / sum(counts[c] for c in kept),
            "forgotten_before": pc[cls], "retained_after": after["state"]["retained_acc"],
            "forgotten_after": after["state"]["per_class_acc"][cls], "before": before, "after": after}
