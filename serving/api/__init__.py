"""The HTTP recommendation API (``streamrec api serve``)."""
