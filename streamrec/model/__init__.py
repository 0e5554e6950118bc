"""The scorer's one model definition, shared by the trainer, Triton's model_repo and tests.

* :mod:`streamrec.model.texts` — how a user context and an item become text;
* :mod:`streamrec.model.networks` — the text encoder (mean-pooled, normalised) and the
  cross-encoder scorer on one BERT backbone;
* :mod:`streamrec.model.artifacts` — self-contained version folders (safetensors,
  tokenizer files, metadata) and how they are written atomically;
* :mod:`streamrec.model.contract` — tensor names and shapes Triton and clients agree on.
"""
