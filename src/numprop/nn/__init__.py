"""The network core: modules and layers, losses, optimizers, schedules, models, gradient checks.

Nothing here imports data loading, training or the command line.
"""
