"""Studies built on training: ablations, the hyperparameter search, their presets."""
