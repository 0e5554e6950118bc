"""The incremental trainer (issue 6): fine-tunes the scorer and republishes it to Triton.

Not built yet; this package exists so the fixed repository layout is in place.
"""
