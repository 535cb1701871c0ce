"""Training and evaluation: annotated data sets, augmentation, losses, the training loop, metrics."""
