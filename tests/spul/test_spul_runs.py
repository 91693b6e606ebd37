"""A user's own data end to end on a tiny model, with no repeated data flags: `spul finetune --data csv:FILE
--template topic`, then `spul unlearn RUN`, `baseline ga_gd RUN`, `spul evaluate RUN`; and the one-line
errors for bad input."""

import csv
import json

import pytest

from promptforget.cli import main
from promptforget.spul.config import DataConfig
from promptforget.spul.task_data import load_task
from promptforget.spul.tasks import multi_token_note
from promptforget.spul.testing import tiny_llama, tiny_tokenizer

TOPICS = {"sport": ["match", "goal", "team"], "tech": ["phone", "chip", "app"], "politics": ["vote", "law", "party"]}
NAMES = ["Smith", "Jones"]


def rows(n=60):
    out = []
    for i in range(n):
        topic = list(TOPICS)[i % 3]
        word = TOPICS[topic][(i // 3) % 3]
        who = NAMES[0] if i % 4 == 0 else NAMES[1]
        out.append({"id": f"n{i}", "text": f"{who} on the {word} today", "topic": topic})
    return out


@pytest.fixture()
def setup(tmp_path):
    data = tmp_path / "news.csv"
    with data.open("w", newline="") as f:
        w = csv.DictWriter(f, ["id", "text", "topic"])
        w.writeheader()
        w.writerows(rows())
    tok = tiny_tokenizer(["on the today very good bad"] + NAMES + [w for ws in TOPICS.values() for w in ws] + list(TOPICS))
    mdir = tmp_path / "base"
    tiny_llama(len(tok)).save_pretrained(mdir)
    tok.save_pretrained(mdir)
    return tmp_path, data, mdir


def stage1(tmp, data, mdir, *extra):
    s1 = tmp / "s1"
    assert main(["spul", "finetune", "--model", str(mdir), "--data", f"csv:{data}", "--template", "topic",
                 "--test-size", "0.4", "--max-length", "40", "--epochs", "1", "--batch-size", "8", "--lora-r", "2",
                 "--lora-alpha", "4", "--out", str(s1), *extra]) == 0
    return s1


def read(path):
    return json.loads(path.read_text())


def test_user_csv_pipeline_reads_everything_from_the_stage1_run(setup, monkeypatch):
    tmp, data, mdir = setup
    s1 = stage1(tmp, data, mdir)
    cfg = read(s1 / "config.json")
    assert cfg["data"]["data"] == f"csv:{data.resolve()}" and cfg["data"]["template"] == "topic"
    assert cfg["data"]["split_seed"] == 0 and cfg["data"]["test_size"] == 0.4 and len(cfg["data_sha256"]) == 64
    assert cfg["model"] == str(mdir) and cfg["n_train"] == 36 and cfg["n_test"] == 24
    assert cfg["task"] == {"kind": "text", "name": "topic", "labels": ["politics", "sport", "tech"],
                           "template": read(s1 / "template.json")["prompt"]}
    assert "What is the topic" in cfg["task"]["template"]

    u = tmp / "u"
    assert main(["spul", "unlearn", str(s1), "--forget", "entity:Smith", "--min-forget", "3", "--epochs", "1",
                 "--batch-size", "4", "--num-virtual-tokens", "3", "--encoder-hidden-size", "8", "--out", str(u)]) == 0
    ucfg, ures = read(u / "config.json"), read(u / "results.json")
    assert ucfg["stage1_run"] == str(s1.resolve()) and ucfg["data_sha256"] == cfg["data_sha256"]
    ids = read(u / "forget_split.json")["ids"]
    smith = {r["id"] for r in rows() if "Smith" in r["text"]}
    assert set(ids["train_forget"]) | set(ids["test_forget"]) == smith
    assert ures["evaluation"]["train_forget"]["n"] == len(ids["train_forget"]) >= 3

    b = tmp / "b"  # RUN = the SPUL run: same stage 1, same forget set, no --forget
    assert main(["baseline", "ga_gd", str(u), "--lr", "1e-3", "--batch-size", "4", "--out", str(b)]) == 0
    assert read(b / "forget_split.json")["ids"] == ids
    assert read(b / "config.json")["stage1_run"] == str(s1.resolve())

    assert main(["spul", "evaluate", str(u)]) == 0
    assert read(u / "evaluation" / "results.json")["evaluation"]["train_forget"] == ures["evaluation"]["train_forget"]
    assert main(["spul", "evaluate", str(b), "--out", str(tmp / "eb")]) == 0
    assert (read(tmp / "eb" / "results.json")["evaluation"]["test_forget"]
            == read(b / "results.json")["evaluation"]["test_forget"])

    # the runs and their data moved together, used from another directory: found relative to the runs
    assert cfg["data_source"]["relative_to_run"] == "../news.csv" and ucfg["stage1_run_relative"] == "../s1"
    moved = tmp / "elsewhere"
    moved.mkdir()
    for name in ("s1", "u", "news.csv"):
        (tmp / name).rename(moved / name)
    monkeypatch.chdir(mdir)
    assert main(["spul", "evaluate", str(moved / "u"), "--out", str(tmp / "em")]) == 0
    assert read(tmp / "em" / "results.json")["evaluation"] == read(moved / "u" / "evaluation" / "results.json")["evaluation"]
    # the data moved apart from the runs: --data-root names where it is now
    (tmp / "data").mkdir()
    (moved / "news.csv").rename(tmp / "data" / "news.csv")
    assert main(["spul", "evaluate", str(moved / "u"), "--out", str(tmp / "en")]) == 2
    assert main(["spul", "evaluate", str(moved / "u"), "--out", str(tmp / "en"), "--data-root", str(tmp / "data")]) == 0


def test_flags_that_contradict_the_record_and_other_bad_input(setup, capsys):
    tmp, data, mdir = setup
    s1 = stage1(tmp, data, mdir)
    capsys.readouterr()
    run = ["spul", "unlearn", str(s1), "--out", str(tmp / "x"), "--epochs", "1"]

    def error(argv):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        return err

    assert "contradicts the stage-1 run" in error(run + ["--forget", "entity:Smith", "--test-size", "0.3"])
    assert "contradicts" in error(run + ["--forget", "entity:Smith", "--data", "rotten_tomatoes"])
    assert "was fine-tuned from" in error(run + ["--forget", "entity:Smith", "--model", str(tmp / "other")])
    assert "selects no training" in error(run + ["--forget", "entity:Nobody"])
    assert "at least 20 on each side" in error(run + ["--forget", "entity:Smith"])
    assert "--forget is required" in error(run)
    # a data flag equal to the record is fine to repeat
    assert main(run + ["--forget", "entity:Smith", "--min-forget", "3", "--data", f"csv:{data}", "--test-size", "0.4",
                       "--num-virtual-tokens", "2", "--encoder-hidden-size", "8", "--batch-size", "8"]) == 0
    capsys.readouterr()

    bad = tmp / "bad.json"
    bad.write_text(json.dumps({"prompt": "Text: {text} from {source}. Topic:"}))
    assert "unknown field(s) {source}" in error(["spul", "finetune", "--model", str(mdir), "--data", f"csv:{data}",
                                                 "--template", str(bad), "--out", str(tmp / "y")])
    assert "unknown template" in error(["spul", "finetune", "--model", str(mdir), "--data", f"csv:{data}",
                                        "--template", "poetry", "--out", str(tmp / "y")])
    assert "--data-file goes with --data jsonl" in error(["spul", "finetune", "--model", str(mdir), "--data-file",
                                                          str(data), "--out", str(tmp / "y")])

    with data.open("a") as f:
        f.write("n99,Smith on the vote today,politics\n")
    # the file's hash no longer matches the record
    assert "differs from the file the run was trained on" in error(run + ["--forget", "entity:Smith", "--min-forget", "3"])


def test_labels_sharing_a_first_token_fail_and_multi_token_labels_are_named(setup, capsys):
    tmp, _, mdir = setup
    data = tmp / "two.jsonl"
    data.write_text("".join(json.dumps({"text": f"the {w} match", "label": lab}) + "\n"
                            for w, lab in [("goal", "very good"), ("team", "very bad")] * 10))
    assert main(["spul", "finetune", "--model", str(mdir), "--data", f"jsonl:{data}", "--out", str(tmp / "z")]) == 2
    assert "start with the same token" in capsys.readouterr().err
    tok = tiny_tokenizer(["very good bad"])
    note = multi_token_note(tok, ["very good", "bad"])
    assert "'very good' (2 tokens)" in note and "'bad'" not in note
    assert multi_token_note(tok, ["good", "bad"]) is None


def test_jsonl_integer_labels_template_file_and_old_spelling(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": f"t {i}", "label": i % 3}) + "\n" for i in range(30)))
    td = load_task(DataConfig(data=f"jsonl:{data}"))
    assert td.task.labels == ("0", "1", "2") and td.template.name == "topic" and td.train[0]["id"].startswith("row-")
    old = load_task(DataConfig(data="jsonl", data_file=str(data)))
    assert old.sha256 == td.sha256 and old.source == f"jsonl:{data.resolve()}"
    template = tmp_path / "genre.json"
    template.write_text(json.dumps({"prompt": "{text}\nGenre:", "label_words": {"0": "sport", "1": "tech", "2": "arts"}}))
    td = load_task(DataConfig(data=f"jsonl:{data}", template=str(template)))
    assert td.task.labels == ("arts", "sport", "tech") and {ex["label"] for ex in td.train} <= {"arts", "sport", "tech"}
    assert td.task.format_prompt({"text": "x {y}"}) == "x {y}\nGenre:"
    rt = load_task(DataConfig(n_train=10, n_test=10))
    assert rt.template.name == "sentiment" and rt.task.labels == ("positive", "negative")
    with pytest.raises(ValueError, match="mcqa template needs multiple-choice"):
        load_task(DataConfig(data=f"jsonl:{data}", template="mcqa"))


# --------------------------------------------------------------------------- benchmarks/spul_tradeoff.py
@pytest.fixture(scope="module")
def tradeoff(load_benchmark):
    return load_benchmark("spul_tradeoff")


def test_pareto_front_keeps_the_undominated_points(tradeoff):
    def point(retain, forget):
        return {"accuracy": {"train_retain": {"mean": retain}, "train_forget": {"mean": forget}}}

    points = [point(0.9, 0.5), point(0.8, 0.2), point(0.7, 0.3), point(0.9, 0.6), point(0.5, None)]
    assert tradeoff.pareto_front(points, "train_retain", "train_forget") == [0, 1]


def test_closest_to_pattern_measures_how_far_each_method_misses_the_papers_bounds(tradeoff):
    def point(method, retain, forget):
        return {"method": method, "settings": {"lr": 1e-3}, "accuracy": {"train_retain": {"mean": retain},
                                                                         "train_forget": {"mean": forget}}}

    points = [point("spul", 0.70, 0.10), point("spul", 0.78, 0.40), point("ga_gd", 0.79, 0.15), point("ga", 0.5, None)]
    best = tradeoff.closest_to_pattern(points, {"train_retain": 0.80})
    assert [(b["method"], b["point"], b["meets"]) for b in best] == [("ga_gd", 2, True), ("spul", 0, False)]
    # spul point 0 misses only the retain bound (0.77 - 0.70); point 1 misses the forget bound by 0.20.
    assert best[1]["misses_by"] == {"forget": 0.0, "retain": 0.07}
    assert tradeoff.closest_to_pattern(points, None) == []


def test_tradeoff_grid_on_a_tiny_model(setup, tradeoff):
    tmp, data, mdir = setup
    s1 = stage1(tmp, data, mdir)
    out = tmp / "tradeoff"
    assert tradeoff.main(["--out", str(out), "--stage1", str(s1), "--forget", "entity:Smith", "--min-forget", "3",
                          "--seeds", "0,1", "--spul-lr", "1e-2", "--spul-epochs", "1", "--spul-tokens", "2",
                          "--spul-encoder-hidden", "8", "--spul-batch-size", "4", "--baselines", "ga_gd",
                          "--baseline-lr", "1e-3", "--baseline-epochs", "1", "--baseline-batch-size", "4",
                          "--lora-r", "2", "--lora-alpha", "4"]) == 0
    record = json.loads((out / "tradeoff.json").read_text())
    assert [(r["method"], r["seed"]) for r in record["runs"]] == [("spul", 0), ("spul", 1), ("ga_gd", 0), ("ga_gd", 1)]
    assert all(r["peak_rss_mb"] > 0 and set(r["accuracy"]) >= {"train_retain", "train_forget"} for r in record["runs"])
    assert [p["seeds"] for p in record["points"]] == [[0, 1], [0, 1]]
    assert record["pareto_train"] and set(record["stage1_accuracy"]) >= {"test_retain", "test_forget"}
    assert (out / "tradeoff.png").stat().st_size > 0
    assert main(["spul", "evaluate", record["runs"][0]["out"], "--out", str(tmp / "e")]) == 0  # each point is a run

    # A sweep run in two pieces and merged gives the same points as the sweep in one piece.
    (tmp / "part").mkdir()
    part = json.loads((out / "tradeoff.json").read_text())
    part["runs"] = part["runs"][2:]
    (tmp / "part" / "tradeoff.json").write_text(json.dumps(part))
    first = dict(record, runs=record["runs"][:2])
    (tmp / "first").mkdir()
    (tmp / "first" / "tradeoff.json").write_text(json.dumps(first))
    assert tradeoff.main(["--merge", str(tmp / "first"), str(tmp / "part"), "--out", str(tmp / "merged")]) == 0
    merged = json.loads((tmp / "merged" / "tradeoff.json").read_text())
    assert merged["points"] == record["points"] and merged["pareto_train"] == record["pareto_train"]
    table = tradeoff.markdown(merged)
    rows = [line for line in table if line.startswith("|")]
    assert len(rows) == 2 + 1 + len(record["points"]) and rows[3].startswith("| spul | 0.01 | 1 | 2 |")
    assert {c["method"] for c in merged["closest_to_pattern"]} == {"spul", "ga_gd"}
    assert sum("Closest" in line for line in table) == 2
    other = dict(part, args={**part["args"], "forget": "cluster:2:1"})
    (tmp / "part" / "tradeoff.json").write_text(json.dumps(other))
    with pytest.raises(SystemExit, match="forget spec"):
        tradeoff.main(["--merge", str(tmp / "first"), str(tmp / "part"), "--out", str(tmp / "merged2")])
