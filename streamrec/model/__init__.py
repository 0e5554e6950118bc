"""What serving and ``model_repo/`` need of the scorer at run time, defined once.

* :mod:`streamrec.model.sequence` — the sequence BERT (``bert_scorer``): network, co-visitation
  signals, cold start, saving; :mod:`streamrec.model.served_sequence` — it as served (item ids
  in, top K and candidate scores out, version folders); :mod:`streamrec.model.sequence_request`
  — the request clients send;
* :mod:`streamrec.model.texts` — how a user context and an item become text;
* :mod:`streamrec.model.networks` — the text encoder and the optional cross-encoder with its
  student shape, on one BERT backbone;
* :mod:`streamrec.model.inference` — tokenisation and in-process scoring;
* :mod:`streamrec.model.artifacts` — self-contained version folders (safetensors, tokenizer
  files, metadata) written atomically; :mod:`streamrec.model.registry` — publishing, loading
  and rolling back versions in Triton; :mod:`streamrec.model.bootstrap` — first versions;
  :mod:`streamrec.model.updates` — announcing the served version on ``model.updates``;
* :mod:`streamrec.model.contract` — tensor names and shapes Triton and clients agree on;
* :mod:`streamrec.model.triton_backend` — the Python backend's model.

Training lives in ``trainer/``.
"""
