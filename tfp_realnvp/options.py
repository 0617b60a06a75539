"""The options of a flow and of its training, declared once, with the tuned defaults.

:class:`FlowOptions` lists the architecture options of :class:`RealNVP` (the
constructor validates its keyword arguments here); :class:`TrainingOptions`
the settings that ``fit``, ``default_optimizer`` and the command line share.
The defaults are the tuned configuration the README's results describe, and
the command line derives its flags (names, defaults, choices, help) from the
fields' metadata.  No TensorFlow import, so ``tfp-realnvp --help`` stays fast.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

__all__ = ["COUPLINGS", "PERMUTATIONS", "SCHEDULES", "FlowOptions", "TrainingOptions", "option_help",
           "is_int"]

#: Coupling transforms by name (``coupling=`` may also be a factory, see ``couplings``).
COUPLINGS = ("affine", "additive", "spline")
#: Mixing steps between couplings by name.
PERMUTATIONS = ("reverse", "random", "lu")
#: Learning-rate schedules of the default optimizer by name.
SCHEDULES = ("cosine", "constant")


def _option(default, help_text: str, *, choices=None, cli: bool = True):
  return dataclasses.field(default=default,
                           metadata={"help": help_text, "choices": choices, "cli": cli})


def is_int(value) -> bool:
  """An integer, and not a bool (``True`` is an ``int`` in Python)."""
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _finite(value) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _positive_finite(value) -> bool:
  return _finite(value) and value > 0


@dataclasses.dataclass(frozen=True)
class FlowOptions:
  """Architecture options of a RealNVP flow (all but ``event_size`` and TFP's
  ``dtype``/``validate_args``/``name`` conventions)."""

  num_couplings: int = _option(16, "number of coupling layers")
  hidden_units: tuple[int, ...] = _option((128, 128), "hidden widths of each coupling network")
  activation: str = _option("relu", "hidden activation of the coupling networks")
  coupling: str = _option(
      "affine", "coupling transform: affine (RealNVP), additive (NICE) or a "
      "rational-quadratic spline", choices=COUPLINGS)
  permutation: str = _option(
      "reverse", "mixing between couplings: reverse order, a fixed random permutation, or a "
      "learned LU-decomposed linear map", choices=PERMUTATIONS)
  log_scale_bound: float | None = _option(
      3.0, "soft bound on each affine coupling's log-scale (none: unbounded)")
  spline_bins: int = _option(8, "bins of each spline (coupling=spline)")
  spline_bound: float = _option(
      4.0, "each spline acts on [-bound, bound] of normalized units, identity outside")
  actnorm: bool = _option(False, "add data-initialized activation normalization between couplings")
  conditional_size: int = _option(0, "size of a conditioning vector, 0 for none", cli=False)
  trainable_normalization: bool = _option(
      False, "train the normalization (loc, log scale) with the weights, as variational "
      "inference needs", cli=False)

  def __post_init__(self):
    hidden = self.hidden_units
    if isinstance(hidden, (str, bytes)) or not hasattr(hidden, "__iter__"):
      raise ValueError(f"hidden_units must be a sequence of positive integers, got {hidden!r}")
    hidden = tuple(hidden)
    if not hidden or not all(is_int(h) and h >= 1 for h in hidden):
      raise ValueError(
          f"hidden_units must be a non-empty sequence of positive integers, got {hidden!r}")
    object.__setattr__(self, "hidden_units", tuple(int(h) for h in hidden))
    for name, minimum in (("num_couplings", 1), ("spline_bins", 2), ("conditional_size", 0)):
      value = getattr(self, name)
      if not is_int(value) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
      object.__setattr__(self, name, int(value))
    if isinstance(self.coupling, str) and self.coupling not in COUPLINGS:
      raise ValueError(f"coupling must be one of {COUPLINGS} or a coupling factory, "
                       f"got {self.coupling!r}")
    if not isinstance(self.coupling, str) and not callable(self.coupling):
      raise ValueError(f"coupling must be one of {COUPLINGS} or a callable factory, "
                       f"got {self.coupling!r}")
    if self.permutation not in PERMUTATIONS:
      raise ValueError(f"permutation must be one of {PERMUTATIONS}, got {self.permutation!r}")
    bound = self.log_scale_bound
    if bound is not None and not _positive_finite(bound):
      raise ValueError(f"log_scale_bound must be a positive finite number or None, got {bound!r}")
    if not _positive_finite(self.spline_bound):
      raise ValueError(
          f"spline_bound must be a positive finite number, got {self.spline_bound!r}")
    for name in ("actnorm", "trainable_normalization"):
      if not isinstance(getattr(self, name), bool):
        raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")

  @classmethod
  def from_kwargs(cls, kwargs: dict, where: str = "RealNVP") -> "FlowOptions":
    """``FlowOptions(**kwargs)``, naming the accepted options on a typo."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(kwargs) - names)
    if unknown:
      raise TypeError(f"{where} got unexpected options {unknown}; its flow options are "
                      f"{sorted(names)}")
    return cls(**kwargs)

  def as_dict(self) -> dict:
    """Plain JSON-ready values (``hidden_units`` as a list)."""
    values = dataclasses.asdict(self)
    values["hidden_units"] = list(self.hidden_units)
    return values


@dataclasses.dataclass(frozen=True)
class TrainingOptions:
  """Training settings shared by ``fit``, ``default_optimizer`` and the CLI."""

  steps: int = _option(8000, "optimizer steps")
  batch_size: int = _option(512, "points per step")
  learning_rate: float = _option(2e-3, "peak learning rate of Adam")
  schedule: str = _option("cosine", "learning-rate schedule: linear warm-up then cosine "
                          "decay, or constant", choices=SCHEDULES)
  warmup_steps: int = _option(100, "warm-up steps of the cosine schedule")
  final_learning_rate_fraction: float = _option(
      0.0, "end of the cosine decay, as a fraction of the peak learning rate")
  clip_norm: float | None = _option(10.0, "clip the global gradient norm (none: no clipping)")
  weight_decay: float = _option(0.0, "decoupled weight decay (AdamW) per unit learning rate")
  ema_decay: float | None = _option(
      0.99, "decay of the moving average of the weights that is validated and kept "
      "(none: off)")

  def __post_init__(self):
    for name, (expected, ok) in _TRAINING_RULES.items():
      if not ok(getattr(self, name)):
        raise ValueError(f"{name} must be {expected}, got {getattr(self, name)!r}")


#: What each training option must be: the one check that ``fit``, ``default_optimizer``
#: and the command line share.
_TRAINING_RULES = {
    "steps": ("a positive integer", lambda v: is_int(v) and v >= 1),
    "batch_size": ("a positive integer", lambda v: is_int(v) and v >= 1),
    "learning_rate": ("a positive finite number", _positive_finite),
    "schedule": (f"one of {SCHEDULES}", lambda v: v in SCHEDULES),
    "warmup_steps": ("an integer >= 0", lambda v: is_int(v) and v >= 0),
    "final_learning_rate_fraction": ("a number in [0, 1]", lambda v: _finite(v) and 0 <= v <= 1),
    "clip_norm": ("a positive number or None", lambda v: v is None or _positive_finite(v)),
    "weight_decay": ("a number in [0, 1)", lambda v: _finite(v) and 0 <= v < 1),
    "ema_decay": ("in (0, 1) or None", lambda v: v is None or (_finite(v) and 0 < v < 1)),
}


def option_help(cls, name: str) -> str:
  """The help text of option ``name`` of ``cls`` (for docstrings and the CLI)."""
  return {f.name: f.metadata["help"] for f in dataclasses.fields(cls)}[name]


FLOW_DEFAULTS = FlowOptions()
TRAINING_DEFAULTS = TrainingOptions()
