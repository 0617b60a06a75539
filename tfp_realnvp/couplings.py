"""Coupling layers: affine, additive and spline, as ``tfb.RealNVP`` bijectors.

A coupling keeps ``num_masked`` coordinates ``x0`` of an event and transforms
the other ``num_transformed`` ones ``x1`` elementwise, with parameters computed
from ``x0`` (and an optional condition ``c``, given as ``conditional_input=``):

* ``"affine"`` (RealNVP, Dinh et al. 2017): ``y1 = x1 * exp(s) + t``,
  ``log|det J| = sum(s)``; network :class:`ShiftAndLogScale`.
* ``"additive"`` (NICE, Dinh et al. 2015): ``y1 = x1 + t``, ``log|det J| = 0``;
  not ``is_constant_jacobian`` (``dy1/dx0 = dt/dx0`` varies), lest TFP take it
  for an affine map and compute ``mean()`` as ``forward(mean)``.
* ``"spline"`` (neural spline flow, Durkan et al. 2019): ``y1 = g(x1)``, ``g``
  a monotone :class:`~tfp_realnvp.splines.RationalQuadraticSpline` on
  ``[-bound, bound]`` (identity outside); network :class:`SplineParameters`.

``coupling=`` of :func:`~tfp_realnvp.bijectors.real_nvp_bijector` takes a name of
:data:`COUPLINGS` or a *coupling factory*, in the spirit of TFP's ``bijector_fn``::

    factory(num_masked, num_transformed, *, options, dtype, validate_args, name)
        -> tfb.Bijector

with ``options`` the flow's :class:`~tfp_realnvp.options.FlowOptions`.
"""

from __future__ import annotations

import functools

import tensorflow as tf
import tensorflow_probability as tfp

from tfp_realnvp.networks import ShiftAndLogScale, SplineParameters
from tfp_realnvp.options import COUPLINGS, FlowOptions
from tfp_realnvp.splines import RationalQuadraticSpline

tfb = tfp.bijectors

__all__ = ["COUPLINGS", "FusedRealNVP", "SplineCouplingFn", "affine_coupling",
           "additive_coupling", "spline_coupling", "coupling_factory"]


class FusedRealNVP(tfb.RealNVP):
  """A drop-in ``tfb.RealNVP`` that evaluates its network once per value and log-det.

  The transform stores its log-det in the bijector cache (as ``tfb.FFJORD``
  does), where the log-det methods look first.  As with any TFP cache, a result
  is reused for the same input tensor: in eager mode, call the transform inside
  the ``tf.GradientTape`` that differentiates it.
  """

  def _split(self, x):
    self._cache_input_depth(x)
    x0, x1 = x[..., :self._masked_size], x[..., self._masked_size:]
    return (x1, x0) if self._reverse_mask else (x0, x1)

  def _join(self, x0, x1):
    return tf.concat([x1, x0] if self._reverse_mask else [x0, x1], axis=-1)

  def _forward(self, x, **condition_kwargs):
    x0, x1 = self._split(x)
    inner = self._bijector_fn(x0, self._bijector_input_units(), **condition_kwargs)
    y1 = inner.forward(x1)  # first: a spline caches its log-det as it goes
    self._cache.forward_attributes(x, **condition_kwargs)["ildj"] = (
        -inner.forward_log_det_jacobian(x1, event_ndims=1))
    return self._join(x0, y1)

  def _inverse(self, y, **condition_kwargs):
    y0, y1 = self._split(y)
    inner = self._bijector_fn(y0, self._bijector_input_units(), **condition_kwargs)
    x1 = inner.inverse(y1)
    self._cache.inverse_attributes(y, **condition_kwargs)["ildj"] = (
        inner.inverse_log_det_jacobian(y1, event_ndims=1))
    return self._join(y0, x1)


class SplineCouplingFn(tf.Module):
  """``bijector_fn`` of a spline coupling: ``x0 ->`` a :class:`RationalQuadraticSpline`.

  A ``tf.Module``, so that the coupling tracks its network's weights.
  """

  def __init__(self, network: SplineParameters, validate_args: bool = False, name=None):
    super().__init__(name=name)
    self.network = network
    self.validate_args = bool(validate_args)

  def __call__(self, x0, output_units, **condition_kwargs):
    widths, heights, slopes = self.network(x0, output_units, **condition_kwargs)
    return RationalQuadraticSpline(
        bin_widths=widths, bin_heights=heights, knot_slopes=slopes,
        range_min=tf.constant(-self.network.bound, dtype=widths.dtype),
        validate_args=self.validate_args)


def _network_kwargs(num_masked, num_transformed, options, dtype, name):
  return dict(hidden_units=options.hidden_units, activation=options.activation,
              input_units=num_masked, output_units=num_transformed,
              conditional_size=options.conditional_size, dtype=dtype, name=f"{name}_network")


def affine_coupling(num_masked: int, num_transformed: int, *, options: FlowOptions,
                    dtype=tf.float32, validate_args: bool = False,
                    name: str = "coupling", shift_only: bool = False) -> tfb.RealNVP:
  """``y1 = x1 * exp(s(x0)) + t(x0)`` (``shift_only``: ``y1 = x1 + t(x0)``)."""
  network = ShiftAndLogScale(log_scale_bound=options.log_scale_bound, shift_only=shift_only,
                             **_network_kwargs(num_masked, num_transformed, options, dtype, name))
  return FusedRealNVP(num_masked=num_masked, shift_and_log_scale_fn=network,
                      validate_args=validate_args, name=name)


#: ``y1 = x1 + t(x0)``: volume-preserving (NICE), not affine in ``x``.
additive_coupling = functools.partial(affine_coupling, shift_only=True)


def spline_coupling(num_masked: int, num_transformed: int, *, options: FlowOptions,
                    dtype=tf.float32, validate_args: bool = False,
                    name: str = "coupling") -> tfb.RealNVP:
  """``y1 = g(x1; x0)``, a rational-quadratic spline of ``options.spline_bins`` bins."""
  network = SplineParameters(num_bins=options.spline_bins, bound=options.spline_bound,
                             **_network_kwargs(num_masked, num_transformed, options, dtype, name))
  fn = SplineCouplingFn(network, validate_args=validate_args, name=f"{name}_spline")
  coupling = FusedRealNVP(num_masked=num_masked, bijector_fn=fn,
                          validate_args=validate_args, name=name)
  # With validate_args, tfb.RealNVP wraps bijector_fn in a closure that hides
  # the network from variable tracking: keep a tracked reference to it (the
  # attribute name is part of the checkpoint keys).
  coupling._spline_coupling_fn = fn
  return coupling


_FACTORIES = {"affine": affine_coupling, "additive": additive_coupling,
              "spline": spline_coupling}


def coupling_factory(coupling):
  """The factory of a coupling name of :data:`COUPLINGS`, or ``coupling`` if callable."""
  if callable(coupling):
    return coupling
  if coupling not in _FACTORIES:
    raise ValueError(f"coupling must be one of {COUPLINGS} or a coupling factory, "
                     f"got {coupling!r}")
  return _FACTORIES[coupling]
