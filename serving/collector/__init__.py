"""The HTTP collector that web and mobile frontends post events to (``streamrec collector serve``)."""
