"""Training: the Trainer and its callbacks, saving and loading models, whole runs."""
