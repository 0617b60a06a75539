"""Activation normalization (Glow): ``y = x * exp(log_scale) + shift`` per dimension.

The trainable ``shift`` and ``log_scale`` start at zero (the identity);
:func:`initialize_actnorm` sets them from data (Kingma & Dhariwal, 2018) so
that what leaves each :class:`ActNorm` in the normalizing (inverse) direction
has zero mean and unit variance per dimension.  ``RealNVP.adapt`` calls it.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

tfb = tfp.bijectors

__all__ = ["ActNorm", "initialize_actnorm", "actnorm_layers"]


class ActNorm(tfb.Bijector):
  """Per-dimension ``y = x * exp(log_scale) + shift`` with trainable parameters.

  Event shape ``[event_size]``; ``log|det J| = sum(log_scale)``, broadcast to
  the batch shape of ``x``.  Affine, so ``is_constant_jacobian=True`` as for
  TFP's ``Shift``/``Scale``.  ``dtype``, ``validate_args``, ``name``: TFP's.
  """

  def __init__(self, event_size: int, dtype=tf.float32, validate_args: bool = False,
               name: str = "actnorm"):
    parameters = dict(locals())
    with tf.name_scope(name):
      self._event_size = int(event_size)
      self.shift = tf.Variable(tf.zeros([event_size], dtype=dtype), name="shift")
      self.log_scale = tf.Variable(tf.zeros([event_size], dtype=dtype), name="log_scale")
    super().__init__(forward_min_event_ndims=1, is_constant_jacobian=True, dtype=dtype,
                     validate_args=validate_args, parameters=parameters, name=name)

  @classmethod
  def _parameter_properties(cls, dtype):
    return {}

  def _forward(self, x):
    return x * tf.exp(self.log_scale) + self.shift

  def _inverse(self, y):
    return (y - self.shift) * tf.exp(-self.log_scale)

  def _forward_log_det_jacobian(self, x):
    ldj = tf.reduce_sum(self.log_scale)
    return tf.broadcast_to(ldj, tf.shape(x)[:-1])

  def _inverse_log_det_jacobian(self, y):
    return -self._forward_log_det_jacobian(y)

  def initialize_from(self, y, min_std: float = 1e-6) -> None:
    """Sets the parameters so that ``inverse(y)`` is standardized per dimension.

    ``y`` has shape ``[n, event_size]``; a dimension whose standard deviation
    is below ``min_std`` keeps scale 1.
    """
    y = np.asarray(y, dtype=np.float64).reshape(-1, self._event_size)
    mean = y.mean(axis=0)
    std = y.std(axis=0)
    log_scale = np.where(std > min_std, np.log(np.maximum(std, min_std)), 0.0)
    dtype = self.shift.dtype.as_numpy_dtype
    self.shift.assign(mean.astype(dtype))
    self.log_scale.assign(log_scale.astype(dtype))


def actnorm_layers(chain: tfb.Chain) -> list[ActNorm]:
  """The :class:`ActNorm` bijectors of ``chain`` (not nested), in chain order."""
  return [b for b in chain.bijectors if isinstance(b, ActNorm)]


def initialize_actnorm(chain: tfb.Chain, data, *, conditional_input=None) -> int:
  """Data-initializes every :class:`ActNorm` of ``chain``.

  Pushes ``data`` (shape ``[n, event_size]``, in the units the chain's
  ``inverse`` takes) through the chain in the inverse direction; on reaching an
  ``ActNorm`` it first sets that layer from the values arriving there, then
  applies it.

  Args:
    chain: a chain, e.g. of :func:`~tfp_realnvp.bijectors.real_nvp_bijector`.
    data: the points to normalize.
    conditional_input: the condition of a conditional chain (a
      :class:`~tfp_realnvp.bijectors.ConditionalChain`, which routes it).

  Returns:
    The number of layers initialized.
  """
  layers = actnorm_layers(chain)
  if not layers:
    return 0
  kwargs = {} if conditional_input is None else chain.member_kwargs(conditional_input)
  z = tf.convert_to_tensor(np.asarray(data), dtype=layers[0].shift.dtype)
  count = 0
  # Chain([b0, b1, ...]).inverse applies b0.inverse first.
  for bijector in chain.bijectors:
    if isinstance(bijector, ActNorm):
      bijector.initialize_from(z.numpy())
      count += 1
    z = bijector.inverse(z, **kwargs.get(bijector.name, {}))
  return count
