"""Export: a run as a directory that plain transformers (and PEFT, for the LoRA) load without promptforget."""

import json
import os
import subprocess
import sys

import pytest
import torch
from transformers import AutoModel, AutoModelForImageClassification, AutoModelForSequenceClassification, AutoTokenizer

from promptforget.pfm.config import PFMConfig
from promptforget.pfm.export import ADAPTER_DIR, export_run
from promptforget.pfm.model import PFMModel, forget_run

CLASSES = ["alpha", "beta", "gamma", "delta"]
TEXTS = ["a short one", "a somewhat longer sentence about nothing in particular", "third"]


@pytest.fixture(autouse=True)
def _own_modules_cache(tmp_path, monkeypatch):
    # trust_remote_code copies the shipped code into HF_MODULES_CACHE; a subprocess reads this one.
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "hf_modules"))


def make_run(backbone, path, **config):
    m = PFMModel(PFMConfig(backbone=backbone, class_names=CLASSES, max_length=16, **config))
    with torch.no_grad():  # non-trivial LoRA, prompts and head, so equal logits mean something
        for p in m.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.2)
    m.save_pretrained(path)
    return path


def files_bytes(d):
    return {p: p.read_bytes() for p in d.rglob("*") if p.is_file()}


def assert_same_logits(ours, theirs):
    assert torch.equal(torch.isinf(ours), torch.isinf(theirs))
    torch.testing.assert_close(theirs[ours.isfinite()], ours[ours.isfinite()], rtol=0, atol=1e-5)


@pytest.mark.parametrize("family,style,layer", [
    ("bert", "token", 0), ("bert", "prefix", 1), ("vit", "token", 1), ("dinov2", "prefix", 0), ("dinov2", "token", 0),
])
def test_export_logits_equal_pfm_and_forgotten_class_is_gone(family, style, layer, request, tmp_path):
    backbone = request.getfixturevalue(f"tiny_{family}_dir")
    run = make_run(backbone, tmp_path / "run", prompt_style=style, prompt_layer=layer)
    secret = PFMModel.from_pretrained(run).prompt_of("beta").numpy().tobytes()
    forget_run(run, ["beta"])
    out = export_run(run, tmp_path / "export")

    ours = PFMModel.from_pretrained(run)
    if family == "bert":
        x = ours.preprocess(TEXTS)
        exported = AutoModelForSequenceClassification.from_pretrained(out, trust_remote_code=True).eval()
    else:
        size = 28 if family == "dinov2" else 16
        x = {"pixel_values": torch.randn(3, 3, size, size)}
        exported = AutoModelForImageClassification.from_pretrained(out, trust_remote_code=True).eval()
    with torch.no_grad():
        expected, got = ours(x, mask_forgotten=True), exported(**x).logits
    assert_same_logits(expected, got)
    assert torch.isinf(got[:, CLASSES.index("beta")]).all()
    assert "beta" not in {CLASSES[i] for i in got.argmax(1).tolist()}
    # not one byte of the forgotten prompt anywhere in the export (model, adapter, config, code)
    assert not any(secret in b for b in files_bytes(out).values())
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"]["1"] == "beta (forgotten)" and config["forgotten_classes"] == ["beta"]
    assert config["id2label"]["0"] == "alpha" and config["label2id"]["beta (forgotten)"] == 1
    # no path of this machine: the local backbone is shipped in base_model/, the run named by its name
    assert config["base_model_name_or_path"] == "base_model" and (out / "base_model" / "config.json").is_file()
    assert config["promptforget"]["source_run"] == "run"
    texts = [p.read_text() for p in out.rglob("*") if p.suffix in (".json", ".md")]
    assert not any(str(tmp_path) in t or backbone in t for t in texts)
    assert "beta" in (out / "README.md").read_text()  # the run's model card
    assert config["base_model_sha256"] == json.loads((run / "pfm_config.json").read_text())["backbone"]["sha256"]


def test_lora_is_a_standard_peft_adapter(tiny_bert_dir, tmp_path):
    from peft import PeftModel

    run = make_run(tiny_bert_dir, tmp_path / "run")
    out = export_run(run, tmp_path / "export")
    assert {p.name for p in (out / ADAPTER_DIR).iterdir()} >= {"adapter_config.json", "adapter_model.safetensors"}
    adapter = json.loads((out / ADAPTER_DIR / "adapter_config.json").read_text())
    assert adapter["peft_type"] == "LORA" and adapter["r"] == 4 and adapter["base_model_name_or_path"] == "base_model"

    ours = PFMModel.from_pretrained(run)
    base = AutoModel.from_pretrained(out / adapter["base_model_name_or_path"], attn_implementation="sdpa")
    peft_model = PeftModel.from_pretrained(base, str(out / ADAPTER_DIR)).eval()
    x = ours.preprocess(TEXTS)
    with torch.no_grad():
        expected = ours.backbone(**x).last_hidden_state
        got = peft_model(**x).last_hidden_state
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    # and the adapter matters: without it the outputs differ
    with torch.no_grad(), peft_model.disable_adapter():
        assert not torch.allclose(peft_model(**x).last_hidden_state, expected, atol=1e-3)


LOAD_WITHOUT_PROMPTFORGET = """
import sys
sys.modules["promptforget"] = None  # any `import promptforget` now fails
try:
    import promptforget
except ImportError:
    pass
else:
    raise SystemExit("promptforget is importable")
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
out, texts, result = sys.argv[1], sys.argv[2].split("|"), sys.argv[3]
model = AutoModelForSequenceClassification.from_pretrained(out, trust_remote_code=True).eval()
tokenizer = AutoTokenizer.from_pretrained(out)
x = tokenizer(texts, padding=True, truncation=True, max_length=model.config.max_length, return_tensors="pt")
with torch.no_grad():
    logits = model(**x).logits
torch.save({"logits": logits, "labels": [model.config.id2label[i] for i in logits.argmax(1).tolist()]}, result)
"""


def test_export_loads_where_promptforget_cannot_be_imported(tiny_bert_dir, tmp_path):
    run = make_run(tiny_bert_dir, tmp_path / "run")
    forget_run(run, ["gamma"])
    out = export_run(run, tmp_path / "export")
    result = tmp_path / "result.pt"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    r = subprocess.run([sys.executable, "-c", LOAD_WITHOUT_PROMPTFORGET, str(out), "|".join(TEXTS), str(result)],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    got = torch.load(result)
    ours = PFMModel.from_pretrained(run)
    with torch.no_grad():
        expected = ours(ours.preprocess(TEXTS), mask_forgotten=True)
    assert_same_logits(expected, got["logits"])
    assert "gamma" not in got["labels"]


def test_export_equals_the_run_for_inputs_longer_than_max_length(tiny_bert_dir, tmp_path):
    run = make_run(tiny_bert_dir, tmp_path / "run")  # max_length 16
    out = export_run(run, tmp_path / "export")
    texts = [" ".join(["word"] * 40) + " and more about the weather", "short", "a text of middling length here"]
    ours = PFMModel.from_pretrained(run)
    tokenizer = AutoTokenizer.from_pretrained(out)
    exported = AutoModelForSequenceClassification.from_pretrained(out, trust_remote_code=True).eval()
    assert tokenizer.model_max_length == 16
    with torch.no_grad():
        expected = ours(ours.preprocess(texts), mask_forgotten=True)
        cut = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")  # at model_max_length
        whole = tokenizer(texts, padding=True, return_tensors="pt")  # not cut: the model cuts it
        assert cut["input_ids"].shape[1] == 16 and whole["input_ids"].shape[1] > 40
        assert_same_logits(expected, exported(**cut).logits)
        assert_same_logits(expected, exported(**whole).logits)


def test_a_backbone_with_a_hub_id_is_named_not_copied(tiny_bert_dir, tmp_path, monkeypatch):
    from promptforget.pfm import export

    monkeypatch.setitem(export.HUB_IDS, tiny_bert_dir, "some-org/tiny-bert")
    out = export_run(make_run(tiny_bert_dir, tmp_path / "run"), tmp_path / "export")
    config = json.loads((out / "config.json").read_text())
    assert config["base_model_name_or_path"] == config["base_model_hub_id"] == "some-org/tiny-bert"
    assert json.loads((out / ADAPTER_DIR / "adapter_config.json").read_text())["base_model_name_or_path"] == \
        "some-org/tiny-bert"
    assert not (out / "base_model").exists() and "base_model: some-org/tiny-bert" in (out / "README.md").read_text()


def test_export_refuses_a_non_empty_target_and_leaves_it_alone(tiny_vit_dir, tmp_path):
    run = make_run(tiny_vit_dir, tmp_path / "run")
    target = tmp_path / "export"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not an empty directory"):
        export_run(run, target)
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    assert not list(tmp_path.glob(".export.*"))


def test_export_of_a_missing_run_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a (PFM|promptforget) run directory"):
        export_run(tmp_path / "nothing", tmp_path / "export")


def test_frozen_run_exports_without_adapter(tiny_vit_dir, tmp_path):
    run = make_run(tiny_vit_dir, tmp_path / "run", adapt="frozen")
    out = export_run(run, tmp_path / "export")
    assert not (out / ADAPTER_DIR).exists()
    x = {"pixel_values": torch.randn(2, 3, 16, 16)}
    with torch.no_grad():
        expected = PFMModel.from_pretrained(run)(x, mask_forgotten=True)
        got = AutoModelForImageClassification.from_pretrained(out, trust_remote_code=True).eval()(**x).logits
    assert_same_logits(expected, got)
