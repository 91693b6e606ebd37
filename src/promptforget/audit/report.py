"""The audit report engine shared by the PFM and the SPUL audits: one metric type, one verdict, one table,
and the files (audit.json, audit.md, a Hugging Face style model card).

Each audit supplies its metric registry (``{metric id: Metric}``), a flattening of one model's result
into ``{metric id: value}``, and its plots; the engine does the rest.

Reading a row: "audited" is the model after the forget, "reference" the retrain-from-scratch models that
never saw the forgotten data (the mean over K retrained seeds), "original" the model before the forget.
Each figure carries a 95% interval (:mod:`promptforget.audit.stats`).

The verdict (:func:`judge`) asks whether the audited model, ONE training run, could be one more retrained
run: a t prediction interval. With d = direction * (audited - mean of the K references) (d > 0 = more
residual knowledge, or more utility), s = the references' standard deviation (K-1 df), se_a = the audited
figure's sampling error and se_r that of one reference:

  unpaired  V = s^2 (1 + 1/K) + max(se_a^2 - se_r^2, 0)
            (s^2 holds seed spread + one reference's sampling error, the audited's own error adds only its
            excess; with se_a = se_r this is the exact prediction interval of one more run); references
            that agree exactly (s = 0: counts, all 0/n) leave the sampling error alone, se_a^2 + se_r^2/K
  paired    (0/1 outcomes on the same examples for every model): V = s^2 (1 + 1/K) with K-1 df, the exact
            prediction interval given the examples (the examples' sampling error is shared, and cancels);
            references all at the same rate (s = 0): V = se_p^2, the bootstrap error of audited - mean
            (references) with the examples resampled once for all models. It decides "leaks more" /
            "forgets more"; "indistinguishable" needs the unpaired interval too
  h = t(0.975, df) sqrt(V); df by Welch-Satterthwaite from s^2's K-1 df (sampling errors count as known)

  leak metrics     [d - h, d + h] inside the equivalence margin -> indistinguishable
                   d - h > 0 -> leaks more than retraining;  d + h < 0 -> forgets more than retraining
                   otherwise -> inconclusive; ``needed_n`` = the sample size at which h falls to half
                   the margin (the examples' part shrinks as 1/n, the seeds' does not)
  utility metrics  d - h >= -tol -> utility kept; d + h < 0 -> utility lost; otherwise inconclusive
  context metrics  shown, not judged ("descriptive")
  the margin is +-tol, or (``logit_tol``, rates near 0 or 1) the band of +-logit_tol around the reference
  on the log-odds scale, capped at tol: 0.02 is no margin around 0.001
  fewer than 3 references -> uninformative (figures only: the seed spread has too few df to mean anything)
  every model at the metric's saturation value -> uninformative; a low-FPR TPR from fewer than 1/FPR
  non-members -> unresolved

Multiplicity (:func:`table`): each registry marks its primary metrics; the leak tests on them are one
family, Holm-adjusted at 5% (a primary difference that does not survive reads "inconclusive"), and the
summary's headline rests on them alone. Secondary rows keep their unadjusted verdict, marked descriptive.

A figure without an interval (a plain number) is exact; a reference without ``reference_seeds`` is a fixed
target (its own sampling error only).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from promptforget.audit.stats import as_figure, combine_references, paired_se, standard_error
from promptforget.utils.io import atomic_write_json, atomic_write_text

REPORT_JSON = "audit.json"
REPORT_MD = "audit.md"
MODEL_CARD = "README.md"
MODELS = ("audited", "reference", "original")
MIN_REFERENCES = 3  # fewer retrained seeds give figures, not verdicts
ALPHA = 0.05  # two-sided; the family-wise error over the primary metrics (Holm)

# Verdict vocabulary. The words are those a confidence-interval test would also give.
INDISTINGUISHABLE = "indistinguishable"
LEAKS_MORE = "leaks more than retraining"
FORGETS_MORE = "forgets more than retraining"
INCONCLUSIVE = "inconclusive"
NO_REFERENCE = "no reference"
UTILITY_KEPT = "utility kept"
UTILITY_LOST = "utility lost"
UNINFORMATIVE = "uninformative"
UNRESOLVED = "unresolved"
DESCRIPTIVE = "descriptive"
VERDICTS = (INDISTINGUISHABLE, LEAKS_MORE, FORGETS_MORE, INCONCLUSIVE, NO_REFERENCE, UTILITY_KEPT, UTILITY_LOST,
            UNINFORMATIVE, UNRESOLVED, DESCRIPTIVE)
KINDS = ("leak", "utility", "context")


@dataclass(frozen=True)
class Metric:
    definition: str
    sign: str  # how to read it
    ideal: str  # the target value
    tol: float  # |audited - reference| within which the audited model is indistinguishable from retraining
    # +1 if a higher value means more residual knowledge ("leak") or more utility ("utility"); -1 if lower does.
    direction: int = 1
    kind: str = "leak"  # "leak": about the forgotten data; "utility": what should be kept; "context": not judged
    none_is_infinite: bool = False  # None stands for +infinity (e.g. "never reached within the budget")
    saturation: float | None = None  # every model at this value (to 3 decimals): the figure is uninformative
    primary: bool = False  # one of the family the headline rests on (Holm-adjusted)
    logit_tol: float | None = None  # a rate: the equivalence margin on the log-odds scale (capped at tol)

    def __post_init__(self):
        if self.direction not in (1, -1) or self.kind not in KINDS:
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


def prediction_variance(a: dict | None, r: dict | None, paired: bool = True) -> tuple[float, float, float, float]:
    """(V, df, sampling variance, seed variance) of audited - reference mean (see the module doc);
    ``paired`` False: the unpaired rule even where the outcomes would allow pairing."""
    se_a = standard_error(a)
    k = (r or {}).get("reference_seeds")
    if not k:  # a fixed target: its own sampling error only
        v = se_a**2 + standard_error(r) ** 2
        return v, math.inf, v, 0.0
    s2 = ((r or {}).get("seed_sd") or 0.0) ** 2
    se_r2 = ((r or {}).get("se_mean") or 0.0) ** 2
    outs, by_seed = (a or {}).get("outcomes"), (r or {}).get("outcomes_by_seed")
    if paired and outs is not None and by_seed and all(len(o) == len(outs) for o in by_seed):
        if s2 > 0 and k > 1:  # given the examples, audited and references are exchangeable under the null
            return s2 * (1 + 1 / k), k - 1, 0.0, s2 * (1 + 1 / k)
        se_p2 = paired_se(outs, by_seed) ** 2  # references at the same rate: what the examples say
        return se_p2, math.inf, se_p2, 0.0
    # s^2 already holds one reference's sampling error; a larger audited one adds its excess (a smaller one
    # is not subtracted: that would shrink V exactly when s^2 came out small by chance)
    pi = s2 * (1 + 1 / k) + max(se_a**2 - se_r2, 0.0)
    if s2 > 0:
        df = pi**2 * (k - 1) / (s2 * (1 + 1 / k)) ** 2 if k > 1 else math.inf  # Welch-Satterthwaite
        return pi, df, se_a**2, pi - se_a**2
    floor = se_a**2 + se_r2 / k  # identical references (counts, all 0/n): the sampling error alone
    return floor, math.inf, floor, 0.0


def _quantile(df: float) -> float:
    from scipy.stats import t

    return float(t.ppf(1 - ALPHA / 2, df)) if math.isfinite(df) else 1.959963984540054


def p_value(d: float, v: float, df: float) -> float:
    """Two-sided p-value of "no difference" for d against the prediction variance v (df degrees of freedom)."""
    from scipy.stats import norm, t

    if math.isinf(d):
        return 0.0
    if v <= 0:
        return 1.0 if d == 0 else 0.0
    z = abs(d) / math.sqrt(v)
    return float(2 * (t.sf(z, df) if math.isfinite(df) else norm.sf(z)))


def margin(metric: Metric, reference_value: float, n: int | None) -> tuple[float, float]:
    """(below, above) the reference, in the metric's own units, within which the audited model is
    indistinguishable: +-tol, or for a rate the +-logit_tol band on the log-odds scale, capped at tol."""
    if metric.logit_tol is None:
        return metric.tol, metric.tol
    eps = 0.5 / n if n else 1e-6
    r = min(max(reference_value, eps), 1 - eps)
    z = math.log(r / (1 - r))
    expit = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    return min(metric.tol, r - expit(z - metric.logit_tol)), min(metric.tol, expit(z + metric.logit_tol) - r)


def _needed_n(n, var_examples: float, var_seeds: float, df: float, target: float,
              unit: str = "examples") -> tuple[int | None, str]:
    """The sample size at which the interval settles whatever the difference turns out to be: a half-width
    of ``target`` (half the margin). The examples' part of the variance shrinks as 1/n; the seeds' does not."""
    q = _quantile(df)
    if (target / q) ** 2 <= var_seeds:
        spread = q * math.sqrt(var_seeds)
        return None, f"the retrained seeds alone spread +-{spread:.3f}: more reference seeds are needed"
    if not n or var_examples == 0:
        return None, "no sample size would settle it"
    needed = math.ceil(n * var_examples / ((target / q) ** 2 - var_seeds))
    return needed, f"about n={needed} {unit} (now {n}) would settle it"


def judge(metric: Metric, audited, reference, others=()) -> dict:
    """The verdict on one figure, with the difference's interval, its p-value and, when inconclusive, why.

    ``audited`` / ``reference``: figures (see :mod:`promptforget.audit.stats`), plain numbers or None;
    ``others``: the remaining models' figures (for the saturation check). See the module doc."""
    a, r = as_figure(audited), as_figure(reference)
    out = {"verdict": None, "difference": None, "why": None, "needed_n": None, "p_value": None}
    if metric.kind == "context":
        return {**out, "verdict": DESCRIPTIVE, "why": "context for the other rows, not a test"}
    if metric.saturation is not None:
        vals = [_value(f, False) for f in (a, r, *map(as_figure, others)) if f is not None]
        if vals and all(is_number(v) and round(v, 3) == round(metric.saturation, 3) for v in vals):
            return {**out, "verdict": UNINFORMATIVE, "why": f"every model is at {metric.saturation:.3f}"}
    if r is None and not metric.none_is_infinite:
        return {**out, "verdict": NO_REFERENCE}
    k = (r or {}).get("reference_seeds")
    if k is not None and k < MIN_REFERENCES:
        return {**out, "verdict": UNINFORMATIVE,
                "why": f"{k} reference seed(s): a verdict needs at least {MIN_REFERENCES} retrained references"}
    unresolved = [name for name, f in (("audited", a), ("reference", r)) if f and f.get("resolved") is False]
    if unresolved:
        fpr = (a or r or {}).get("fpr")
        return {**out, "verdict": UNRESOLVED,
                "why": f"an FPR of {fpr} needs at least {math.ceil(1 / fpr) if fpr else '?'} non-members"}
    av, rv = _value(a, metric.none_is_infinite), _value(r, metric.none_is_infinite)
    if not (is_number(av) and is_number(rv)):
        return {**out, "verdict": INCONCLUSIVE, "why": "a figure is missing"}
    if math.isinf(av) or math.isinf(rv):  # "never within the budget": only the order is known
        d = 0.0 if av == rv else metric.direction * (1.0 if av > rv else -1.0) * math.inf
        v, df, v_ex, v_seed = 0.0, math.inf, 0.0, 0.0
    else:
        d = metric.direction * (av - rv)
        v, df, v_ex, v_seed = prediction_variance(a, r)
    h = _quantile(df) * math.sqrt(v)
    lo, hi = d - h, d + h
    out["difference"] = {"value": d, "ci95": [lo, hi], "direction": metric.direction, "df": df}
    out["p_value"] = p_value(d, v, df)
    n = (a or {}).get("n")
    unit = "runs" if (a or {}).get("how") == "over seeds" else "examples"
    if metric.kind == "utility":
        if lo >= -metric.tol:
            return {**out, "verdict": UTILITY_KEPT}
        if hi < 0:
            return {**out, "verdict": UTILITY_LOST}
        needed, why = _needed_n(n, v_ex, v_seed, df, metric.tol / 2, unit)
        return {**out, "verdict": INCONCLUSIVE, "needed_n": needed,
                "why": f"difference {d:+.3f} +-{h:.3f} straddles 0 and -{metric.tol}; {why}"}
    below, above = margin(metric, rv, n) if math.isfinite(rv) else (metric.tol, metric.tol)
    if metric.direction < 0:
        below, above = above, below
    # Equivalence is never claimed on less than the unpaired interval: two models at 0/n on the same
    # examples agree exactly, which says nothing about how close their rates are.
    h_eq = h if math.isinf(d) else max(h, _quantile(prediction_variance(a, r, paired=False)[1])
                                       * math.sqrt(prediction_variance(a, r, paired=False)[0]))
    if -below <= d - h_eq and d + h_eq <= above:
        return {**out, "verdict": INDISTINGUISHABLE}
    if lo > 0:
        return {**out, "verdict": LEAKS_MORE}
    if hi < 0:
        return {**out, "verdict": FORGETS_MORE}
    needed, why = _needed_n(n, v_ex, v_seed, df, min(below, above) / 2, unit)
    return {**out, "verdict": INCONCLUSIVE, "needed_n": needed,
            "why": f"difference {d:+.3f} +-{h:.3f} is wider than the margin [-{below:.3g}, +{above:.3g}]; {why}"}


def verdict(metric: Metric, audited, reference, others=()) -> str:
    """How the audited model compares with the retrained reference on one figure (see :func:`judge`)."""
    return judge(metric, audited, reference, others)["verdict"]


def holm(p_values: list[float], alpha: float = ALPHA) -> tuple[list[bool], list[float]]:
    """Holm's step-down test: which hypotheses are rejected at family-wise error ``alpha``, and the adjusted
    p-values."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    rejected, adjusted = [False] * m, [1.0] * m
    running, stop = 0.0, False
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
        if not stop and p_values[i] <= alpha / (m - rank):
            rejected[i] = True
        else:
            stop = True
    return rejected, adjusted


def combine_reference_runs(runs: list[dict], flatten, metrics: dict[str, Metric] | None = None) -> dict:
    """The "reference" entry of an audit from the results of its K retrained seeds: the first seed's raw
    result (for the plots), the figures combined over the seeds (``flatten``: one result -> {metric id:
    figure}; ``metrics``: which say None = never), every seed's figures, and K."""
    flats = [flatten(r) for r in runs]
    ids = dict.fromkeys(k for f in flats for k in f)

    def infinite(mid):
        try:
            return bool(metrics) and lookup(metrics, mid).none_is_infinite
        except KeyError:
            return False

    combined = {k: combine_references([f.get(k) for f in flats], infinite(k)) for k in ids}
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
    for the models of :data:`MODELS` that were audited. Primary leak rows are one Holm family (module doc)."""
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
            j = {"verdict": NO_REFERENCE, "difference": None, "why": None, "needed_n": None, "p_value": None}
        role = "primary" if m.primary and m.kind == "leak" else "secondary"
        rows.append({"metric": mid, **vals, **j, "kind": m.kind, "role": role, "definition": m.definition,
                     "sign": m.sign, "ideal": m.ideal, "tolerance": m.tol})
    family = [r for r in rows if r["role"] == "primary" and r["p_value"] is not None]
    rejected, adjusted = holm([r["p_value"] for r in family])
    for r, rej, adj in zip(family, rejected, adjusted):
        r["holm_p"] = adj
        if r["verdict"] in (LEAKS_MORE, FORGETS_MORE) and not rej:
            r["why"] = (f"{r['verdict']} alone (p = {r['p_value']:.3g}), not after Holm over the {len(family)} "
                        f"primary figures (adjusted p = {adj:.3g})")
            r["verdict"] = INCONCLUSIVE
    return rows


def markdown_table(rows: list[dict], columns: tuple[str, ...]) -> list[str]:
    """The rows as Markdown table lines: model columns as numbers, "ideal" with its tolerance, "reading" the sign."""
    def verdict_cell(r):
        secondary = r.get("role") == "secondary" and r["verdict"] in (LEAKS_MORE, FORGETS_MORE)
        return r["verdict"] + (" (secondary)" if secondary else "")

    cell = {"metric": lambda r: f"`{r['metric']}`" + (" *" if r.get("role") == "primary" else ""),
            "verdict": verdict_cell,
            "ideal": lambda r: f"{r['ideal']} (tol {r['tolerance']})", "reading": lambda r: r["sign"],
            **{name: (lambda r, name=name: format_number(r[name])) for name in MODELS}}
    align = {name: "---:" for name in MODELS}
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(align.get(c, "---") for c in columns) + "|"]
    return lines + ["| " + " | ".join(cell[c](r) for c in columns) + " |" for r in rows]


def verdict_summary(rows: list[dict], have_reference: bool) -> list[str]:
    """The "Verdict" section: the headline from the primary figures (Holm-adjusted), then the rest."""
    if not have_reference:
        return ["No retrained reference was given: figures cannot be judged against the gold standard."]
    few = [r for r in rows if r["verdict"] == UNINFORMATIVE and "reference seed" in (r.get("why") or "")]
    if few:
        return [f"**Uninformative**: {few[0]['why']}. The figures are shown; no verdict is drawn (one or two "
                "retrained runs say nothing about how much retraining itself varies). Rerun with "
                f"`--train-reference --reference-seeds {MIN_REFERENCES}` or more."]
    primary = [r for r in rows if r["role"] == "primary"]
    names = lambda rs: ", ".join(f"`{r['metric']}`" for r in rs)  # noqa: E731
    by = {v: [r for r in primary if r["verdict"] == v] for v in (LEAKS_MORE, FORGETS_MORE)}
    out = []
    if by[LEAKS_MORE]:
        out.append(f"Residual knowledge detected: on the primary figures (Holm over {len(primary)}, 5% family-wise) "
                   f"the audited model **leaks more than retraining** on {names(by[LEAKS_MORE])}.")
    else:
        out.append(f"No primary figure leaks more than the retrained references (Holm over {len(primary)}, 5% "
                   "family-wise).")
    if by[FORGETS_MORE]:
        out.append(f"It **forgets more than retraining** (also tells it apart from a retrained model) on "
                   f"{names(by[FORGETS_MORE])}.")
    lost = [r for r in rows if r["verdict"] == UTILITY_LOST]
    if lost:
        out.append("Utility lost against the retrained reference on " + names(lost) + ".")
    secondary = [r for r in rows if r["role"] == "secondary" and r["kind"] == "leak"
                 and r["verdict"] in (LEAKS_MORE, FORGETS_MORE)]
    if secondary:
        out.append("Secondary figures (descriptive, each a 95% test of its own, no multiplicity control): "
                   + "; ".join(f"`{r['metric']}` {r['verdict']}" for r in secondary) + ".")
    inconclusive = [r for r in rows if r["verdict"] == INCONCLUSIVE]
    if inconclusive:
        out.append("Inconclusive on: " + "; ".join(f"`{r['metric']}` ({r.get('why') or 'a figure is missing'})"
                                                   for r in inconclusive) + ".")
    for word, what in ((UNINFORMATIVE, "every model saturates, the attack tells nothing apart"),
                       (UNRESOLVED, "too few non-members to measure so low an FPR")):
        hit = [r for r in rows if r["verdict"] == word]
        if hit:
            out.append(f"{word.capitalize()} ({what}): {names(hit)}.")
    return out


def markdown(title: str, intro: str, rows: list[dict], have_reference: bool, figures: dict[str, str] | None = None,
             settings: dict | None = None) -> str:
    lines = [f"# {title}", "", intro, ""]
    lines += markdown_table(rows, ("metric", "audited", "reference", "original", "verdict", "ideal", "reading"))
    lines += ["", "## Verdict", ""]
    for paragraph in verdict_summary(rows, have_reference):
        lines += [paragraph, ""]
    lines += ["## Definitions", "", "`*` marks the primary figures: the Holm family the headline rests on.", ""]
    lines += [f"- `{r['metric']}`{' (primary)' if r.get('role') == 'primary' else ''}: {r['definition']}."
              for r in rows]
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
