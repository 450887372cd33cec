"""numprop: neural networks from scratch in NumPy, with hand-written, checked backprop.

    import numprop as npp
    model = npp.models.two_layer(3072, 1000, 10, rng=0)
    loss = npp.SoftmaxCrossEntropy()
"""

from . import models
from .errors import ConfigError, DataError, NumpropError, TrainingError
from .gradcheck import GradcheckReport, gradcheck
from .io import SavedModel, load, save
from .layers import (BatchNorm1d, Dropout, Flatten, LeakyReLU, Linear, ReLU, Sigmoid,
                     Tanh)
from .losses import SoftmaxCrossEntropy, log_softmax, softmax
from .module import Module, Parameter, Sequential
from .optim import SGD, Adam, AdamW, Optimizer
from .schedules import Constant, Exponential, ReduceOnPlateau, StepDecay, WarmupCosine
from .train import (Callback, Checkpoint, EarlyStopping, EpochSummary, History, HistoryLogger,
                    ModelCheckpoint, NaNGuard, ProgressBar, Trainer)

__version__ = "0.1.0"

__all__ = [
    "models", "gradcheck", "GradcheckReport",
    "Parameter", "Module", "Sequential",
    "Linear", "ReLU", "LeakyReLU", "Tanh", "Sigmoid", "Dropout", "BatchNorm1d", "Flatten",
    "SoftmaxCrossEntropy", "softmax", "log_softmax",
    "Optimizer", "SGD", "Adam", "AdamW",
    "Constant", "StepDecay", "Exponential", "WarmupCosine", "ReduceOnPlateau",
    "Trainer", "History", "Callback", "ProgressBar", "EpochSummary", "EarlyStopping",
    "ModelCheckpoint", "Checkpoint", "HistoryLogger", "NaNGuard",
    "save", "load", "SavedModel",
    "NumpropError", "DataError", "ConfigError", "TrainingError",
]
