"""The exponential moving average of the weights that :func:`fit` validates and keeps."""

from __future__ import annotations

import contextlib

import tensorflow as tf

__all__ = ["WeightAverage"]


class WeightAverage:
  """Polyak averaging with the warm-up of ``tf.train.ExponentialMovingAverage``.

  After the n-th update, ``average += (1 - d) * (weight - average)`` with
  ``d = min(decay, (1 + n) / (10 + n))``.  (TF's class fails on mirrored
  variables; ``tf_keras``'s ``use_ema`` has no warm-up.)  ``decay=None`` turns
  averaging off: the "averages" are then the variables themselves.  Create it
  under the strategy's scope.
  """

  def __init__(self, variables, decay: float | None):
    self.variables, self.decay = list(variables), decay
    self.averages, self._stash, self.updates = self.variables, [], None
    if decay is not None:
      self.updates = tf.Variable(0, dtype=tf.int64, trainable=False, name="ema_updates")
      self.averages = [tf.Variable(v, trainable=False, name="average") for v in self.variables]
      self._stash = [tf.Variable(v, trainable=False, name="raw") for v in self.variables]

  def checkpoint_state(self) -> dict:
    """The trackables to checkpoint (names kept from earlier versions of ``fit``)."""
    if self.decay is None:
      return {"averages": [], "ema_updates": []}
    return {"averages": self.averages, "ema_updates": self.updates}

  def update(self) -> None:
    """One averaging step (graph or eager)."""
    if self.decay is None:
      return
    n = tf.cast(self.updates.assign_add(1), tf.float32)
    decay = tf.minimum(tf.constant(self.decay, tf.float32), (1.0 + n) / (10.0 + n))
    for average, v in zip(self.averages, self.variables):
      average.assign_sub(tf.cast(1.0 - decay, average.dtype) * (average - v))

  @contextlib.contextmanager
  def swapped_in(self):
    """The variables hold the averages inside the ``with``, the raw weights after."""
    for saved, v, average in zip(self._stash, self.variables, self.averages):
      saved.assign(v)
      v.assign(average)
    try:
      yield
    finally:
      for saved, v in zip(self._stash, self.variables):
        v.assign(saved)

  def keep(self) -> None:
    """Leaves the averages in the variables for good (the end of training)."""
    for v, average in zip(self.variables, self.averages):
      v.assign(average)
