"""Training: the incremental trainer that keeps the served scorer current, and the offline jobs.

* :mod:`trainer.incremental` — one cycle (``streamrec trainer run|once``): read accepted events
  since the served version, fine-tune, gate, publish to Triton;
* :mod:`trainer.offline` — the recipes that train first versions (``streamrec trainer
  train-scorer``), offline evaluation and baselines, and the blender fit (``streamrec trainer
  fit-blender``), which run serving's ranking code from :mod:`streamrec.ranking`.
"""
