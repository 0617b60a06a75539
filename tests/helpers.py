"""Helpers shared by the tests."""

import numpy as np
import tensorflow as tf


def randomize_outputs(module, scale: float = 0.3, seed: int = 0) -> None:
  """Gives every zero-initialized output layer random weights.

  Flows start as the identity; math tests need non-trivial couplings.
  """
  rng = np.random.default_rng(seed)
  for v in module.trainable_variables:
    if "/output/" in v.name:
      v.assign(rng.normal(scale=scale, size=v.shape).astype(v.dtype.as_numpy_dtype))


def batch_log_abs_det_jacobian(fn, x):
  """log|det J| of fn at each row of x, by automatic differentiation."""
  with tf.GradientTape() as tape:
    tape.watch(x)
    # A new tensor: TFP bijectors cache results by input tensor, and a cache
    # hit would return an output the tape never saw computed from x.
    fresh = tf.identity(x)
    y = fn(fresh)
  jacobian = tape.batch_jacobian(y, x)
  return tf.linalg.slogdet(jacobian)[1]
