"""Run every benchmark at CPU-sized settings (under 15 minutes on 2 cores); JSON lands in runs/bench/.

    python benchmarks/run_all.py [--only SCRIPT ...]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

BENCHES = [
    ("pfm_train_step.py", ["--classes", "10", "100", "--batch", "32", "--steps", "3"]),
    ("forget_latency.py", ["--steps", "2", "--repeats", "20"]),
    ("prompt_overhead.py", ["--classes", "10", "100", "1000", "--repeats", "2"]),
    ("spul_memory.py", []),
    ("service_load.py", ["--make-run", "tiny", "--rounds", "1", "--phase-seconds", "8"]),
    ("analytic_forget_speed.py", ["--quick", "--repeats", "5"]),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", nargs="*", help="run only these scripts")
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent / "src"), os.environ.get("PYTHONPATH", "")])}
    failed = []
    t0 = time.perf_counter()
    for script, argv in BENCHES:
        if args.only and script not in args.only:
            continue
        print(f"\n=== {script} {' '.join(argv)}", flush=True)
        t = time.perf_counter()
        r = subprocess.run([sys.executable, str(HERE / script), *argv], env=env)
        print(f"=== {script}: exit {r.returncode}, {time.perf_counter() - t:.0f} s", flush=True)
        if r.returncode:
            failed.append(script)
    print(f"\nall benchmarks: {time.perf_counter() - t0:.0f} s; failed: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
