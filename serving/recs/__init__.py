"""The recs worker (``streamrec recs worker``): profile updates in, recommendation lists out."""
