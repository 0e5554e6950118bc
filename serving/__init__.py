"""Serving: three processes, one subpackage each, plus what the recs worker and the API share.

* :mod:`serving.collector` — the HTTP event collector (``streamrec collector serve``);
* :mod:`serving.recs` — the real-time recommendation worker (``streamrec recs worker``);
* :mod:`serving.api` — the HTTP recommendation API (``streamrec api serve``);
* :mod:`serving.engine` — the recommender as both of the last two run it: Redis and Triton
  clients, the item index's refresh loop, metrics.

The ranking itself (candidates, blend, diversity, reasons) is pure code in the core package
(:mod:`streamrec.ranking`), so offline evaluation in ``trainer/`` runs exactly what serves.
"""
