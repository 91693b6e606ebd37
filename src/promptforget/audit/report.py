"""The audit report engine shared by the PFM and the SPUL audits: one metric type, one verdict, one table,
and the files (audit.json, audit.md, a Hugging Face style model card).

Each audit supplies its metric registry (``{metric id: Metric}``), a flattening of one model's result
into ``{metric id: value}``, and its plots; the engine does the rest.

Reading a row: "audited" is the model after the forget, "reference" the retrain-from-scratch model that
never saw the forgotten data (the mean over its retrained seeds), "original" the model before the forget.
Each figure carries a 95% interval (:mod:`promptforget.audit.stats`). The verdict (:func:`judge`) is a
two-sided test on the difference audited - reference, read in the metric's direction (d > 0 = more
residual knowledge, or more utility):

  d = direction * (audited - reference)
  h = 1.96 sqrt(se_audited^2 + se_reference^2 + seed_sd^2)   (se = half-width / 1.96; seed_sd = the spread
                                                              of the retrained seeds: the audited model is
                                                              one run, compared with single retrained runs)
  leak metrics     [d - h, d + h] inside [-tol, +tol]  -> indistinguishable (equivalent within the tolerance)
                   d - h > 0                            -> leaks more than retraining
                   d + h < 0                            -> forgets more than retraining
                   otherwise                            -> inconclusive: the interval is wider than the
                                                           tolerance; ``needed_n`` = the sample size at which
                                                           the half-width falls to tol/2 (~ 1/sqrt(n)), which
                                                           settles the verdict whatever d turns out to be
  utility metrics  d - h >= -tol -> utility kept; d + h < 0 -> utility lost; otherwise inconclusive
  every model at the metric's saturation value -> uninformative (the attack cannot tell anything apart)

A figure without an interval (a plain number) is exact, which gives the plain comparison |d| <= tol.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from promptforget.audit.stats import Z95, as_figure, combine_references, half_width
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
UNINFORMATIVE = "uninformative"
VERDICTS = (INDISTINGUISHABLE, LEAKS_MORE, FORGETS_MORE, INCONCLUSIVE, NO_REFERENCE, UTILITY_KEPT, UTILITY_LOST,
            UNINFORMATIVE)


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
    saturation: float | None = None  # every model at this value (to 3 decimals): the figure is uninformative

    def __post_init__(self):
        if self.direction not in (1, -1) or self.kind not in ("leak", "utility"):
            raise ValueError(f"bad metric: direction {self.direction!r}, kind {self.kind!r}")


TEMPLATE_PARTS = {"n": "n", "s": "steps"}  # metric-id suffixes _n<int> (adversary's samples), _s<int> (steps)


def lookup(metrics: dict[str, Metric], metric_id: str) -> Metric:
    """``metrics[metric_id]``, where ids with ``_n<int>`` / ``_s<int>`` parts also match a ``..._n{n}`` /
    ``..._s{s}`` template (the definition then names the values)."""
    if metric_id in metrics:
        return metrics[metric_id]
    template = re.sub(r"_([ns])(\d+)(?=_|$)", r"_\1{\1}", metric_id)
    if template in metrics:
        m = metrics[template]
        definition = m.definition
        for part, value in re.findall(r"_([ns])(\d+)(?=_|$)", metric_id):
            word = TEMPLATE_PARTS[part]
            definition = definition.replace(f" {word} ", f" {word}={value} ")
        return Metric(**{**asdict(m), "definition": definition})
    raise KeyError(f"unknown metric {metric_id!r}")


def is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and not (isinstance(x, float) and math.isnan(x))


def _value(fig, none_is_infinite: bool):
    if fig is None or fig.get("value") is None:
        return math.inf if none_is_infinite else None
    return fig["value"]


def _needed_n(n, h_examples: float, h_seeds: float, tol: float, unit: str = "examples") -> tuple[int | None, str]:
    """The sample size at which the interval settles whatever the difference turns out to be: a half-width
    of tol/2 gives "indistinguishable" when |d| <= tol/2 and a difference otherwise. The examples' part of
    the half-width shrinks as 1/sqrt(n); the seeds' part does not."""
    target = tol / 2
    if target <= h_seeds:
        return None, f"the retrained seeds alone spread +-{h_seeds:.3f}: more reference seeds are needed"
    if not n or h_examples == 0:
        return None, "no sample size would settle it"
    needed = math.ceil(n * h_examples**2 / (target**2 - h_seeds**2))
    return needed, f"about n={needed} {unit} (now {n}) would settle it"


def judge(metric: Metric, audited, reference, others=()) -> dict:
    """The verdict on one figure, with the difference's interval and, when inconclusive, why.

    ``audited`` / ``reference``: figures (see :mod:`promptforget.audit.stats`), plain numbers or None;
    ``others``: the remaining models' figures (for the saturation check). See the module doc."""
    a, r = as_figure(audited), as_figure(reference)
    out = {"verdict": None, "difference": None, "why": None, "needed_n": None}
    if metric.saturation is not None:
        vals = [_value(f, False) for f in (a, r, *map(as_figure, others)) if f is not None]
        if vals and all(is_number(v) and round(v, 3) == round(metric.saturation, 3) for v in vals):
            return {**out, "verdict": UNINFORMATIVE, "why": f"every model is at {metric.saturation:.3f}"}
    if r is None and not metric.none_is_infinite:
        return {**out, "verdict": NO_REFERENCE}
    av, rv = _value(a, metric.none_is_infinite), _value(r, metric.none_is_infinite)
    if not (is_number(av) and is_number(rv)):
        return {**out, "verdict": INCONCLUSIVE, "why": "a figure is missing"}
    if math.isinf(av) or math.isinf(rv):  # "never within the budget": only the order is known
        d = 0.0 if av == rv else metric.direction * (1.0 if av > rv else -1.0) * math.inf
        h_ex = h_seed = 0.0
    else:
        d = metric.direction * (av - rv)
        seed_sd = (r or {}).get("seed_sd") or 0.0
        k = (r or {}).get("reference_seeds") or 1
        se_r2 = (half_width(r) / Z95) ** 2 - seed_sd**2 / k  # the reference mean's sampling error alone
        h_ex = Z95 * math.sqrt((half_width(a) / Z95) ** 2 + max(se_r2, 0.0))
        h_seed = Z95 * math.sqrt(seed_sd**2 * (1 + 1 / k))
    h = math.hypot(h_ex, h_seed)
    lo, hi = d - h, d + h
    out["difference"] = {"value": d, "ci95": [lo, hi], "direction": metric.direction}
    n = (a or {}).get("n")
    unit = "runs" if (a or {}).get("how") == "over seeds" else "examples"
    if metric.kind == "utility":
        if lo >= -metric.tol:
            return {**out, "verdict": UTILITY_KEPT}
        if hi < 0:
            return {**out, "verdict": UTILITY_LOST}
        needed, why = _needed_n(n, h_ex, h_seed, metric.tol, unit)
        return {**out, "verdict": INCONCLUSIVE, "needed_n": needed,
                "why": f"difference {d:+.3f} +-{h:.3f} straddles 0 and -{metric.tol}; {why}"}
    if -metric.tol <= lo and hi <= metric.tol:
        return {**out, "verdict": INDISTINGUISHABLE}
    if lo > 0:
        return {**out, "verdict": LEAKS_MORE}
    if hi < 0:
        return {**out, "verdict": FORGETS_MORE}
    needed, why = _needed_n(n, h_ex, h_seed, metric.tol, unit)
    return {**out, "verdict": INCONCLUSIVE, "needed_n": needed,
            "why": f"difference {d:+.3f} +-{h:.3f} is wider than the tolerance +-{metric.tol}; {why}"}


def verdict(metric: Metric, audited, reference, others=()) -> str:
    """How the audited model compares with the retrained reference on one figure (see :func:`judge`)."""
    return judge(metric, audited, reference, others)["verdict"]


def combine_reference_runs(runs: list[dict], flatten) -> dict:
    """The "reference" entry of an audit from the results of its K retrained seeds: the first seed's raw
    result (for the plots), the figures combined over the seeds (``flatten``: one result -> {metric id:
    figure}), every seed's figures, and K."""
    flats = [flatten(r) for r in runs]
    ids = dict.fromkeys(k for f in flats for k in f)
    combined = {k: combine_references([f.get(k) for f in flats]) for k in ids}
    return {**runs[0], "figures": {k: v for k, v in combined.items() if v is not None},
            "seed_figures": [r.get("figures", {}) for r in runs], "reference_seeds": len(runs)}


def format_number(x) -> str:
    """A number as ``0.123``; a figure with an interval as ``0.123 [0.100, 0.150]``."""
    if isinstance(x, dict):
        if x.get("ci95") is None:
            return format_number(x.get("value"))
        lo, hi = x["ci95"]
        return f"{format_number(x.get('value'))} [{format_number(lo)}, {format_number(hi)}]"
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
        vals = {name: as_figure(flat.get(name, {}).get(mid)) for name in MODELS}
        if "reference" in flat:
            j = judge(m, vals["audited"], vals["reference"], [vals["original"]])
        else:
            j = {"verdict": NO_REFERENCE, "difference": None, "why": None, "needed_n": None}
        rows.append({"metric": mid, **vals, **j, "kind": m.kind, "definition": m.definition,
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
          for v in (LEAKS_MORE, FORGETS_MORE, UTILITY_LOST, INCONCLUSIVE, UNINFORMATIVE)}
    out = []
    if by[LEAKS_MORE]:
        out.append("Residual knowledge detected: the audited model **leaks more than retraining** on "
                   + ", ".join(by[LEAKS_MORE]) + ".")
    else:
        out.append("No figure leaks more than the retrained reference (95% intervals).")
    if by[FORGETS_MORE]:
        out.append("It **forgets more than retraining** (also tells it apart from a retrained model) on "
                   + ", ".join(by[FORGETS_MORE]) + ".")
    if by[UTILITY_LOST]:
        out.append("Utility lost against the retrained reference on " + ", ".join(by[UTILITY_LOST]) + ".")
    if by[INCONCLUSIVE]:
        out.append("Inconclusive on: " + "; ".join(f"`{r['metric']}` ({r.get('why') or 'a figure is missing'})"
                                                   for r in rows if r["verdict"] == INCONCLUSIVE) + ".")
    if by[UNINFORMATIVE]:
        out.append("Uninformative (every model saturates, the attack tells nothing apart): "
                   + ", ".join(by[UNINFORMATIVE]) + ".")
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
    """Write audit.json (the number of retrained reference seeds, the table -- each model's figure as
    ``{value, ci95, n, how}`` -- the metric registry, the figures and the raw audit record), audit.md and the
    model card into ``out_dir``. Returns their paths and the figures'."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = {"reference_seeds": audit.get("reference_seeds", 1 if "reference" in audit.get("models", {}) else 0),
              "table": rows, "metrics": {k: asdict(v) for k, v in metrics.items()}, "figures": figures, "audit": audit}
    atomic_write_json(out / REPORT_JSON, record)
    atomic_write_text(out / REPORT_MD, markdown_text)
    atomic_write_text(out / MODEL_CARD, card_text)
    return {"json": str(out / REPORT_JSON), "markdown": str(out / REPORT_MD), "model_card": str(out / MODEL_CARD),
            **figures}
