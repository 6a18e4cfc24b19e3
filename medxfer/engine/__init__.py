"""Training engine: fit context, trainer, evaluator, checkpoints."""
