"""Variational inference: a RealNVP surrogate posterior for any TFP model.

:func:`build_realnvp_surrogate_posterior` is the RealNVP counterpart of
``tfp.experimental.vi.build_affine_surrogate_posterior``.
"""

from __future__ import annotations

import collections.abc

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_realnvp.distribution import RealNVP

tfb = tfp.bijectors
tfd = tfp.distributions

__all__ = ["VI_FLOW_DEFAULTS", "build_realnvp_surrogate_posterior",
           "surrogate_posterior_from_flow", "one_dimensional_flow"]

# Flow options for VI: smaller than the density-estimation defaults, with log-scales bounded
# far wider (Neal's funnel spans a factor exp(+-4.5) in scale along its neck) and tanh hidden
# layers: with relu, a coupling's shift grows with its input, so Adam's first coherent steps
# compound through the couplings (the surrogate diverged on StochasticVolatilitySP500Small within
# 12 steps, and on NealsFunnel later); tanh bounds each coupling's shift (benchmarks/vi).
VI_FLOW_DEFAULTS = dict(num_couplings=8, hidden_units=(64, 64), log_scale_bound=8.0,
                        activation="tanh")


def _is_shape(s) -> bool:
  """Whether ``s`` is one shape (a leaf of an ``event_shape`` structure)."""
  if isinstance(s, (tf.TensorShape, np.ndarray, tf.Tensor, int, np.integer)):
    return True
  return (isinstance(s, (list, tuple)) and not hasattr(s, "_fields")
          and all(isinstance(x, (int, np.integer)) for x in s))


def _as_shapes(event_shape):
  """``event_shape`` with every leaf shape converted to a ``tf.TensorShape``."""
  if _is_shape(event_shape):
    shape = tf.TensorShape(tf.get_static_value(event_shape) if isinstance(
        event_shape, tf.Tensor) else event_shape)
    if not shape.is_fully_defined():
      raise ValueError(f"event_shape must be fully defined, got {shape}")
    return shape
  if isinstance(event_shape, collections.abc.Mapping):
    return type(event_shape)((k, _as_shapes(v)) for k, v in event_shape.items())
  if hasattr(event_shape, "_fields"):  # namedtuple (or the Inference Gym's StructTuple)
    return type(event_shape)(*[_as_shapes(v) for v in event_shape])
  if isinstance(event_shape, (list, tuple)):
    return type(event_shape)(_as_shapes(v) for v in event_shape)
  raise TypeError(
      f"event_shape must be a shape (list of ints, tf.TensorShape) or a nested dict/list/"
      f"tuple/namedtuple of shapes, got {type(event_shape).__name__}: {event_shape!r}")


def _structure_bijector(shapes, bijector, validate_args):
  """Maps a flat ``[d]`` event to ``shapes`` and then through ``bijector``."""
  if isinstance(shapes, tf.TensorShape):
    restructure = [tfb.Reshape(shapes, event_shape_in=[shapes.num_elements()],
                               validate_args=validate_args)]
  else:
    flat = tf.nest.flatten(shapes)
    restructure = [
        tfb.Restructure(tf.nest.pack_sequence_as(shapes, list(range(len(flat))))),
        tfb.JointMap([tfb.Reshape(s, event_shape_in=[s.num_elements()],
                                  validate_args=validate_args) for s in flat]),
        tfb.Split([s.num_elements() for s in flat], validate_args=validate_args)]
  if bijector is None and isinstance(shapes, tf.TensorShape):
    bijector = tfb.Identity(validate_args=validate_args)
  elif not isinstance(bijector, tfb.Bijector):
    if bijector is None:
      bijector = tf.nest.map_structure(lambda _: None, shapes)
    tf.nest.assert_same_structure(shapes, bijector, check_types=False)
    bijector = tfb.JointMap(tf.nest.map_structure(
        lambda b: tfb.Identity() if b is None else b, bijector), validate_args=validate_args)
  return tfb.Chain([bijector] + restructure, validate_args=validate_args, name="to_event_space")


def one_dimensional_flow(*, spline_bins: int = 8, spline_bound: float = 4.0,
                         dtype=tf.float32, validate_args: bool = False,
                         name: str = "one_dimensional_flow") -> tfd.Distribution:
  """A trainable flow over ``R^1``: ``x = m + s * g(z)``, ``z ~ N(0, 1)``.

  ``g`` is a monotone rational-quadratic spline on ``[-spline_bound,
  spline_bound]`` (identity outside) with trainable bin widths, heights and
  knot slopes; ``m`` and ``s > 0`` are trainable.  It starts as the standard
  normal (``g`` the identity, ``m = 0``, ``s = 1``).  Event shape ``[1]``.
  """
  dtype = tf.as_dtype(dtype)
  with tf.name_scope(name):
    width = tf.Variable(tf.zeros([1, spline_bins], dtype), name="bin_widths")
    height = tf.Variable(tf.zeros([1, spline_bins], dtype), name="bin_heights")
    slopes = tfp.util.TransformedVariable(tf.ones([1, spline_bins - 1], dtype),
                                          tfb.Softplus(low=tf.constant(1e-3, dtype)),
                                          name="knot_slopes")
    bins = lambda v: 2.0 * spline_bound * tf.nn.softmax(v, axis=-1)  # noqa: E731
    spline = tfb.RationalQuadraticSpline(
        bin_widths=tfp.util.DeferredTensor(width, bins),
        bin_heights=tfp.util.DeferredTensor(height, bins), knot_slopes=slopes,
        range_min=-spline_bound, validate_args=validate_args)
    shift = tf.Variable(tf.zeros([1], dtype), name="shift")
    scale = tfp.util.TransformedVariable(tf.ones([1], dtype), tfb.Softplus(), name="scale")
    return tfd.TransformedDistribution(
        tfd.MultivariateNormalDiag(tf.zeros([1], dtype), validate_args=validate_args),
        tfb.Chain([tfb.Shift(shift), tfb.Scale(scale), spline], validate_args=validate_args),
        validate_args=validate_args, name=name)


def surrogate_posterior_from_flow(flow, event_shape, bijector=None, *,
                                  validate_args: bool = False, name=None) -> tfd.Distribution:
  """Wraps a flow over ``R^d``, ``d`` the total size of ``event_shape``, into its structure.

  ``event_shape`` and ``bijector`` are as in
  :func:`build_realnvp_surrogate_posterior`.  This is how a saved surrogate
  ``q`` comes back: ``tfp_realnvp.save(q.distribution, path)``, then
  ``surrogate_posterior_from_flow(tfp_realnvp.load(path), event_shape, bijector)``.
  """
  shapes = _as_shapes(event_shape)
  size = sum(s.num_elements() for s in tf.nest.flatten(shapes))
  if tuple(flow.event_shape) != (size,):
    raise ValueError(f"flow has event shape {flow.event_shape}, but event_shape "
                     f"{event_shape!r} has {size} elements: build the flow with event size {size}")
  return tfd.TransformedDistribution(
      flow, _structure_bijector(shapes, bijector, validate_args),
      validate_args=validate_args, name=name or "realnvp_surrogate_posterior")


def build_realnvp_surrogate_posterior(event_shape, bijector=None, *, loc=None, scale=None,
                                      dtype=tf.float32, seed=None, validate_args: bool = False,
                                      name=None, **flow_options) -> tfd.Distribution:
  """A trainable RealNVP surrogate posterior with the structure of ``event_shape``.

  A flow ``q_flow`` over ``R^d``, ``d`` the total size of ``event_shape``,
  pushed through ``T``: split, reshape and restructure into ``event_shape``,
  then ``bijector`` into the support.  Its samples ``T(x)``, ``x ~ q_flow``,
  have exactly the structure, shapes and ``dtype`` of the model's parameters,
  and its density is exact, ``q(theta) = q_flow(T^{-1}(theta)) |det
  dT^{-1}/dtheta|``: it drops into ``tfp.vi.fit_surrogate_posterior`` (whose
  ELBO ``E_q[log p(theta, y) - log q(theta)]`` bounds ``log p(y)`` from below),
  ``tfp.vi.monte_carlo_variational_loss`` or a ``tf.GradientTape`` loop.  The
  flow starts as the identity, so ``q`` starts as a standard normal in the
  unconstrained space, as TFP's affine builder does.  With ``d = 1`` (RealNVP
  needs two coordinates to couple) the flow is :func:`one_dimensional_flow`.

  Example (Eight Schools, a pinned joint distribution):

  ```python
  import numpy as np, tensorflow as tf, tensorflow_probability as tfp
  from tfp_realnvp.training import default_optimizer
  from tfp_realnvp.vi import build_realnvp_surrogate_posterior
  tfd = tfp.distributions

  y = np.float32([28, 8, -3, 7, -1, 1, 18, 12])
  sigma = np.float32([15, 10, 16, 11, 9, 11, 10, 18])
  model = tfd.JointDistributionNamed(dict(
      mu=tfd.Normal(0., 5.), log_tau=tfd.Normal(5., 1.),
      theta=lambda mu, log_tau: tfd.Sample(tfd.Normal(mu, tf.exp(log_tau)), 8),
      y=lambda theta: tfd.Independent(tfd.Normal(theta, sigma), 1)))
  pinned = model.experimental_pin(y=y)
  q = build_realnvp_surrogate_posterior(
      pinned.event_shape, pinned.experimental_default_event_space_bijector())
  optimizer = default_optimizer(2000, learning_rate=3e-3, warmup_steps=200)
  tfp.vi.fit_surrogate_posterior(pinned.unnormalized_log_prob, q, optimizer,
                                 num_steps=2000, sample_size=256)
  q.sample(1000)["theta"]          # shape [1000, 8]
  ```

  The optimizer matters more than for density estimation: the first ELBOs can
  be far below their final value, and a single sample deep in a tail can give
  a gradient orders of magnitude above the rest, after which Adam takes several
  oversized steps.  ``tfp_realnvp.training.default_optimizer`` warms the
  learning rate up and clips the global gradient norm (10); with plain Adam at
  the same rate the surrogate diverged on the Inference Gym's stochastic
  volatility model (``benchmarks/vi``).

  Args:
    event_shape: a shape, or a nested structure (dict, list, tuple,
      namedtuple) of shapes, scalars (``[]``) included.
    bijector: ``None``, a bijector, or a structure of bijectors matching
      ``event_shape`` (``None`` entries are the identity) mapping
      unconstrained values to the support, e.g.
      ``pinned.experimental_default_event_space_bijector()``.
    loc, scale: per-coordinate affine map of the flat flow (see
      :class:`RealNVP`), e.g. a rough posterior mean and spread in
      unconstrained space; default 0 and 1.  Fixed, except with
      ``trainable_normalization=True`` (the default for
      ``coupling="spline"``), where they are the starting point of a
      trained location and log-scale.
    dtype, seed, validate_args, name: as for :class:`RealNVP`.
    **flow_options: :class:`RealNVP` options; defaults
      :data:`VI_FLOW_DEFAULTS`, then the flow's own.  With ``d = 1`` only
      ``spline_bins`` and ``spline_bound`` apply.

  Returns:
    The surrogate; its ``distribution`` attribute is the flow and its
    ``trainable_variables`` are complete at construction.
  """
  shapes = _as_shapes(event_shape)
  size = sum(s.num_elements() for s in tf.nest.flatten(shapes))
  if size < 1:
    raise ValueError(f"event_shape {event_shape!r} has no elements: nothing to infer")
  options = dict(VI_FLOW_DEFAULTS, **flow_options)
  # A spline acts on [-spline_bound, spline_bound] only (identity outside): without a learned
  # location and scale a spline surrogate cannot reach a posterior wider than that
  # (benchmarks/vi, Banana: KL 1.31, worse than mean-field; 0.061 with them, medians of 3 seeds).
  options.setdefault("trainable_normalization", options.get("coupling") == "spline")
  if options.get("conditional_size"):
    raise ValueError("a surrogate posterior is unconditional: drop conditional_size")
  if size == 1:
    flow = one_dimensional_flow(
        spline_bins=options.get("spline_bins", 8), spline_bound=options.get("spline_bound", 4.0),
        dtype=dtype, validate_args=validate_args)
  else:
    flow = RealNVP(size, loc=loc, scale=scale, seed=seed, dtype=dtype,
                   validate_args=validate_args, **options)
  return surrogate_posterior_from_flow(flow, shapes, bijector, validate_args=validate_args,
                                       name=name)
