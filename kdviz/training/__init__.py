"""Training: the loop, distillation, the IG-overlay augmentation, the workspace of runs."""
