"""Two CPU processes (gloo, via torchrun + Accelerate) must train exactly what one process trains
with the same global batch: same data order, same prompt sets, averaged gradients."""

import os
import socket
import subprocess
import sys
import textwrap

import torch
from safetensors.torch import load_file

SCRIPT = textwrap.dedent(
    """
    import sys, torch
    from safetensors.torch import save_file
    from promptforget.pfm import PFMConfig, PFMModel, fit

    backbone, out = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    model = PFMModel(PFMConfig(backbone=backbone, class_names=["a", "b", "c", "d"], lora_dropout=0.0,
                               batch_size=8, epochs=2, lr=1e-2, seed=7))
    g = torch.Generator().manual_seed(1)
    x = {"pixel_values": torch.randn(32, 3, 16, 16, generator=g)}
    y = torch.arange(32) % 4
    history = fit(model, x, y, progress=False)
    import os
    if int(os.environ.get("RANK", "0")) == 0:
        save_file(model.trainable_state_dict(), out)
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_matches_single_process(tiny_vit_dir, tmp_path):
    script = tmp_path / "train_tiny.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    single, multi = tmp_path / "single.safetensors", tmp_path / "multi.safetensors"
    r = subprocess.run([sys.executable, str(script), tiny_vit_dir, str(single)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
         f"--master_port={_free_port()}", str(script), tiny_vit_dir, str(multi)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = load_file(str(single)), load_file(str(multi))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=lambda m: f"{k}: {m}")
    # training really moved the weights: this is not a comparison of two untouched models
    from promptforget.pfm import PFMConfig, PFMModel

    fresh = PFMModel(PFMConfig(backbone=tiny_vit_dir, class_names=["a", "b", "c", "d"], lora_dropout=0.0, seed=7))
    changed = sum(not torch.allclose(v, a[k]) for k, v in fresh.trainable_state_dict().items())
    assert changed >= 3
