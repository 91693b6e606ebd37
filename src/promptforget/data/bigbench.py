"""BIG-bench multiple-choice task JSON (``{"name", "examples": [{"input", "target_scores"}]}``).

Each example becomes ``{"id", "question", "choices", "label"}`` where ``label`` is the answer letter
(``A``, ``B``, ...) of the choice with the highest target score; choices keep their file order.
"""

from __future__ import annotations

import json
import random
import string
from pathlib import Path


def load_bigbench_task(path: str | Path, max_choices: int | None = None, seed: int = 0) -> list[dict]:
    """Read a BIG-bench multiple-choice task file.

    ``max_choices`` keeps the correct choice plus a seeded sample of distractors (order preserved),
    which keeps prompts short for small models.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("examples"), list):
        raise ValueError(f"{path}: expected a BIG-bench task object with an 'examples' list")
    task = data.get("name") or path.stem
    prefix = data.get("task_prefix", "") or ""
    rng = random.Random(seed)
    out = []
    for i, ex in enumerate(data["examples"]):
        scores = ex.get("target_scores")
        if not isinstance(scores, dict) or len(scores) < 2:
            raise ValueError(f"{path}: example {i} has no multiple-choice 'target_scores' (needs >= 2 choices)")
        choices = list(scores)
        best = max(choices, key=lambda c: scores[c])
        if max_choices is not None and len(choices) > max_choices:
            others = [c for c in choices if c != best]
            keep = set(rng.sample(others, max_choices - 1)) | {best}
            choices = [c for c in choices if c in keep]
        if len(choices) > len(string.ascii_uppercase):
            raise ValueError(f"{path}: example {i} has {len(choices)} choices; at most 26 are supported")
        out.append(
            {
                "id": f"{task}-{i}",
                "task": task,
                "question": (prefix + str(ex["input"])).strip(),
                "choices": choices,
                "label": string.ascii_uppercase[choices.index(best)],
            }
        )
    return out
