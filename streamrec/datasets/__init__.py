"""Readers and replay for the shared real e-commerce datasets."""
