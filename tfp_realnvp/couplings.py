"""Coupling layers built on ``tfb.RealNVP``: affine, additive and spline.

Every coupling keeps the first ``d`` coordinates ``x0`` of an event and
transforms the others ``x1`` elementwise, with parameters computed from ``x0``
(and an optional conditioning vector ``c``):

* ``"affine"`` (RealNVP, Dinh et al. 2017): ``y1 = x1 * exp(s) + t``,
  ``log|det J| = sum(s)``; network :class:`ShiftAndLogScale`.
* ``"additive"`` (NICE, Dinh et al. 2015): ``y1 = x1 + t``, volume-preserving,
  ``log|det J| = 0`` (``is_constant_jacobian=True``).
* ``"spline"`` (neural spline flow, Durkan et al. 2019): ``y1 = g(x1)`` with
  ``g`` a monotone rational-quadratic spline on ``[-bound, bound]`` (identity
  outside), ``tfb.RationalQuadraticSpline``; network :class:`SplineParameters`.

All three are the identity at initialization (zero-initialized output layers)
and accept ``conditional_input=`` through ``tfb.RealNVP``'s condition kwargs.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf
import tensorflow_probability as tfp

from tfp_realnvp.fused_coupling import FusedRealNVP
from tfp_realnvp.networks import ShiftAndLogScale, SplineParameters

tfb = tfp.bijectors

__all__ = ["COUPLINGS", "SplineCouplingFn", "make_coupling"]

COUPLINGS = ("affine", "additive", "spline")


class SplineCouplingFn(tf.Module):
  """``bijector_fn`` of a spline coupling: ``x0 -> RationalQuadraticSpline``.

  A ``tf.Module`` holding its :class:`SplineParameters` network, so the
  network's weights are tracked by the ``tfb.RealNVP`` that stores it.

  Called as ``fn(x0, output_units, conditional_input=None)``.
  """

  def __init__(self, network: SplineParameters, validate_args: bool = False, name=None):
    super().__init__(name=name)
    self.network = network
    self.validate_args = bool(validate_args)

  def __call__(self, x0, output_units, **condition_kwargs):
    widths, heights, slopes = self.network(x0, output_units, **condition_kwargs)
    return tfb.RationalQuadraticSpline(
        bin_widths=widths, bin_heights=heights, knot_slopes=slopes,
        range_min=tf.constant(-self.network.bound, dtype=widths.dtype),
        validate_args=self.validate_args)


def make_coupling(kind: str,
                  event_size: int,
                  hidden_units: Sequence[int] = (128, 128),
                  activation="relu",
                  *,
                  log_scale_bound: float | None = 3.0,
                  spline_bins: int = 8,
                  spline_bound: float = 4.0,
                  conditional_size: int = 0,
                  dtype=tf.float32,
                  validate_args: bool = False,
                  name: str = "coupling") -> tfb.RealNVP:
  """One ``tfb.RealNVP`` coupling of the given ``kind`` over ``R^event_size``.

  It keeps ``event_size // 2`` coordinates and transforms the rest.

  Args:
    kind: ``"affine"``, ``"additive"`` or ``"spline"``.
    event_size: event dimensions, at least 2.
    hidden_units: hidden widths of the coupling network.
    activation: hidden activation.
    log_scale_bound: soft bound of the affine log-scale (``"affine"`` only).
    spline_bins: number of spline bins (``"spline"`` only).
    spline_bound: the spline acts on ``[-spline_bound, spline_bound]`` and is
      the identity outside (``"spline"`` only).
    conditional_size: size of the conditioning vector, 0 for none.
    dtype: dtype of the network.
    validate_args: TFP argument checks.
    name: name of the coupling (and prefix of its network's name).
  """
  if kind not in COUPLINGS:
    raise ValueError(f"coupling must be one of {COUPLINGS}, got {kind!r}")
  num_masked = event_size // 2
  transformed = event_size - num_masked
  common = dict(input_units=num_masked, output_units=transformed,
                conditional_size=conditional_size, dtype=dtype,
                name=f"{name}_network")
  if kind == "spline":
    network = SplineParameters(hidden_units, activation, num_bins=spline_bins,
                               bound=spline_bound, **common)
    fn = SplineCouplingFn(network, validate_args=validate_args, name=f"{name}_spline")
    coupling = FusedRealNVP(num_masked=num_masked, bijector_fn=fn,
                           validate_args=validate_args, name=name)
    # With validate_args, tfb.RealNVP wraps bijector_fn in a closure that
    # hides the network from variable tracking: keep a reference to it.
    coupling._spline_coupling_fn = fn
    return coupling
  network = ShiftAndLogScale(
      hidden_units, activation, log_scale_bound=log_scale_bound,
      shift_only=(kind == "additive"), **common)
  return FusedRealNVP(num_masked=num_masked, shift_and_log_scale_fn=network,
                     is_constant_jacobian=(kind == "additive"),
                     validate_args=validate_args, name=name)
