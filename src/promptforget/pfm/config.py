"""Knobs of a Pre-Forgettable Model (defaults follow the published recipe)."""

from __future__ import annotations

from dataclasses import dataclass

from promptforget.utils.config import ConfigMixin, knob

ADAPT_MODES = ("lora", "gated", "frozen", "full")
PROMPT_INITS = ("normal", "zeros", "cls")
PROMPT_STYLES = ("token", "prefix")
OBJECTIVES = ("pfm", "plain")
LR_SCHEDULES = ("constant", "cosine")
VIEW_B_SIZES = ("uniform", "harmonic")
PROBE_MODES = ("confusion", "reverse")
IMAGE_PROCESSORS = ("torch", "hf")


@dataclass
class PFMConfig(ConfigMixin):
    backbone: str = knob("minilm", "hub name, local directory, or alias minilm | dinov2-s14")
    # gated (not in the paper): no shared adapter; each class owns a LoRA of rank lora_r that runs only for
    # samples whose prompt set holds the class's prompt, and is deleted with it (pfm/gated.py).
    adapt: str = knob("lora", "LoRA on query/value, gated = one LoRA per class switched on by its prompt, frozen "
                      "backbone, or full fine-tune", choices=ADAPT_MODES)
    lora_r: int = knob(4, "LoRA rank (adapt=gated: per class)")
    lora_alpha: int = 4
    lora_dropout: float = 0.1
    # Class prompts: learnable tokens per class, prepended before CLS, no position embedding.
    prompt_tokens: int = knob(1, "learnable tokens per class")
    prompt_init: str = knob("normal", "initial prompts: normal = N(0,1) (paper), zeros, or cls = the image CLS "
                            "token (text: normal)", choices=PROMPT_INITS)
    # prefix: C prompts add no MLP work (see pfm/prefix.py).
    prompt_style: str = knob("token", "token: prompts are input tokens (paper); prefix: prompts are extra "
                             "attention keys/values only", choices=PROMPT_STYLES)
    # Blocks below prompt_layer are frozen and never see a prompt, so their output is computed once per
    # example and cached: a speed knob for CPUs. Forgetting is unchanged: the prompt is still the only
    # key to its class.
    prompt_layer: int = knob(0, "insert prompts before this block; the frozen blocks below are computed once "
                             "and cached (0 = input)")
    # Objective: view A (own + random wrong prompts, CE) + view B (only wrong prompts, KL to uniform).
    kl_weight: float = knob(1.0, "weight of the KL-to-uniform term (view B)")
    # "harmonic" trains more on no prompt / one wrong prompt: the case that leaks when most classes
    # are forgotten.
    view_b_sizes: str = knob("uniform", "how many wrong prompts a view-B sample sees: uniform over 0..C-1 (paper) "
                             "or harmonic, P(k) ~ 1/(k+1)", choices=VIEW_B_SIZES)
    # "plain" is an ordinary LoRA fine-tune of the same backbone and head, the utility reference a PFM
    # is compared against.
    objective: str = knob("pfm", "pfm, or plain: CE without prompts, the utility reference", choices=OBJECTIVES)
    # Decoy keys (not in the paper). The audit's key-recovery attack shows that a fresh, optimised prompt
    # can unlock a forgotten class through the shared LoRA and head. With decoy_share > 0, that share of
    # view-B samples also sees a fresh random prompt, pushed towards the sample's class as the adversary
    # would, and must still answer uniformly: the shared weights learn to give nothing to a foreign key.
    # Matched to the audit's attack (share 0.5, 3 steps of 0.3) they stop key recovery within its 100 steps
    # but not 300, and relearning and a linear probe still read the class (docs/results.md).
    decoy_share: float = knob(0.0, "share of view-B samples that also see a decoy key (a fresh prompt of no "
                              "class); 0 = off (paper)")
    decoy_steps: int = knob(0, "signed-gradient steps pushing each decoy towards its sample's class")
    decoy_eps: float = knob(0.1, "per-coordinate size of a decoy step")
    # Adversarial class probe (not in the paper). A linear probe on the CLS features reads a forgotten class
    # out of the shared weights. This trains one on view B (samples without their own prompt) and makes the
    # shared weights hide the class from it. "reverse" passes the probe's CE gradient back negated (DANN);
    # that loss is unbounded and diverged on MNIST-5k (utility 0.934 -> 0.234, docs/results.md).
    # "confusion" asks instead for the probe's output to be uniform (KL to uniform, >= 0, zero when the
    # probe reads nothing), with the probe frozen in that term (Tzeng et al. 2015).
    # The probe is a training-time module only; it is never saved.
    probe_weight: float = knob(0.0, "weight of an adversarial class probe on view B's CLS features; 0 = off (paper)")
    probe_mode: str = knob("confusion", "how the shared weights fight the probe: confusion (its output pushed to "
                           "uniform, bounded) or reverse (its CE ascended by gradient reversal)", choices=PROBE_MODES)
    lr: float = 1e-3
    lr_schedule: str = knob("constant", "constant (published recipe) or cosine decay to 0 over the run",
                            choices=LR_SCHEDULES)
    batch_size: int = 32
    epochs: int = 10
    seed: int = 42
    max_length: int = knob(128, "text: max tokens per example (truncation)")
    image_size: int | None = knob(None, "images: side in pixels (None: the backbone's)")
    # Both read the backbone's processor settings; they differ only where images are resized (see
    # backbones/image_processing.py).
    image_processor: str = knob("torch", "images: torch = our vectorised transform; hf = the backbone's "
                                "AutoImageProcessor (PIL), sized to image_size", choices=IMAGE_PROCESSORS)
    class_names: list[str] = knob([], "the classes, in label order (from the data)")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.adapt not in ADAPT_MODES:
            raise ValueError(f"adapt must be one of {ADAPT_MODES}, got {self.adapt!r}")
        if self.prompt_style not in PROMPT_STYLES:
            raise ValueError(f"prompt_style must be one of {PROMPT_STYLES}, got {self.prompt_style!r}")
        if self.adapt == "gated" and (self.prompt_style != "token" or self.objective != "pfm"):
            raise ValueError("adapt='gated' needs prompt_style='token' and objective='pfm' (its adapters run "
                             "with their prompts)")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.prompt_init not in PROMPT_INITS:
            raise ValueError(f"prompt_init must be one of {PROMPT_INITS}, got {self.prompt_init!r}")
        for name in ("lora_r", "prompt_tokens", "batch_size", "max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.prompt_layer < 0:
            raise ValueError(f"prompt_layer must be >= 0, got {self.prompt_layer}")
        if not 0.0 <= self.decoy_share <= 1.0:
            raise ValueError(f"decoy_share must be in [0, 1], got {self.decoy_share}")
        if self.decoy_steps < 0 or self.decoy_eps < 0:
            raise ValueError(f"decoy_steps and decoy_eps must be >= 0, got {self.decoy_steps}, {self.decoy_eps}")
        if self.probe_weight < 0:
            raise ValueError(f"probe_weight must be >= 0, got {self.probe_weight}")
        if self.probe_mode not in PROBE_MODES:
            raise ValueError(f"probe_mode must be one of {PROBE_MODES}, got {self.probe_mode!r}")
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        if self.view_b_sizes not in VIEW_B_SIZES:
            raise ValueError(f"view_b_sizes must be one of {VIEW_B_SIZES}, got {self.view_b_sizes!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.image_processor not in IMAGE_PROCESSORS:
            raise ValueError(f"image_processor must be one of {IMAGE_PROCESSORS}, got {self.image_processor!r}")
        if self.image_size is not None and self.image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {self.image_size}")
        if len(set(self.class_names)) != len(self.class_names):
            raise ValueError("class_names must be unique")
        if any(not isinstance(c, str) or not c for c in self.class_names):
            raise ValueError("class_names must be non-empty strings")
