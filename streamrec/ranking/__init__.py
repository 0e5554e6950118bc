"""How one user's list is made: candidates, the sequence BERT's retrieval and scores, blend, diversity, reasons.

Pure code over two protocols (signal store, scorer), shared by the serving processes and by
offline evaluation, so the numbers reported offline are those of the code that serves.
"""
