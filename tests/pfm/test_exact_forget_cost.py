"""benchmarks/exact_forget_cost.py on a tiny encoder: the three retrains run, the exact one goes through the
ledger, and the ratios are the medians' ratios."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("exact_forget_cost")


def test_exact_forget_cost_times_exact_against_both_retrains(bench, tiny_dinov2_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("PROMPTFORGET_BENCH_DIR", str(tmp_path / "bench"))
    monkeypatch.setattr(bench, "write_result", lambda name, result: tmp_path / f"{name}.json")
    work = tmp_path / "work"
    result = bench.main(["--dataset", "digits", "--max-train", "60", "--backbone", tiny_dinov2_dir, "--forget", "3",
                         "--set", "epochs=1", "--set", "prompt_layer=1", "--set", "image_size=28",
                         "--repeats", "2", "--out", str(work)])
    assert len(result["pairs"]) == 2 and result["settings"]["forget"] == "3"
    for pair in result["pairs"]:
        assert pair["exact_s"] >= pair["exact_train_s"] > 0 and pair["pfm_retrain_s"] > 0 and pair["plain_retrain_s"] > 0
    assert result["ratio_exact_vs_pfm_retrain"] == pytest.approx(
        result["median"]["exact_s"] / result["median"]["pfm_retrain_s"])
    ledger = [json.loads(line) for line in (work / "exact-0" / "forget_ledger.jsonl").read_text().splitlines()]
    assert ledger[-1]["event"] == "exact" and ledger[-1]["classes"] == ["3"]
    plain = json.loads((work / "plain-0" / "pfm_config.json").read_text())["config"]
    assert plain["objective"] == "plain" and "3" in plain["class_names"]


def test_an_unknown_class_is_refused_before_training(bench, tmp_path):
    with pytest.raises(SystemExit, match="'nine' is not a class of digits"):
        bench.main(["--dataset", "digits", "--forget", "nine", "--out", str(tmp_path / "w")])
    assert not (tmp_path / "w").exists()
