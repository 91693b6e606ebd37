"""The analytic family against PFM on the same data, side by side in one run (alternated ``--repeats`` times):
- **train**: ``analytic.run.train_run`` (one pass of the frozen backbone + sums + solve) vs PFM's
  ``train_run`` at the demo recipe (48 tokens, prompts before block 3, 5 epochs, lr 3e-3);
- **exact class forget**: the analytic durable forget (exact at commit; the median of the same forget on
  5 copies of the run) vs PFM's ``forget --exact``
  (``exact_forget``: instant forget + retrain of the recipe without the class + install), end to end.
Prints the pairs, the medians' ratios and the load average; JSON to runs/bench/analytic_vs_pfm.json.

    python benchmarks/analytic_vs_pfm.py --dataset bbc_news --max-train 300 --repeats 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from _common import write_result

DEMO_TEXT = {"epochs": 5, "prompt_layer": 3, "max_length": 48, "lr": 3e-3}


def main(argv=None) -> dict:
    from promptforget.analytic.run import rewrite_for
    from promptforget.analytic.run import train_run as train_analytic
    from promptforget.pfm.exact import exact_forget
    from promptforget.pfm.run import train_run as train_pfm
    from promptforget.store.durable import forget

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="bbc_news")
    ap.add_argument("--max-train", type=int, default=300, help="0: every training example (the demo)")
    ap.add_argument("--forget", default="sports")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    args.max_train = args.max_train or None
    work = Path(tempfile.mkdtemp(prefix="analytic-vs-pfm-"))
    load_before = os.getloadavg()
    rows = []
    for i in range(args.repeats):
        t = time.perf_counter()
        a = train_analytic(work / f"a{i}", args.dataset, max_train=args.max_train, max_length=48, overwrite=True,
                           heldout=False, progress=False)
        analytic_train = time.perf_counter() - t
        t = time.perf_counter()
        p = train_pfm(work / f"p{i}", args.dataset, max_train=args.max_train, overwrite=True, **DEMO_TEXT)
        pfm_train = time.perf_counter() - t
        forgets = []  # the same forget on 5 copies of the run: its median (one forget is a few ms of noise)
        for k in range(5):
            copy = shutil.copytree(a, work / f"a{i}-{k}")
            os.sync()  # the copy's dirty pages are not the forget's to flush
            t = time.perf_counter()
            r = forget(copy, [args.forget], reason="benchmark", rewrite=rewrite_for(copy, None))
            forgets.append((time.perf_counter() - t, r.timings_ms["total"]))
            shutil.rmtree(copy)
        analytic_forget, inside = sorted(forgets)[len(forgets) // 2]
        t = time.perf_counter()
        exact_forget(p, [args.forget], reason="benchmark", log=lambda *_: None)
        pfm_exact = time.perf_counter() - t
        rows.append({"analytic_train_s": analytic_train, "pfm_train_s": pfm_train, "analytic_forget_s": analytic_forget,
                     "analytic_forget_ms_inside": inside,
                     "analytic_forget_s_each": [f for f, _ in forgets], "pfm_exact_forget_s": pfm_exact,
                     "load": os.getloadavg()[0]})
        print(f"pair {i + 1}: train analytic {analytic_train:.1f} s vs PFM {pfm_train:.1f} s; exact class forget "
              f"analytic {1000 * analytic_forget:.0f} ms vs PFM --exact {pfm_exact:.1f} s; load {rows[-1]['load']:.1f}",
              flush=True)
        shutil.rmtree(a), shutil.rmtree(p)
    med = {k: statistics.median(r[k] for r in rows) for k, v in rows[0].items() if not isinstance(v, list)}
    result = {"settings": vars(args), "pairs": rows, "median": med,
              "train_speedup": med["pfm_train_s"] / med["analytic_train_s"],
              "exact_forget_speedup": med["pfm_exact_forget_s"] / med["analytic_forget_s"],
              "loadavg_before": load_before, "loadavg_after": os.getloadavg()}
    write_result("analytic_vs_pfm", result)
    print(f"medians: training {result['train_speedup']:.1f}x faster; an exact class forget "
          f"{result['exact_forget_speedup']:,.0f}x faster than PFM's forget --exact; load {os.getloadavg()}")
    return result


if __name__ == "__main__":
    main()
