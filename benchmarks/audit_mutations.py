"""Planted bugs against the audit's tests: each mutation is a one-line (or one-idea) change to a copy of
``src/``; ``tests/audit`` is run against the copy and must fail. Reports caught / missed.

    python benchmarks/audit_mutations.py            # every mutation (~10-20 min on 2 cores)
    python benchmarks/audit_mutations.py ulira_auc_direction tpr_wrong_side   # some of them
    python benchmarks/audit_mutations.py --list

The first 19 are the surviving mutations of issue 30 (item 11) as far as the issue names them, the rest
guard this round's rule (t prediction interval, exact intervals, Holm, "uninformative", "unresolved").
Not part of the normal test run (it runs tests/audit once per mutation).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# every file of tests/audit, the fast ones first (-x stops at the first failure)
FAST_FIRST = ["test_verdict_rule.py", "test_stats.py", "test_report.py", "test_lira.py", "test_mia.py",
              "test_llm_mia.py", "test_blackbox.py", "test_spul_audit.py", "test_attacks.py"]
TEST_ORDER = [f"tests/audit/{f}" for f in FAST_FIRST] + sorted(
    str(p.relative_to(ROOT)) for p in (ROOT / "tests/audit").glob("test_*.py") if p.name not in FAST_FIRST)
A = "src/promptforget/audit/"

# (id, file, [(old, new), ...], what the bug is)
MUTATIONS = [
    ("ulira_auc_direction", A + "pfm_audit.py",
     [('"samples look like held-out ones", "reference value (about 0.5)", 0.05),',
       '"samples look like held-out ones", "reference value (about 0.5)", 0.05, direction=-1),')],
     "ulira_auc read as lower = leak"),
    ("relearn_j_direction", A + "pfm_audit.py",
     [('"higher = easier relearning", "reference value", 0.05, primary=True),',
       '"higher = easier relearning", "reference value", 0.05, primary=True, direction=-1),')],
     "relearn_j read as lower = leak"),
    ("linear_probe_acc_direction", A + "pfm_audit.py",
     [('"higher = class separable in the features", "reference value", 0.05),',
       '"higher = class separable in the features", "reference value", 0.05, direction=-1),')],
     "linear_probe_acc read as lower = leak"),
    ("prediction_interval_1_over_k", A + "report.py",
     [("pi = s2 * (1 + 1 / k) + max(", "pi = s2 * (1 / k) + max(")],
     "the prediction interval's (1 + 1/K) replaced by 1/K"),
    ("percentiles_5_95", A + "stats.py",
     [("    alpha = (1 - level) / 2\n    return float(np.quantile(stats, alpha))",
       "    alpha = 1 - level\n    return float(np.quantile(stats, alpha))")],
     "the bootstrap's 2.5/97.5 percentiles replaced by 5/95"),
    ("tpr_wrong_side", A + "stats.py",
     [("return (members > thr[:, None]).mean(1)", "return (members < thr[:, None]).mean(1)")],
     "TPR at FPR counts members below the threshold"),
    ("tpr_wrong_quantile", A + "stats.py",
     [("thr = np.quantile(nonmembers, 1 - fpr, axis=1", "thr = np.quantile(nonmembers, fpr, axis=1")],
     "TPR at FPR thresholds at the fpr quantile (the wrong tail)"),
    ("equivalence_on_point_estimate", A + "report.py",
     [("if -below <= d - h_eq and d + h_eq <= above:", "if -below <= d and d <= above:")],
     "indistinguishable judged on the point estimate, not the interval"),
    ("ulira_in_never_sees_class", A + "pfm_audit.py",
     [("sel = torch.as_tensor(idx, dtype=torch.long)", "sel = torch.as_tensor(idx[:0], dtype=torch.long)")],
     "U-LiRA 'in' shadows never see the class"),
    ("ulira_in_not_unlearned", A + "pfm_audit.py",
     [("        m.forget(list(forgotten))\n        record.append(",
       "        m.forget(list(forgotten)) if not is_in else None\n        record.append(")],
     "U-LiRA 'in' shadows are not unlearned"),
    ("worst_to_best_class", A + "stats.py",
     [("np.max(np.stack([statistic(*g) for g in resampled_groups]), axis=0)",
       "np.min(np.stack([statistic(*g) for g in resampled_groups]), axis=0)"),
      ("return figure(max(point), (lo, hi)", "return figure(min(point), (lo, hi)"),
      ("worst_index=int(np.argmax(point))", "worst_index=int(np.argmin(point))")],
     "the worst forgotten class replaced by the best"),
    ("references_fewer_restarts", A + "pfm_audit.py",
     [("attacks=attacks and run_attacks, progress=progress, **attack_kw)",
       "attacks=attacks and run_attacks, progress=progress, **{**attack_kw, **({'key_restarts': 1} "
       "if name == 'reference' else {})})")],
     "references attacked with fewer key-recovery restarts"),
    ("references_other_seed", A + "pfm_audit.py",
     [("attacks=attacks and run_attacks, progress=progress, **attack_kw)",
       "attacks=attacks and run_attacks, progress=progress, **{**attack_kw, **({'seed': 7} "
       "if name == 'reference' else {})})")],
     "references attacked with another seed"),
    ("spul_members_swapped", A + "spul_audit.py",
     [('balanced_mia_sets(split["train_forget"], split["test_forget"], seed)',
       'balanced_mia_sets(split["test_forget"], split["train_forget"], seed)')],
     "SPUL sequence MIA: members and non-members swapped"),
    ("spul_label_mia_swapped", A + "spul_audit.py",
     [('fm = mia.membership_features(probs["forget_train"], labels["forget_train"])',
       'fm = mia.membership_features(probs["forget_test"], labels["forget_test"])'),
      ('fn = mia.membership_features(probs["forget_test"], labels["forget_test"])',
       'fn = mia.membership_features(probs["forget_train"], labels["forget_train"])')],
     "SPUL label-position MIA: members and non-members swapped"),
    ("spul_span_with_padding", A + "spul_audit.py",
     [("valid = target != -100", "valid = torch.ones_like(target, dtype=torch.bool)")],
     "SPUL trained span includes the padding after a shorter label"),
    ("mia_efficacy_direction", A + "pfm_audit.py",
     [('"higher = forget set looks unseen", "reference value", 0.05, direction=-1,\n                           '
       'saturation=1.0, primary=True),',
       '"higher = forget set looks unseen", "reference value", 0.05, direction=1,\n                           '
       'saturation=1.0, primary=True),')],
     "PFM mia_efficacy read as higher = leak"),
    ("spul_blackbox_direction", A + "spul_audit.py",
     [('"blackbox_best": Metric("the adversary\'s best query family (max of the above)", "higher = leakage",\n'
       '                            "reference value", 0.05, primary=True),',
       '"blackbox_best": Metric("the adversary\'s best query family (max of the above)", "higher = leakage",\n'
       '                            "reference value", 0.05, primary=True, direction=-1),')],
     "SPUL blackbox_best read as lower = leak"),
    ("ulira_in_out_swapped", A + "lira.py",
     [('in_mask = plan["trained"] & plan["is_in"][:, None]', 'in_mask = plan["trained"] & ~plan["is_in"][:, None]'),
      ('out_mask = np.repeat(~plan["is_in"][:, None]', 'out_mask = np.repeat(plan["is_in"][:, None]')],
     "U-LiRA in and out shadows swapped"),
    # this round's rule
    ("t_replaced_by_z", A + "report.py",
     [("return float(t.ppf(1 - ALPHA / 2, df)) if math.isfinite(df) else", "return 1.959963984540054 if True else")],
     "the prediction interval's t(K-1) replaced by 1.96"),
    ("binary_back_to_bootstrap", A + "stats.py",
     [("    if _is_binary(x):\n", "    if False:\n")],
     "0/1 outcomes bootstrapped again (0/n gets [0, 0])"),
    ("proportion_without_bound", A + "stats.py",
     [("return figure(share, clopper_pearson(k, n), n, EXACT, k=k)",
       "return figure(share, (share, share), n, EXACT, k=k)")],
     "a share of n without its interval"),
    ("holm_unadjusted", A + "report.py",
     [("if not stop and p_values[i] <= alpha / (m - rank):", "if not stop and p_values[i] <= alpha:")],
     "no multiplicity control over the primary metrics"),
    ("single_reference_accepted", A + "report.py",
     [("MIN_REFERENCES = 3", "MIN_REFERENCES = 1")], "fewer than 3 references give verdicts"),
    ("unresolved_ignored", A + "report.py", [("    if unresolved:\n", "    if False:\n")],
     "TPR at an unmeasurable FPR judged as if measured"),
    ("none_dropped", A + "stats.py", [("        if any(math.isinf(v) for v in vals):\n", "        if False:\n")],
     "combine_references drops None (never recovered)"),
    ("reference_seed_is_audited_seed", A + "reference.py",
     [("return [audited_seed + 1 + i for i in range(k)]", "return [audited_seed + i for i in range(k)]")],
     "reference 0 trained with the audited run's own seed"),
    ("pairing_broken", A + "stats.py", [("return float((a[idx] - r[idx]).mean(1).std(ddof=1))",
                                          "return float((a[idx] - r[idx[::-1]]).mean(1).std(ddof=1))")],
     "the paired comparison resamples audited and references apart"),
    ("logit_margin_ignored", A + "report.py", [("    if metric.logit_tol is None:\n", "    if True:\n")],
     "absolute tolerance around rates near 0"),
    ("shadow_recipe_changed", A + "pfm_audit.py",
     [('cfg = config.from_dict({**config.to_dict(), "seed": config.seed + 100 + len(record)})',
       'cfg = config.from_dict({**config.to_dict(), "epochs": 1, "seed": config.seed + 100 + len(record)})')],
     "U-LiRA shadows with another recipe than the audited run's"),
]


def apply(src_root: Path, file: str, edits: list[tuple[str, str]]) -> None:
    path = src_root / file
    text = path.read_text()
    for old, new in edits:
        if text.count(old) != 1:
            raise SystemExit(f"mutation no longer applies: {old!r} occurs {text.count(old)} times in {file}")
        text = text.replace(old, new)
    path.write_text(text)


def pytest(src: Path, timeout: int) -> tuple[bool, str]:
    """Run the audit tests against ``src``: (passed, pytest's last line)."""
    env = {**os.environ, "PYTHONPATH": str(src), "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *TEST_ORDER],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return True, "timeout"  # not caught: nothing failed
    return proc.returncode == 0, (proc.stdout.strip().splitlines() or [""])[-1]


def run(ids: list[str], timeout: int = 600) -> list[dict]:
    passed, tail = pytest(ROOT / "src", timeout)  # the unmutated code must pass, or "caught" means nothing
    if not passed:
        raise SystemExit(f"tests/audit fail on the unmutated source: {tail}")
    results = []
    for mid, file, edits, what in MUTATIONS:
        if ids and mid not in ids:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copytree(ROOT / "src", Path(tmp) / "src")
            apply(Path(tmp), file, edits)
            t0 = time.perf_counter()
            passed, tail = pytest(Path(tmp) / "src", timeout)
            caught = not passed
        row = {"id": mid, "what": what, "caught": caught, "seconds": round(time.perf_counter() - t0, 1),
               "pytest": tail}
        print(f"{'caught' if caught else 'MISSED'}  {mid:34s} {row['seconds']:6.1f}s  {tail}", flush=True)
        results.append(row)
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ids", nargs="*", help="mutation ids (default: all)")
    ap.add_argument("--list", action="store_true", help="list the mutations and exit")
    ap.add_argument("--json", help="write the results to this file")
    args = ap.parse_args()
    if args.list:
        for mid, file, _, what in MUTATIONS:
            print(f"{mid:34s} {file.split('/')[-1]:14s} {what}")
        return 0
    unknown = set(args.ids) - {m[0] for m in MUTATIONS}
    if unknown:
        ap.error(f"unknown mutation ids: {sorted(unknown)}")
    results = run(args.ids)
    caught = sum(r["caught"] for r in results)
    print(f"\n{caught}/{len(results)} caught, {len(results) - caught} missed")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0 if caught == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
