"""The shift-and-log-scale network of an affine coupling.

A coupling splits an event ``x = (x0, x1)`` and transforms ``x1`` elementwise:
``y1 = x1 * exp(s(x0)) + t(x0)``.  :class:`ShiftAndLogScale` is the network
``x0 -> (t, s)``: one multilayer perceptron whose last layer emits both outputs.

* The log-scale is softly bounded, ``s = b * tanh(raw / b)``: near zero it is
  the identity, and ``|s| < b`` always, so one bad step cannot make the Jacobian
  explode.
* The output layer starts at zero, so ``t = s = 0`` and every coupling is the
  identity at initialization: the untrained flow is its base distribution.
* With ``conditional_size > 0`` a conditioning vector ``c`` is concatenated to
  ``x0``, giving a conditional coupling ``t(x0, c), s(x0, c)``.

:class:`SplineParameters` is the same perceptron emitting instead the bin
widths, bin heights and interior knot slopes of a rational-quadratic spline
per transformed coordinate (Durkan et al., 2019), zero-initialized so that the
spline is exactly the identity at initialization.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf
import tf_keras

__all__ = ["ShiftAndLogScale", "SplineParameters"]


class ShiftAndLogScale(tf_keras.layers.Layer):
  """MLP giving the shift and the bounded log-scale of an affine coupling.

  It is called the way ``tfb.RealNVP`` calls its ``shift_and_log_scale_fn``:
  ``fn(x0, output_units, **condition_kwargs) -> (shift, log_scale)``, with
  ``x0`` of shape ``batch_shape + [input_units]`` and both outputs of shape
  ``batch_shape + [output_units]``.  Any batch shape works, including none.

  Given ``input_units`` (and ``output_units``), the weights are created in the
  constructor, so ``trainable_variables`` is complete right away.

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
    hidden_units: widths of the hidden layers.
    activation: activation of the hidden layers (any Keras activation).
    input_units: size of ``x0``; if given, the weights are built now.
    output_units: size of ``x1`` (defaults to ``input_units``).
    conditional_size: size of the conditioning vector, 0 for none.
    log_scale_bound: ``b`` in ``s = b * tanh(raw / b)``; ``None`` leaves the
      log-scale unbounded.
    shift_only: emit ``log_scale = None`` (a volume-preserving, NICE-style
      additive coupling).
    kernel_initializer: initializer of the hidden layers.
    dtype: dtype of the weights and outputs.
    name: layer name.
  """

  def __init__(self,
               hidden_units: Sequence[int] = (128, 128),
               activation="relu",
               *,
               input_units: int | None = None,
               output_units: int | None = None,
               conditional_size: int = 0,
               log_scale_bound: float | None = 3.0,
               shift_only: bool = False,
               kernel_initializer="glorot_uniform",
               dtype=tf.float32,
               name: str | None = None,
               **kwargs):
    super().__init__(dtype=dtype, name=name, **kwargs)
    hidden_units = tuple(hidden_units)
    if not hidden_units or any(
        not isinstance(h, int) or isinstance(h, bool) or h < 1 for h in hidden_units):
      raise ValueError(
          f"hidden_units must be a non-empty sequence of positive integers, got {hidden_units!r}")
    for label, value in (("input_units", input_units), ("output_units", output_units)):
      if value is not None and (not isinstance(value, int) or value < 1):
        raise ValueError(f"{label} must be a positive integer or None, got {value!r}")
    if not isinstance(conditional_size, int) or conditional_size < 0:
      raise ValueError(f"conditional_size must be a non-negative integer, got {conditional_size!r}")
    if log_scale_bound is not None and not log_scale_bound > 0:
      raise ValueError(f"log_scale_bound must be positive or None, got {log_scale_bound!r}")

    self.hidden_units = hidden_units
    self.activation = tf_keras.activations.get(activation)
    self._activation_config = activation if isinstance(activation, str) else None
    self.input_units = input_units
    self.output_units = output_units if output_units is not None else input_units
    self.conditional_size = conditional_size
    self.log_scale_bound = None if log_scale_bound is None else float(log_scale_bound)
    self.shift_only = bool(shift_only)
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
    self.input_units = int(input_units)
    self.output_units = int(output_units)
    in_dim = self.input_units + self.conditional_size
    self.hidden_layers = []
    for i, width in enumerate(self.hidden_units):
      layer = tf_keras.layers.Dense(
          width, activation=self.activation,
          kernel_initializer=self.kernel_initializer,
          dtype=self.dtype, name=f"hidden_{i}")
      with tf.name_scope(self.name), tf.name_scope(layer.name):  # readable variable names
        layer.build((None, in_dim))
      in_dim = width
      self.hidden_layers.append(layer)
    outputs = self.output_units * (1 if self.shift_only else 2)
    self.output_layer = tf_keras.layers.Dense(
        outputs, kernel_initializer="zeros", bias_initializer="zeros",
        dtype=self.dtype, name="output")
    with tf.name_scope(self.name), tf.name_scope(self.output_layer.name):
      self.output_layer.build((None, in_dim))
    self.built = True

  def build(self, input_shape):
    # The output size arrives with the call (tfb.RealNVP passes it), so an
    # unsized network is built at its first call, not here.
    self.built = True

  def call(self, x0, output_units: int | None = None, conditional_input=None):
    x0 = tf.convert_to_tensor(x0, dtype=self.dtype)
    if output_units is not None and self.output_units is not None and int(output_units) != self.output_units:
      raise ValueError(
          f"{self.name} was built for {self.output_units} output units but the coupling "
          f"asked for {int(output_units)}")
    if not self.is_network_built:
      self.build_network(int(x0.shape[-1]), int(output_units or x0.shape[-1]))
    if x0.shape[-1] is not None and int(x0.shape[-1]) != self.input_units:
      raise ValueError(
          f"{self.name} expects inputs with last dimension {self.input_units}, "
          f"got shape {x0.shape}")

    batch_shape = tf.shape(x0)[:-1]
    h = x0
    if self.conditional_size:
      if conditional_input is None:
        raise ValueError(
            f"{self.name} is conditional (conditional_size={self.conditional_size}) "
            "but no conditional_input was given")
      c = tf.convert_to_tensor(conditional_input, dtype=self.dtype)
      if c.shape.rank is not None and c.shape.rank >= 1 and c.shape[-1] is not None \
          and int(c.shape[-1]) != self.conditional_size:
        raise ValueError(
            f"conditional_input must have last dimension {self.conditional_size}, "
            f"got shape {c.shape}")
      batch_shape = tf.broadcast_dynamic_shape(batch_shape, tf.shape(c)[:-1])
      h = tf.concat([
          tf.broadcast_to(x0, tf.concat([batch_shape, [self.input_units]], 0)),
          tf.broadcast_to(c, tf.concat([batch_shape, [self.conditional_size]], 0)),
      ], axis=-1)
    elif conditional_input is not None:
      raise ValueError(
          f"{self.name} is not conditional (conditional_size=0) but got a conditional_input")

    # Dense layers want rank-2 input: flatten any batch shape, restore it after.
    h = tf.reshape(h, [-1, self.input_units + self.conditional_size])
    for layer in self.hidden_layers:
      h = layer(h)
    out = self.output_layer(h)
    out = tf.reshape(out, tf.concat([batch_shape, [tf.shape(out)[-1]]], 0))
    if self.shift_only:
      return out, None
    shift, raw_log_scale = tf.split(out, 2, axis=-1)
    if self.log_scale_bound is None:
      return shift, raw_log_scale
    bound = tf.constant(self.log_scale_bound, dtype=raw_log_scale.dtype)
    return shift, bound * tf.tanh(raw_log_scale / bound)

  def get_config(self) -> dict:
    config = super().get_config()
    config.update(
        hidden_units=list(self.hidden_units),
        activation=self._activation_config or tf_keras.activations.serialize(self.activation),
        input_units=self.input_units, output_units=self.output_units,
        conditional_size=self.conditional_size, log_scale_bound=self.log_scale_bound,
        shift_only=self.shift_only)
    return config


class SplineParameters(tf_keras.layers.Layer):
  """MLP giving the parameters of an elementwise rational-quadratic spline.

  For each of the ``output_units`` transformed coordinates it emits
  ``3 * num_bins - 1`` numbers, mapped to the arguments of
  ``tfb.RationalQuadraticSpline`` on the interval ``[-bound, bound]``:

  * bin widths and heights: ``2 * bound * (m + (1 - num_bins * m) * softmax(raw))``
    with ``m = min_bin_fraction``, so each bin covers at least a fraction ``m``
    of the interval and they sum to ``2 * bound``;
  * interior knot slopes: ``min_slope + softplus(raw + c)`` with ``c`` chosen so
    that a zero ``raw`` gives slope exactly 1.

  The perceptron is a :class:`ShiftAndLogScale` in ``shift_only`` mode (the
  same hidden layers, conditioning and zero-initialized output layer), so at
  initialization the bins are equal and every slope is 1: the spline is the
  identity on ``[-bound, bound]`` (and, like every
  ``RationalQuadraticSpline``, the identity outside it).

  Called as ``net(x0, output_units, conditional_input=None) -> (bin_widths,
  bin_heights, knot_slopes)`` of shapes ``batch_shape + [output_units,
  num_bins]`` (twice) and ``batch_shape + [output_units, num_bins - 1]``.

  Args:
    hidden_units, activation, conditional_size, kernel_initializer, dtype,
      name: as for :class:`ShiftAndLogScale`.
    input_units: size of ``x0`` (required: the weights are built now).
    output_units: number of transformed coordinates (defaults to
      ``input_units``).
    num_bins: number of spline bins, at least 2.
    bound: half-width of the interval the spline acts on.
    min_bin_fraction: smallest bin width/height as a fraction of the interval.
    min_slope: smallest knot slope.
  """

  def __init__(self,
               hidden_units: Sequence[int] = (128, 128),
               activation="relu",
               *,
               input_units: int,
               output_units: int | None = None,
               conditional_size: int = 0,
               num_bins: int = 8,
               bound: float = 4.0,
               min_bin_fraction: float = 1e-3,
               min_slope: float = 1e-3,
               kernel_initializer="glorot_uniform",
               dtype=tf.float32,
               name: str | None = None,
               **kwargs):
    super().__init__(dtype=dtype, name=name, **kwargs)
    if not isinstance(input_units, int) or isinstance(input_units, bool) or input_units < 1:
      raise ValueError(f"input_units must be a positive integer, got {input_units!r}")
    if output_units is not None and (not isinstance(output_units, int) or output_units < 1):
      raise ValueError(f"output_units must be a positive integer or None, got {output_units!r}")
    if not isinstance(num_bins, int) or isinstance(num_bins, bool) or num_bins < 2:
      raise ValueError(f"num_bins must be an integer >= 2, got {num_bins!r}")
    if not (isinstance(bound, (int, float)) and np.isfinite(bound) and bound > 0):
      raise ValueError(f"bound must be a positive finite number, got {bound!r}")
    if not 0.0 <= min_bin_fraction < 1.0 / num_bins:
      raise ValueError(
          f"min_bin_fraction must be in [0, 1/num_bins), got {min_bin_fraction!r}")
    if not 0.0 <= min_slope < 1.0:
      raise ValueError(f"min_slope must be in [0, 1), got {min_slope!r}")
    self.input_units = int(input_units)
    self.output_units = int(output_units if output_units is not None else input_units)
    self.conditional_size = conditional_size
    self.num_bins = int(num_bins)
    self.bound = float(bound)
    self.min_bin_fraction = float(min_bin_fraction)
    self.min_slope = float(min_slope)
    # softplus(c) = 1 - min_slope, so that slope(raw = 0) = 1.
    self._slope_offset = float(np.log(np.expm1(1.0 - self.min_slope)))
    self.mlp = ShiftAndLogScale(
        hidden_units, activation, input_units=self.input_units,
        output_units=self.output_units * (3 * self.num_bins - 1),
        conditional_size=conditional_size, shift_only=True, log_scale_bound=None,
        kernel_initializer=kernel_initializer, dtype=dtype, name="mlp")
    self.built = True

  def call(self, x0, output_units: int | None = None, conditional_input=None):
    if output_units is not None and int(output_units) != self.output_units:
      raise ValueError(
          f"{self.name} was built for {self.output_units} output units but the coupling "
          f"asked for {int(output_units)}")
    out, _ = self.mlp(x0, conditional_input=conditional_input)
    k = self.num_bins
    out = tf.reshape(out, tf.concat([tf.shape(out)[:-1], [self.output_units, 3 * k - 1]], 0))
    raw_widths, raw_heights, raw_slopes = tf.split(out, [k, k, k - 1], axis=-1)
    interval = 2.0 * self.bound

    def bins(raw):
      fraction = self.min_bin_fraction + (1.0 - k * self.min_bin_fraction) * tf.nn.softmax(raw)
      return interval * fraction

    slopes = self.min_slope + tf.nn.softplus(raw_slopes + self._slope_offset)
    return bins(raw_widths), bins(raw_heights), slopes

  def get_config(self) -> dict:
    config = super().get_config()
    mlp = self.mlp.get_config()
    config.update(
        hidden_units=mlp["hidden_units"], activation=mlp["activation"],
        input_units=self.input_units, output_units=self.output_units,
        conditional_size=self.conditional_size, num_bins=self.num_bins, bound=self.bound,
        min_bin_fraction=self.min_bin_fraction, min_slope=self.min_slope)
    return config
