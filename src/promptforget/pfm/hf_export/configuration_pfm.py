"""Configuration of an exported Pre-Forgettable Model (promptforget). Needs only transformers."""

from transformers import PretrainedConfig


class PFMHFConfig(PretrainedConfig):
    """An encoder (``encoder_config``, a plain transformers config as a dict) plus class prompts and a head.

    ``id2label`` lists every class the model was trained on; ``active_class_ids`` the ones it still knows
    (one prompt each, in this order). The others were forgotten: no prompt, logits -inf. ``max_length``: the
    longest input the model was trained on; longer ones are cut as its tokenizer cuts them (``end_token_id``
    kept last).
    """

    model_type = "promptforget-pfm"

    def __init__(
        self,
        encoder_config: dict | None = None,
        modality: str = "text",
        active_class_ids: list[int] | None = None,
        prompt_tokens: int = 1,
        prompt_layer: int = 0,
        prompt_style: str = "token",
        use_prompts: bool = True,
        max_length: int = 128,
        end_token_id: int | None = None,
        image_size: int | None = None,
        base_model_name_or_path: str | None = None,
        base_model_hub_id: str | None = None,
        base_model_sha256: str | None = None,
        **kwargs,
    ):
        self.encoder_config = encoder_config or {}
        self.modality = modality
        self.active_class_ids = list(active_class_ids or [])
        self.prompt_tokens = prompt_tokens
        self.prompt_layer = prompt_layer
        self.prompt_style = prompt_style
        self.use_prompts = use_prompts
        self.max_length = max_length
        self.end_token_id = end_token_id
        self.image_size = image_size
        self.base_model_name_or_path = base_model_name_or_path
        self.base_model_hub_id = base_model_hub_id
        self.base_model_sha256 = base_model_sha256
        super().__init__(**kwargs)
