"""numprop: neural networks from scratch in NumPy, with hand-written, checked backprop.

    import numprop as npp
    model = npp.models.two_layer(3072, 1000, 10, rng=0)
    loss = npp.SoftmaxCrossEntropy()

The package is in four layers, each importing only those above it:
``numprop._fast`` (speed plumbing), ``numprop.nn`` (the network core),
``numprop.data`` and ``numprop.training``, then ``numprop.cli``.
Importing numprop only defines things: BLAS and the compiled kernels are
looked up on first use, and settings live in ``numprop.config``.
"""

__version__ = "0.3.0"

from numprop import config, nn
from numprop.data.catalog import DATASETS, load_data
from numprop.data.dataset import Dataset
from numprop.errors import ConfigError, DataError, NumpropError, TrainingError, WriteError
from numprop.nn import models
from numprop.nn.gradcheck import GradcheckReport, gradcheck
from numprop.nn.layers import (
    BatchNorm1d,
    Dropout,
    Flatten,
    LayerNorm,
    LeakyReLU,
    Linear,
    ReLU,
    Residual,
    Sigmoid,
    Tanh,
    register_layer,
)
from numprop.nn.losses import (
    Loss,
    MeanSquaredError,
    SigmoidBinaryCrossEntropy,
    SoftmaxCrossEntropy,
    log_softmax,
    softmax,
)
from numprop.nn.module import Module, Parameter, Sequential
from numprop.nn.optim import SGD, Adam, AdamW, Lion, Optimizer
from numprop.nn.schedules import Constant, Exponential, ReduceOnPlateau, StepDecay, WarmupCosine
from numprop.training.callbacks import (
    EMA,
    Checkpoint,
    EarlyStopping,
    EpochSummary,
    HistoryLogger,
    ModelCheckpoint,
    NaNGuard,
    ProgressBar,
)
from numprop.training.diagnostics import Diagnostics
from numprop.training.experiment import TrainConfig, train
from numprop.training.io import SavedModel, load, save
from numprop.training.trainer import Callback, History, Trainer

__all__ = [
    "config",
    "nn",
    "models",
    "gradcheck",
    "GradcheckReport",
    "Parameter",
    "Module",
    "Sequential",
    "register_layer",
    "Linear",
    "ReLU",
    "LeakyReLU",
    "Tanh",
    "Sigmoid",
    "Dropout",
    "BatchNorm1d",
    "LayerNorm",
    "Flatten",
    "Residual",
    "Loss",
    "SoftmaxCrossEntropy",
    "MeanSquaredError",
    "SigmoidBinaryCrossEntropy",
    "softmax",
    "log_softmax",
    "Optimizer",
    "SGD",
    "Adam",
    "AdamW",
    "Lion",
    "Constant",
    "StepDecay",
    "Exponential",
    "WarmupCosine",
    "ReduceOnPlateau",
    "Trainer",
    "History",
    "Callback",
    "ProgressBar",
    "EpochSummary",
    "EarlyStopping",
    "ModelCheckpoint",
    "Checkpoint",
    "HistoryLogger",
    "NaNGuard",
    "EMA",
    "Diagnostics",
    "save",
    "load",
    "SavedModel",
    "Dataset",
    "DATASETS",
    "load_data",
    "TrainConfig",
    "train",
    "NumpropError",
    "DataError",
    "ConfigError",
    "TrainingError",
    "WriteError",
]
