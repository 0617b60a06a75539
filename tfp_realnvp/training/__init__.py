"""Maximum-likelihood training of any TFP distribution: :func:`fit` and its parts."""

from tfp_realnvp.training.loop import History, TrainingDiverged, fit
from tfp_realnvp.training.optimizer import default_optimizer

__all__ = ["fit", "History", "TrainingDiverged", "default_optimizer"]

# Transitional: experiment.py still imports this name; remove once it uses tfp_realnvp.files.
from tfp_realnvp.files import atomic_write_text as _atomic_write_text  # noqa: E402,F401
