"""The audit of an analytic run: its attacks beside the model retrained from scratch without everything the
ledger forgot (:func:`promptforget.analytic.run.recompute`, the reference made bit for bit).

An analytic retrain is deterministic (the frozen backbone, exact sums, a closed-form head), so there is one
reference, not a seed distribution: when the artefact is byte for byte the retrain's, every attack gives
the reference's figure exactly, and the verdict is ``indistinguishable`` with no interval to argue about.
The attacks are still run on both, so a reader sees the figures and a broken forget shows up as a
difference, not only as a hash mismatch:

- ``forgotten_class_top1``: share of a forgotten class's held-out samples answered as that class;
- ``forgotten_examples_row_found``: the white-box attack on single examples: recompute a forgotten
  example's fixed-point features and look for them among the artefact's rows (``member_rows_found``, the
  same lookup for examples still kept, shows the attack's power: 1.0);
- ``forgotten_examples_loss_auc``: LOSS membership inference, forgotten examples vs held-out samples of
  the same classes (AUC; 0.5 = no signal beyond what a retrain has);
- ``forgotten_class_probe_acc``: a logistic probe for the forgotten class on the model's features. They
  are the frozen pretrained backbone's, so the figure is the same in any retrain: the class is as
  readable as it is to a model that never saw it, and no more.
- ``max_score_gap``: the largest difference between the audited and the retrained head's scores on the
  held-out samples (0 = the same function);
- ``retained_acc``: utility on the retained classes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from promptforget.audit.report import INDISTINGUISHABLE, LEAKS_MORE
from promptforget.store.layout import AUDIT_DIR
from promptforget.utils.io import atomic_write_json, atomic_write_text

DIFFERS = LEAKS_MORE


def audit_run(run_dir, key=None, data_root=None, progress: bool = True) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from promptforget.analytic.artefact import parse, run_reader, stored_rows
    from promptforget.analytic.model import AnalyticModel
    from promptforget.analytic.run import config_labels, ledger_example_hash, recompute, rewrite_for
    from promptforget.analytic.stats import dequantize
    from promptforget.pfm.exact import exact_training_data
    from promptforget.pfm.run import load_split
    from promptforget.store.ledger import Ledger, committed, forgotten_by_ledger

    run_dir = Path(run_dir)
    t0 = time.perf_counter()
    proof = recompute(run_dir, key, progress=progress, data_root=data_root, keep_bytes=True)
    reference_built = proof.pop("artefact")
    reference_bytes = reference_built.model
    model = AnalyticModel.from_pretrained(run_dir, ledger_key=key)
    cfg, names = model.config, model.class_names
    entries = Ledger(run_dir).read()
    gone_classes = forgotten_by_ledger(entries)
    gone_hashes = {h for e in committed(entries) for h in e.get("examples", [])}
    train = exact_training_data(run_dir, data_root)
    _, test = load_split(run_dir, data_root)
    y_train, y_test = config_labels(train, cfg), config_labels(test, cfg)
    rewrite = rewrite_for(run_dir, key)
    is_gone = np.array([h in gone_hashes for h in rewrite.ledger_hashes(train.ids)]) if gone_hashes else np.zeros(len(y_train), bool)

    def take(ds, idx):
        return ds.inputs[idx] if isinstance(ds.inputs, np.ndarray) else [ds.inputs[i] for i in idx]

    reference = AnalyticModel(cfg, reference_bytes, model.encoder)  # the retrain, served the same way

    def scores(m, q):
        w, b, active = m._head
        x = dequantize(q, cfg.scale_bits)
        out = np.full((len(q), len(names)), -np.inf)
        out[:, active] = x @ w.numpy().T + b.numpy()
        return out

    q_test = model.extractor.fixed_point(test.inputs, progress=progress)
    rows = []

    def row(metric, kind, audited, ref, n, reading):
        same = audited == ref or (audited != audited and ref != ref)
        rows.append({"metric": metric, "kind": kind, "audited": {"value": audited, "n": n},
                     "reference": {"value": ref, "n": n}, "verdict": INDISTINGUISHABLE if same else DIFFERS,
                     "tolerance": 0.0, "reading": reading})

    retained = ~np.isin(y_test, [names.index(c) for c in gone_classes])
    a_s, r_s = scores(model, q_test), scores(reference, q_test)
    finite = np.isfinite(a_s) & np.isfinite(r_s)
    gap = float(np.abs(a_s[finite] - r_s[finite]).max(initial=0.0)) + float((np.isfinite(a_s) != np.isfinite(r_s)).any())
    row("max_score_gap", "leak", gap, 0.0, len(q_test),
        "white-box: the largest difference between the audited and the retrained head's scores (0 = the same model)")
    accs = [float((scores(m, q_test[retained]).argmax(1) == y_test[retained]).mean()) for m in (model, reference)]
    row("retained_acc", "utility", *accs, int(retained.sum()), "accuracy on the retained classes' held-out samples")
    for c in gone_classes:
        i = names.index(c)
        mask = y_test == i
        top = [float((scores(m, q_test[mask]).argmax(1) == i).mean()) if mask.any() else float("nan")
               for m in (model, reference)]
        row(f"forgotten_class_top1[{c}]", "leak", *top, int(mask.sum()), "answered as the forgotten class (0 = never)")
        probe = LogisticRegression(max_iter=2000)
        x = dequantize(q_test, cfg.scale_bits)
        half = np.arange(len(x)) % 2 == 0
        if mask[half].any() and mask[~half].any():
            acc = float(probe.fit(x[half], mask[half]).score(x[~half], mask[~half]))
            row(f"forgotten_class_probe_acc[{c}]", "leak", acc, acc, int((~half).sum()),
                "logistic probe on the frozen features: the same in any retrain (the backbone is pretrained)")
    if gone_hashes:
        idx = np.flatnonzero(is_gone)
        q_gone = model.extractor.fixed_point(take(train, idx), progress=False)
        # every row the run keeps, from its features files, and the retrain's, from the files it would write
        kept_rows = {bytes(r) for r in stored_rows(run_reader(run_dir), parse((run_dir / "model.safetensors").read_bytes(), names))}
        ref_rows = {bytes(r) for r in stored_rows(reference_built.shards.__getitem__, parse(reference_bytes, names))}
        found = [float(np.mean([bytes(r) in rows_ for r in q_gone])) for rows_ in (kept_rows, ref_rows)]
        row("forgotten_examples_row_found", "leak", *found, len(idx),
            "white-box: the example's features found among the model's rows (a retrain finds them only where "
            "another example has the same features, e.g. a duplicate text)")
        member = np.flatnonzero(~is_gone & ~np.isin(y_train, [names.index(c) for c in gone_classes]))[:len(idx) or 1]
        q_member = model.extractor.fixed_point(take(train, member), progress=False)
        rows.append({"metric": "member_rows_found", "kind": "power", "audited": {"value": float(np.mean(
            [bytes(r) in kept_rows for r in q_member])), "n": len(member)}, "reference": None,
            "verdict": "descriptive", "reading": "the same lookup for examples still kept: the attack's power"})
        labels_gone = y_train[idx]
        same_class = np.isin(y_test, labels_gone) & retained
        aucs = []
        for m in (model, reference):
            def nll(q, y):
                s = scores(m, q)
                s = s - s.max(1, keepdims=True)
                return -(s[np.arange(len(y)), y] - np.log(np.exp(s).sum(1)))
            members, non = -nll(q_gone, labels_gone), -nll(q_test[same_class], y_test[same_class])
            aucs.append(float(roc_auc_score(np.r_[np.ones(len(members)), np.zeros(len(non))], np.r_[members, non]))
                        if len(non) else float("nan"))
        row("forgotten_examples_loss_auc", "leak", *aucs, len(idx), "LOSS membership inference vs held-out samples")
    record = {
        "family": "analytic", "run_dir": str(run_dir),
        "audit": {"forgotten_classes": gone_classes, "forgotten_examples": len(gone_hashes)},
        "reference": {"kind": "recomputed retrain without everything the ledger forgot", **proof},
        "reference_seeds": [cfg.seed], "table": rows, "figures": {},
        "headline": (["The artefact is byte for byte the retrain without the forgotten data: every attack gives "
                      "the retrain's figure exactly."] if proof["ok"] else
                     ["The artefact is NOT the retrain without the forgotten data: " + "; ".join(proof["problems"])]),
        "seconds": time.perf_counter() - t0,
    }
    out = run_dir / AUDIT_DIR
    out.mkdir(exist_ok=True)
    atomic_write_json(out / "audit.json", record)
    atomic_write_text(out / "audit.md", markdown(record))
    return record


def markdown(record: dict) -> str:
    lines = [f"# Audit of an analytic run: {', '.join(record['audit']['forgotten_classes']) or 'no class'} and "
             f"{record['audit']['forgotten_examples']} example(s) forgotten", "", *record["headline"], "",
             "| metric | audited | reference (retrain) | verdict | reading |", "|---|---:|---:|---|---|"]
    for r in record["table"]:
        ref = r["reference"]["value"] if r.get("reference") else "-"
        lines.append(f"| `{r['metric']}` | {_num(r['audited']['value'])} | {_num(ref)} | {r['verdict']} | {r['reading']} |")
    p = record["reference"]
    lines += ["", f"Reference: {p['kind']}; {p['n_train']} examples, sha256 `{p['recomputed_sha256'][:16]}...` "
              f"({'equal to' if p['ok'] else 'different from'} the artefact's), computed in {p['seconds']:.1f} s."]
    return "\n".join(lines) + "\n"


def _num(v) -> str:
    return v if isinstance(v, str) else ("-" if v != v else f"{v:.3f}")


def load(run_dir) -> dict:
    return json.loads((Path(run_dir) / AUDIT_DIR / "audit.json").read_text())
