"""The Faust streams worker (issue 3): consumes events and keeps profiles in Redis.

Not built yet; this package exists so the fixed repository layout is in place.
"""
