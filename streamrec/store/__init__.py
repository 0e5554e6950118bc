"""Redis key layout and the encoders/decoders of what is stored there (written by streams, read by serving)."""
