"""The coupling networks: :class:`MLP` and its heads for affine and spline couplings."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf
import tf_keras

__all__ = ["MLP", "ShiftAndLogScale", "SplineParameters"]

# Inputs are clipped to +-1e4 (normalized units) and an unbounded log-scale to
# +-30: far beyond what a trained flow sees, this keeps every output finite for
# a finite input, so a density is never NaN (1e33 would otherwise overflow the
# hidden layers into inf - inf).
INPUT_LIMIT = 1e4
UNBOUNDED_LOG_SCALE_LIMIT = 30.0


def _units(label: str, value):
  if value is not None and (not isinstance(value, (int, np.integer)) or value < 1):
    raise ValueError(f"{label} must be a positive integer, got {value!r}")
  return None if value is None else int(value)


class MLP(tf_keras.layers.Layer):
  """``raw = W_out h_L + b_out``, ``h_i = act(W_i h_{i-1} + b_i)``, ``h_0 = [x, c]``.

  ``x`` has any batch shape and the condition ``c`` broadcasts against it.  The
  output layer starts at zero, so every coupling starts as the identity.

  ```python
  net = MLP((64, 64), input_units=2, output_units=3, conditional_size=1)
  raw = net(tf.zeros([10, 2]), conditional_input=tf.ones([1]))  # zeros, [10, 3]
  ```

  Args:
    hidden_units, activation, kernel_initializer: the hidden layers.
    input_units: size of ``x``; ``None``: the weights are made at the first call.
    output_units: transformed coordinates (default ``input_units``); ``raw``
      has ``raw_per_output * output_units`` entries.
    conditional_size: size of ``c``, 0 for none.
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
    self.input_units = _units("input_units", input_units)
    self.output_units = _units("output_units", output_units) or self.input_units
    self.raw_per_output = _units("raw_per_output", raw_per_output)
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

  def build(self, input_shape):  # an unsized network is built at its first call
    self.built = True

  def call(self, x, output_units: int | None = None, conditional_input=None):
    x = tf.convert_to_tensor(x, dtype=self.dtype)
    if output_units is not None and self.output_units not in (None, int(output_units)):
      raise ValueError(f"{self.name} was built for {self.output_units} output units but the "
                       f"coupling asked for {int(output_units)}")
    if not self.is_network_built:
      self.build_network(int(x.shape[-1]), int(output_units or x.shape[-1]))
    if x.shape[-1] is not None and int(x.shape[-1]) != self.input_units:
      raise ValueError(f"{self.name} expects inputs with last dimension {self.input_units}, "
                       f"got shape {x.shape}")
    h, batch_shape = x, tf.shape(x)[:-1]
    if self.conditional_size:
      if conditional_input is None:
        raise ValueError(f"{self.name} is conditional (conditional_size={self.conditional_size}) "
                         "but no conditional_input was given")
      c = tf.convert_to_tensor(conditional_input, dtype=self.dtype)
      if not c.shape[-1:].is_compatible_with([self.conditional_size]):
        raise ValueError(f"conditional_input must have last dimension {self.conditional_size}, "
                         f"got shape {c.shape}")
      batch_shape = tf.broadcast_dynamic_shape(batch_shape, tf.shape(c)[:-1])
      h = tf.concat([tf.broadcast_to(x, tf.concat([batch_shape, [self.input_units]], 0)),
                     tf.broadcast_to(c, tf.concat([batch_shape, [self.conditional_size]], 0))],
                    axis=-1)
    elif conditional_input is not None:
      raise ValueError(f"{self.name} is not conditional (conditional_size=0) but got a "
                       "conditional_input")
    # Dense layers want rank-2 input: flatten any batch shape, restore it after.
    h = tf.reshape(tf.clip_by_value(h, -INPUT_LIMIT, INPUT_LIMIT),
                   [-1, self.input_units + self.conditional_size])
    for layer in self.hidden_layers:
      h = layer(h)
    return tf.reshape(self.output_layer(h),
                      tf.concat([batch_shape, [self.raw_per_output * self.output_units]], 0))

  def get_config(self) -> dict:
    activation = self._activation_config or tf_keras.activations.serialize(self.activation)
    return dict(super().get_config(), hidden_units=list(self.hidden_units), activation=activation,
                input_units=self.input_units, output_units=self.output_units,
                raw_per_output=self.raw_per_output, conditional_size=self.conditional_size)


class ShiftAndLogScale(MLP):
  """The :class:`MLP` head of an affine coupling, a ``tfb.RealNVP`` ``shift_and_log_scale_fn``.

  ``net(x0, output_units, **condition_kwargs) -> (shift, log_scale)``, with
  ``log_scale = b * tanh(raw / b)``:

  ```python
  net = ShiftAndLogScale(input_units=1, output_units=1, hidden_units=(64, 64))
  coupling = tfp.bijectors.RealNVP(num_masked=1, shift_and_log_scale_fn=net)
  y = coupling.forward(tf.random.normal([10, 2]))   # identity until trained
  ```

  Args:
    log_scale_bound: ``b``; ``None``: unbounded (but clipped to ``[-30, 30]``).
    shift_only: ``log_scale = None``, a volume-preserving (NICE) additive coupling.
    hidden_units, activation, **kwargs: as for :class:`MLP`.
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
    return {k: v for k, v in config.items() if k != "raw_per_output"}


class SplineParameters(MLP):
  """The :class:`MLP` head of a rational-quadratic spline on ``[-bound, bound]``.

  ``net(x0, output_units, conditional_input=None) -> (bin_widths, bin_heights,
  knot_slopes)`` of shapes ``batch_shape + [output_units, num_bins]`` (slopes:
  ``num_bins - 1``): sizes ``2 * bound * (m + (1 - num_bins * m) * softmax(raw))``,
  slopes ``min_slope + softplus(raw + k)`` with slope 1 at ``raw = 0``.

  Args:
    num_bins: number of bins, at least 2.
    bound: half-width of the interval the spline acts on.
    min_bin_fraction: ``m``, the smallest bin size as a fraction of the interval.
    min_slope: smallest knot slope.
    hidden_units, activation, input_units (required), **kwargs: as for :class:`MLP`.
  """

  def __init__(self, hidden_units: Sequence[int] = (128, 128), activation="relu", *,
               input_units: int, num_bins: int = 8, bound: float = 4.0,
               min_bin_fraction: float = 1e-3, min_slope: float = 1e-3, **kwargs):
    if not isinstance(num_bins, int) or isinstance(num_bins, bool) or num_bins < 2:
      raise ValueError(f"num_bins must be an integer >= 2, got {num_bins!r}")
    if not (isinstance(bound, (int, float)) and np.isfinite(bound) and bound > 0):
      raise ValueError(f"bound must be a positive finite number, got {bound!r}")
    if not (0.0 <= min_bin_fraction < 1.0 / num_bins and 0.0 <= min_slope < 1.0):
      raise ValueError("min_bin_fraction must be in [0, 1/num_bins) and min_slope in [0, 1), "
                       f"got {min_bin_fraction!r} and {min_slope!r}")
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
    size = lambda raw: 2.0 * self.bound * (  # noqa: E731
        self.min_bin_fraction + (1.0 - k * self.min_bin_fraction) * tf.nn.softmax(raw))
    slopes = self.min_slope + tf.nn.softplus(raw_slopes + self._slope_offset)
    return size(raw_widths), size(raw_heights), slopes

  def get_config(self) -> dict:
    config = dict(super().get_config(), num_bins=self.num_bins, bound=self.bound,
                  min_bin_fraction=self.min_bin_fraction, min_slope=self.min_slope)
    return {k: v for k, v in config.items() if k != "raw_per_output"}
