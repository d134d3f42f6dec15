"""Training: the train loop, the model-zoo recipe (optimizer, LR, loss, train cell), a run's
rotating checkpoints and resume, its metrics log, and distributed launch (msrun)."""
