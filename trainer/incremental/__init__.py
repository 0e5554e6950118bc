"""The incremental trainer's cycle: consume, build examples, fine-tune, gate, publish."""
