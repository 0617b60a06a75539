"""Activation normalization (Glow, Kingma & Dhariwal 2018), initialized from data."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

tfb = tfp.bijectors

__all__ = ["ActNorm", "initialize_actnorm", "actnorm_layers"]


class ActNorm(tfb.Bijector):
  """``y = x * exp(log_scale) + shift`` per dimension, ``log|det J| = sum(log_scale)``.

  The trainable ``shift`` and ``log_scale`` start at zero (the identity).
  Affine, so ``is_constant_jacobian=True`` as for TFP's ``Shift``/``Scale``.
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
    return tf.broadcast_to(tf.reduce_sum(self.log_scale), tf.shape(x)[:-1])

  def _inverse_log_det_jacobian(self, y):
    return -self._forward_log_det_jacobian(y)

  def initialize_from(self, y, min_std: float = 1e-6) -> None:
    """Sets the parameters so that ``inverse(y)`` is standardized (``std <= min_std``: scale 1)."""
    y = np.asarray(y, dtype=np.float64).reshape(-1, self._event_size)
    std = y.std(axis=0)
    log_scale = np.where(std > min_std, np.log(np.maximum(std, min_std)), 0.0)
    dtype = self.shift.dtype.as_numpy_dtype
    self.shift.assign(y.mean(axis=0).astype(dtype))
    self.log_scale.assign(log_scale.astype(dtype))


def actnorm_layers(chain: tfb.Chain) -> list[ActNorm]:
  """The :class:`ActNorm` bijectors of ``chain`` (not nested), in chain order."""
  return [b for b in chain.bijectors if isinstance(b, ActNorm)]


def initialize_actnorm(chain: tfb.Chain, data, *, conditional_input=None) -> int:
  """Data-initializes every :class:`ActNorm` of ``chain``; returns their number.

  Pushes ``data`` (``[n, event_size]``, in the units ``chain.inverse`` takes)
  through the chain in the inverse direction; on reaching an ``ActNorm`` it
  first sets that layer so that the values arriving there leave it with zero
  mean and unit variance per dimension, then applies it.  ``RealNVP.adapt``
  calls it.  ``conditional_input``: the condition of a conditional chain.
  """
  layers = actnorm_layers(chain)
  if not layers:
    return 0
  kwargs = {} if conditional_input is None else chain.member_kwargs(conditional_input)
  z = tf.convert_to_tensor(np.asarray(data), dtype=layers[0].shift.dtype)
  # Chain([b0, b1, ...]).inverse applies b0.inverse first.
  for bijector in chain.bijectors:
    if isinstance(bijector, ActNorm):
      bijector.initialize_from(z.numpy())
    z = bijector.inverse(z, **kwargs.get(bijector.name, {}))
  return len(layers)
