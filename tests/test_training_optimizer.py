"""default_optimizer: the schedule against its formula, clipping, weight decay, refusals."""

import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

from tfp_realnvp import fit
from tfp_realnvp.options import TRAINING_DEFAULTS, TrainingOptions
from tfp_realnvp.training import default_optimizer
from tfp_realnvp.training.optimizer import build_slots, learning_rate_schedule

tfd = tfp.distributions


def _rate(optimizer, step):
  return float(learning_rate_schedule(optimizer)(tf.constant(step, tf.int64)))


def test_warmup_then_cosine_follows_the_formula():
  steps, peak, warmup, final = 1000, 2e-3, 100, 0.1
  optimizer = default_optimizer(steps, learning_rate=peak, warmup_steps=warmup,
                                final_learning_rate_fraction=final)
  for t in (0, 50, 99, 100, 400, 999, 1000, 5000):
    if t < warmup:
      expected = peak / 100 + t / warmup * (peak - peak / 100)
    else:
      phase = min(t - warmup, steps - warmup) / (steps - warmup)
      expected = peak * (final + (1 - final) * 0.5 * (1 + math.cos(math.pi * phase)))
    assert _rate(optimizer, t) == pytest.approx(expected, rel=1e-5), t


def test_constant_schedule_and_the_defaults_come_from_training_defaults():
  assert _rate(default_optimizer(10, schedule="constant", learning_rate=0.3), 7) == \
      pytest.approx(0.3)
  optimizer = default_optimizer(TRAINING_DEFAULTS.steps)
  assert isinstance(optimizer, tf_keras.optimizers.legacy.Adam)
  assert optimizer.global_clipnorm == TRAINING_DEFAULTS.clip_norm
  assert _rate(optimizer, TRAINING_DEFAULTS.warmup_steps) == \
      pytest.approx(TRAINING_DEFAULTS.learning_rate, rel=1e-6)


def test_gradients_are_clipped_to_the_global_norm_before_adam():
  # SGD-like check through Adam's first step is scale-free, so compare the
  # clipped gradient Adam sees: its first moment after one step is (1 - beta1) g.
  v = tf.Variable([0.0, 0.0])
  optimizer = default_optimizer(10, schedule="constant", clip_norm=1.0)
  build_slots(optimizer, [v])
  optimizer.apply_gradients([(tf.constant([30.0, 40.0]), v)])
  m = optimizer.get_slot(v, "m").numpy()
  np.testing.assert_allclose(m, 0.1 * np.array([0.6, 0.8]), rtol=1e-6)


def test_fused_legacy_adam_takes_the_steps_of_the_current_adam():
  # Same schedule and clip in both: only the kernels differ (one fused op per variable).
  rng = np.random.default_rng(1)
  grads = [rng.normal(size=(3, 4)).astype(np.float32) * 10 ** rng.uniform(-3, 2)
           for _ in range(20)]
  legacy = default_optimizer(20, learning_rate=0.05, warmup_steps=5, clip_norm=5.0)
  current = tf_keras.optimizers.Adam(learning_rate_schedule(legacy), global_clipnorm=5.0)
  weights = []
  for optimizer in (legacy, current):
    v = tf.Variable(np.ones((3, 4), np.float32))
    build_slots(optimizer, [v])
    for g in grads:
      optimizer.apply_gradients([(tf.constant(g), v)])
    weights.append(v.numpy())
  np.testing.assert_allclose(weights[0], weights[1], rtol=1e-5, atol=1e-6)
  assert not np.allclose(weights[0], 1.0)


def test_under_a_strategy_the_default_is_the_current_adam():
  # The legacy optimizer refuses fit's cross-replica update of the summed gradients.
  with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
    optimizer = default_optimizer(10)
  assert isinstance(optimizer, tf_keras.optimizers.Adam)
  assert optimizer.global_clipnorm == TRAINING_DEFAULTS.clip_norm


def test_weight_decay_shrinks_a_weight_the_loss_does_not_use():
  x = np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32)
  loc, unused = tf.Variable([0.0, 0.0]), tf.Variable([1.0, -2.0])
  dist = tfd.MultivariateNormalDiag(loc=loc)
  lr, wd, steps = 0.1, 0.5, 10
  optimizer = default_optimizer(steps, learning_rate=lr, schedule="constant", weight_decay=wd)
  assert isinstance(optimizer, tf_keras.optimizers.AdamW)
  fit(dist, x, steps=steps, batch_size=64, optimizer=optimizer, ema_decay=None,
      trainable_variables=[loc, unused], progress=False)
  # AdamW: w <- w - lr * wd * w; Adam's own step is 0 for a zero gradient.
  np.testing.assert_allclose(unused.numpy(), np.array([1.0, -2.0]) * (1 - lr * wd) ** steps,
                             rtol=1e-5)


@pytest.mark.parametrize("kwargs, message", [
    (dict(steps=0), "steps must be a positive integer"),
    (dict(learning_rate=-1.0), "learning_rate must be a positive finite number"),
    (dict(learning_rate=float("inf")), "learning_rate must be a positive finite number"),
    (dict(schedule="linear"), "schedule must be one of"),
    (dict(warmup_steps=-10), "warmup_steps must be an integer >= 0"),
    (dict(warmup_steps=2.5), "warmup_steps must be an integer >= 0"),
    (dict(final_learning_rate_fraction=1.5), r"final_learning_rate_fraction must be a number in"),
    (dict(clip_norm=0.0), "clip_norm must be a positive number or None"),
    (dict(weight_decay=-0.1), r"weight_decay must be a number in \[0, 1\)"),
    (dict(weight_decay="1e-4"), r"weight_decay must be a number in \[0, 1\)"),
])
def test_bad_arguments_are_refused(kwargs, message):
  # One check serves default_optimizer, TrainingOptions (the CLI and TrainConfig) and fit.
  with pytest.raises(ValueError, match=message):
    TrainingOptions(**kwargs)
  steps = kwargs.pop("steps", 100)
  with pytest.raises(ValueError, match=message):
    default_optimizer(steps, **kwargs)
