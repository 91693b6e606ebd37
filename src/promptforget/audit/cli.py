"""``promptforget audit RUN_DIR``: membership inference, residual-knowledge attacks, report, model card."""

from __future__ import annotations

import argparse
from pathlib import Path

from promptforget.audit.config import AuditConfig
from promptforget.audit.run import AUDIT_DIR, audit_run
from promptforget.utils.cli_args import add_command
from promptforget.utils.config import add_config_args, config_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "audit", cmd_audit, help="audit a PFM or SPUL run's forgetting against a retrained "
                    "reference (MIA, extraction attacks, probes)")
    p.add_argument("run_dir")
    p.add_argument("--forget", nargs="+", default=None, help="classes to forget for the audit (default: those the run forgot)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--reference", default=None, help="run directory of an already trained reference")
    g.add_argument("--train-reference", action="store_true",
                   help="train the reference (same recipe without the forgotten classes) into OUT/reference, "
                   "or reuse the one already there")
    g.add_argument("--no-reference", action="store_true", help="audit without a reference (figures cannot be judged)")
    p.add_argument("--out", default=None, help=f"output directory (default RUN_DIR/{AUDIT_DIR})")
    add_config_args(p.add_argument_group("audit (AuditConfig)"), AuditConfig)


def cmd_audit(args) -> int:
    """Audit a Pre-Forgettable Model run. If the run still knows every class, --forget names the classes to
    forget (in memory; the run is not modified) and 'before' figures are reported too. Every figure is
    reported beside the retrain-from-scratch reference's. Writes audit.json, audit.md, plots and a model
    card (README.md) into the output directory.

    Given a `spul unlearn` run instead, audits the prompted model beside the stage-1 model without the
    prompt and beside stage 1 retrained on the retain set (--train-reference, or --reference DIR): 4-split
    accuracy, label-position and sequence-level (LOSS, ZLib, Min-K%, Min-K%++) membership inference,
    black-box paraphrase and prompt-injection queries. Only --reference, --train-reference, --no-reference,
    --reference-epochs, --batch-size, --seed, --no-plots and --out apply to SPUL runs.

    Given an analytic run (train --family analytic), audits what its ledger forgot beside the retrain
    recomputed from the recorded data (no reference option applies: the retrain is deterministic).
    """
    paths = audit_run(args.run_dir, config_from_args(AuditConfig, args), out=args.out, forget=args.forget,
                      reference=args.reference, train_reference=args.train_reference, no_reference=args.no_reference)
    print((Path(paths["out"]) / "audit.md").read_text().split("## Definitions")[0])  # analytic: the whole report
    print(f"[audit] done in {paths['audit_seconds']:.0f}s -> {paths['json']}")
    return 0
