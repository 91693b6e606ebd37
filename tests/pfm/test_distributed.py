"""Two CPU processes (gloo, via torchrun + Accelerate) must train exactly what one process trains
with the same global batch: same data order, same prompt sets and decoy keys, averaged gradients."""

import textwrap

import torch
from safetensors.torch import load_file

SCRIPT = textwrap.dedent(
    """
    import sys, torch
    from safetensors.torch import save_file
    from promptforget.pfm import PFMConfig, PFMModel, fit

    out, backbone = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    model = PFMModel(PFMConfig(backbone=backbone, class_names=["a", "b", "c", "d"], lora_dropout=0.0,
                               batch_size=8, epochs=2, lr=1e-2, seed=7, decoy_share=0.5, decoy_steps=1))
    g = torch.Generator().manual_seed(1)
    x = {"pixel_values": torch.randn(32, 3, 16, 16, generator=g)}
    y = torch.arange(32) % 4
    history = fit(model, x, y, progress=False)
    import os
    if int(os.environ.get("RANK", "0")) == 0:
        save_file(model.trainable_state_dict(), out)
    """
)


def test_two_process_ddp_matches_single_process(tiny_vit_dir, one_and_two_processes):
    single, multi = one_and_two_processes(SCRIPT, tiny_vit_dir)
    a, b = load_file(str(single)), load_file(str(multi))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=lambda m: f"{k}: {m}")
    # training really moved the weights: this is not a comparison of two untouched models
    from promptforget.pfm import PFMConfig, PFMModel

    fresh = PFMModel(PFMConfig(backbone=tiny_vit_dir, class_names=["a", "b", "c", "d"], lora_dropout=0.0, seed=7))
    changed = sum(not torch.allclose(v, a[k]) for k, v in fresh.trainable_state_dict().items())
    assert changed >= 3
