"""Experiments: definitions and assignment, their store, interleaving and the statistics of the report."""
