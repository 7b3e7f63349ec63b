"""Per-worker training: model loading, the DeepSpeed strategy, checkpoints (never imports the CLI)."""
