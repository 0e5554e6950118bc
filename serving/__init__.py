"""Serving: the HTTP event collector now; the recommendation API and loop later (issue 5)."""
