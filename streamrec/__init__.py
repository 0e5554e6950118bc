"""streamrec core: the contracts every component shares.

Event schemas, topic names, typed settings, the local stack manager and the CLI
live here; ``streams``, ``serving`` and ``trainer`` import this package and never
each other, and this package imports none of them.
"""

__version__ = "0.1.0"
