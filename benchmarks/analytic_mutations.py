"""Planted bugs in the analytic family's exact subtraction: each mutation is applied to a copy of src/, and the
tests that guard exactness (byte identity after forgets, example refusal, 1 vs 2 processes, the audit) must
fail on it. Prints caught / missed per mutation; exit 1 when one is missed.

    python benchmarks/analytic_mutations.py          # ~3 minutes on 2 cores
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ["tests/analytic/test_exact_forget.py"]
MUTATIONS = {  # name: (file, original, mutant)
    "gram not fully subtracted": ("analytic/stats.py",
                                  "self.sums - gone.sums, self.gram - gone.gram)",
                                  "self.sums - gone.sums, self.gram - (gone.gram // 2) * 2)"),
    "sums not subtracted": ("analytic/stats.py", "self.sums - gone.sums,", "self.sums,"),
    "forgotten rows kept in their class's features file": ("analytic/artefact.py",
                                                           "data = shard_bytes(q[~in_class], class_names[c])",
                                                           "data = shard_bytes(q, class_names[c])"),
    "one row fewer subtracted": ("analytic/artefact.py", "gone_q.append(q[in_class])",
                                 "gone_q.append(q[in_class][1:])"),
    "old features file not deleted": ("store/artefact.py", "            f.unlink()\n", "            pass\n"),
}


def main() -> int:
    missed = 0
    for name, (rel, original, mutant) in MUTATIONS.items():
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copytree(ROOT / "src", Path(tmp) / "src")
            target = Path(tmp) / "src" / "promptforget" / rel
            text = target.read_text()
            if text.count(original) != 1:
                print(f"{name}: the original text is not in {rel} once; update the mutation", file=sys.stderr)
                return 2
            target.write_text(text.replace(original, mutant))
            env = {**os.environ, "PYTHONPATH": str(Path(tmp) / "src")}
            r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *TESTS],
                               cwd=ROOT, env=env, capture_output=True, text=True)
            caught = r.returncode != 0
            missed += not caught
            failed = [line.split("::")[-1].split(" ")[0] for line in r.stdout.splitlines() if line.startswith("FAILED")]
            print(f"{'caught' if caught else 'MISSED'}: {name}" + (f" (first failing: {failed[0]})" if failed else ""),
                  flush=True)
    print(f"{len(MUTATIONS) - missed} of {len(MUTATIONS)} mutations caught")
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
