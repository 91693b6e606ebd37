"""The training loop shared by stage-1 fine-tuning, SPUL and the fine-tuning baselines.

:func:`promptforget.unlearn.loop.train_loop` runs an objective (named loss terms plus their weights)
over seeded forget/retain batches; :mod:`promptforget.unlearn.parallel` splits those batches across
processes without DDP.
"""
