"""Audit: test the forgetting claims against the attacks a sceptic would run, beside a retrained reference.

  mia           population membership inference (confidence / entropy / modified entropy / loss;
                threshold AUCs; SVC shadow protocol = SalUn's MIA-efficacy)
  llm_mia       LOSS, ZLib, Min-K% and Min-K%++ scores from a causal LM's per-token log-probs
  lira          per-example likelihood-ratio attack (LiRA / U-LiRA) with N shadow models
  key_recovery  residual knowledge after a PFM forget: fresh-key recovery, relearning, linear probe
  blackbox      black-box queries against a prompted model (paraphrases, prompt injection)
  reference     the retrain-from-scratch gold reference, several seeds (saved, reused)
  stats         95% intervals: bootstrap over examples, over seeds, combined over reference seeds
  pfm_audit     every attack on the audited model, the reference and the original, as one dict; its report
  spul_audit    the same for a SPUL run (prompted model, stage 1 without the prompt, retrained stage 1)
  report        the report engine: metric registry, two-sided interval verdicts, JSON + Markdown + model card
  cli           ``promptforget audit RUN_DIR``
"""
