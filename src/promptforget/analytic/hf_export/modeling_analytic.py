"""An exported analytic classifier (promptforget): a frozen encoder, the run's fixed-point feature map and
its closed-form linear head. Needs only torch and transformers; loaded with ``trust_remote_code=True``.

Only the classes the run still knows are in ``id2label``: a forgotten class has no weights here at all.
The features are computed as the run computes them (texts padded to ``max_length``, the same feature map,
rounding to ``2**-scale_bits`` and clipping, the same integer projection), so the logits equal the run's.
"""

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutput, SequenceClassifierOutput

MAX_ABS_Q = 2**19


class AnalyticHFConfig(PretrainedConfig):
    model_type = "promptforget-analytic"

    def __init__(self, encoder_config=None, modality="text", feature_map="last-k", last_k=3, max_length=128,
                 pad_token_id=0, scale_bits=12, projection_dim=0, projection_shift=0, feature_dim=0,
                 base_model_hub_id=None, base_model_sha256=None, **kwargs):
        self.encoder_config = encoder_config or {}
        self.modality, self.feature_map, self.last_k = modality, feature_map, last_k
        self.max_length, self.scale_bits, self.feature_dim = max_length, scale_bits, feature_dim
        self.projection_dim, self.projection_shift = projection_dim, projection_shift
        self.base_model_hub_id, self.base_model_sha256 = base_model_hub_id, base_model_sha256
        super().__init__(pad_token_id=pad_token_id, **kwargs)


class AnalyticPreTrainedModel(PreTrainedModel):
    config_class = AnalyticHFConfig
    base_model_prefix = "analytic"
    _supports_sdpa = True

    def __init__(self, config):
        super().__init__(config)
        self.encoder = AutoModel.from_config(AutoConfig.for_model(**config.encoder_config), attn_implementation="sdpa")
        if getattr(self.encoder, "pooler", None) is not None:
            self.encoder.pooler = None
        base = config.feature_dim
        if config.projection_dim:
            self.register_buffer("projection", torch.zeros(base, config.projection_dim, dtype=torch.int8))
        self.classifier = nn.Linear(config.projection_dim or base, config.num_labels, dtype=torch.float64)
        self.post_init()

    def _init_weights(self, module):  # every weight comes from the checkpoint
        pass

    @property
    def blocks(self):
        return self.encoder.layers if hasattr(self.encoder, "layers") else self.encoder.encoder.layer

    def final_norm(self, hidden):
        norm = getattr(self.encoder, "layernorm", None)
        return hidden if norm is None else norm(hidden)

    def features(self, tokens, key_mask):
        cfg = self.config
        mask = None if bool(key_mask.all()) else key_mask[:, None, None, :]
        keep = min(cfg.last_k, len(self.blocks)) if cfg.feature_map == "last-k" else 1
        states, h = [], tokens
        for i, block in enumerate(self.blocks):
            h = block(h, mask)
            h = h[0] if isinstance(h, tuple) else h
            if i >= len(self.blocks) - keep:
                states.append(self.final_norm(h))
        w = key_mask[:, 1:, None].float()

        def mean(s):
            return (s[:, 1:] * w).sum(1) / w.sum(1).clamp_min(1.0)

        final = states[-1]
        f = {"cls": lambda: final[:, 0], "mean": lambda: mean(final),
             "cls+mean": lambda: torch.cat([final[:, 0], mean(final)], 1),
             "last-k": lambda: torch.cat([mean(s) for s in states], 1)}[cfg.feature_map]()
        q = torch.clamp(torch.round(f.double() * 2.0**cfg.scale_bits), -MAX_ABS_Q, MAX_ABS_Q)
        if cfg.projection_dim:
            h = (q @ self.projection.double()).clamp_min(0).long() >> cfg.projection_shift
            q = h.double()
        return q * 2.0**-cfg.scale_bits

    @staticmethod
    def loss(logits, labels):
        return None if labels is None else nn.functional.cross_entropy(logits.float(), labels.to(logits.device))


class AnalyticForSequenceClassification(AnalyticPreTrainedModel):
    main_input_name = "input_ids"

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, return_dict=None, **kw):
        n = self.config.max_length
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        pad = n - input_ids.shape[1]
        if pad > 0:  # the run pads every text to max_length: same shapes, same features
            input_ids = nn.functional.pad(input_ids, (0, pad), value=self.config.pad_token_id)
            mask = nn.functional.pad(mask, (0, pad), value=0)
            if token_type_ids is not None:
                token_type_ids = nn.functional.pad(token_type_ids, (0, pad), value=0)
        tokens = self.encoder.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        logits = self.classifier(self.features(tokens, mask.bool()))
        loss = self.loss(logits, labels)
        if return_dict is False:
            return (logits,) if loss is None else (loss, logits)
        return SequenceClassifierOutput(loss=loss, logits=logits)


class AnalyticForImageClassification(AnalyticPreTrainedModel):
    main_input_name = "pixel_values"

    def forward(self, pixel_values=None, labels=None, return_dict=None, **kw):
        extra = {"interpolate_pos_encoding": True} if self.encoder.config.model_type == "vit" else {}
        tokens = self.encoder.embeddings(pixel_values, **extra)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        logits = self.classifier(self.features(tokens, mask))
        loss = self.loss(logits, labels)
        if return_dict is False:
            return (logits,) if loss is None else (loss, logits)
        return ImageClassifierOutput(loss=loss, logits=logits)
