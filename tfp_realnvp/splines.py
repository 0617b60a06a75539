"""The rational-quadratic spline of the spline couplings, selecting bins by a mask.

:class:`RationalQuadraticSpline` is ``tfb.RationalQuadraticSpline`` (same
arguments and transform; the tests check they agree) picking each point's bin
by a one-hot mask, not by ``tf.searchsorted`` and gathers (a training graph a
quarter the size), and caching the log-det of ``forward`` and ``inverse`` (a
coupling evaluates its spline once per ``log_prob``).

The spline (Durkan et al. 2019, *Neural Spline Flows*): knots
``x_k = range_min + sum_{j<k} w_j`` and ``y_k = range_min + sum_{j<k} h_j``,
``k = 0..K``, derivatives ``d_0 = d_K = 1`` and ``knot_slopes`` between.  In
bin ``k``, with ``xi = (x - x_k) / w_k`` and ``s_k = h_k / w_k``::

  y = y_k + h_k [s_k xi^2 + d_k xi (1 - xi)] / [s_k + (d_{k+1} + d_k - 2 s_k) xi (1 - xi)]

a monotone map of ``[x_0, x_K]`` onto ``[y_0, y_K]``; the identity outside.

```python
spline = RationalQuadraticSpline(bin_widths=[1., 2., 1.], bin_heights=[2., 1., 1.],
                                 knot_slopes=[0.5, 2.], range_min=-2.)
y = spline.forward([-3., -1., 0.5])     # -3 is outside [-2, 2]: unchanged
x = spline.inverse(y)                    # back to [-3., -1., 0.5]
```
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

__all__ = ["RationalQuadraticSpline"]

tfb = tfp.bijectors


def _log_derivative(xi, s, d_k, d_k1):
  """``log dy/dx`` in a bin at relative position ``xi``."""
  mix = xi * (1.0 - xi)
  return (2.0 * tf.math.log(s)
          + tf.math.log(d_k1 * tf.square(xi) + 2.0 * s * mix + d_k * tf.square(1.0 - xi))
          - 2.0 * tf.math.log(s + (d_k1 + d_k - 2.0 * s) * mix))


class RationalQuadraticSpline(tfb.Bijector):
  """Elementwise monotone rational-quadratic spline; see the module docstring.

  Args:
    bin_widths, bin_heights: ``[..., K]`` positive sizes of the ``K`` bins, with equal sums.
    knot_slopes: ``[..., K - 1]`` positive derivatives at the inner knots.
    range_min: position of the first knot (``x`` and ``y``).
    validate_args, name: TFP's conventions (``validate_args`` checks positivity).
  """

  def __init__(self, bin_widths, bin_heights, knot_slopes, range_min,
               validate_args: bool = False, name: str = "rational_quadratic_spline"):
    parameters = dict(locals())
    with tf.name_scope(name) as name:
      self._bin_widths = tf.convert_to_tensor(bin_widths, name="bin_widths")
      dtype = self._bin_widths.dtype
      self._bin_heights = tf.convert_to_tensor(bin_heights, dtype=dtype, name="bin_heights")
      self._knot_slopes = tf.convert_to_tensor(knot_slopes, dtype=dtype, name="knot_slopes")
      self._range_min = tf.convert_to_tensor(range_min, dtype=dtype, name="range_min")
      super().__init__(dtype=dtype, forward_min_event_ndims=0, validate_args=validate_args,
                       parameters=parameters, name=name)

  @classmethod
  def _parameter_properties(cls, dtype, num_classes=None):
    properties = tfp.util.ParameterProperties
    return dict(bin_widths=properties(event_ndims=1), bin_heights=properties(event_ndims=1),
                knot_slopes=properties(event_ndims=1), range_min=properties())

  bin_widths = property(lambda self: self._bin_widths)
  bin_heights = property(lambda self: self._bin_heights)
  knot_slopes = property(lambda self: self._knot_slopes)
  range_min = property(lambda self: self._range_min)

  def _is_increasing(self):
    return True

  def _parameter_control_dependencies(self, is_init):
    if not self.validate_args:
      return []
    return [tf.debugging.assert_positive(t, message=f"{name} must be positive")
            for name, t in (("bin_widths", self._bin_widths), ("bin_heights", self._bin_heights),
                            ("knot_slopes", self._knot_slopes))]

  def _knots(self, sizes):  # by tf.concat, not tf.pad: right under tf.vectorized_map
    return self._range_min + tf.concat([tf.zeros_like(sizes[..., :1]),
                                        tf.cumsum(sizes, axis=-1)], axis=-1)

  def _bins(self, v, knots_v):
    """``(inside, v_in, x_k, y_k, w_k, h_k, d_k, d_k1)`` of the bin of each ``v`` on ``knots_v``."""
    lo, hi = knots_v[..., 0], knots_v[..., -1]
    inside = (v > lo) & (v < hi)
    v_in = tf.where(inside, v, 0.5 * (lo + hi))  # mid-range outside: the unused branch stays finite
    below = v_in[..., tf.newaxis]
    one_hot = tf.cast((below >= knots_v[..., :-1]) & (below < knots_v[..., 1:]), v.dtype)
    ones = tf.ones_like(self._knot_slopes[..., :1])
    slopes = tf.concat([ones, self._knot_slopes, ones], axis=-1)
    pick = lambda t: tf.reduce_sum(one_hot * t, axis=-1)  # noqa: E731
    x_knots, y_knots = self._knots(self._bin_widths), self._knots(self._bin_heights)
    return (inside, v_in, pick(x_knots[..., :-1]), pick(y_knots[..., :-1]),
            pick(self._bin_widths), pick(self._bin_heights), pick(slopes[..., :-1]),
            pick(slopes[..., 1:]))

  def _forward_and_log_det(self, x):
    inside, x_in, x_k, y_k, w, h, d_k, d_k1 = self._bins(x, self._knots(self._bin_widths))
    s, xi = h / w, (x_in - x_k) / w
    mix = xi * (1.0 - xi)
    y = y_k + h * (s * tf.square(xi) + d_k * mix) / (s + (d_k1 + d_k - 2.0 * s) * mix)
    log_det = _log_derivative(xi, s, d_k, d_k1)
    return tf.where(inside, y, x), tf.where(inside, log_det, tf.zeros_like(log_det))

  def _inverse_and_log_det(self, y):
    inside, y_in, x_k, y_k, w, h, d_k, d_k1 = self._bins(y, self._knots(self._bin_heights))
    s, rel = h / w, y_in - y_k
    term = rel * (d_k1 + d_k - 2.0 * s)
    a, b, c = h * (s - d_k) + term, h * d_k - term, -s * rel
    # The root of a xi^2 + b xi + c = 0 in [0, 1], in the form that stays
    # accurate when 4ac is small (b > 0 whenever c = 0).
    xi = (2.0 * c) / (-b - tf.sqrt(tf.maximum(tf.square(b) - 4.0 * a * c, 0.0)))
    log_det = -_log_derivative(xi, s, d_k, d_k1)
    return tf.where(inside, x_k + xi * w, y), tf.where(inside, log_det, tf.zeros_like(log_det))

  def _forward(self, x):
    y, log_det = self._forward_and_log_det(x)
    self._cache.forward_attributes(x)["ildj"] = -log_det  # read by forward_log_det_jacobian
    return y

  def _inverse(self, y):
    x, ildj = self._inverse_and_log_det(y)
    self._cache.inverse_attributes(y)["ildj"] = ildj
    return x

  def _forward_log_det_jacobian(self, x):
    return self._forward_and_log_det(x)[1]

  def _inverse_log_det_jacobian(self, y):
    return self._inverse_and_log_det(y)[1]
