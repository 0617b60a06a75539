"""tfp_realnvp: RealNVP normalizing flows as drop-in TensorFlow Probability distributions."""

from tfp_realnvp import datasets
from tfp_realnvp.bijectors import real_nvp_bijector
from tfp_realnvp.distribution import RealNVP
from tfp_realnvp.networks import ShiftAndLogScale
from tfp_realnvp.training import History, TrainingDiverged, fit

__version__ = "0.1.0"

__all__ = [
    "RealNVP", "ShiftAndLogScale", "real_nvp_bijector", "fit", "History",
    "TrainingDiverged", "datasets", "__version__",
]

# Saving, loading and exporting flows (issue 4).
from tfp_realnvp.serialization import FORMAT_VERSION, export, load, save  # noqa: E402

__all__ += ["save", "load", "export", "FORMAT_VERSION"]
