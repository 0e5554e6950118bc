"""The recommender as the recs worker and the API run it: clients, item index refresh, metrics."""
