"""The Faust streams worker: clean events, keep user profiles and item statistics in Redis.

``app.py`` builds the Faust app and its agents; ``processor.py`` applies a batch of
interactions to Redis effectively once; ``cleaning.py`` holds the data rules; ``catalog.py``
stores items with their embeddings. The profile fold itself is in the core package, so offline
evaluation runs the same arithmetic.
"""
