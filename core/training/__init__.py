"""The layer above the backends: models with hand-written backward passes, the training loop,
checkpoints, metrics and reports. It reaches a backend only through the registry and the protocol.
"""

from softgrad.training.loop import TrainingDivergedError, check_data, evaluate, fit, predict
from softgrad.training.models import MLP, classic_mlp, softmax_regression
from softgrad.training.step import TRAINING_DEFAULTS, TrainSettings, train_step

__all__ = ["MLP", "TRAINING_DEFAULTS", "TrainSettings", "TrainingDivergedError", "check_data", "classic_mlp",
           "evaluate", "fit", "predict", "softmax_regression", "train_step"]
