"""Export a PFM run as a directory that plain ``transformers`` and ``peft`` load, without promptforget.

    OUT_DIR/
      config.json                 model_type "promptforget-pfm", auto_map to the shipped code, the encoder's
                                  config, id2label over every original class (forgotten ones marked
                                  "NAME (forgotten)"), the active classes, the prompt settings, the run's
                                  max_length, the base model's Hub id (or "base_model") and sha256
      README.md                   the run's model card
      configuration_pfm.py        shipped model code (torch + transformers only), loaded with
      modeling_pfm.py             trust_remote_code=True, as Hub custom models are
      model.safetensors           encoder with the LoRA merged in, prompts of the ACTIVE classes, head
      adapter/                    the LoRA alone, a standard PEFT adapter on the base model:
        adapter_config.json       PeftModel.from_pretrained(AutoModel.from_pretrained(base), OUT_DIR/adapter)
        adapter_model.safetensors
      tokenizer / preprocessor    the base model's, when it has them, the tokenizer truncating at the run's
                                  max_length; with image_processor="hf", the processor the run used
      base_model/                 a copy of the base model when it has no Hub id (a local directory), so
                                  that the export names no path of the machine it was made on

    AutoModelForSequenceClassification.from_pretrained(OUT_DIR, trust_remote_code=True)   # text
    AutoModelForImageClassification.from_pretrained(OUT_DIR, trust_remote_code=True)      # images

Forgotten classes: their prompts are not written (no byte of them is in OUT_DIR), their head rows are
zeroed and their logits are -inf, so the export never predicts them. Its logits equal
``PFMModel(..., mask_forgotten=True)``'s for every input length: the tokenizer's ``model_max_length`` is the
run's ``max_length``, and the model cuts longer inputs as that tokenizer does. The encoder is stored whole (LoRA merged) so the directory
loads on a machine that has no copy of the base model; ``base_model_sha256`` pins which base it was.
The adapter sits in a subfolder because transformers applies an ``adapter_config.json`` found next to
``config.json`` on top of the model, which would add the already merged LoRA a second time.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path

import torch

from promptforget.backbones.encoder import resolve_backbone
from promptforget.pfm.card import CARD_NAME, HUB_IDS, build_model_card
from promptforget.pfm.model import PFMModel
from promptforget.store.layout import WEIGHTS_NAME, require_pfm_run
from promptforget.utils.io import atomic_write_bytes, atomic_write_json, atomic_write_text, fsync_dir

MODEL_TYPE = "promptforget-pfm"
CODE_FILES = ("configuration_pfm.py", "modeling_pfm.py")
AUTO_MODEL = {"text": "AutoModelForSequenceClassification", "image": "AutoModelForImageClassification"}
MODEL_CLASS = {"text": "PFMForSequenceClassification", "image": "PFMForImageClassification"}
ADAPTER_DIR = "adapter"
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
BASE_MODEL_DIR = "base_model"
FORGOTTEN_MARK = " (forgotten)"  # id2label of a forgotten class: never predicted, named so


def export_run(run_dir: str | os.PathLike, out_dir: str | os.PathLike, backbone: str | None = None) -> Path:
    """Write ``run_dir`` as a transformers + PEFT directory at ``out_dir`` (see the module docstring).

    ``backbone`` overrides where to find the frozen base model (same weights, checked by sha256).
    ``out_dir`` must not exist or be empty; it appears complete or not at all. Returns ``out_dir``.
    """
    run_dir, out_dir = require_pfm_run(run_dir), Path(out_dir)
    check_export_dir(out_dir)
    model = PFMModel.from_pretrained(run_dir, backbone=backbone).eval()
    if model.config.adapt in ("full", "gated"):
        raise ValueError("export supports adapt='lora' and 'frozen' runs only (a full fine-tune has no base model "
                         "to adapt; per-class adapters are no PEFT adapter)")
    return write_atomically(out_dir, lambda staging: write_export(model, run_dir, staging))


def check_export_dir(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir} exists and is not an empty directory")


def write_atomically(out_dir: Path, write) -> Path:
    """``write(staging)`` fills a new directory that then appears at ``out_dir`` whole, or not at all."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    os.chmod(staging, 0o755)  # mkdtemp makes it private; the export is an ordinary directory
    try:
        write(staging)
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    fsync_dir(out_dir.parent)
    return out_dir


def write_export(model: PFMModel, run_dir: Path, out_dir: Path) -> None:
    """Code, config, weights, adapter and preprocessing files of ``model`` into the (new) ``out_dir``."""
    from safetensors.torch import save

    cfg = model.config
    modality = model.encoder.modality
    base_path = resolve_backbone(cfg.backbone)
    hub_id = HUB_IDS.get(cfg.backbone) or (None if Path(base_path).exists() else base_path)
    if hub_id is None:  # a local backbone: ship it, so that the adapter's base is found on any machine
        shutil.copytree(base_path, out_dir / BASE_MODEL_DIR, ignore=shutil.ignore_patterns(".*"))
    base_name = hub_id or BASE_MODEL_DIR
    active_ids = [model.class_index(c) for c in model.active_classes]
    forgotten_ids = [model.class_index(c) for c in model.forgotten_classes]

    for name in CODE_FILES:
        source = resources.files("promptforget.pfm.hf_export") / name
        atomic_write_bytes(out_dir / name, source.read_bytes())
    forgotten = set(model.forgotten_classes)
    labels = [f"{c}{FORGOTTEN_MARK}" if c in forgotten else c for c in cfg.class_names]
    encoder_config = model.encoder.model.config.to_dict()
    encoder_config.pop("_attn_implementation", None)
    encoder_config.pop("_name_or_path", None)
    config = {
        "model_type": MODEL_TYPE,
        "architectures": [MODEL_CLASS[modality]],
        "auto_map": {
            "AutoConfig": "configuration_pfm.PFMHFConfig",
            "AutoModel": f"modeling_pfm.{MODEL_CLASS[modality]}",
            AUTO_MODEL[modality]: f"modeling_pfm.{MODEL_CLASS[modality]}",
        },
        "encoder_config": encoder_config,
        "modality": modality,
        "id2label": {str(i): label for i, label in enumerate(labels)},
        "label2id": {label: i for i, label in enumerate(labels)},
        "active_class_ids": active_ids,
        "forgotten_classes": model.forgotten_classes,
        "prompt_tokens": cfg.prompt_tokens,
        "prompt_layer": cfg.prompt_layer,
        "prompt_style": cfg.prompt_style,
        "use_prompts": cfg.objective != "plain",  # a plain fine-tune runs without prompts
        "max_length": cfg.max_length,
        # the token a tokenizer closes a cut sequence with: the model cuts over-long inputs the same way
        "end_token_id": model.tokenizer.sep_token_id if modality == "text" else None,
        "image_size": cfg.image_size,
        "image_processor": cfg.image_processor,
        "base_model_name_or_path": base_name,  # a Hub id, or the copy in base_model/ (relative to OUT_DIR)
        "base_model_hub_id": hub_id,
        "base_model_sha256": model.backbone_sha256,
        "promptforget": {"source_run": run_dir.resolve().name, "adapt": cfg.adapt},
    }
    atomic_write_json(out_dir / "config.json", config)

    weights = {f"encoder.{k}": v for k, v in merged_encoder_state_dict(model).items()}
    weights["prompts"] = torch.stack([model.prompt_of(c) for c in model.active_classes])
    head_weight, head_bias = model.head.weight.detach().clone(), model.head.bias.detach().clone()
    head_weight[forgotten_ids], head_bias[forgotten_ids] = 0.0, 0.0  # never used (masked), so not kept
    weights["classifier.weight"], weights["classifier.bias"] = head_weight, head_bias
    weights = {k: v.detach().cpu().contiguous() for k, v in weights.items()}
    atomic_write_bytes(out_dir / WEIGHTS_NAME, save(weights, metadata={"format": "pt"}))

    if cfg.adapt == "lora":
        write_peft_adapter(model, base_name, out_dir / ADAPTER_DIR)
    save_preprocessing(base_path, modality, out_dir, cfg.max_length)
    atomic_write_text(out_dir / CARD_NAME, str(build_model_card(run_dir, base_model=base_name)))
    if modality == "image" and cfg.image_processor == "hf":
        # the run's own transform, sized to its image_size, instead of the base model's
        model.image_preprocessor.save_pretrained(out_dir)


def merged_encoder_state_dict(model: PFMModel) -> dict[str, torch.Tensor]:
    """The encoder's weights with every LoRA folded in (W + scale * B @ A), under the plain model's names."""
    from peft.tuners.lora import LoraLayer

    encoder = model.encoder.model
    merged = {}
    for name, module in encoder.named_modules():
        if isinstance(module, LoraLayer):
            base = module.get_base_layer()
            delta = sum(module.get_delta_weight(a) for a in module.active_adapters)
            merged[f"{name}.weight"] = base.weight.detach() + delta.to(base.weight.dtype)
    sd = {}
    for name, tensor in encoder.state_dict().items():
        if "lora_" in name:
            continue
        name = name.replace(".base_layer.", ".")
        sd[name] = merged.get(name, tensor)
    return sd


def write_peft_adapter(model: PFMModel, base_path: str, out_dir: Path) -> None:
    """``adapter_config.json`` + ``adapter_model.safetensors`` in PEFT's saved format."""
    from peft import LoraConfig
    from safetensors.torch import save

    cfg = model.config
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=model.encoder.block_module_names(cfg.prompt_layer),
        base_model_name_or_path=base_path,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    lora.save_pretrained(str(out_dir))
    # In memory: "<module>.lora_A.default.weight"; PEFT saves "base_model.model.<module>.lora_A.weight".
    tensors = {
        "base_model.model." + n.replace(".default.", "."): p.detach().cpu().contiguous()
        for n, p in model.encoder.model.named_parameters()
        if "lora_" in n
    }
    atomic_write_bytes(out_dir / ADAPTER_WEIGHTS_NAME, save(tensors, metadata={"format": "pt"}))


def save_preprocessing(base_path: str, modality: str, out_dir: Path, max_length: int) -> None:
    """Copy the base model's tokenizer (text; truncating at the run's ``max_length``, as the run does) or image
    processor config, so OUT_DIR is self-sufficient."""
    if modality == "text":
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(base_path, model_max_length=max_length).save_pretrained(str(out_dir))
        return
    processor = Path(base_path) / "preprocessor_config.json"
    if processor.is_file():
        shutil.copyfile(processor, out_dir / processor.name)
