"""Weight averaging (``ema_decay``) and weight decay in ``fit``, against hand computation."""

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
      clip_norm=None, ema_decay=decay, trainable_variables=[loc], progress=False,
      jit_compile=False)
  trajectory = [mean + (0.0 - mean) * (1.0 - lr) ** k for k in range(steps + 1)]
  np.testing.assert_allclose(loc.numpy(), _hand_ema(trajectory, decay), rtol=1e-6)
  # ...and not the raw end point, which EMA lags behind.
  assert not np.allclose(loc.numpy(), trajectory[-1], rtol=1e-3)


def test_without_ema_the_model_ends_at_the_raw_weights():
  x = np.random.default_rng(0).normal(loc=[2.0, -1.0], size=(256, 2))
  loc = tf.Variable([0.0, 0.0], dtype=tf.float64)
  dist = tfd.MultivariateNormalDiag(loc=loc)
  fit(dist, x, steps=40, batch_size=256, optimizer=tf_keras.optimizers.SGD(0.1),
      clip_norm=None, ema_decay=None, trainable_variables=[loc], progress=False)
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


def test_ema_state_is_checkpointed_and_resumed(tmp_path):
  x = datasets.moons(2000, seed=0)
  start = [v.numpy() for v in RealNVP(2, num_couplings=2, hidden_units=(16,)).trainable_variables]

  def run(checkpoint_dir):
    tf_keras.utils.set_random_seed(3)
    flow = RealNVP(2, num_couplings=2, hidden_units=(16,))
    for v, value in zip(flow.trainable_variables, start):
      v.assign(value)
    history = fit(flow, x, steps=100, batch_size=100, eval_every=20, ema_decay=0.9,
                  restore_best_weights=False, checkpoint_dir=checkpoint_dir, progress=False,
                  seed=3, jit_compile=False)
    return flow, history

  straight, _ = run(tmp_path / "straight")
  split = tmp_path / "split"
  run(split)  # a checkpoint every epoch; drop the last, so the next call resumes at step 80
  for path in split.glob("ckpt-100*"):
    path.unlink()
  state = split / "checkpoint"
  state.write_text(state.read_text().replace("ckpt-100", "ckpt-80"))
  resumed, history = run(split)
  assert history.resumed_from_step == 80
  # Equal only if the averages and their update count came back with the weights.
  for a, b in zip(straight.trainable_variables, resumed.trainable_variables):
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)


def test_weight_decay_shrinks_a_weight_the_loss_does_not_use():
  x = np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32)
  loc = tf.Variable([0.0, 0.0])
  unused = tf.Variable([1.0, -2.0])
  dist = tfd.MultivariateNormalDiag(loc=loc)
  lr, wd, steps = 0.1, 0.5, 10
  fit(dist, x, steps=steps, batch_size=64, learning_rate=lr, schedule="constant",
      weight_decay=wd, ema_decay=None, trainable_variables=[loc, unused], progress=False)
  # AdamW: w <- w - lr * wd * w; Adam's own step is 0 for a zero gradient.
  np.testing.assert_allclose(unused.numpy(), np.array([1.0, -2.0]) * (1 - lr * wd) ** steps,
                             rtol=1e-5)
  unused.assign([1.0, -2.0])
  fit(dist, x, steps=steps, batch_size=64, learning_rate=lr, schedule="constant",
      weight_decay=0.0, ema_decay=None, trainable_variables=[loc, unused], progress=False)
  np.testing.assert_allclose(unused.numpy(), [1.0, -2.0])


@pytest.mark.parametrize("kwargs, message", [
    (dict(ema_decay=1.0), r"ema_decay must be in \(0, 1\)"),
    (dict(ema_decay=0.0), r"ema_decay must be in \(0, 1\)"),
    (dict(ema_decay=True), r"ema_decay must be in \(0, 1\)"),
    (dict(weight_decay=-0.1), r"weight_decay must be a number in \[0, 1\)"),
    (dict(weight_decay="1e-4"), r"weight_decay must be a number in \[0, 1\)"),
])
def test_bad_averaging_and_decay_arguments_are_refused(kwargs, message):
  flow = RealNVP(2, num_couplings=1, hidden_units=(4,))
  with pytest.raises(ValueError, match=message):
    fit(flow, datasets.moons(200), steps=2, batch_size=50, progress=False, **kwargs)
