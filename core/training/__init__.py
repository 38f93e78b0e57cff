"""The layer above the backends: models with hand-written backward passes, the training loop,
checkpoints, metrics and reports. It reaches a backend only through the registry and the protocol.

By concern: :mod:`.settings` (what a run is set by), :mod:`.fitting` (:func:`fit`, the epoch loop),
:mod:`.inference` (:func:`predict`, :func:`evaluate`), :mod:`.runs` (a run's start and resume),
:mod:`.data_checks` and :mod:`.loss_options` (what is checked before training), :mod:`.step` (one step).
"""

from softgrad.training.data_checks import check_data
from softgrad.training.fitting import StopTraining, TrainingDivergedError, fit
from softgrad.training.inference import evaluate, predict
from softgrad.training.models import MLP, classic_mlp, softmax_regression
from softgrad.training.settings import TRAINING_DEFAULTS, TrainSettings
from softgrad.training.step import train_step

__all__ = ["MLP", "StopTraining", "TRAINING_DEFAULTS", "TrainSettings", "TrainingDivergedError", "check_data", "classic_mlp",
           "evaluate", "fit", "predict", "softmax_regression", "train_step"]
