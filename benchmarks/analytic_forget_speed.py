"""How fast the analytic family forgets, and how that grows with the feature dimension D (or projection M),
the number of classes C and of examples N. Durable forgets through ``store.durable.forget`` (ledger,
fsynced artefact) on synthetic runs built with the library's own artefact code (no backbone needed: a
forget never runs one).

    python benchmarks/analytic_forget_speed.py --out runs/bench/analytic_forget_speed.json

Parts reported per setting (medians): the head's solve alone, the artefact rewrite (parse, exact
subtraction, solve, serialise), the atomic write with fsync, the two ledger appends, and the total.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def synthetic_run(run_dir: Path, n: int, d: int, c: int, head: str, seed: int = 0) -> list[str]:
    from promptforget.analytic.artefact import Rows, build, example_id_sha256
    from promptforget.analytic.config import AnalyticConfig
    from promptforget.store.layout import ANALYTIC_CONFIG_NAME, WEIGHTS_NAME

    rng = np.random.default_rng(seed)
    labels = np.arange(n) % c
    centres = rng.integers(-2048, 2048, (c, d))
    q = (centres[labels] + rng.integers(-4096, 4096, (n, d))).astype(np.int32)
    names = [f"class{i}" for i in range(c)]
    cfg = AnalyticConfig(backbone="synthetic", class_names=names, head=head, id_salt="s" * 32)
    ids = [f"row-{i}" for i in range(n)]
    rows = Rows(np.frombuffer(b"".join(example_id_sha256(cfg.id_salt, i) for i in ids), np.uint8).reshape(n, 32),
                labels.astype(np.int64), q)
    run_dir.mkdir(parents=True)
    record = {"format_version": 1, "family": "analytic", "config": cfg.to_dict(),
              "backbone": {"name_or_path": "synthetic", "family": "none", "modality": "text", "sha256": "0" * 64}}
    (run_dir / ANALYTIC_CONFIG_NAME).write_text(json.dumps(record))
    built = build(rows, names, cfg.head_settings("0" * 64))
    built.write(run_dir)
    (run_dir / WEIGHTS_NAME).write_bytes(built.model)
    return ids


def measure(n: int, d: int, c: int, head: str, class_forgets: int, example_forgets: int, batch: int, root: Path) -> dict:
    from promptforget.analytic.artefact import parse
    from promptforget.analytic.head import solve
    from promptforget.analytic.run import rewrite_for
    from promptforget.store.durable import forget
    from promptforget.store.layout import WEIGHTS_NAME

    run = root / f"run-{n}-{d}-{c}-{head}"
    t0 = time.perf_counter()
    ids = synthetic_run(run, n, d, c, head)
    build_s = time.perf_counter() - t0
    size = (run / WEIGHTS_NAME).stat().st_size
    features_size = sum(f.stat().st_size for f in (run / "examples").iterdir())
    names = [f"class{i}" for i in range(c)]
    p = parse((run / WEIGHTS_NAME).read_bytes(), names)
    solves = []
    for _ in range(3):
        t = time.perf_counter()
        solve(p.stats, head, 12)
        solves.append(1000 * (time.perf_counter() - t))
    rewrite = rewrite_for(run, None)
    rng = np.random.default_rng(1)
    example_ms, class_ms = [], []
    single = [str(x) for x in rng.choice(ids, size=example_forgets, replace=False)]
    for x in single:
        r = forget(run, [], examples=[x], rewrite=rewrite)
        example_ms.append(r.timings_ms)
    n_classes = min(class_forgets, max(c // 3, 1))  # keep most classes for the coalesced forget below
    for k in range(n_classes):
        r = forget(run, [names[k]], rewrite=rewrite)
        class_ms.append(r.timings_ms)
    left = sorted(set(i for i in ids if int(i.split("-")[1]) % c >= n_classes) - set(single))
    coalesced = None
    if batch:
        pick = [str(x) for x in rng.choice(left, size=min(batch, len(left) // 2), replace=False)]
        t = time.perf_counter()
        forget(run, [], examples=pick, rewrite=rewrite)
        seconds = time.perf_counter() - t
        coalesced = {"examples": len(pick), "seconds": seconds, "examples_per_second": len(pick) / seconds}
    shutil.rmtree(run)

    def parts(rows):
        if not rows:
            return None
        keys = ("prepare", "artefact_write", "ledger_pending", "ledger_commit", "total")
        return {k: statistics.median(r.get(k, 0.0) for r in rows) for k in keys} | {"n": len(rows)}

    return {"n": n, "d": d, "c": c, "head": head, "artefact_mb": size / 1e6, "features_files_mb": features_size / 1e6,
            "build_seconds": build_s,
            "solve_ms": statistics.median(solves), "example_forget_ms": parts(example_ms),
            "class_forget_ms": parts(class_ms), "coalesced": coalesced}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/bench/analytic_forget_speed.json")
    ap.add_argument("--repeats", type=int, default=10, help="forgets of each kind per setting")
    ap.add_argument("--quick", action="store_true", help="only the D = 768, C = 100 setting")
    args = ap.parse_args()
    grid = [  # (N, D or M, C, heads); the target: p50 <= 100 ms at D = 768, C = 100
        (2_000, 768, 100, ("lda", "ridge")), (10_000, 768, 100, ("lda", "ridge")),
    ]
    if not args.quick:
        grid += [(2_000, 768, 10, ("lda", "ridge")), (2_000, 2_000, 10, ("lda", "ridge")), (2_000, 10_000, 10, ("lda",)),
                 (10_000, 768, 10, ("lda",)), (10_000, 768, 1_000, ("lda",)),
                 (1_000, 768, 10, ("lda",)), (100_000, 768, 10, ("lda",))]
    rows = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        for n, d, c, heads in grid:
            for head in heads:
                big = d >= 10_000
                r = measure(n, d, c, head, 2 if big else args.repeats, 2 if big else args.repeats,
                            0 if big else 1_000, Path(tmp))
                rows.append(r)
                e, k = r["example_forget_ms"], r["class_forget_ms"]
                co = r["coalesced"]
                print(f"N={n:>7} D={d:>6} C={c:>5} {head:5s}: model.safetensors {r['artefact_mb']:6.1f} MB + features "
                      f"{r['features_files_mb']:6.1f} MB; solve "
                      f"{r['solve_ms']:8.1f} ms; example forget p50 {e['total']:8.1f} ms (rewrite {e['prepare']:.1f}, "
                      f"write+fsync {e['artefact_write']:.1f}); class forget p50 "
                      f"{k['total'] if k else float('nan'):8.1f} ms"
                      + (f"; {co['examples']} examples at once: {co['examples_per_second']:,.0f}/s" if co else ""),
                      flush=True)
    out = {"load_average": os.getloadavg(), "cpus": os.cpu_count(), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"JSON -> {args.out}; load average {out['load_average']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
