"""benchmarks/class_shards.py on a tiny encoder: each shard count is trained, scored under every combine
rule, and its exact forget timed; a shard count that cannot hold the forgotten class is refused first."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("class_shards")


def test_class_shards_measures_each_shard_count(bench, tiny_dinov2_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "write_result", lambda name, result: tmp_path / f"{name}.json")
    result = bench.main(["--dataset", "digits", "--max-train", "80", "--backbone", tiny_dinov2_dir, "--forget", "4",
                         "--shards", "1", "2", "--set", "epochs=1", "--set", "prompt_layer=1", "--set", "image_size=28",
                         "--repeats", "2", "--shard-epochs", "steps"])
    rows = result["rows"]
    assert rows["1"]["epochs"] == 1 and rows["2"]["epochs"] == 2  # 'steps': S x the recipe's epochs
    assert 0 <= rows["plain"]["accuracy"] <= 1
    assert rows["2"]["shards"] == [["0", "2", "4", "6", "8"], ["1", "3", "5", "7", "9"]]
    for s in ("1", "2"):
        assert set(rows[s]["accuracy"]) == set(rows[s]["retained_after"]) == {"routed", "routed_soft", "logits", "prob", "excess"}
        assert len(rows[s]["exact_s"]) == 2 and all(t > 0 for t in rows[s]["exact_s"])
    assert rows["1"]["exact_ratio_vs_first"] == 1.0
    assert rows["2"]["exact_ratio_vs_first"] == pytest.approx(rows["2"]["exact_median_s"] / rows["1"]["exact_median_s"])


def test_a_shard_count_that_would_strand_a_class_is_refused(bench):
    with pytest.raises(SystemExit, match="--shards 6: n_shards 6 is too many"):
        bench.main(["--dataset", "digits", "--shards", "1", "6"])
    with pytest.raises(SystemExit, match="--shard-epochs 'many'"):
        bench.main(["--dataset", "digits", "--shard-epochs", "many"])
    with pytest.raises(SystemExit, match="sits in a shard of 2 classes"):
        bench.main(["--dataset", "digits", "--forget", "1", "--shards", "5"])
