import pytest
import torch

from promptforget.pfm.config import PFMConfig
from promptforget.pfm.model import PFMModel, UnknownClassError
from promptforget.pfm.objective import pfm_loss

CLASSES = ["alpha", "beta", "St. Louis", "delta"]


def make(backbone_dir, adapt="lora", tokens=1, classes=CLASSES, image_size=None):
    return PFMModel(PFMConfig(backbone=backbone_dir, class_names=list(classes), adapt=adapt, prompt_tokens=tokens,
                              image_size=image_size, max_length=16))


def pixels(n=3, size=16, seed=0):
    return {"pixel_values": torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))}


@pytest.mark.parametrize("fixture", ["tiny_vit_dir", "tiny_dinov2_dir"])
def test_image_families_forward_and_lora_targets(fixture, request):
    m = make(request.getfixturevalue(fixture)).eval()
    size = 16 if fixture == "tiny_vit_dir" else 28
    logits = m(pixels(size=size))
    assert logits.shape == (3, len(CLASSES))
    lora = [n for n, p in m.named_parameters() if p.requires_grad and "lora_" in n]
    assert lora and all(("q_proj" in n) or ("v_proj" in n) for n in lora)
    # the frozen backbone does not train
    assert not any(p.requires_grad for n, p in m.named_parameters() if n.startswith("backbone.") and "lora_" not in n)


def test_text_family_uses_query_value(tiny_bert_dir):
    m = make(tiny_bert_dir).eval()
    x = m.preprocess(["a short text", "another, longer text about things"])
    assert m(x).shape == (2, 4)
    lora = [n for n, p in m.named_parameters() if p.requires_grad and "lora_" in n]
    assert lora and all(("query" in n) or ("value" in n) for n in lora)


def test_adapt_modes_change_what_trains(tiny_vit_dir):
    frozen = make(tiny_vit_dir, adapt="frozen")
    full = make(tiny_vit_dir, adapt="full")
    prompt_head = len(CLASSES) * 32 + 32 * len(CLASSES) + len(CLASSES)
    assert frozen.num_parameters() == prompt_head
    assert full.num_parameters() > make(tiny_vit_dir).num_parameters() > prompt_head


def test_prompt_order_does_not_matter_and_masked_slots_are_absent(tiny_vit_dir):
    """No position embedding on prompts; a masked slot must act exactly as a missing one."""
    m = make(tiny_vit_dir).eval()
    x = pixels()
    with torch.no_grad():
        a = m(x, torch.tensor([[0, 2]] * 3), torch.ones(3, 2, dtype=torch.bool))
        b = m(x, torch.tensor([[2, 0]] * 3), torch.ones(3, 2, dtype=torch.bool))
        padded = m(x, torch.tensor([[0, 2, 3]] * 3), torch.tensor([[True, True, False]] * 3))
        other = m(x, torch.tensor([[0, 3]] * 3), torch.ones(3, 2, dtype=torch.bool))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a, padded, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(a, other, atol=1e-4)


def test_cls_is_read_after_the_prompts(tiny_vit_dir):
    """With T tokens per class the head must read position S*T (the CLS), not position 0 (a prompt)."""
    m = make(tiny_vit_dir, tokens=2).eval()
    x = pixels(n=2)
    captured = {}
    m.head.register_forward_hook(lambda mod, inp, out: captured.setdefault("h", inp[0]))
    hidden = {}
    m.encoder.final_norm.register_forward_hook(lambda mod, inp, out: hidden.setdefault("h", out))
    with torch.no_grad():
        m(x, torch.tensor([[1, 3]] * 2), torch.ones(2, 2, dtype=torch.bool))
    torch.testing.assert_close(captured["h"], hidden["h"][:, 4])


def test_default_forward_uses_every_active_prompt(tiny_vit_dir):
    m = make(tiny_vit_dir).eval()
    x = pixels()
    with torch.no_grad():
        full = m(x)
        explicit = m(x, torch.arange(4).expand(3, -1), torch.ones(3, 4, dtype=torch.bool))
    torch.testing.assert_close(full, explicit)


def test_forget_removes_prompt_and_changes_predictions(tiny_vit_dir):
    m = make(tiny_vit_dir).eval()
    x = pixels()
    with torch.no_grad():
        before = m(x)
    assert m.forget(["St. Louis"]) == ["St. Louis"]
    assert m.active_classes == ["alpha", "beta", "delta"] and m.forgotten_classes == ["St. Louis"]
    assert len(m.prompts) == 3 and not any("Louis" in k for k in m.prompts.keys())
    with pytest.raises(UnknownClassError, match="forgotten"):
        m.prompt_of("St. Louis")
    with torch.no_grad():
        after = m(x)
        masked = m(x, mask_forgotten=True)
    assert not torch.allclose(before, after)
    assert torch.isinf(masked[:, 2]).all() and torch.isfinite(masked[:, [0, 1, 3]]).all()
    # a prompt set that names a forgotten class is refused
    with pytest.raises(UnknownClassError):
        m(x, torch.tensor([[2]] * 3), torch.ones(3, 1, dtype=torch.bool))


def test_a_forgotten_class_is_never_predicted_by_default(tiny_bert_dir, tmp_path):
    """predict/predict_proba mask forgotten classes unless asked not to, in memory and after a reload."""
    from promptforget.pfm.model import forget_run

    m = make(tiny_bert_dir).eval()
    with torch.no_grad():
        m.head.bias[CLASSES.index("beta")] = 100.0  # the head alone says "beta" for every input
    texts = ["one text", "another text", "a third, longer text about nothing"]
    assert m.predict(texts) == ["beta"] * 3
    m.save_pretrained(tmp_path / "run")
    m.forget(["beta"])
    reloaded = forget_run(tmp_path / "run", ["beta"])
    for model in (m, reloaded):
        assert "beta" not in model.predict(texts)
        assert (model.predict_proba(texts)[:, CLASSES.index("beta")] == 0).all()
        # the research view still shows what the head says about the forgotten class
        assert model.predict(texts, mask_forgotten=False) == ["beta"] * 3
        assert (model.predict_proba_unmasked(texts).argmax(1) == CLASSES.index("beta")).all()


@pytest.mark.parametrize("bad, match", [(["nope"], "unknown class"), (["alpha", "nope"], "unknown class"),
                                        (["alpha", "alpha"], "duplicate"), ([], "no classes"),
                                        (CLASSES, "at least one class")])
def test_forget_bad_names_change_nothing(tiny_vit_dir, bad, match):
    m = make(tiny_vit_dir)
    keys = list(m.prompts.keys())
    with pytest.raises(ValueError, match=match):
        m.forget(bad)
    assert list(m.prompts.keys()) == keys


def test_forget_twice_is_an_error(tiny_vit_dir):
    m = make(tiny_vit_dir)
    m.forget("beta")
    with pytest.raises(UnknownClassError, match="already forgotten"):
        m.forget("beta")


def test_loss_trains_prompts_lora_and_head(tiny_vit_dir):
    m = make(tiny_vit_dir).train()
    loss, parts = pfm_loss(m, pixels(n=8, seed=3), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3]),
                           torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and parts["ce"] > 0 and parts["kl"] >= 0
    assert m.head.weight.grad is not None and m.head.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in m.named_parameters() if "lora_B" in n)
    assert sum(p.grad is not None and p.grad.abs().sum() > 0 for p in m.prompts.values()) >= 2


def test_config_validation():
    with pytest.raises(ValueError, match="adapt"):
        PFMConfig(adapt="sometimes")
    with pytest.raises(ValueError, match="unique"):
        PFMConfig(class_names=["a", "a"])
    with pytest.raises(ValueError, match="unknown PFMConfig keys"):
        PFMConfig.from_dict({"colour": "red"})


@pytest.mark.parametrize("fixture", ["tiny_vit_dir", "tiny_bert_dir"])
def test_prefix_style_prompts_are_keys_only(fixture, request):
    m = PFMModel(PFMConfig(backbone=request.getfixturevalue(fixture), class_names=CLASSES, prompt_style="prefix",
                           max_length=16)).eval()
    x = pixels() if fixture == "tiny_vit_dir" else m.preprocess(["one text", "two texts here", "three"])
    ones = lambda s: torch.ones(3, s, dtype=torch.bool)  # noqa: E731
    with torch.no_grad():
        a = m(x, torch.tensor([[0, 2]] * 3), ones(2))
        b = m(x, torch.tensor([[2, 0]] * 3), ones(2))
        padded = m(x, torch.tensor([[0, 2, 3]] * 3), torch.tensor([[True, True, False]] * 3))
        other = m(x, torch.tensor([[0, 3]] * 3), ones(2))
        none = m(x, torch.zeros(3, 0, dtype=torch.long), torch.zeros(3, 0, dtype=torch.bool))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a, padded, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(a, other, atol=1e-4) and not torch.allclose(a, none, atol=1e-4)
    # the prompts' key/value projections train through LoRA and the prompt vectors themselves
    m.train()
    loss, _ = pfm_loss(m, x, torch.tensor([0, 1, 2]), torch.Generator().manual_seed(0))
    loss.backward()
    assert sum(p.grad is not None and p.grad.abs().sum() > 0 for p in m.prompts.values()) >= 2


def test_prefix_style_matches_plain_backbone_without_prompts(tiny_vit_dir):
    """With no prompts, both styles are the plain backbone: same CLS, same logits."""
    tok = make(tiny_vit_dir).eval()
    pre = PFMModel(PFMConfig(backbone=tiny_vit_dir, class_names=CLASSES, prompt_style="prefix")).eval()
    pre.load_state_dict(tok.state_dict())
    x = pixels()
    empty = (torch.zeros(3, 0, dtype=torch.long), torch.zeros(3, 0, dtype=torch.bool))
    with torch.no_grad():
        torch.testing.assert_close(tok(x, *empty), pre(x, *empty), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("style", ["token", "prefix"])
def test_prompt_layer_caches_frozen_lower_blocks(tiny_bert_dir, style):
    m = PFMModel(PFMConfig(backbone=tiny_bert_dir, class_names=CLASSES, prompt_layer=1, prompt_style=style,
                           max_length=16)).eval()
    lora = [n for n, p in m.named_parameters() if p.requires_grad and "lora_" in n]
    assert lora and all(".layer.1." in n for n in lora)  # block 0 stays frozen: its output is cacheable
    texts = ["one text", "two texts are here", "three"]
    cached = m.encode_dataset(texts)
    assert set(cached) == {"hidden_states", "key_mask"} and cached["hidden_states"].shape[:2] == (3, 16)
    from promptforget.pfm.train import trim_padding

    with torch.no_grad():
        torch.testing.assert_close(m(m.preprocess(texts)), m(trim_padding(cached)), atol=1e-5, rtol=1e-5)
        no_prompt = m(trim_padding(cached), torch.zeros(3, 0, dtype=torch.long), torch.zeros(3, 0, dtype=torch.bool))
    assert not torch.allclose(m(trim_padding(cached)), no_prompt, atol=1e-4)
    with pytest.raises(ValueError, match="prompt_layer"):
        PFMModel(PFMConfig(backbone=tiny_bert_dir, class_names=CLASSES, prompt_layer=2))


def test_plain_objective_is_a_prompt_free_fine_tune(tiny_vit_dir):
    from promptforget.pfm.train import fit

    m = PFMModel(PFMConfig(backbone=tiny_vit_dir, class_names=CLASSES, objective="plain", epochs=1, batch_size=4))
    before = {k: v.clone() for k, v in m.prompts.items()}
    fit(m, pixels(n=8), torch.arange(8) % 4, progress=False)
    x = pixels()
    empty = (torch.zeros(3, 0, dtype=torch.long), torch.zeros(3, 0, dtype=torch.bool))
    with torch.no_grad():
        torch.testing.assert_close(m(x), m(x, *empty))  # default inference uses no prompt
    assert all(torch.equal(before[k], v) for k, v in m.prompts.items())  # prompts never trained


def test_initialisation_follows_the_seed(tiny_vit_dir):
    a = make(tiny_vit_dir).trainable_state_dict()
    torch.manual_seed(999)  # the caller's RNG state must not matter
    b = make(tiny_vit_dir).trainable_state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    c = PFMModel(PFMConfig(backbone=tiny_vit_dir, class_names=CLASSES, seed=1)).trainable_state_dict()
    assert not torch.equal(a["head.weight"], c["head.weight"])


@pytest.mark.parametrize("style", ["token", "prefix"])
def test_decoy_prompts_join_the_set_only_where_masked_in(tiny_vit_dir, style):
    m = PFMModel(PFMConfig(backbone=tiny_vit_dir, class_names=CLASSES, prompt_style=style)).eval()
    x, ids, mask = pixels(), torch.tensor([[0, 2]] * 3), torch.ones(3, 2, dtype=torch.bool)
    decoys = torch.randn(3, 1, m.encoder.hidden_size, generator=torch.Generator().manual_seed(5))
    on = torch.tensor([True, False, True])
    with torch.no_grad():
        base = m(x, ids, mask)
        with_decoys = m(x, ids, mask, decoy_prompts=decoys, decoy_mask=on)
        # a decoy acts exactly like a class prompt holding the same vector
        m.prompts["beta"].data.copy_(decoys[0])
        as_prompt = m(x, torch.tensor([[0, 2, 1]] * 3), torch.ones(3, 3, dtype=torch.bool))
    torch.testing.assert_close(with_decoys[1], base[1], atol=1e-5, rtol=1e-5)  # masked out: absent
    assert not torch.allclose(with_decoys[0], base[0], atol=1e-4)
    torch.testing.assert_close(with_decoys[0], as_prompt[0], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="decoy_prompts must be"):
        m(x, ids, mask, decoy_prompts=decoys[:2])


def test_decoy_search_raises_the_true_class_and_training_uses_it(tiny_vit_dir):
    from promptforget.pfm.objective import decoy_keys, sample_prompt_sets

    torch.manual_seed(0)
    m = make(tiny_vit_dir).eval()
    x, y = pixels(8), torch.arange(8) % 4
    ids, mask = sample_prompt_sets(y, 4, own=False, generator=torch.Generator().manual_seed(1))

    def ce(keys, on):
        with torch.no_grad():
            return torch.nn.functional.cross_entropy(m(x, ids, mask, decoy_prompts=keys, decoy_mask=on), y)

    k0, on = decoy_keys(m, x, y, ids, mask, 1.0, 0, 0.5, torch.Generator().manual_seed(2))
    k3, on3 = decoy_keys(m, x, y, ids, mask, 1.0, 3, 0.5, torch.Generator().manual_seed(2))
    assert on.all() and torch.equal(on, on3) and not torch.equal(k0, k3)
    assert ce(k3, on) < ce(k0, on)  # the adversarial decoy is a better key than the random one
    assert all(p.grad is None for p in m.parameters())  # the search leaves no gradient on the model
    half, on_half = decoy_keys(m, x, y, ids, mask, 0.5, 0, 0.5, torch.Generator().manual_seed(3))
    assert 0 < int(on_half.sum()) < 8

    m.train()
    loss, _ = pfm_loss(m, x, y, torch.Generator().manual_seed(4), decoy=(0.5, 1, 0.1))
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in m.prompts.values())
    with pytest.raises(ValueError, match="decoy_share"):
        PFMConfig(decoy_share=1.5)


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_lr_schedule(tiny_vit_dir, schedule):
    from promptforget.pfm.train import fit

    m = PFMModel(PFMConfig(backbone=tiny_vit_dir, class_names=CLASSES, epochs=3, batch_size=4, lr=1e-2,
                           lr_schedule=schedule))
    lrs = [log["lr"] for log in fit(m, pixels(n=8), torch.arange(8) % 4, progress=False)]
    if schedule == "constant":
        assert lrs == [1e-2] * 3
    else:  # 6 steps: after 2, 4 and 6 of them the factor is 0.75, 0.25 and 0
        assert lrs == pytest.approx([0.75e-2, 0.25e-2, 0.0], abs=1e-9)
    with pytest.raises(ValueError, match="lr_schedule"):
        PFMConfig(lr_schedule="linear")


def test_view_b_sizes_reach_training(tiny_vit_dir):
    from promptforget.pfm.train import fit

    heads = []
    for sizes in ("uniform", "harmonic"):
        m = PFMModel(PFMConfig(backbone=tiny_vit_dir, class_names=CLASSES, epochs=1, batch_size=8, lr=1e-2,
                               view_b_sizes=sizes))
        fit(m, pixels(n=8), torch.arange(8) % 4, progress=False)
        heads.append(m.head.weight.detach().clone())
    # Same seed, same data: only the view-B set sizes differ, so the trained weights must too.
    assert not torch.allclose(heads[0], heads[1])
    assert PFMConfig.from_dict(m.config.to_dict()).view_b_sizes == "harmonic"
    with pytest.raises(ValueError, match="view_b_sizes"):
        PFMConfig(view_b_sizes="small")


def test_token_prompts_grouped_by_set_size_match_one_padded_forward(tiny_vit_dir):
    """Token style runs a batch as a few forwards grouped by prompt-set size; every sample's logits and
    the PFM loss must equal those of one forward padded to the largest set."""
    m = PFMModel(PFMConfig(backbone=tiny_vit_dir, class_names=[f"c{i}" for i in range(12)], lora_dropout=0.0)).eval()
    g = torch.Generator().manual_seed(3)
    x = pixels(n=24, seed=4)
    ids = torch.stack([torch.randperm(12, generator=g) for _ in range(24)])
    mask = torch.rand(24, 12, generator=g) < torch.rand(24, 1, generator=g)  # sizes 0..12, holes anywhere
    y = torch.arange(24) % 12

    def run(groups):
        m.prompt_size_groups = groups
        logits = m(x, ids, mask)
        loss, _ = pfm_loss(m, x, y, torch.Generator().manual_seed(5))
        return logits, loss

    one_logits, one_loss = run(1)
    grouped_logits, grouped_loss = run(8)
    torch.testing.assert_close(grouped_logits, one_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grouped_loss, one_loss, atol=1e-5, rtol=1e-5)
    # and each sample alone, with only its real prompts, gives the same answer
    for i in (0, 7, 23):
        alone = m({"pixel_values": x["pixel_values"][i : i + 1]}, ids[i : i + 1, mask[i]], None)
        torch.testing.assert_close(alone[0], one_logits[i], atol=1e-5, rtol=1e-5)
    m.prompt_size_groups = 8
    groups = PFMModel.size_groups(mask.sum(1), 5, 1, 8)
    assert 1 < len(groups) <= 8 and torch.equal(torch.cat(groups).sort().values, torch.arange(24))


def test_size_groups_minimise_padded_tokens():
    sizes = torch.tensor([9, 0, 1, 9, 0, 8])
    groups = PFMModel.size_groups(sizes, seq_len=2, tokens_per_prompt=1, max_groups=2)
    assert [sorted(g.tolist()) for g in groups] == [[1, 2, 4], [0, 3, 5]]
    assert len(PFMModel.size_groups(sizes, 2, 1, 10)) == 4  # never more groups than distinct sizes
    assert PFMModel.size_groups(torch.zeros(0, dtype=torch.long), 2, 1, 4) == []


def test_hf_image_processor_trains_predicts_and_exports(tiny_vit_dir, tmp_path):
    import json
    import shutil

    import numpy as np
    from transformers import AutoImageProcessor

    from promptforget.backbones.image_processing import HFImagePreprocessor, ImagePreprocessor
    from promptforget.pfm.export import export_run
    from promptforget.pfm.train import fit

    backbone = shutil.copytree(tiny_vit_dir, tmp_path / "vit")
    (backbone / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "ViTImageProcessor", "size": {"height": 224, "width": 224}, "resample": 2,
        "do_resize": True, "do_rescale": True, "do_normalize": True, "image_mean": [0.5] * 3, "image_std": [0.5] * 3,
    }))
    config = PFMConfig(backbone=str(backbone), class_names=CLASSES, image_size=16, image_processor="hf",
                       batch_size=8, epochs=1)
    m = PFMModel(config)
    assert isinstance(m.image_preprocessor, HFImagePreprocessor)
    assert isinstance(PFMModel(PFMConfig(backbone=str(backbone), class_names=CLASSES)).image_preprocessor,
                      ImagePreprocessor)
    images = np.random.default_rng(0).integers(0, 256, size=(8, 20, 20), dtype=np.uint8)
    inputs = m.encode_dataset(images)
    assert inputs["pixel_values"].shape == (8, 3, 16, 16)
    before = m.head.weight.detach().clone()
    logs = fit(m, inputs, torch.tensor([0, 1, 2, 3] * 2), progress=False)
    assert len(logs) == 1 and not torch.equal(before, m.head.weight)
    assert set(m.predict(images)) <= set(CLASSES)

    m.save_pretrained(tmp_path / "run")
    assert PFMModel.from_pretrained(tmp_path / "run").config.image_processor == "hf"
    out = export_run(tmp_path / "run", tmp_path / "export")
    assert json.loads((out / "config.json").read_text())["image_processor"] == "hf"
    exported = AutoImageProcessor.from_pretrained(out)  # the run's transform, not the base model's 224 px
    rgb = list(np.repeat(images[..., None], 3, axis=-1))
    assert torch.equal(exported(rgb, return_tensors="pt")["pixel_values"], m.preprocess(images)["pixel_values"])


def test_reverse_gradient_negates_only_the_backward():
    from promptforget.pfm.objective import ReverseGradient

    x = torch.randn(3, 4, requires_grad=True)
    y = ReverseGradient.apply(x)
    torch.testing.assert_close(y, x)
    (y * torch.arange(4.0)).sum().backward()
    torch.testing.assert_close(x.grad, -torch.arange(4.0).expand(3, 4))


def probe_gradients(tiny_vit_dir, mode: str):
    """A model with an adversary, its inputs, and the gradients of pfm_loss without (0.0) and with (1.0) the
    probe term; eval mode, so the two passes differ only by that term."""
    torch.manual_seed(0)
    m = make(tiny_vit_dir).eval()
    x, y = pixels(8), torch.arange(8) % 4
    m.adversary = torch.nn.Linear(m.encoder.hidden_size, m.num_classes)
    grads, parts = {}, None
    for w in (0.0, 1.0):
        m.zero_grad(set_to_none=True)
        loss, parts = pfm_loss(m, x, y, torch.Generator().manual_seed(4), probe_weight=w, probe_mode=mode)
        loss.backward()
        grads[w] = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
    return m, x, y, grads, parts


def test_adversarial_probe_learns_the_class_and_pushes_the_shared_weights_the_other_way(tiny_vit_dir):
    m, x, y, grads, parts = probe_gradients(tiny_vit_dir, "reverse")
    assert "probe" in parts and torch.isfinite(parts["probe"])
    assert "adversary.weight" in grads[1.0] and "adversary.weight" not in grads[0.0]
    # The probe term alone, on the head: the adversary's own gradient descends its CE, while the gradient
    # reaching the shared weights is the reversed one, so a step there raises the probe's loss.
    lora = [n for n in grads[1.0] if "lora_" in n]
    assert lora and any(not torch.allclose(grads[1.0][n], grads[0.0][n]) for n in lora)

    def probe_ce():
        with torch.no_grad():
            feats = []
            h = m.head.register_forward_hook(lambda mod, inp, out: feats.append(inp[0]))
            ids, mask = torch.zeros(8, 0, dtype=torch.long), torch.zeros(8, 0, dtype=torch.bool)
            m(x, ids, mask)
            h.remove()
            return torch.nn.functional.cross_entropy(m.adversary(feats[0]), y)

    before = probe_ce()
    lora_params = [p for n, p in m.named_parameters() if "lora_" in n]
    with torch.no_grad():  # a small step of the shared weights along the probe term's (reversed) gradient
        for n, p in m.named_parameters():
            if "lora_" in n:
                p -= 0.5 * (grads[1.0][n] - grads[0.0][n])
    assert lora_params and probe_ce() > before


def test_confusion_probe_trains_the_probe_on_detached_features_and_the_shared_weights_towards_uniform(tiny_vit_dir):
    from promptforget.pfm.objective import kl_uniform_to_softmax

    m, x, y, grads, parts = probe_gradients(tiny_vit_dir, "confusion")
    assert parts["confusion"] >= 0 and parts["probe"] > 0
    # The confusion term never reaches the probe (frozen there); the probe's CE never reaches the features.
    assert "adversary.weight" in grads[1.0]
    ids, mask = torch.zeros(8, 0, dtype=torch.long), torch.zeros(8, 0, dtype=torch.bool)
    lora = [n for n in grads[1.0] if "lora_" in n]
    assert lora and any(not torch.allclose(grads[1.0][n], grads[0.0][n]) for n in lora)

    def confusion():
        with torch.no_grad():
            out = []
            hook = m.head.register_forward_hook(lambda mod, inp, o: out.append(inp[0]))
            m(x, ids, mask)
            hook.remove()
            return kl_uniform_to_softmax(m.adversary(out[0]))

    before = confusion()
    with torch.no_grad():  # a small step of the shared weights along the confusion term's gradient
        for n, p in m.named_parameters():
            if "lora_" in n:
                p -= 0.5 * (grads[1.0][n] - grads[0.0][n])
    assert confusion() < before
    with pytest.raises(ValueError, match="probe_mode"):
        PFMConfig(probe_mode="mystery")


def test_adversarial_probe_is_trained_then_dropped(tiny_vit_dir, tmp_path):
    from promptforget.pfm.train import fit

    m = PFMModel(PFMConfig(backbone=tiny_vit_dir, class_names=CLASSES, epochs=2, batch_size=8, lr=1e-2,
                           probe_weight=0.5))
    history = fit(m, pixels(n=8), torch.arange(8) % 4, progress=False)
    assert all("probe" in log and log["probe"] > 0 and log["confusion"] >= 0 for log in history)
    assert not hasattr(m, "adversary")
    plain = PFMModel(PFMConfig(backbone=tiny_vit_dir, class_names=CLASSES))
    assert m.trainable_state_dict().keys() == plain.trainable_state_dict().keys()
    with pytest.raises(ValueError, match="probe_weight"):
        PFMConfig(probe_weight=-1.0)
