"""Everything streamrec keeps in Redis: the layout and the stores that read and write it.

:mod:`~streamrec.store.layout` names every key and encodes every value; one small store per
concern wraps the commands (:class:`~streamrec.store.profile_store.ProfileStore`,
:class:`~streamrec.store.item_statistics.ItemStatistics`,
:class:`~streamrec.store.catalog_store.CatalogStore`,
:class:`~streamrec.store.recommendation_cache.RecommendationCache`,
:class:`~streamrec.store.watermarks.WatermarkStore`). Writes that belong to the streams batch
are queued onto the caller's WATCH/MULTI pipeline (``queue_*`` methods), so the caller keeps
the transaction and its exactly-once guarantee. The value types (:mod:`~streamrec.store.profile`,
:mod:`~streamrec.store.catalog`) know nothing of Redis.
"""
