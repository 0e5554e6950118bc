"""The Faust streams worker: clean events, keep user profiles and item statistics in Redis.

``app.py`` builds the Faust app and its agents; ``processor.py`` applies a batch
of interactions to Redis effectively once; ``cleaning.py`` holds the data rules;
``profile_logic.py`` the profile arithmetic; ``catalog.py`` stores items with
their embeddings.
"""
