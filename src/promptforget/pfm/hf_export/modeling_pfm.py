"""Exported Pre-Forgettable Model (promptforget): an encoder, one learned prompt per class still known,
a linear head on CLS. Needs only torch and transformers.

Token style, the sequence fed to the blocks from ``prompt_layer`` on:
    [prompt_1 .. prompt_A | CLS | tokens ...]      (prompts carry no position embedding)
Prefix style: the prompts only add keys/values to the attention of those blocks.
Blocks below ``prompt_layer`` see no prompt. The training LoRA is merged into the encoder's weights.
Forgotten classes have no prompt in this model and their logits are -inf: it never predicts them.
"""

import contextvars

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface, AutoConfig, AutoModel, PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutput, SequenceClassifierOutput

from .configuration_pfm import PFMHFConfig

PREFIX_ATTENTION = "pfm_export_prefix"  # not the name promptforget registers: both may be loaded
_PREFIX_STATE = contextvars.ContextVar("promptforget_prefix_state", default=None)


def prefix_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """SDPA that puts the published prompt keys/values in front of the tokens' (plain SDPA without)."""
    state = _PREFIX_STATE.get()
    if state is not None and id(module) in state["kv"]:
        prompt_key, prompt_value = state["kv"][id(module)]
        key = torch.cat([prompt_key.to(key.dtype), key], dim=2)
        value = torch.cat([prompt_value.to(value.dtype), value], dim=2)
        attention_mask = state["mask"]
    out = F.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout if module.training else 0.0, scale=scaling
    )
    return out.transpose(1, 2).contiguous(), None


class PFMPreTrainedModel(PreTrainedModel):
    config_class = PFMHFConfig
    base_model_prefix = "pfm"
    _supports_sdpa = True

    def __init__(self, config: PFMHFConfig):
        super().__init__(config)
        encoder_config = AutoConfig.for_model(**config.encoder_config)
        self.encoder = AutoModel.from_config(encoder_config, attn_implementation="sdpa")
        if getattr(self.encoder, "pooler", None) is not None:
            self.encoder.pooler = None  # the head reads the CLS token directly
        if config.prompt_style == "prefix":
            AttentionInterface.register(PREFIX_ATTENTION, prefix_attention)
            self.encoder.config._attn_implementation = PREFIX_ATTENTION
        hidden = encoder_config.hidden_size
        self.prompts = nn.Parameter(torch.zeros(len(config.active_class_ids), config.prompt_tokens, hidden))
        self.classifier = nn.Linear(hidden, config.num_labels)
        self.post_init()

    # ------------------------------------------------------------------ encoder parts
    @property
    def blocks(self) -> nn.ModuleList:
        return self.encoder.layers if hasattr(self.encoder, "layers") else self.encoder.encoder.layer

    def final_norm(self, hidden: torch.Tensor) -> torch.Tensor:
        norm = getattr(self.encoder, "layernorm", None)  # ViT/DINOv2 end with a LayerNorm; BERT has none
        return hidden if norm is None else norm(hidden)

    def run_blocks(self, hidden, key_mask, start=0, stop=None):
        # Boolean key mask [B, 1, 1, L] as SDPA takes it; None when every key is real.
        mask = None if bool(key_mask.all()) else key_mask[:, None, None, :]
        for block in self.blocks[start:stop]:
            hidden = block(hidden, mask)
            if isinstance(hidden, tuple):
                hidden = hidden[0]
        return hidden

    def prompt_key_values(self, start: int) -> dict:
        """Each attention module from block ``start`` on -> the prompts' keys and values [1, H, A*T, hd]."""
        bank = self.prompts.reshape(-1, self.prompts.shape[-1])
        heads = self.encoder.config.num_attention_heads
        kv = {}
        for block in self.blocks[start:]:
            att = block.attention
            module, k_proj, v_proj = (att, att.k_proj, att.v_proj) if hasattr(att, "k_proj") else (att.self, att.self.key, att.self.value)
            k = k_proj(bank).reshape(1, bank.shape[0], heads, -1).transpose(1, 2)
            v = v_proj(bank).reshape(1, bank.shape[0], heads, -1).transpose(1, 2)
            kv[id(module)] = (k, v)
        return kv

    # ------------------------------------------------------------------ forward
    def classify(self, tokens: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """Embedded tokens [B, L, D] with CLS first and their key mask [B, L] -> logits [B, C]."""
        start = self.config.prompt_layer
        if start:
            tokens = self.run_blocks(tokens, key_mask, 0, start)
        b, cls_pos = tokens.shape[0], 0
        n_prompt = self.prompts.shape[0] * self.prompts.shape[1] if self.config.use_prompts else 0
        if n_prompt and self.config.prompt_style == "prefix":
            kv = {m: (k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)) for m, (k, v) in self.prompt_key_values(start).items()}
            prompt_mask = torch.ones(b, n_prompt, dtype=torch.bool, device=tokens.device)
            mask = torch.cat([prompt_mask, key_mask], dim=1)[:, None, None, :]
            token = _PREFIX_STATE.set({"kv": kv, "mask": mask})
            try:
                hidden = self.final_norm(self.run_blocks(tokens, key_mask, start))
            finally:
                _PREFIX_STATE.reset(token)
        else:
            if n_prompt:
                prompts = self.prompts.to(tokens.dtype).reshape(1, n_prompt, -1).expand(b, -1, -1)
                tokens = torch.cat([prompts, tokens], dim=1)
                key_mask = torch.cat([torch.ones(b, n_prompt, dtype=torch.bool, device=tokens.device), key_mask], dim=1)
                cls_pos = n_prompt
            hidden = self.final_norm(self.run_blocks(tokens, key_mask, start))
        logits = self.classifier(hidden[:, cls_pos])
        forgotten = [i for i in range(self.config.num_labels) if i not in set(self.config.active_class_ids)]
        if forgotten:
            logits = logits.index_fill(1, torch.tensor(forgotten, device=logits.device), float("-inf"))
        return logits

    @staticmethod
    def loss(logits, labels):
        return None if labels is None else F.cross_entropy(logits, labels.to(logits.device))


class PFMForSequenceClassification(PFMPreTrainedModel):
    main_input_name = "input_ids"

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, return_dict=None, **kwargs):
        key_mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        input_ids, key_mask, token_type_ids = self.truncate(input_ids, key_mask, token_type_ids)
        tokens = self.encoder.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        logits = self.classify(tokens, key_mask)
        loss = self.loss(logits, labels)
        if return_dict is False:
            return (logits,) if loss is None else (loss, logits)
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def truncate(self, input_ids, key_mask, token_type_ids):
        """Inputs longer than ``max_length`` (tokenized without truncation) cut as the run's tokenizer cuts them:
        the first ``max_length - 1`` tokens, then the closing ``end_token_id`` (right padding). So the logits are
        the run's for every input length."""
        n = self.config.max_length
        if input_ids.shape[1] <= n:
            return input_ids, key_mask, token_type_ids
        lengths = key_mask.sum(1)
        ids = input_ids[:, :n].clone()
        end = self.config.end_token_id
        if end is not None:
            rows = torch.nonzero(lengths > n)[:, 0]
            last = input_ids[rows, lengths[rows] - 1]
            ids[rows, n - 1] = torch.where(last == end, last, ids[rows, n - 1])
        return ids, key_mask[:, :n], None if token_type_ids is None else token_type_ids[:, :n]


class PFMForImageClassification(PFMPreTrainedModel):
    main_input_name = "pixel_values"

    def forward(self, pixel_values=None, labels=None, return_dict=None, **kwargs):
        extra = {"interpolate_pos_encoding": True} if self.encoder.config.model_type == "vit" else {}
        tokens = self.encoder.embeddings(pixel_values, **extra)
        key_mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        logits = self.classify(tokens, key_mask)
        loss = self.loss(logits, labels)
        if return_dict is False:
            return (logits,) if loss is None else (loss, logits)
        return ImageClassifierOutput(loss=loss, logits=logits)
