"""tfp_realnvp: RealNVP normalizing flows as drop-in TensorFlow Probability distributions.

The names below are imported on first use (PEP 562), so that importing the
package (and ``tfp-realnvp --help``) does not load TensorFlow.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "RealNVP": "distribution", "ShiftAndLogScale": "networks", "real_nvp_bijector": "bijectors",
    "fit": "training", "History": "training", "TrainingDiverged": "training",
    "default_optimizer": "training", "save": "serialization", "load": "serialization",
    "export": "serialization", "FORMAT_VERSION": "serialization",
}
_MODULES = ("datasets", "options", "files", "plots", "experiment", "serialization", "training",
            "vi")

__all__ = [*_EXPORTS, "datasets", "__version__"]


def __getattr__(name):
  if name in _EXPORTS:
    value = getattr(importlib.import_module(f"tfp_realnvp.{_EXPORTS[name]}"), name)
  elif name in _MODULES:
    value = importlib.import_module(f"tfp_realnvp.{name}")
  else:
    raise AttributeError(f"module 'tfp_realnvp' has no attribute {name!r}")
  globals()[name] = value
  return value


def __dir__():
  return sorted([*globals(), *_EXPORTS, *_MODULES])
