"""The coupling networks: one perceptron, two heads.

A coupling splits an event ``x = (x0, x1)`` and transforms ``x1`` elementwise
with parameters computed from ``x0`` (and an optional condition ``c``).
:class:`MLP` is that computation, ``raw = MLP([x0, c])``: dense hidden layers
and a zero-initialized output layer (so every coupling starts as the
identity), for inputs of any batch shape.  The heads map ``raw`` to the
transform's parameters:

* :class:`ShiftAndLogScale` (affine coupling ``y1 = x1 * exp(s) + t``): the
  shift ``t`` and the softly bounded log-scale ``s = b * tanh(raw / b)`` (near
  zero the identity, ``|s| < b`` always, so one bad step cannot make the
  Jacobian explode); shift only for an additive coupling.
* :class:`SplineParameters` (rational-quadratic spline, Durkan et al. 2019):
  bin widths, bin heights and interior knot slopes.

Inputs are clipped to ``[-1e4, 1e4]`` (normalized units) before the first
layer and an unbounded log-scale to ``[-30, 30]``: far outside anything a
trained flow sees, these keep every output finite for a finite input, so that
a density is never NaN (an input of ``1e33`` would otherwise overflow the
hidden layers into ``inf - inf``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf
import tf_keras

__all__ = ["MLP", "ShiftAndLogScale", "SplineParameters"]

INPUT_LIMIT = 1e4
UNBOUNDED_LOG_SCALE_LIMIT = 30.0


def _check_units(label: str, value, allow_none: bool = True):
  if value is None and allow_none:
    return None
  if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
    raise ValueError(f"{label} must be a positive integer{' or None' * allow_none}, "
                     f"got {value!r}")
  return int(value)


class MLP(tf_keras.layers.Layer):
  """``raw = W_out h_L + b_out``, ``h_i = act(W_i h_{i-1} + b_i)``, ``h_0 = [x, c]``.

  ``x`` has shape ``batch_shape + [input_units]`` (any batch shape); the
  condition ``c`` (``conditional_size > 0``) broadcasts against it and is
  concatenated to it.  ``raw`` has ``raw_per_output * output_units`` entries;
  the output layer starts at zero.  With ``input_units`` known, the weights
  exist after the constructor; otherwise at the first call.  The heads
  (subclasses) map ``raw`` to a transform's parameters.

  Example:

  ```python
  net = MLP((64, 64), input_units=2, output_units=3, conditional_size=1)
  raw = net(tf.zeros([10, 2]), conditional_input=tf.ones([1]))  # zeros, [10, 3]
  ```

  Args:
    hidden_units: widths of the hidden layers.
    activation: activation of the hidden layers (any Keras activation).
    input_units: size of ``x``; if given, the weights are built now.
    output_units: number of transformed coordinates (defaults to
      ``input_units``).
    raw_per_output: raw outputs per transformed coordinate.
    conditional_size: size of the conditioning vector, 0 for none.
    kernel_initializer: initializer of the hidden layers.
    dtype: dtype of the weights and outputs.
    name: layer name.
  """

  def __init__(self, hidden_units: Sequence[int] = (128, 128), activation="relu", *,
               input_units: int | None = None, output_units: int | None = None,
               raw_per_output: int = 1, conditional_size: int = 0,
               kernel_initializer="glorot_uniform", dtype=tf.float32, name: str | None = None,
               **kwargs):
    super().__init__(dtype=dtype, name=name, **kwargs)
    hidden_units = tuple(hidden_units)
    if not hidden_units or any(
        not isinstance(h, int) or isinstance(h, bool) or h < 1 for h in hidden_units):
      raise ValueError(
          f"hidden_units must be a non-empty sequence of positive integers, got {hidden_units!r}")
    if not isinstance(conditional_size, int) or conditional_size < 0:
      raise ValueError(f"conditional_size must be a non-negative integer, got {conditional_size!r}")
    self.hidden_units = hidden_units
    self.activation = tf_keras.activations.get(activation)
    self._activation_config = activation if isinstance(activation, str) else None
    self.input_units = _check_units("input_units", input_units)
    self.output_units = _check_units("output_units", output_units) or self.input_units
    self.raw_per_output = _check_units("raw_per_output", raw_per_output, allow_none=False)
    self.conditional_size = conditional_size
    self.kernel_initializer = kernel_initializer
    if self.input_units is not None:
      self.build_network(self.input_units, self.output_units)

  @property
  def is_network_built(self) -> bool:
    return hasattr(self, "hidden_layers")

  def build_network(self, input_units: int, output_units: int) -> None:
    """Creates the layers and their weights for the given sizes."""
    if self.is_network_built:
      return
    self.input_units, self.output_units = int(input_units), int(output_units)
    sizes = (self.input_units + self.conditional_size,) + self.hidden_units
    self.hidden_layers = [
        tf_keras.layers.Dense(width, activation=self.activation, dtype=self.dtype,
                              kernel_initializer=self.kernel_initializer, name=f"hidden_{i}")
        for i, width in enumerate(self.hidden_units)]
    self.output_layer = tf_keras.layers.Dense(
        self.raw_per_output * self.output_units, kernel_initializer="zeros",
        bias_initializer="zeros", dtype=self.dtype, name="output")
    for layer, in_dim in zip(self.hidden_layers + [self.output_layer], sizes):
      with tf.name_scope(self.name), tf.name_scope(layer.name):  # readable variable names
        layer.build((None, in_dim))
    self.built = True

  def build(self, input_shape):
    # The output size may only arrive with the call (tfb.RealNVP passes it),
    # so an unsized network is built at its first call, not here.
    self.built = True

  def _inputs(self, x, output_units, conditional_input):
    """``[x, c]`` broadcast together, clipped, and the batch shape."""
    x = tf.convert_to_tensor(x, dtype=self.dtype)
    if output_units is not None and self.output_units is not None \
        and int(output_units) != self.output_units:
      raise ValueError(f"{self.name} was built for {self.output_units} output units but the "
                       f"coupling asked for {int(output_units)}")
    if not self.is_network_built:
      self.build_network(int(x.shape[-1]), int(output_units or x.shape[-1]))
    if x.shape[-1] is not None and int(x.shape[-1]) != self.input_units:
      raise ValueError(f"{self.name} expects inputs with last dimension {self.input_units}, "
                       f"got shape {x.shape}")
    batch_shape = tf.shape(x)[:-1]
    if not self.conditional_size:
      if conditional_input is not None:
        raise ValueError(f"{self.name} is not conditional (conditional_size=0) but got a "
                         "conditional_input")
      return tf.clip_by_value(x, -INPUT_LIMIT, INPUT_LIMIT), batch_shape
    if conditional_input is None:
      raise ValueError(f"{self.name} is conditional (conditional_size={self.conditional_size}) "
                       "but no conditional_input was given")
    c = tf.convert_to_tensor(conditional_input, dtype=self.dtype)
    if c.shape.rank == 0 or (c.shape.rank is not None and c.shape[-1] is not None
                             and int(c.shape[-1]) != self.conditional_size):
      raise ValueError(f"conditional_input must have last dimension {self.conditional_size}, "
                       f"got shape {c.shape}")
    batch_shape = tf.broadcast_dynamic_shape(batch_shape, tf.shape(c)[:-1])
    h = tf.concat([tf.broadcast_to(x, tf.concat([batch_shape, [self.input_units]], 0)),
                   tf.broadcast_to(c, tf.concat([batch_shape, [self.conditional_size]], 0))],
                  axis=-1)
    return tf.clip_by_value(h, -INPUT_LIMIT, INPUT_LIMIT), batch_shape

  def call(self, x, output_units: int | None = None, conditional_input=None):
    h, batch_shape = self._inputs(x, output_units, conditional_input)
    # Dense layers want rank-2 input: flatten any batch shape, restore it after.
    h = tf.reshape(h, [-1, self.input_units + self.conditional_size])
    for layer in self.hidden_layers:
      h = layer(h)
    out = self.output_layer(h)
    return tf.reshape(out, tf.concat([batch_shape, [self.raw_per_output * self.output_units]], 0))

  def get_config(self) -> dict:
    config = super().get_config()
    config.update(
        hidden_units=list(self.hidden_units),
        activation=self._activation_config or tf_keras.activations.serialize(self.activation),
        input_units=self.input_units, output_units=self.output_units,
        raw_per_output=self.raw_per_output, conditional_size=self.conditional_size)
    return config


class ShiftAndLogScale(MLP):
  """The :class:`MLP` head of an affine coupling: ``x0 -> (t, s)``.

  Called the way ``tfb.RealNVP`` calls its ``shift_and_log_scale_fn``:
  ``fn(x0, output_units, **condition_kwargs) -> (shift, log_scale)``, both of
  shape ``batch_shape + [output_units]``, with ``log_scale = b * tanh(raw / b)``
  (``None`` for ``shift_only``).

  Example:

  ```python
  import tensorflow as tf
  import tensorflow_probability as tfp
  from tfp_realnvp import ShiftAndLogScale

  net = ShiftAndLogScale(input_units=1, output_units=1, hidden_units=(64, 64))
  coupling = tfp.bijectors.RealNVP(num_masked=1, shift_and_log_scale_fn=net)
  y = coupling.forward(tf.random.normal([10, 2]))   # identity until trained
  ```

  Args:
    hidden_units, activation, input_units, output_units, conditional_size,
      kernel_initializer, dtype, name: as for :class:`MLP` (``output_units``
      is the size of ``x1``).
    log_scale_bound: ``b``; ``None`` leaves the log-scale unbounded (but
      clipped to ``[-30, 30]`` so that ``exp(s)`` stays finite).
    shift_only: emit ``log_scale = None`` (a volume-preserving, NICE-style
      additive coupling).
  """

  def __init__(self, hidden_units: Sequence[int] = (128, 128), activation="relu", *,
               log_scale_bound: float | None = 3.0, shift_only: bool = False, **kwargs):
    if log_scale_bound is not None and not log_scale_bound > 0:
      raise ValueError(f"log_scale_bound must be positive or None, got {log_scale_bound!r}")
    super().__init__(hidden_units, activation, raw_per_output=1 if shift_only else 2, **kwargs)
    self.log_scale_bound = None if log_scale_bound is None else float(log_scale_bound)
    self.shift_only = bool(shift_only)

  def call(self, x0, output_units: int | None = None, conditional_input=None):
    out = super().call(x0, output_units, conditional_input)
    if self.shift_only:
      return out, None
    shift, raw = tf.split(out, 2, axis=-1)
    if self.log_scale_bound is None:
      return shift, tf.clip_by_value(raw, -UNBOUNDED_LOG_SCALE_LIMIT, UNBOUNDED_LOG_SCALE_LIMIT)
    bound = tf.constant(self.log_scale_bound, dtype=raw.dtype)
    return shift, bound * tf.tanh(raw / bound)

  def get_config(self) -> dict:
    config = dict(super().get_config(), log_scale_bound=self.log_scale_bound,
                  shift_only=self.shift_only)
    del config["raw_per_output"]
    return config


class SplineParameters(MLP):
  """The :class:`MLP` head of a rational-quadratic spline coupling.

  For each of the ``output_units`` transformed coordinates it emits
  ``3 * num_bins - 1`` raw numbers, mapped to the arguments of
  ``tfb.RationalQuadraticSpline`` on ``[-bound, bound]``:

  * bin widths and heights: ``2 * bound * (m + (1 - num_bins * m) * softmax(raw))``
    with ``m = min_bin_fraction``: each bin covers at least a fraction ``m``
    of the interval and they sum to ``2 * bound``;
  * interior knot slopes: ``min_slope + softplus(raw + k)`` with ``k`` such
    that ``raw = 0`` gives slope 1.

  At initialization (``raw = 0``) the bins are equal and every slope is 1: the
  spline is the identity (as it is outside ``[-bound, bound]``).

  Called as ``net(x0, output_units, conditional_input=None) -> (bin_widths,
  bin_heights, knot_slopes)`` of shapes ``batch_shape + [output_units,
  num_bins]`` (twice) and ``batch_shape + [output_units, num_bins - 1]``.

  Args:
    hidden_units, activation, input_units, output_units, conditional_size,
      kernel_initializer, dtype, name: as for :class:`MLP` (``input_units``
      is required).
    num_bins: number of spline bins, at least 2.
    bound: half-width of the interval the spline acts on.
    min_bin_fraction: smallest bin width/height as a fraction of the interval.
    min_slope: smallest knot slope.
  """

  def __init__(self, hidden_units: Sequence[int] = (128, 128), activation="relu", *,
               input_units: int, num_bins: int = 8, bound: float = 4.0,
               min_bin_fraction: float = 1e-3, min_slope: float = 1e-3, **kwargs):
    _check_units("input_units", input_units, allow_none=False)
    if not isinstance(num_bins, int) or isinstance(num_bins, bool) or num_bins < 2:
      raise ValueError(f"num_bins must be an integer >= 2, got {num_bins!r}")
    if not (isinstance(bound, (int, float)) and np.isfinite(bound) and bound > 0):
      raise ValueError(f"bound must be a positive finite number, got {bound!r}")
    if not 0.0 <= min_bin_fraction < 1.0 / num_bins:
      raise ValueError(f"min_bin_fraction must be in [0, 1/num_bins), got {min_bin_fraction!r}")
    if not 0.0 <= min_slope < 1.0:
      raise ValueError(f"min_slope must be in [0, 1), got {min_slope!r}")
    super().__init__(hidden_units, activation, input_units=input_units,
                     raw_per_output=3 * num_bins - 1, **kwargs)
    self.num_bins, self.bound = int(num_bins), float(bound)
    self.min_bin_fraction, self.min_slope = float(min_bin_fraction), float(min_slope)
    # softplus(k) = 1 - min_slope, so that slope(raw = 0) = 1.
    self._slope_offset = float(np.log(np.expm1(1.0 - self.min_slope)))

  def call(self, x0, output_units: int | None = None, conditional_input=None):
    out = super().call(x0, output_units, conditional_input)
    k = self.num_bins
    out = tf.reshape(out, tf.concat([tf.shape(out)[:-1], [self.output_units, 3 * k - 1]], 0))
    raw_widths, raw_heights, raw_slopes = tf.split(out, [k, k, k - 1], axis=-1)
    fraction = lambda raw: (self.min_bin_fraction
                            + (1.0 - k * self.min_bin_fraction) * tf.nn.softmax(raw))
    slopes = self.min_slope + tf.nn.softplus(raw_slopes + self._slope_offset)
    return (2.0 * self.bound * fraction(raw_widths), 2.0 * self.bound * fraction(raw_heights),
            slopes)

  def get_config(self) -> dict:
    config = dict(super().get_config(), num_bins=self.num_bins, bound=self.bound,
                  min_bin_fraction=self.min_bin_fraction, min_slope=self.min_slope)
    del config["raw_per_output"]
    return config
