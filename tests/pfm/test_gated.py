"""adapt="gated": one LoRA per class, run only for samples that hold the class's prompt, deleted with it."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from promptforget.audit import key_recovery as kr
from promptforget.pfm.config import PFMConfig
from promptforget.pfm.model import WEIGHTS_NAME, PFMModel, forget_run
from promptforget.pfm.objective import pfm_loss
from promptforget.store import ledger
from promptforget.store.artefact import Safetensors

CLASSES = ["cat", "dog", "St. Louis", "emu"]


def make(backbone_dir, adapt="gated", **kw):
    return PFMModel(PFMConfig(backbone=backbone_dir, class_names=CLASSES, adapt=adapt, lora_dropout=0.0, **kw))


def randomise_adapters(m, scale=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.class_adapters.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return m


def pixels(n=4, seed=0):
    return {"pixel_values": torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))}


def sets(rows):
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    mask = torch.tensor([[True] * len(r) + [False] * (width - len(r)) for r in rows])
    return ids, mask


def test_only_the_adapters_are_new_trainable_weights(tiny_vit_dir):
    m, frozen = make(tiny_vit_dir), make(tiny_vit_dir, adapt="frozen")
    assert sorted(m.class_adapters.keys()) == sorted(m.prompts.keys())
    assert not any(p.requires_grad for p in m.backbone.parameters())
    # one rank-4 LoRA on query and value of both blocks, per class (hidden 32)
    per_class = 2 * 2 * (4 * 32 + 32 * 4)
    assert m.num_parameters() == frozen.num_parameters() + len(CLASSES) * per_class
    # B starts at zero: untrained adapters change nothing, so the model starts as the frozen one
    x = pixels()
    with torch.no_grad():
        torch.testing.assert_close(m.eval()(x), frozen.eval()(x), rtol=0, atol=0)


def test_a_sample_runs_exactly_the_adapters_of_its_prompt_set(tiny_vit_dir):
    m = randomise_adapters(make(tiny_vit_dir)).eval()
    x = pixels()
    rows = [[0, 2], [1], [3, 0, 1], [2]]
    ids, mask = sets(rows)
    with torch.no_grad():
        batched = m(x, ids, mask)
        alone = torch.cat([m({"pixel_values": x["pixel_values"][i:i + 1]}, *sets([r])) for i, r in enumerate(rows)])
        torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)
        # changing the adapter of class 1 moves the samples that hold prompt 1, and only those
        m.class_adapters["dog"].lora_B[0].add_(1.0)
        moved = m(x, ids, mask)
    changed = (moved - batched).abs().amax(1) > 1e-4
    assert changed.tolist() == [False, True, True, False]


def test_training_step_reaches_the_adapters(tiny_vit_dir):
    m = make(tiny_vit_dir).train()
    loss, _ = pfm_loss(m, pixels(8), torch.tensor([0, 1, 2, 3] * 2), generator=torch.Generator().manual_seed(0))
    loss.backward()
    grads = [p.grad for p in m.class_adapters.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_forget_deletes_prompt_and_adapter_in_memory_and_on_disk(tiny_vit_dir, tmp_path):
    m = randomise_adapters(make(tiny_vit_dir))
    run = tmp_path / "run"
    m.save_pretrained(run)
    names = set(load_file(str(run / WEIGHTS_NAME)))
    assert {n for n in names if n.startswith("class_adapters.St%2E Louis.")}
    loaded = PFMModel.from_pretrained(run)
    x = pixels()
    with torch.no_grad():
        torch.testing.assert_close(m.eval()(x), loaded(x), rtol=0, atol=0)
    secret = m.class_adapters["St%2E Louis"].lora_B[1].detach().numpy().tobytes()
    assert secret in (run / WEIGHTS_NAME).read_bytes()

    forget_run(run, ["St. Louis"], model=loaded)
    assert "St%2E Louis" not in loaded.class_adapters and loaded.forgotten_classes == ["St. Louis"]
    left = set(load_file(str(run / WEIGHTS_NAME)))
    assert not {n for n in left if "St%2E Louis" in n}
    assert {n for n in left if n.startswith("class_adapters.cat.")}
    assert secret not in (run / WEIGHTS_NAME).read_bytes()
    assert ledger.verify(run)["ok"]
    again = PFMModel.from_pretrained(run)
    with torch.no_grad():
        torch.testing.assert_close(again(x), loaded(x), rtol=0, atol=0)


def test_ledger_check_flags_a_forgotten_class_adapter_left_in_the_artefact(tiny_vit_dir, tmp_path):
    m = randomise_adapters(make(tiny_vit_dir))
    run = tmp_path / "run"
    m.save_pretrained(run)
    forget_run(run, ["dog"])
    entries = ledger.Ledger(run).read()
    sd = load_file(str(run / WEIGHTS_NAME))
    sd["class_adapters.dog.lora_A.0"] = torch.zeros(4, 32)
    save_file(sd, str(tmp_path / "tampered.safetensors"))
    st = Safetensors.parse((tmp_path / "tampered.safetensors").read_bytes(), "tampered")
    problems = ledger.forgotten_prompt_problems(entries, st)
    assert any("'dog'" in p and "adapter" in p for p in problems)


def test_loading_refuses_an_adapter_without_its_prompt(tiny_vit_dir, tmp_path):
    m = make(tiny_vit_dir)
    m.save_pretrained(tmp_path / "run")
    w = tmp_path / "run" / WEIGHTS_NAME
    sd = load_file(str(w))
    del sd["prompts.emu"]
    save_file(sd, str(w), metadata={"format": "promptforget-pfm", "format_version": "1",
                                    "backbone_sha256": m.backbone_sha256})
    with pytest.raises(ValueError, match="adapter tensors of a class without a prompt"):
        PFMModel.from_pretrained(tmp_path / "run")


def test_attacks_see_the_remaining_adapters_and_a_fresh_key_gets_none(tiny_vit_dir):
    m = randomise_adapters(make(tiny_vit_dir)).eval()
    m.forget(["dog"])
    remaining = list(m.class_adapters.parameters())
    assert len(m.adapter_parameters()) == len(remaining) == 3 * 2 * 2 * 2
    attacker = kr.with_fresh_prompt(m, "dog", seed=0)
    assert "dog" in attacker.active_classes and "dog" not in attacker.class_adapters
    x = pixels()
    with torch.no_grad():
        logits = attacker(x)  # the fresh prompt runs with no adapter behind it
    assert logits.shape == (4, len(CLASSES)) and torch.isfinite(logits).all()


def test_gated_needs_token_prompts_and_the_pfm_objective():
    with pytest.raises(ValueError, match="gated"):
        PFMConfig(class_names=CLASSES, adapt="gated", prompt_style="prefix")
    with pytest.raises(ValueError, match="gated"):
        PFMConfig(class_names=CLASSES, adapt="gated", objective="plain")


def test_train_then_exact_forget_a_gated_run(tiny_bert_dir, tmp_path, word_csv):
    """The CLI-level path end to end: train, instant forget (prompt and adapter gone), then the exact
    retrain, whose artefact holds no tensor of the class and passes the ledger check."""
    from promptforget.pfm.exact import exact_forget
    from promptforget.pfm.run import train_run

    data = word_csv(tmp_path / "toy.csv", {"red": "apple cherry blood fire", "blue": "sky sea ocean ice",
                                           "green": "grass leaf frog moss"}, per_class=10)
    run = train_run(tmp_path / "run", f"csv:{data}", test_size=0.3, backbone=tiny_bert_dir, adapt="gated",
                    epochs=1, batch_size=8, max_length=16)
    trained = load_file(str(run / WEIGHTS_NAME))
    assert any(k.startswith("class_adapters.blue.") for k in trained)
    assert any(trained[k].abs().sum() > 0 for k in trained if k.startswith("class_adapters.blue.lora_B"))
    exact_forget(run, ["blue"], log=lambda *_: None)
    after = load_file(str(run / WEIGHTS_NAME))
    assert not any("blue" in k for k in after) and any(k.startswith("class_adapters.red.") for k in after)
    report = ledger.verify(run)
    assert report["ok"], report["problems"]
    m = PFMModel.from_pretrained(run)
    assert m.config.adapt == "gated" and sorted(m.active_classes) == ["green", "red"]
    assert set(m.predict(["apple cherry fire", "grass leaf moss"])) <= {"red", "green", "blue"}
