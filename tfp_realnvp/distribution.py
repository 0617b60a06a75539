"""RealNVP as a TFP distribution: a standard normal pushed through the chain.

    x = loc + scale * g(z),   z ~ N(0, I),

where ``g`` is the chain of affine couplings of :func:`real_nvp_bijector` and
``(loc, scale)`` is a fixed per-dimension affine map set from the training data
(:meth:`RealNVP.adapt`).  By the change of variables,

    log p(x) = log N(f(u); 0, I) + log|det df/du| - sum(log scale),
    u = (x - loc) / scale,   f = g^{-1},

so ``log_prob`` is a density of the data in the units the user passed.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

# TFP's non-CompositeTensor TransformedDistribution: the class TFP itself
# instantiates when a bijector (like ours, holding Keras networks) is not a
# CompositeTensor.
from tensorflow_probability.python.distributions import transformed_distribution as _td

from tfp_realnvp.bijectors import coupling_names, real_nvp_bijector
from tfp_realnvp.actnorm import actnorm_layers, initialize_actnorm  # noqa: I001

tfb = tfp.bijectors
tfd = tfp.distributions

__all__ = ["RealNVP"]

_FLOW_NAME = "real_nvp"


class RealNVP(_td._TransformedDistribution):
  """A trainable RealNVP normalizing flow over ``R^event_size``.

  A TFP transformed distribution of a standard normal base, so every TFP
  method works: ``log_prob``, ``prob``, ``sample``, ``sample_and_log_prob``,
  ``event_shape`` (``[event_size]``), ``batch_shape`` (``[]``).  Its
  ``trainable_variables`` are the coupling networks' weights, complete right
  after construction; the normalizing ``loc``/``scale`` are non-trainable
  variables (saved in checkpoints, untouched by optimizers).

  ``flow.bijector`` maps latent to data space: ``Chain([Shift(loc),
  Scale(scale), couplings])``; ``flow.flow_bijector`` is the couplings alone.

  Like the ``tfd.TransformedDistribution`` that TFP itself builds around a
  bijector holding Keras networks, a ``RealNVP`` is a plain ``tf.Module``, not
  a ``CompositeTensor``: its class derives from ``_TransformedDistribution``,
  the class TFP returns from ``tfd.TransformedDistribution(...)`` for such
  bijectors, so ``isinstance(flow, tfd.TransformedDistribution)`` is False,
  exactly as for those.  (Registering it as a virtual subclass would also make
  it pass for a ``CompositeTensor`` and break ``tf.function``.)  That is what
  lets it be passed as an argument to a ``tf.function`` and keeps its network
  weights reachable from any model that holds it: a
  ``tfd.JointDistribution*``'s ``trainable_variables``, a ``tf_keras`` model
  or layer, a ``tf.train.Checkpoint``.

  Conditional flows (``conditional_size=k``) take ``conditional_input=c`` in
  ``log_prob``, ``prob``, ``sample`` and ``experimental_sample_and_log_prob``;
  it reaches every coupling network.  The batch dimensions of ``c`` (all but
  the last) broadcast NumPy-style against the sample shape in ``sample`` and
  against the batch dimensions of ``x`` in ``log_prob``, and every output gets
  its own base draw:

  * ``sample(n, conditional_input=c)``, ``c`` of shape ``[k]``: ``n`` samples
    under one condition, shape ``[n, event_size]``;
  * ``sample(n, conditional_input=c)`` or ``sample((), conditional_input=c)``,
    ``c`` of shape ``[n, k]``: one sample per row, shape ``[n, event_size]``;
  * ``sample([s, 1], conditional_input=c)``, ``c`` of shape ``[m, k]``: ``s``
    samples under each of the ``m`` conditions, shape ``[s, m, event_size]``;
  * ``log_prob(x, conditional_input=c)``: ``x`` of shape ``[n, event_size]``
    with ``c`` of shape ``[n, k]`` (row by row) or ``[k]`` (one condition for
    all), result of shape ``[n]``.

  Shapes that do not broadcast, a last dimension of ``c`` other than ``k``, a
  missing condition on a conditional flow and a condition given to an
  unconditional one each raise a ``ValueError`` saying so (in a ``tf.function``
  with unknown shapes, an ``InvalidArgumentError`` with the same message).
  Sampling is reproducible with a stateless seed: ``sample(n, seed=(1, 2))``.

  Example:

  ```python
  import tensorflow_probability as tfp
  import tfp_realnvp

  x = tfp_realnvp.datasets.moons(5000, noise=0.05)
  flow = tfp_realnvp.RealNVP(event_size=2)
  tfp_realnvp.fit(flow, x, steps=500)        # sets loc/scale from x, then trains
  flow.log_prob(x[:3]), flow.sample(4, seed=1)
  ```

  Args:
    event_size: number of dimensions of an event, at least 2.
    num_couplings: number of couplings.
    hidden_units: hidden widths of each coupling network.
    activation: hidden activation.
    permutation: mixing between couplings: ``"reverse"`` (default),
      ``"random"`` (fixed, from ``seed``) or ``"lu"`` (a learned invertible
      linear map, ``tfb.ScaleMatvecLU``, starting as the reversal).
    log_scale_bound: soft bound on each affine coupling's log-scale, ``None``
      for unbounded.
    conditional_size: size of a conditioning vector, 0 for an unconditional
      flow.  A conditional flow takes ``conditional_input=c`` in
      ``log_prob``/``sample`` and routes it to every coupling.
    coupling: ``"affine"`` (RealNVP, default), ``"additive"`` (NICE:
      shift only, volume-preserving) or ``"spline"`` (rational-quadratic
      spline, ``tfb.RationalQuadraticSpline``).
    spline_bins: number of bins of each spline.
    spline_bound: each spline acts on ``[-spline_bound, spline_bound]`` of
      normalized units (see :meth:`adapt`) and is the identity outside.
    actnorm: add an activation normalization (trainable per-dimension shift
      and log-scale, data-initialized by :meth:`adapt`) between couplings.
    loc, scale: initial normalization (defaults 0 and 1; see :meth:`adapt`).
    seed: seed of random permutations; with ``permutation="random"`` and no
      seed, one is drawn and recorded in :attr:`config`.
    dtype: ``tf.float32`` or ``tf.float64``.
    validate_args: turn on TFP's argument checks in every bijector.
    name: name of the distribution.
    bijector: a chain made by an earlier instance with the same settings, to
      share its weights (``copy()`` uses this); built afresh when ``None``.
  """

  def __init__(self,
               event_size: int,
               num_couplings: int = 8,
               hidden_units: Sequence[int] = (128, 128),
               activation="relu",
               *,
               permutation: str = "reverse",
               log_scale_bound: float | None = 3.0,
               conditional_size: int = 0,
               coupling: str = "affine",
               spline_bins: int = 8,
               spline_bound: float = 4.0,
               actnorm: bool = False,
               loc=None,
               scale=None,
               seed: int | None = None,
               dtype=tf.float32,
               validate_args: bool = False,
               name: str = "RealNVP",
               bijector: tfb.Bijector | None = None):
    parameters = dict(locals())
    dtype = tf.as_dtype(dtype)
    if dtype not in (tf.float32, tf.float64):
      raise TypeError(f"dtype must be tf.float32 or tf.float64, got {dtype.name}")
    if seed is None and permutation == "random" and bijector is None:
      # Draw the seed here, so that config records it and save/load (and
      # copy) rebuild the same permutations.
      seed = int(np.random.SeedSequence().generate_state(1)[0] >> 1)
      parameters["seed"] = seed
    with tf.name_scope(name) as name_scope:
      if bijector is None:
        flow_bijector = real_nvp_bijector(
            event_size, num_couplings, hidden_units, activation,
            permutation=permutation, log_scale_bound=log_scale_bound,
            conditional_size=conditional_size, coupling=coupling,
            spline_bins=spline_bins, spline_bound=spline_bound, actnorm=actnorm,
            seed=seed, dtype=dtype, validate_args=validate_args, name=_FLOW_NAME)
        loc_var = tf.Variable(
            np.zeros(event_size) if loc is None else np.broadcast_to(loc, [event_size]),
            dtype=dtype, trainable=False, name="loc")
        scale_var = tf.Variable(
            np.ones(event_size) if scale is None else np.broadcast_to(scale, [event_size]),
            dtype=dtype, trainable=False, name="scale")
        bijector = tfb.Chain([
            tfb.Shift(loc_var, validate_args=validate_args, name="normalize_shift"),
            tfb.Scale(scale_var, validate_args=validate_args, name="normalize_scale"),
            flow_bijector,
        ], validate_args=validate_args, name="real_nvp_in_data_units")
        # Whether the normalization was set, kept with the weights it belongs to
        # (so it is checkpointed with them and shared by copies).
        bijector.adapted = tf.Variable(loc is not None or scale is not None,
                                       trainable=False, name="adapted")
      parameters["bijector"] = bijector
      self._event_size = int(event_size)
      self._num_couplings = int(num_couplings)
      self._conditional_size = int(conditional_size)
      self._config = dict(
          event_size=int(event_size), num_couplings=int(num_couplings),
          hidden_units=[int(h) for h in hidden_units],
          activation=activation if isinstance(activation, str) else None,
          permutation=permutation, log_scale_bound=log_scale_bound,
          conditional_size=int(conditional_size), coupling=coupling,
          spline_bins=int(spline_bins), spline_bound=float(spline_bound),
          actnorm=bool(actnorm), seed=seed, dtype=dtype.name,
          validate_args=bool(validate_args), name=name)
      base = tfd.MultivariateNormalDiag(
          loc=tf.zeros([event_size], dtype=dtype), validate_args=validate_args,
          name="standard_normal")
      super().__init__(
          distribution=base, bijector=bijector,
          kwargs_split_fn=self._split_kwargs, validate_args=validate_args,
          parameters=parameters, name=name_scope.rstrip("/") if name_scope else name)
    self._parameters = self._no_dependency(parameters)

  @classmethod
  def _parameter_properties(cls, dtype, num_classes=None):
    # No batchable tensor parameters: the weights live in the bijector's networks.
    return {}

  # -- conditioning ---------------------------------------------------------

  def _split_kwargs(self, kwargs: dict):
    kwargs = dict(kwargs)
    distribution_kwargs = kwargs.pop("distribution_kwargs", None) or {}
    bijector_kwargs = kwargs.pop("bijector_kwargs", None) or {}
    conditional_input = kwargs.pop("conditional_input", None)
    if kwargs:
      raise TypeError(
          f"{self.name} got unexpected keyword arguments {sorted(kwargs)}; "
          "it accepts conditional_input=, bijector_kwargs= and distribution_kwargs=")
    if self._conditional_size:
      if conditional_input is None and not bijector_kwargs:
        raise ValueError(
            f"{self.name} is a conditional flow (conditional_size="
            f"{self._conditional_size}): pass conditional_input= with last "
            f"dimension {self._conditional_size}")
      if conditional_input is not None:
        conditional_input = self._check_conditional_input(conditional_input)
        per_coupling = {"conditional_input": conditional_input}
        bijector_kwargs = {_FLOW_NAME: {n: per_coupling for n in coupling_names(self._num_couplings)}}
    elif conditional_input is not None:
      raise ValueError(
          f"{self.name} is not conditional (conditional_size=0) but got conditional_input")
    return distribution_kwargs, bijector_kwargs

  def _check_conditional_input(self, c):
    c = tf.convert_to_tensor(c, dtype_hint=self.dtype)
    if c.dtype != self.dtype:
      c = tf.cast(c, self.dtype)
    if c.shape.rank == 0 or (c.shape.rank is not None and c.shape[-1] is not None
                             and int(c.shape[-1]) != self._conditional_size):
      raise ValueError(
          f"{self.name}: conditional_input must have shape [..., {self._conditional_size}] "
          f"(conditional_size={self._conditional_size}), got shape {c.shape}")
    return c

  def sample_and_log_prob(self, sample_shape=(), seed=None,
                          name: str = "sample_and_log_prob", **kwargs):
    """Samples and their log-densities in one pass (no inverse needed).

    The name TFP 0.25 calls ``experimental_sample_and_log_prob``.
    """
    return self.experimental_sample_and_log_prob(sample_shape, seed=seed, name=name, **kwargs)

  def _pop_condition(self, kwargs: dict):
    """Removes and checks ``conditional_input`` from ``kwargs`` (None if absent).

    Leaves ``kwargs`` alone when there is nothing to take, so that
    :meth:`_split_kwargs` gives the error for a missing or unexpected condition.
    """
    if not self._conditional_size or kwargs.get("conditional_input") is None:
      return None
    return self._check_conditional_input(kwargs.pop("conditional_input"))

  def _broadcast_batch_shape(self, shape, c, what: str):
    """``broadcast(shape, batch shape of c)``, statically checked when possible."""
    c_batch = tf.shape(c)[:-1]
    static_shape = tf.get_static_value(shape)
    static_c = c.shape[:-1]
    convention = (
        "Shapes broadcast like NumPy's: sample(n, conditional_input=c) takes c of shape "
        "[k] (n samples under one condition) or [n, k] (one sample per row); for n "
        "samples under each of m conditions use sample([n, 1], conditional_input=c) "
        "with c of shape [m, k].")
    if static_shape is not None and static_c.is_fully_defined():
      static_shape = [int(d) for d in np.reshape(static_shape, [-1])]
      try:
        return tf.constant(np.broadcast_shapes(tuple(static_shape), tuple(static_c.as_list())),
                           tf.int32)
      except ValueError:
        raise ValueError(
            f"{self.name}: {what} {static_shape} does not broadcast against the batch "
            f"shape {static_c.as_list()} of conditional_input (shape {c.shape}). "
            f"{convention}") from None
    message = (f"{self.name}: {what} does not broadcast against the batch shape of "
               f"conditional_input (all its dimensions but the last). {convention}")
    shape = tf.cast(shape, tf.int32)
    rank = tf.maximum(tf.size(shape), tf.size(c_batch))
    a = tf.concat([tf.ones([rank - tf.size(shape)], tf.int32), shape], axis=0)
    b = tf.concat([tf.ones([rank - tf.size(c_batch)], tf.int32), c_batch], axis=0)
    compatible = tf.reduce_all((a == b) | (a == 1) | (b == 1))
    with tf.control_dependencies([tf.debugging.Assert(compatible, [message, a, b])]):
      return tf.broadcast_dynamic_shape(shape, c_batch)

  # -- conditional sampling and density -------------------------------------
  #
  # Shape convention: the batch dimensions of ``conditional_input`` (all but
  # its last) broadcast, NumPy-style, against the sample shape in ``sample``
  # and against the batch dimensions of ``x`` in ``log_prob``.  Every output
  # element gets its own base draw, so broadcasting a condition never makes
  # repeated samples.

  def _call_sample_n(self, sample_shape, seed, **kwargs):
    kwargs = dict(kwargs)
    c = self._pop_condition(kwargs)
    if c is None:
      return super()._call_sample_n(sample_shape, seed, **kwargs)
    z, bijector_kwargs = self._conditional_base_sample(sample_shape, seed, c, kwargs)
    return self.bijector.forward(z, **bijector_kwargs)

  def _sample_and_log_prob(self, sample_shape, seed, **kwargs):
    kwargs = dict(kwargs)
    c = self._pop_condition(kwargs)
    if c is None:
      return super()._sample_and_log_prob(sample_shape, seed, **kwargs)
    z, bijector_kwargs = self._conditional_base_sample(sample_shape, seed, c, kwargs)
    y = self.bijector.forward(z, **bijector_kwargs)
    fldj = self.bijector.forward_log_det_jacobian(z, event_ndims=1, **bijector_kwargs)
    return y, self.distribution.log_prob(z) - fldj

  def _conditional_base_sample(self, sample_shape, seed, c, kwargs):
    if kwargs.get("distribution_kwargs"):
      raise TypeError(f"{self.name} takes no distribution_kwargs")
    sample_shape = tf.reshape(tf.cast(tf.convert_to_tensor(sample_shape), tf.int32), [-1])
    shape = self._broadcast_batch_shape(sample_shape, c, "sample_shape")
    z = self.distribution.sample(shape, seed=seed() if callable(seed) else seed)
    c = tf.broadcast_to(c, tf.concat([shape, [self._conditional_size]], axis=0))
    _, bijector_kwargs = self._split_kwargs(dict(kwargs, conditional_input=c))
    return z, bijector_kwargs

  def _log_prob(self, y, **kwargs):
    kwargs = dict(kwargs)
    c = self._pop_condition(kwargs)
    if c is None:
      return super()._log_prob(y, **kwargs)
    y_batch = tf.shape(y)[:-1]
    static = y.shape[:-1]
    shape = self._broadcast_batch_shape(
        tf.constant(static.as_list(), tf.int32) if static.is_fully_defined() else y_batch,
        c, "the batch shape of x")
    if not (static.is_fully_defined() and tf.get_static_value(shape) is not None
            and list(tf.get_static_value(shape)) == static.as_list()):
      y = tf.broadcast_to(y, tf.concat([shape, tf.shape(y)[-1:]], axis=0))
    c = tf.broadcast_to(c, tf.concat([shape, [self._conditional_size]], axis=0))
    return super()._log_prob(y, conditional_input=c, **kwargs)

  # -- properties -----------------------------------------------------------

  @property
  def event_size(self) -> int:
    return self._event_size

  @property
  def num_couplings(self) -> int:
    return self._num_couplings

  @property
  def conditional_size(self) -> int:
    return self._conditional_size

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
    """Sets the normalization to the per-dimension mean and std of ``data``.

    ``data`` has shape ``[n, event_size]``.  A dimension with zero spread
    keeps scale 1.  With ``actnorm=True`` it then data-initializes the
    activation normalizations (:meth:`initialize_actnorm`).  Returns ``self``.
    """
    data = np.asarray(data, dtype=np.float64)
    if data.ndim != 2 or data.shape[-1] != self._event_size or data.shape[0] < 2:
      raise ValueError(
          f"adapt expects data of shape [n >= 2, {self._event_size}], got {data.shape}")
    if not np.all(np.isfinite(data)):
      raise ValueError("adapt got data containing NaN or inf")
    std = data.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    self.loc.assign(data.mean(axis=0).astype(self.dtype.as_numpy_dtype))
    self.scale.assign(std.astype(self.dtype.as_numpy_dtype))
    self.bijector.adapted.assign(True)
    if self.has_actnorm:
      self.initialize_actnorm(data, conditional_input)
    return self

  def initialize_actnorm(self, data, conditional_input=None) -> "RealNVP":
    """Data-initializes every activation normalization of the flow.

    Pushes ``data`` (data units, shape ``[n, event_size]``) through the
    normalization and the couplings in the normalizing (inverse) direction and
    sets each ``actnorm_i`` so that what reaches it leaves it with zero mean
    and unit variance per dimension (Glow's data-dependent initialization).
    A conditional flow uses ``conditional_input`` (shape ``[n,
    conditional_size]``), or zeros when it is ``None``, which is exact while
    the couplings are untrained (they start as the identity whatever the
    condition).  Does nothing without ``actnorm``.  Returns ``self``.
    """
    data = np.asarray(data, dtype=self.dtype.as_numpy_dtype)
    if data.ndim != 2 or data.shape[-1] != self._event_size:
      raise ValueError(
          f"initialize_actnorm expects data of shape [n, {self._event_size}], got {data.shape}")
    if not self.has_actnorm:
      return self
    u = (data - self.loc.numpy()) / self.scale.numpy()
    kwargs = {}
    if self._conditional_size:
      c = (np.zeros([data.shape[0], self._conditional_size], self.dtype.as_numpy_dtype)
           if conditional_input is None else self._check_conditional_input(conditional_input))
      kwargs = {n: {"conditional_input": c} for n in coupling_names(self._num_couplings)}
    initialize_actnorm(self.flow_bijector, u, kwargs)
    return self
