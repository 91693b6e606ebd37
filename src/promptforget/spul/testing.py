"""Tiny random-weight Llama + word-level tokenizer for fast tests and examples (no downloads)."""

from __future__ import annotations

import re

_TEMPLATE_WORDS = (
    "### Text : Question What is the sentiment of the given text ? Sentiment Answer Choices A B C D . "
    "positive negative neutral unknown topic Topic"
)


def tiny_tokenizer(extra_texts=()):
    """Word-level tokenizer over the prompt template words plus every word in ``extra_texts``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words: list[str] = ["[PAD]", "[UNK]", "[EOS]"]
    for t in (_TEMPLATE_WORDS, *extra_texts):
        for w in re.findall(r"\w+|[^\w\s]+", t):
            if w not in words:
                words.append(w)
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.decoder = decoders.WordPiece(prefix="\u2581\u2581")  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="[PAD]", unk_token="[UNK]", eos_token="[EOS]")


def tiny_llama(vocab_size: int, hidden: int = 32, layers: int = 2, seed: int = 0, initializer_range: float = 0.2):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
        pad_token_id=0, eos_token_id=2, bos_token_id=2, initializer_range=initializer_range,
    )
    model = LlamaForCausalLM(cfg)
    model.eval()
    return model
