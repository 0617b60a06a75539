import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_realnvp import RealNVP, datasets, fit

tfb = tfp.bijectors
tfd = tfp.distributions


@pytest.fixture(scope="module")
def moons_data():
  return datasets.moons(20000, noise=0.05, seed=0), datasets.moons(4000, noise=0.05, seed=1)


def test_every_trainable_variable_changes(moons_data):
  x, _ = moons_data
  flow = RealNVP(2, num_couplings=3, hidden_units=(16, 16))
  before = [v.numpy().copy() for v in flow.trainable_variables]
  fit(flow, x, steps=30, batch_size=128, progress=False)
  for v, old in zip(flow.trainable_variables, before):
    assert not np.allclose(v.numpy(), old), f"{v.name} did not change"


def test_short_fit_gets_near_the_oracle(moons_data):
  x, x_test = moons_data
  tf.keras.utils.set_random_seed(0)
  flow = RealNVP(2)  # package defaults, a short budget
  history = fit(flow, x, steps=1500, batch_size=512, validation_data=0.1, progress=False,
                seed=0)
  test_nll = -float(tf.reduce_mean(flow.log_prob(x_test)))
  oracle = datasets.oracle_nll(x_test, 0.05)
  assert test_nll - oracle < 0.1, (test_nll, oracle)
  assert history.train_nll[-1] < history.train_nll[0]


def test_history_records_each_epoch(moons_data):
  x, _ = moons_data
  flow = RealNVP(2, num_couplings=2, hidden_units=(8,))
  history = fit(flow, x, steps=100, batch_size=200, eval_every=25, validation_data=0.2,
                progress=False)
  assert history.epoch == [1, 2, 3, 4] and history.step == [25, 50, 75, 100]
  assert len(history.train_nll) == len(history.val_nll) == len(history.wall_time) == 4
  assert all(math.isfinite(v) for v in history.val_nll)
  assert history.learning_rate[-1] < history.learning_rate[0] or history.learning_rate[0] < 1e-3
  assert sum(history.nonfinite_steps) == 0
  assert history.best_val_nll == min(history.val_nll)


def test_epochs_and_no_validation(moons_data):
  x, _ = moons_data
  flow = RealNVP(2, num_couplings=2, hidden_units=(8,))
  history = fit(flow, x[:1000], epochs=2, batch_size=100, progress=False)
  assert history.step == [10, 20]
  assert all(math.isnan(v) for v in history.val_nll)


def test_early_stopping_restores_the_best_weights(moons_data):
  x, _ = moons_data
  # Broad noise as validation data: it gets less likely as the flow learns the moons.
  x_val = np.random.default_rng(0).normal(size=(500, 2)).astype(np.float32) * 2.0
  flow = RealNVP(2, num_couplings=2, hidden_units=(16,))
  history = fit(flow, x[500:], steps=2000, batch_size=100, eval_every=20,
                validation_data=x_val, early_stopping_patience=3, progress=False)
  assert history.stopped_early
  assert len(history.epoch) < 30
  val_now = -float(tf.reduce_mean(flow.log_prob(x_val)))
  assert val_now == pytest.approx(history.best_val_nll, abs=1e-4)
  assert history.best_val_nll == pytest.approx(min(history.val_nll))


def test_fit_adapts_the_normalization_once(moons_data):
  x, _ = moons_data
  flow = RealNVP(2, num_couplings=2, hidden_units=(8,))
  fit(flow, x, steps=5, batch_size=100, progress=False)
  assert flow.is_adapted
  np.testing.assert_allclose(flow.loc.numpy(), x.mean(0), rtol=1e-4)
  fit(flow, x + 100.0, steps=5, batch_size=100, progress=False)  # already adapted: kept
  np.testing.assert_allclose(flow.loc.numpy(), x.mean(0), rtol=1e-4)


def test_trains_tfp_builtin_realnvp_with_explicit_variables(moons_data):
  x, _ = moons_data
  template = tfb.real_nvp_default_template(hidden_layers=[16, 16])
  builtin = tfd.TransformedDistribution(
      tfd.MultivariateNormalDiag(loc=tf.zeros(2)),
      tfb.RealNVP(num_masked=1, shift_and_log_scale_fn=template))
  builtin.log_prob(x[:2])  # the template creates its variables on first call
  assert builtin.trainable_variables == ()  # TFP issue 1439
  variables = template.trainable_variables
  before = [v.numpy().copy() for v in variables]
  history = fit(builtin, x, steps=50, batch_size=128, learning_rate=1e-4,
                trainable_variables=variables, progress=False)
  assert any(not np.allclose(v.numpy(), b) for v, b in zip(variables, before))
  assert math.isfinite(history.train_nll[-1])
  with pytest.raises(ValueError, match="no trainable variables"):
    fit(builtin, x, steps=5, progress=False)



@pytest.mark.parametrize("kwargs, message", [
    (dict(steps=0), "steps must be a positive integer"),
    (dict(steps=10, epochs=1), "exactly one of"),
    (dict(steps=10, batch_size=0), "batch_size"),
    (dict(steps=10, batch_size=10_000), "larger than the number of training points"),
    (dict(steps=10, learning_rate=-1.0), "learning_rate"),
    (dict(steps=10, validation_data=1.5), r"validation fraction must be in \(0, 1\)"),
    (dict(steps=10, early_stopping_patience=2), "needs validation_data"),
])
def test_bad_arguments_are_refused(kwargs, message):
  flow = RealNVP(2, num_couplings=1, hidden_units=(4,))
  x = np.zeros((100, 2), np.float32) + np.arange(100)[:, None]
  with pytest.raises(ValueError, match=message):
    fit(flow, x, progress=False, **{"batch_size": 50, **kwargs})
