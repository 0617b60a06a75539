"""Checks shared by the bijector tests: inverse both ways, log-det against autodiff."""

import numpy as np
import tensorflow as tf


def tol(dtype):
  return dict(rtol=2e-3, atol=2e-3) if dtype == tf.float32 else dict(rtol=1e-8, atol=1e-8)


def randomize(module, seed=0, scale=0.5):
  """Gives every variable of ``module`` random values, so that nothing is the identity."""
  rng = np.random.default_rng(seed)
  for v in module.trainable_variables:
    v.assign(scale * rng.standard_normal(v.shape).astype(v.dtype.as_numpy_dtype))


def points(n, event_size, dtype, seed=1, spread=2.0):
  # Spread 2 puts a good share of the points outside a spline bound of 2.
  rng = np.random.default_rng(seed)
  return tf.constant(spread * rng.standard_normal((n, event_size)), dtype=dtype)


def autodiff_log_det(bijector, x, **kwargs):
  # A fresh tensor: TFP caches forward(x) by input, and a cached result made
  # outside the tape would have no gradient.
  x = tf.identity(x)
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(x)
    y = bijector.forward(x, **kwargs)
    rows = [y[:, i] for i in range(y.shape[-1])]
  # One backward pass per output coordinate (what batch_jacobian computes,
  # without its pfor conversion, which is slow for the spline ops).
  jacobian = tf.stack([tape.gradient(row, x) for row in rows], axis=1)
  return np.linalg.slogdet(jacobian.numpy().astype(np.float64))[1]


def check_bijector(bijector, x, dtype, **kwargs):
  y = bijector.forward(x, **kwargs)
  assert y.dtype == dtype and y.shape == x.shape
  tolerance = tol(dtype)
  np.testing.assert_allclose(bijector.inverse(y, **kwargs).numpy(), x.numpy(), **tolerance)
  np.testing.assert_allclose(bijector.forward(bijector.inverse(x, **kwargs), **kwargs).numpy(),
                             x.numpy(), **tolerance)
  fldj = bijector.forward_log_det_jacobian(x, event_ndims=1, **kwargs)
  fldj = np.broadcast_to(fldj.numpy(), x.shape[:1])
  np.testing.assert_allclose(fldj, autodiff_log_det(bijector, x, **kwargs), **tolerance)
  ildj = bijector.inverse_log_det_jacobian(y, event_ndims=1, **kwargs)
  np.testing.assert_allclose(np.broadcast_to(ildj.numpy(), x.shape[:1]), -fldj, **tolerance)

