"""The audit report engine shared by the PFM and the SPUL audits: one metric type, one verdict, one table,
and the files (audit.json, audit.md, a Hugging Face style model card).

Each audit supplies its metric registry (``{metric id: Metric}``), a flattening of one model's result
into ``{metric id: value}``, and its plots; the engine does the rest.

Reading a row: "audited" is the model after the forget, "reference" the retrain-from-scratch model that
never saw the forgotten data, "original" the model before the forget. Unlearning is as good as
retraining on a figure when audited ~= reference; the verdict says whether the gap is within the
metric's tolerance and, if not, which way it goes.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from promptforget.utils.io import atomic_write_json, atomic_write_text

REPORT_JSON = "audit.json"
REPORT_MD = "audit.md"
MODEL_CARD = "README.md"
MODELS = ("audited", "reference", "original")

# Verdict vocabulary. The words are those a confidence-interval test would also give.
INDISTINGUISHABLE = "indistinguishable"
LEAKS_MORE = "leaks more than retraining"
FORGETS_MORE = "forgets more than retraining"
INCONCLUSIVE = "inconclusive"
NO_REFERENCE = "no reference"
UTILITY_KEPT = "utility kept"
UTILITY_LOST = "utility lost"
VERDICTS = (INDISTINGUISHABLE, LEAKS_MORE, FORGETS_MORE, INCONCLUSIVE, NO_REFERENCE, UTILITY_KEPT, UTILITY_LOST)


@dataclass(frozen=True)
class Metric:
    definition: str
    sign: str  # how to read it
    ideal: str  # the target value
    tol: float  # |audited - reference| within which the audited model is indistinguishable from retraining
    # +1 if a higher value means more residual knowledge ("leak") or more utility ("utility"); -1 if lower does.
    direction: int = 1
    kind: str = "leak"  # "leak": about the forgotten data; "utility": about what should be kept
    none_is_infinite: bool = False  # None stands for +infinity (e.g. "never reached within the budget")

    def __post_init__(self):
        if self.direction not in (1, -1) or self.kind not in ("leak", "utility"):
            raise ValueError(f"bad metric: direction {self.direction!r}, kind {self.kind!r}")


def lookup(metrics: dict[str, Metric], metric_id: str) -> Metric:
    """``metrics[metric_id]``, where ids ending in ``_n<int>`` also match a ``..._n{n}`` template."""
    if metric_id in metrics:
        return metrics[metric_id]
    base, _, n = metric_id.rpartition("_n")
    if n.isdigit() and f"{base}_n{{n}}" in metrics:
        m = metrics[f"{base}_n{{n}}"]
        return Metric(**{**asdict(m), "definition": m.definition.replace(" n ", f" n={n} ")})
    raise KeyError(f"unknown metric {metric_id!r}")


def is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and not (isinstance(x, float) and math.isnan(x))


def verdict(metric: Metric, audited, reference) -> str:
    """How the audited model compares with the retrained reference on one figure (see the vocabulary above)."""
    if metric.none_is_infinite:
        audited = math.inf if audited is None else audited
        reference = math.inf if reference is None else reference
    if reference is None:
        return NO_REFERENCE
    if not (is_number(audited) and is_number(reference)):
        return INCONCLUSIVE
    close = audited == reference or abs(audited - reference) <= metric.tol
    more = metric.direction * (audited - reference) > 0  # more knowledge (leak) or more utility than the reference
    if metric.kind == "utility":
        return UTILITY_KEPT if close or more else UTILITY_LOST
    if close:
        return INDISTINGUISHABLE
    return LEAKS_MORE if more else FORGETS_MORE


def format_number(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return "nan" if math.isnan(x) else f"{x:.3f}"
    return str(x)


def table(flat: dict[str, dict], metrics: dict[str, Metric]) -> list[dict]:
    """One row per metric id, in order of first appearance. ``flat``: ``{model name: {metric id: value}}``
    for the models of :data:`MODELS` that were audited."""
    ids: list[str] = []
    for values in flat.values():
        ids += [k for k in values if k not in ids]
    rows = []
    for mid in ids:
        m = lookup(metrics, mid)
        vals = {name: flat.get(name, {}).get(mid) for name in MODELS}
        v = verdict(m, vals["audited"], vals["reference"]) if "reference" in flat else NO_REFERENCE
        rows.append({"metric": mid, **vals, "verdict": v, "kind": m.kind, "definition": m.definition,
                     "sign": m.sign, "ideal": m.ideal, "tolerance": m.tol})
    return rows


def markdown_table(rows: list[dict], columns: tuple[str, ...]) -> list[str]:
    """The rows as Markdown table lines: model columns as numbers, "ideal" with its tolerance, "reading" the sign."""
    cell = {"metric": lambda r: f"`{r['metric']}`", "verdict": lambda r: r["verdict"],
            "ideal": lambda r: f"{r['ideal']} (tol {r['tolerance']})", "reading": lambda r: r["sign"],
            **{name: (lambda r, name=name: format_number(r[name])) for name in MODELS}}
    align = {name: "---:" for name in MODELS}
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(align.get(c, "---") for c in columns) + "|"]
    return lines + ["| " + " | ".join(cell[c](r) for c in columns) + " |" for r in rows]


def verdict_summary(rows: list[dict], have_reference: bool) -> list[str]:
    """The "Verdict" section: which figures tell the audited model apart from retraining, and which way."""
    if not have_reference:
        return ["No retrained reference was given: figures cannot be judged against the gold standard."]
    by = {v: [f"`{r['metric']}`" for r in rows if r["verdict"] == v]
          for v in (LEAKS_MORE, FORGETS_MORE, UTILITY_LOST, INCONCLUSIVE)}
    out = []
    if by[LEAKS_MORE]:
        out.append("Residual knowledge detected: the audited model **leaks more than retraining** on "
                   + ", ".join(by[LEAKS_MORE]) + ".")
    else:
        out.append("No figure leaks more than the retrained reference within tolerance.")
    if by[FORGETS_MORE]:
        out.append("It **forgets more than retraining** (also tells it apart from a retrained model) on "
                   + ", ".join(by[FORGETS_MORE]) + ".")
    if by[UTILITY_LOST]:
        out.append("Utility lost against the retrained reference on " + ", ".join(by[UTILITY_LOST]) + ".")
    if by[INCONCLUSIVE]:
        out.append("Inconclusive (a figure is missing) on " + ", ".join(by[INCONCLUSIVE]) + ".")
    return out


def markdown(title: str, intro: str, rows: list[dict], have_reference: bool, figures: dict[str, str] | None = None,
             settings: dict | None = None) -> str:
    lines = [f"# {title}", "", intro, ""]
    lines += markdown_table(rows, ("metric", "audited", "reference", "original", "verdict", "ideal", "reading"))
    lines += ["", "## Verdict", ""]
    for paragraph in verdict_summary(rows, have_reference):
        lines += [paragraph, ""]
    lines += ["## Definitions", ""] + [f"- `{r['metric']}`: {r['definition']}." for r in rows]
    if figures:
        lines += ["", "## Figures", ""] + [f"![{k}]({Path(v).name})" for k, v in figures.items()]
    if settings:
        lines += ["", "## Settings", "", "```json", json.dumps(settings, indent=2, sort_keys=True), "```"]
    return "\n".join(lines) + "\n"


def model_card(title: str, sections: dict[str, str], rows: list[dict], tags: list[str], base_model: str | None = None,
               dataset: str | None = None) -> str:
    """A Hugging Face style README.md: YAML front matter, the given ``{heading: text}`` sections, then the
    audit table (audited vs retrained reference)."""
    front = ["---", "library_name: promptforget", "tags:"] + [f"- {t}" for t in tags]
    if base_model:
        front.append(f"base_model: {base_model}")
    if dataset:
        front += ["datasets:", f"- {dataset}"]
    front += ["metrics:", "- accuracy", "- roc_auc", "---", ""]
    body = [f"# {title}", ""]
    for heading, text in sections.items():
        body += [f"## {heading}", text, ""]
    body += ["## Unlearning audit (audited vs retrained reference)", ""]
    body += markdown_table(rows, ("metric", "audited", "reference", "verdict"))
    body += ["", f"Full definitions, signs and ideal values: `{REPORT_MD}` / `{REPORT_JSON}`.", ""]
    return "\n".join(front + body)


def write_files(out_dir: str | os.PathLike, audit: dict, rows: list[dict], metrics: dict[str, Metric],
                markdown_text: str, card_text: str, figures: dict[str, str]) -> dict[str, str]:
    """Write audit.json (the table, the metric registry, the figures and the raw audit record), audit.md and
    the model card into ``out_dir``. Returns their paths and the figures'."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = {"table": rows, "metrics": {k: asdict(v) for k, v in metrics.items()}, "figures": figures, "audit": audit}
    atomic_write_json(out / REPORT_JSON, record)
    atomic_write_text(out / REPORT_MD, markdown_text)
    atomic_write_text(out / MODEL_CARD, card_text)
    return {"json": str(out / REPORT_JSON), "markdown": str(out / REPORT_MD), "model_card": str(out / MODEL_CARD),
            **figures}
