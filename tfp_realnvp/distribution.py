"""RealNVP as a TFP distribution: a standard normal pushed through the chain of couplings."""

from __future__ import annotations

import copy as copy_lib
import dataclasses
import warnings

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

# TFP's non-CompositeTensor TransformedDistribution: the class TFP itself
# instantiates when a bijector (like ours, holding Keras networks) is not a
# CompositeTensor.
from tensorflow_probability.python.distributions import transformed_distribution as _td
from tensorflow_probability.python.internal import prefer_static as ps

from tfp_realnvp.actnorm import actnorm_layers, initialize_actnorm
from tfp_realnvp.bijectors import ConditionalChain, clear_caches, real_nvp_bijector
from tfp_realnvp.conditional import ConditionedRealNVP
from tfp_realnvp.options import FlowOptions

tfb = tfp.bijectors
tfd = tfp.distributions

__all__ = ["RealNVP", "DataUnitsChain"]

_FLOW_NAME = "real_nvp"
# Moments with no closed form, and the Monte Carlo estimate to use instead.
_ESTIMATES = {
    "mean": "tf.reduce_mean(flow.sample(10000, seed=1), axis=0)",
    "mode": "the sample of highest flow.log_prob among flow.sample(10000, seed=1)",
    "variance": "tf.math.reduce_variance(flow.sample(10000, seed=1), axis=0)",
    "stddev": "tf.math.reduce_std(flow.sample(10000, seed=1), axis=0)",
    "covariance": "tfp.stats.covariance(flow.sample(10000, seed=1))",
    "entropy": "-tf.reduce_mean(flow.log_prob(flow.sample(10000, seed=1)))",
}


class DataUnitsChain(ConditionalChain):
  """``Chain([Shift(loc), Scale(scale), couplings])``, normalizing the condition.

  ``conditional_input=c`` reaches every coupling as ``(c - condition_loc) /
  condition_scale`` (non-trainable, set by :meth:`RealNVP.adapt`).  ``adapted``
  records whether the normalizations were set, so checkpoints and copies carry it.
  """

  def __init__(self, loc, scale, couplings, conditional_size: int = 0,
               validate_args: bool = False, name: str = "real_nvp_in_data_units"):
    super().__init__([tfb.Shift(loc, validate_args=validate_args, name="normalize_shift"),
                      tfb.Scale(scale, validate_args=validate_args, name="normalize_scale"),
                      couplings], validate_args=validate_args, name=name)
    self.adapted = tf.Variable(False, trainable=False, name="adapted")
    if conditional_size:
      self.condition_loc = tf.Variable(tf.zeros([conditional_size], loc.dtype),
                                       trainable=False, name="condition_loc")
      self.condition_scale = tf.Variable(tf.ones([conditional_size], loc.dtype),
                                         trainable=False, name="condition_scale")

  def normalize_condition(self, c):
    """``(c - condition_loc) / condition_scale``, in the flow's dtype."""
    c = tf.cast(c, self.condition_loc.dtype)
    return (c - self.condition_loc) / self.condition_scale

  def member_kwargs(self, conditional_input=None, **kwargs) -> dict:
    if conditional_input is not None and self.conditioned:
      conditional_input = self.normalize_condition(conditional_input)
    return super().member_kwargs(conditional_input, **kwargs)


class RealNVP(_td._TransformedDistribution):
  """A trainable RealNVP normalizing flow over ``R^event_size``.

  A standard normal pushed through the couplings ``g`` of
  :func:`real_nvp_bijector` and a fixed data normalization ``(loc, scale)``,
  with ``(c_loc, c_scale)`` that of the condition ``c`` of a conditional flow
  (both set by :meth:`adapt`), so that ``log_prob`` is in the data's units:

      x = loc + scale * g(z; c'),   z ~ N(0, I),   c' = (c - c_loc) / c_scale,
      log p(x | c) = log N(f(u; c'); 0, I) + log|det df/du| - sum(log scale),
      u = (x - loc) / scale,   f = g^{-1}.

  ``flow.bijector`` (a :class:`DataUnitsChain`) maps latent to data space,
  ``flow.flow_bijector`` is the couplings alone; ``trainable_variables`` are
  complete at construction.  Normalize before training in your own loop
  (:meth:`from_data`, :meth:`adapt` or ``loc``/``scale``; ``tfp_realnvp.fit``
  adapts by itself): an un-adapted flow warns once on data far from standardized.

  A conditional flow (``conditional_size=k``) takes ``conditional_input=c`` of
  shape ``[..., k]`` in its methods and ``flow.bijector``'s; the batch
  dimensions of ``c`` act as a batch of distributions, as for the distribution
  :meth:`condition` binds.

  **Caching**: TFP bijectors cache results by input tensor, whatever the
  weights.  Eager ``log_prob``/``prob``/``sample``/``sample_and_log_prob``
  first call :meth:`clear_cache`; after changing weights, call it yourself
  before using ``flow.bijector``.

  ``mean``, ``mode``, ``stddev``, ``variance``, ``covariance`` and ``entropy``
  raise, naming a Monte Carlo estimate.  There is no batch dimension: mix flows
  with ``tfd.Mixture(cat, [flow_a, flow_b])``.

  Example:

  ```python
  import tfp_realnvp

  x = tfp_realnvp.datasets.moons(5000, noise=0.05)
  flow = tfp_realnvp.RealNVP.from_data(x, num_couplings=8)
  tfp_realnvp.fit(flow, x, steps=500)
  flow.log_prob(x[:3]), flow.sample(4, seed=1)
  ```

  Args:
    event_size: dimensions of an event, at least 2.
    loc, scale: initial data normalization (default 0 and 1); giving either
      marks the flow as adapted.  With ``trainable_normalization=True`` both
      are trained with the weights (the scale as ``exp`` of a variable), as a
      surrogate posterior needs (:mod:`tfp_realnvp.vi`).
    seed: seed of random permutations; with ``permutation="random"`` and none
      given, one is drawn and recorded in :attr:`config`.
    dtype: ``tf.float32`` or ``tf.float64``.
    validate_args, name: as for any TFP distribution.
    bijector: another instance's :class:`DataUnitsChain`, to share its weights.
    **flow_options: :class:`~tfp_realnvp.options.FlowOptions` fields
      (``num_couplings``, ``hidden_units``, ``coupling``, ``conditional_size``, ...).
  """

  def __init__(self, event_size: int, *, loc=None, scale=None, seed: int | None = None,
               dtype=tf.float32, validate_args: bool = False, name: str = "RealNVP",
               bijector: tfb.Bijector | None = None, **flow_options):
    options = FlowOptions.from_kwargs(flow_options, "RealNVP")
    dtype = tf.as_dtype(dtype)
    if dtype not in (tf.float32, tf.float64):
      raise TypeError(f"dtype must be tf.float32 or tf.float64, got {dtype.name}")
    if seed is None and options.permutation == "random" and bijector is None:
      # Drawn here, so that config records it and save/load/copy rebuild it.
      seed = int(np.random.SeedSequence().generate_state(1)[0] >> 1)
    parameters = dict(event_size=event_size, loc=loc, scale=scale, seed=seed, dtype=dtype,
                      validate_args=validate_args, name=name, bijector=bijector,
                      **{f.name: getattr(options, f.name) for f in dataclasses.fields(options)})
    with tf.name_scope(name) as name_scope:
      if bijector is None:
        couplings = real_nvp_bijector(event_size, options, seed=seed, dtype=dtype,
                                      validate_args=validate_args, name=_FLOW_NAME)
        learn = options.trainable_normalization
        loc_var, scale_var = (np.broadcast_to(np.asarray(default if v is None else v,
                                                         dtype.as_numpy_dtype), [event_size])
                              for v, default in ((loc, 0.0), (scale, 1.0)))
        loc_var = tf.Variable(loc_var, trainable=learn, name="loc")
        # Trained, the scale is exp(a variable), so that it stays positive.
        scale_var = (tfp.util.TransformedVariable(scale_var, tfb.Exp(), name="scale") if learn
                     else tf.Variable(scale_var, trainable=False, name="scale"))
        bijector = DataUnitsChain(loc_var, scale_var, couplings, options.conditional_size,
                                  validate_args=validate_args)
        bijector.adapted.assign(loc is not None or scale is not None)
      parameters["bijector"] = bijector
      self._event_size = int(event_size)
      self._options = options
      self._config = dict(
          options.as_dict(), event_size=int(event_size), seed=seed, dtype=dtype.name,
          validate_args=bool(validate_args), name=name,
          activation=options.activation if isinstance(options.activation, str) else None,
          coupling=options.coupling if isinstance(options.coupling, str) else None)
      self._checked_units = False
      base = tfd.MultivariateNormalDiag(loc=tf.zeros([event_size], dtype=dtype),
                                        validate_args=validate_args, name="standard_normal")
      super().__init__(
          distribution=base, bijector=bijector, kwargs_split_fn=self._split_kwargs,
          validate_args=validate_args, parameters=parameters,
          name=name_scope.rstrip("/") if name_scope else name)
    self._parameters = self._no_dependency(parameters)

  @classmethod
  def from_data(cls, data, conditional_input=None, **kwargs) -> "RealNVP":
    """``RealNVP(data.shape[-1], **kwargs).adapt(data, conditional_input)``.

    A ``conditional_input`` of shape ``[n, k]`` also sets ``conditional_size=k``
    unless given.  Example: ``RealNVP.from_data(x * 100 + 1000, num_couplings=4)``.
    """
    data = np.asarray(data)
    if data.ndim != 2:
      raise ValueError(f"from_data expects data of shape [n, event_size], got {data.shape}")
    if conditional_input is not None:
      kwargs.setdefault("conditional_size", int(np.shape(conditional_input)[-1]))
    return cls(data.shape[-1], **kwargs).adapt(data, conditional_input)

  @classmethod
  def _parameter_properties(cls, dtype, num_classes=None):
    # No batchable tensor parameters: the weights live in the bijector's networks.
    return {}

  def _split_kwargs(self, kwargs: dict):
    kwargs = dict(kwargs)
    distribution_kwargs = kwargs.pop("distribution_kwargs", None) or {}
    bijector_kwargs = kwargs.pop("bijector_kwargs", None) or {}
    conditional_input = kwargs.pop("conditional_input", None)
    if kwargs:
      raise TypeError(
          f"{self.name} got unexpected keyword arguments {sorted(kwargs)}; "
          "it accepts conditional_input=, bijector_kwargs= and distribution_kwargs=")
    if self.conditional_size:
      if conditional_input is None and not bijector_kwargs:
        raise ValueError(
            f"{self.name} is a conditional flow (conditional_size={self.conditional_size}): "
            f"pass conditional_input= with last dimension {self.conditional_size}")
      if conditional_input is not None:
        bijector_kwargs = {"conditional_input": self._check_condition(conditional_input)}
    elif conditional_input is not None:
      raise ValueError(
          f"{self.name} is not conditional (conditional_size=0) but got conditional_input")
    return distribution_kwargs, bijector_kwargs

  def _check_condition(self, c):
    c = tf.convert_to_tensor(c, dtype_hint=self.dtype)
    if c.dtype.is_complex:
      raise TypeError(f"{self.name}: conditional_input is complex; pass real values")
    c = tf.cast(c, self.dtype)
    k = self.conditional_size
    if c.shape.rank == 0 or (c.shape.rank is not None and c.shape[-1] is not None
                             and int(c.shape[-1]) != k):
      raise ValueError(f"{self.name}: conditional_input must have shape [..., {k}] "
                       f"(conditional_size={k}), got shape {c.shape}")
    return c

  def _check_events(self, value):
    """Refuses complex values and a last dimension other than ``event_size``."""
    shape = value.shape if hasattr(value, "shape") else np.shape(value)
    if value.dtype.is_complex if tf.is_tensor(value) else np.iscomplexobj(value):
      raise TypeError(f"{self.name}: got complex values; log_prob takes real events")
    d, shape = self._event_size, tf.TensorShape(shape)
    if shape.rank == 0 or (shape.rank is not None and shape[-1] is not None
                           and shape[-1] != d):
      raise ValueError(
          f"{self.name}: expected events of size {d} (shape [..., {d}]), got shape "
          f"{shape}; a size-1 last dimension is not broadcast to {d}")
    if tf.executing_eagerly():
      self.clear_cache()
      self._warn_if_not_standardized(value)
    elif shape.rank is not None and shape[-1] is None:
      # tfb.RealNVP needs a known last dimension: check it and make it static.
      value = tf.ensure_shape(tf.convert_to_tensor(value, dtype_hint=self.dtype),
                              shape[:-1].concatenate([d]))
    return value

  def _warn_if_not_standardized(self, value):
    """Warns once if an un-adapted flow meets data far from (0, 1) per dimension."""
    if self._checked_units:
      return
    rows = np.reshape(np.asarray(value, np.float64), [-1, self._event_size])[:10000]
    rows = rows[np.all(np.isfinite(rows), axis=1)]
    if len(rows) < 2:
      return
    self._checked_units = True
    mean, std = rows.mean(0), rows.std(0)
    far = np.any(np.abs(mean) > 5.0) or np.any(std > 10.0) or np.any((std > 0) & (std < 0.1))
    if far and not self.is_adapted:
      warnings.warn(
          f"{self.name} is not adapted, but the data it is asked about has per-dimension "
          f"means {np.round(mean, 3).tolist()} and stds {np.round(std, 3).tolist()}, far from "
          "standardized (0, 1): the flow will train slowly and badly. Build it with "
          "RealNVP.from_data(x, ...), call flow.adapt(x) before training, or pass loc=/scale=.",
          UserWarning, stacklevel=5)

  def _call_log_prob(self, value, name, **kwargs):
    return super()._call_log_prob(self._check_events(value), name, **kwargs)

  def _call_prob(self, value, name, **kwargs):
    return super()._call_prob(self._check_events(value), name, **kwargs)

  def sample_and_log_prob(self, sample_shape=(), seed=None,
                          name: str = "sample_and_log_prob", **kwargs):
    """Samples and their log-densities in one pass (TFP's ``experimental_`` name)."""
    return self.experimental_sample_and_log_prob(sample_shape, seed=seed, name=name, **kwargs)

  def _call_sample_n(self, sample_shape, seed, **kwargs):
    return super()._call_sample_n(self._batch_sample_shape(sample_shape, kwargs), seed, **kwargs)

  def _call_sample_and_log_prob(self, sample_shape, seed, **kwargs):
    return super()._call_sample_and_log_prob(
        self._batch_sample_shape(sample_shape, kwargs), seed, **kwargs)

  def _batch_sample_shape(self, sample_shape, kwargs):
    """``sample_shape + c.shape[:-1]``, checked; clears the cache when eager."""
    if tf.executing_eagerly():
      self.clear_cache()
    static = tf.get_static_value(tf.convert_to_tensor(sample_shape))
    if static is not None and np.any(np.asarray(static) < 0):
      raise ValueError(f"{self.name}: sample_shape must be non-negative, got "
                       f"{np.asarray(static).tolist()}")
    if kwargs.get("conditional_input") is None or not self.conditional_size:
      return sample_shape
    c = self._check_condition(kwargs["conditional_input"])
    return ps.concat([ps.reshape(ps.cast(sample_shape, tf.int32), [-1]), ps.shape(c)[:-1]], 0)

  def _log_prob(self, y, **kwargs):
    c = kwargs.get("conditional_input")
    if c is not None and self.conditional_size:
      # The networks broadcast c against x; x must have the joint batch shape.
      c = self._check_condition(c)
      y_batch, c_batch = y.shape[:-1], c.shape[:-1]
      if not (y_batch.is_fully_defined() and c_batch.is_fully_defined()):
        batch = tf.broadcast_dynamic_shape(tf.shape(y)[:-1], tf.shape(c)[:-1])
      else:
        try:
          batch = np.broadcast_shapes(tuple(y_batch), tuple(c_batch))
        except ValueError:
          raise ValueError(
              f"{self.name}: the batch shape of x {y_batch.as_list()} does not broadcast "
              f"against the batch shape {c_batch.as_list()} of conditional_input (all its "
              "dimensions but the last); they broadcast like NumPy's") from None
      y = tf.broadcast_to(y, ps.concat([batch, [self._event_size]], 0))
    return super()._log_prob(y, **kwargs)

  def condition(self, conditional_input, name: str | None = None) -> ConditionedRealNVP:
    """This conditional flow with ``conditional_input`` bound: ``p(x | c)``.

    A :class:`~tfp_realnvp.conditional.ConditionedRealNVP` of batch shape
    ``c.shape[:-1]`` sharing this flow's weights; gradients flow to ``c``.
    """
    if not self.conditional_size:
      raise ValueError(f"{self.name} is not conditional (conditional_size=0); "
                       "condition() binds the condition of a conditional flow")
    self._check_condition(conditional_input)
    return ConditionedRealNVP(self, conditional_input, validate_args=self.validate_args,
                              name=name or f"{self.name}_conditioned")

  def _default_event_space_bijector(self, *args, **kwargs):
    # The support is all of R^event_size, whatever the condition.
    return tfb.Identity(validate_args=self.validate_args)

  def copy(self, **overrides) -> "RealNVP":
    """A flow sharing this one's weights; only ``name`` may change.

    For other settings build a new flow, ``RealNVP(**dict(flow.config,
    num_couplings=2))`` (fresh weights); ``copy.deepcopy(flow)`` gives
    independent weights with the same values.
    """
    refused = sorted(set(overrides) - {"name", "bijector"})
    if refused:
      raise ValueError(
          f"{self.name}.copy() shares this flow's weights and can only change name, not "
          f"{refused}; build a new flow with RealNVP(**dict(flow.config, "
          f"{refused[0]}=...)) (fresh weights) instead")
    return super().copy(**overrides)

  def __deepcopy__(self, memo):
    params = {k: copy_lib.deepcopy(v, memo) for k, v in self.parameters.items()
              if k not in ("bijector", "dtype")}
    twin = type(self)(dtype=self.dtype, **params)
    for mine, theirs in zip(self.variables, twin.variables):
      theirs.assign(mine)
    return twin

  def clear_cache(self) -> None:
    """Drops TFP's cached bijector results of this flow (see *Caching*)."""
    clear_caches(self.bijector)

  @property
  def event_size(self) -> int:
    return self._event_size

  @property
  def num_couplings(self) -> int:
    return self._options.num_couplings

  @property
  def conditional_size(self) -> int:
    return self._options.conditional_size

  @property
  def options(self) -> FlowOptions:
    """The flow's architecture options."""
    return self._options

  @property
  def config(self) -> dict:
    """The constructor arguments, as plain JSON-serializable values."""
    return dict(self._config)

  @property
  def flow_bijector(self) -> tfb.Chain:
    """The couplings alone: latent space <-> normalized data space."""
    return self.bijector.bijectors[2]

  @property
  def loc(self) -> tf.Variable:
    return self.bijector.bijectors[0].shift

  @property
  def scale(self) -> tf.Variable:
    return self.bijector.bijectors[1].scale

  @property
  def is_adapted(self) -> bool:
    """Whether :meth:`adapt` (or an explicit ``loc``/``scale``) set the normalization."""
    return bool(self.bijector.adapted.numpy())

  @property
  def has_actnorm(self) -> bool:
    return bool(actnorm_layers(self.flow_bijector))

  def adapt(self, data, conditional_input=None) -> "RealNVP":
    """Sets the normalizations to the per-dimension mean and std of the data.

    ``data`` has shape ``[n, event_size]``, ``conditional_input`` ``[n,
    conditional_size]``; a dimension with zero spread keeps scale 1.  With
    ``actnorm=True`` it then calls :meth:`initialize_actnorm`.  Returns ``self``.
    """
    dtype = self.dtype.as_numpy_dtype
    loc, scale = _mean_and_std(data, self._event_size, "data")
    self.loc.assign(loc.astype(dtype))
    self.scale.assign(scale.astype(dtype))
    if conditional_input is not None:
      if not self.conditional_size:
        raise ValueError(f"{self.name} is not conditional but adapt got conditional_input")
      c_loc, c_scale = _mean_and_std(conditional_input, self.conditional_size,
                                     "conditional_input")
      self.bijector.condition_loc.assign(c_loc.astype(dtype))
      self.bijector.condition_scale.assign(c_scale.astype(dtype))
    self.bijector.adapted.assign(True)
    self.clear_cache()
    if self.has_actnorm:
      self.initialize_actnorm(data, conditional_input)
    return self

  def initialize_actnorm(self, data, conditional_input=None) -> "RealNVP":
    """Glow's data-dependent initialization of every ``actnorm_i`` from ``data``.

    A conditional flow uses ``conditional_input``, or zeros (exact while the
    couplings are untrained: they start as the identity whatever the condition).
    """
    data = np.asarray(data, dtype=self.dtype.as_numpy_dtype)
    c = None
    if self.conditional_size:
      c = self.bijector.normalize_condition(
          np.zeros([len(data), self.conditional_size]) if conditional_input is None
          else self._check_condition(conditional_input))
    initialize_actnorm(self.flow_bijector, (data - self.loc.numpy()) / self.scale.numpy(),
                       conditional_input=c)
    self.clear_cache()
    return self


def _refuse(what: str):
  """TFP's hook ``_<what>`` of ``mean()``, ``mode()``, ...: raises naming the estimate."""
  def method(self, **kwargs):
    raise NotImplementedError(
        f"{self.name}.{what}(): a normalizing flow has no closed-form {what}; estimate it "
        f"by Monte Carlo, e.g. {_ESTIMATES[what]}")
  return method


for _what in _ESTIMATES:
  setattr(RealNVP, f"_{_what}", _refuse(_what))


def _mean_and_std(data, size: int, what: str):
  """Per-dimension mean and std (1 where there is no spread) of ``[n, size]`` data."""
  data = np.asarray(data, dtype=np.float64)
  if data.ndim != 2 or data.shape[-1] != size or data.shape[0] < 2:
    raise ValueError(f"adapt expects {what} of shape [n >= 2, {size}], got {data.shape}")
  if not np.all(np.isfinite(data)):
    raise ValueError(f"adapt got {what} containing NaN or inf")
  std = data.std(axis=0)
  return data.mean(axis=0), np.where(std > 0, std, 1.0)
