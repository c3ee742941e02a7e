"""Layer 2: one module per task, with its generator, its check (and, where RL trains on it, its reward).

SFT data, eval and RL use the same modules: `mixture` draws the demo's conversations and
grades a reply by its task, `preference_pairs` builds the demo's DPO/RM pairs from the
tasks, and `demo` assembles the demo's whole data set.
"""
