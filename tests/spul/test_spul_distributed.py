"""Two CPU processes (gloo, via torchrun + Accelerate) must train what one process trains with the
same global batches: stage-1 LoRA fine-tuning, the SPUL prompt and a fine-tuning baseline. The forget
set (7 rows, batches of 4) leaves an uneven last batch, split 1/2 between the processes."""

import textwrap

import torch
from safetensors.torch import load_file

SCRIPT = textwrap.dedent(
    """
    import os, sys, torch
    from safetensors.torch import save_file
    from promptforget.baselines import Baseline, BaselineConfig
    from promptforget.spul import SPUL
    from promptforget.spul.tasks import SentimentTask
    from promptforget.spul.config import FinetuneConfig, SPULConfig
    from promptforget.spul.testing import tiny_llama, tiny_tokenizer
    from promptforget.spul.train import finetune

    out = sys.argv[1]
    words = "good great fine bad awful dull film movie plot very nice poor"
    tok = tiny_tokenizer([words])
    w = words.split()
    exs = [{"id": f"e{i}", "text": f"{w[i % 12]} {w[(3 * i) % 12]} film", "label": ["positive", "negative"][i % 2]}
           for i in range(16)]
    forget, retain = exs[:7], exs[7:]
    task = SentimentTask()

    model = tiny_llama(len(tok), seed=0)
    model, _ = finetune(model, tok, task, exs, FinetuneConfig(lora_r=4, lora_alpha=8, lora_dropout=0.0, lr=1e-2,
                        epochs=2, batch_size=6, max_length=48, seed=1))
    stage1 = {k: v.detach().clone() for k, v in model.state_dict().items() if "q_proj" in k or "v_proj" in k}
    spul = SPUL(model, tok, task, SPULConfig(num_virtual_tokens=4, encoder_hidden_size=16, lr=1e-2, epochs=3,
                batch_size=4, alpha=0.7, beta=0.5, max_length=48, seed=2))
    hist = spul.forget(forget, retain)
    prompt = {f"prompt.{n}": p.detach().clone() for n, p in spul.peft_model.prompt_encoder.named_parameters()}

    base = Baseline(tiny_llama(len(tok), seed=0), tok, task, BaselineConfig(method="ga_kl", lora_r=4, lora_alpha=8,
                    lora_dropout=0.0, lr=1e-2, epochs=2, batch_size=4, max_length=48, seed=3))
    base.forget(forget, retain)
    lora = {f"baseline.{n}": p.detach().clone() for n, p in base.peft_model.named_parameters() if p.requires_grad}

    if int(os.environ.get("RANK", "0")) == 0:
        losses = torch.tensor([s["loss"] for s in hist["steps"]])
        save_file({**{f"stage1.{k}": v for k, v in stage1.items()}, **prompt, **lora, "spul_losses": losses}, out)
    """
)


def test_two_process_spul_matches_single_process(one_and_two_processes):
    single, multi = one_and_two_processes(SCRIPT)
    a, b = load_file(str(single)), load_file(str(multi))
    assert a.keys() == b.keys()
    groups = {g: [k for k in a if k.startswith(g)] for g in ("stage1.", "prompt.", "baseline.")}
    assert all(groups.values()), groups
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=lambda m: f"{k}: {m}")
    # The logged losses are the global batch's, and they moved: training happened in both runs.
    assert a["spul_losses"].numel() == 3 * 2  # 3 epochs x 2 forget batches
    assert not torch.allclose(a["spul_losses"][0], a["spul_losses"][-1])
