"""``tfb.RealNVP`` with one network evaluation per transform and log-det pair.

TFP's ``tfb.RealNVP`` calls its ``shift_and_log_scale_fn`` (or
``bijector_fn``) once in ``_inverse`` and again in
``_inverse_log_det_jacobian``, so ``log_prob`` evaluates every coupling network
twice on the same input.  Under XLA the duplicated forward computation is
merged, but the gradient is not: backpropagation runs through both copies,
separately, so a training step costs about five network forward passes instead
of three.

:class:`FusedRealNVP` computes the transform and its log-det from one network
call and stores the log-det in the bijector's cache attributes (the mechanism
TFP's own ``tfb.FFJORD`` uses), where ``inverse_log_det_jacobian`` and
``forward_log_det_jacobian`` look it up first.  Results are identical; the
backward pass goes through the network once.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

tfb = tfp.bijectors

__all__ = ["FusedRealNVP"]


class FusedRealNVP(tfb.RealNVP):
  """A drop-in ``tfb.RealNVP`` that evaluates its network once per pair.

  Same constructor, same results, same variables (and so the same checkpoint
  layout) as ``tfb.RealNVP``.  ``inverse(y)`` also computes
  ``inverse_log_det_jacobian(y)`` from the same network output and caches it;
  ``forward(x)`` does the same for ``forward_log_det_jacobian(x)``.  A
  log-det asked for on its own (no transform of the same tensor before) is
  computed as ``tfb.RealNVP`` does.

  As with every TFP bijector cache, a result is reused for the same input
  tensor object: in eager mode, call the transform inside the
  ``tf.GradientTape`` that differentiates it.
  """

  def _split(self, x):
    self._cache_input_depth(x)
    x0, x1 = x[..., :self._masked_size], x[..., self._masked_size:]
    if self._reverse_mask:
      x0, x1 = x1, x0
    return x0, x1

  def _join(self, x0, x1):
    if self._reverse_mask:
      x1, x0 = x0, x1
    return tf.concat([x0, x1], axis=-1)

  def _forward(self, x, **condition_kwargs):
    x0, x1 = self._split(x)
    inner = self._bijector_fn(x0, self._bijector_input_units(), **condition_kwargs)
    y1 = inner.forward(x1)
    fldj = inner.forward_log_det_jacobian(x1, event_ndims=1)
    # The bijector's forward_log_det_jacobian(x) reads 'ildj' here first.
    self._cache.forward_attributes(x, **condition_kwargs)["ildj"] = -fldj
    return self._join(x0, y1)

  def _inverse(self, y, **condition_kwargs):
    y0, y1 = self._split(y)
    inner = self._bijector_fn(y0, self._bijector_input_units(), **condition_kwargs)
    x1 = inner.inverse(y1)
    ildj = inner.inverse_log_det_jacobian(y1, event_ndims=1)
    # The bijector's inverse_log_det_jacobian(y) reads 'ildj' here first.
    self._cache.inverse_attributes(y, **condition_kwargs)["ildj"] = ildj
    return self._join(y0, x1)
