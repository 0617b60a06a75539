"""Weight averaging (``ema_decay``) in ``fit``, against hand computation."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

from tfp_realnvp import RealNVP, datasets, fit

tfd = tfp.distributions


def _hand_ema(trajectory, decay):
  """tf.train.ExponentialMovingAverage with num_updates = k at the k-th update."""
  average = trajectory[0]
  for k, weight in enumerate(trajectory[1:], start=1):
    d = min(decay, (1.0 + k) / (10.0 + k))
    average = d * average + (1.0 - d) * weight
  return average


def test_ema_weights_are_the_hand_computed_average_of_the_sgd_trajectory():
  # Full-batch SGD on the mean of a unit Normal: the gradient of the mean NLL
  # is loc - mean(x), so loc_k = mean + (loc_0 - mean) * (1 - lr)^k exactly.
  x = np.random.default_rng(0).normal(loc=[2.0, -1.0], size=(256, 2)).astype(np.float64)
  mean = x.mean(axis=0)
  loc = tf.Variable([0.0, 0.0], dtype=tf.float64)
  dist = tfd.MultivariateNormalDiag(loc=loc)
  lr, steps, decay = 0.1, 40, 0.9
  fit(dist, x, steps=steps, batch_size=256, optimizer=tf_keras.optimizers.SGD(lr),
      ema_decay=decay, trainable_variables=[loc], progress=False, jit_compile=False)
  trajectory = [mean + (0.0 - mean) * (1.0 - lr) ** k for k in range(steps + 1)]
  np.testing.assert_allclose(loc.numpy(), _hand_ema(trajectory, decay), rtol=1e-6)
  # ...and not the raw end point, which EMA lags behind.
  assert not np.allclose(loc.numpy(), trajectory[-1], rtol=1e-3)


def test_without_ema_the_model_ends_at_the_raw_weights():
  x = np.random.default_rng(0).normal(loc=[2.0, -1.0], size=(256, 2))
  loc = tf.Variable([0.0, 0.0], dtype=tf.float64)
  dist = tfd.MultivariateNormalDiag(loc=loc)
  fit(dist, x, steps=40, batch_size=256, optimizer=tf_keras.optimizers.SGD(0.1),
      ema_decay=None, trainable_variables=[loc], progress=False)
  np.testing.assert_allclose(loc.numpy(), x.mean(0) * (1 - 0.9 ** 40), rtol=1e-6)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_validation_and_the_returned_model_use_the_averaged_weights(jit_compile):
  x, x_val = datasets.moons(3000, seed=0), datasets.moons(1000, seed=1)
  flow = RealNVP(2, num_couplings=2, hidden_units=(16,))
  history = fit(flow, x, steps=200, batch_size=100, eval_every=50, validation_data=x_val,
                ema_decay=0.95, progress=False, jit_compile=jit_compile)
  best = history.val_nll[history.best_epoch - 1]
  assert history.best_val_nll == pytest.approx(best)
  # The weights returned are the ones that were validated (the averages of the best epoch).
  assert -float(tf.reduce_mean(flow.log_prob(x_val))) == pytest.approx(best, abs=1e-4)


@pytest.mark.parametrize("ema_decay", [1.0, 0.0, True])
def test_bad_decays_are_refused(ema_decay):
  flow = RealNVP(2, num_couplings=1, hidden_units=(4,))
  with pytest.raises(ValueError, match=r"ema_decay must be in \(0, 1\)"):
    fit(flow, datasets.moons(200), steps=2, batch_size=50, progress=False, ema_decay=ema_decay)
