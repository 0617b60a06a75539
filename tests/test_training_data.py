"""What fit trains on: input checks, validation data, tf.data.Dataset input."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from tfp_realnvp import RealNVP, datasets, fit


def _small(**kwargs):
  return RealNVP(2, num_couplings=1, hidden_units=(4,), **kwargs)


def test_bad_data_is_refused():
  flow = _small()
  with pytest.raises(ValueError, match="3 columns but the distribution's event size is 2"):
    fit(flow, np.zeros((10, 3)), steps=1, progress=False)
  with pytest.raises(ValueError, match="rank 2"):
    fit(flow, np.zeros(10), steps=1, progress=False)
  with pytest.raises(ValueError, match="empty"):
    fit(flow, np.zeros((0, 2)), steps=1, progress=False)
  with pytest.raises(TypeError, match="numeric"):
    fit(flow, np.array([["a", "b"]]), steps=1, progress=False)
  bad = np.ones((50, 2))
  bad[[3, 7], 0] = np.nan
  bad[9, 1] = np.inf
  with pytest.raises(ValueError, match="3 of 50 rows"):
    fit(flow, bad, steps=1, progress=False)
  assert not flow.is_adapted  # nothing happened to the flow


def test_float64_data_that_would_collapse_in_float32_is_refused():
  x = datasets.moons(2000, seed=0).astype(np.float64) + 1e8
  assert len(np.unique(x.astype(np.float32), axis=0)) < 10  # what the cast would train on
  with pytest.raises(ValueError, match=r"loses its precision in float32.*dtype=tf.float64"):
    fit(_small(), x, steps=1, progress=False)
  flow = RealNVP(2, num_couplings=1, hidden_units=(4,), dtype=tf.float64)
  fit(flow, x, steps=2, batch_size=100, progress=False)  # a float64 flow takes it
  fit(_small(), x - 1e8, steps=2, batch_size=100, progress=False)  # float64, no loss: fine


def test_values_beyond_float32_are_refused_as_overflow_not_nan():
  x = np.ones((100, 2))
  x[5, 0] = 1e39
  with pytest.raises(ValueError, match=r"1 rows with values beyond the range of float32.*overflow"):
    fit(_small(), x, steps=1, progress=False)


def test_complex_data_is_refused():
  x = np.ones((100, 2)) + 1j * np.ones((100, 2))
  with pytest.raises(TypeError, match="complex"):
    fit(_small(), x, steps=1, progress=False)
  with pytest.raises(TypeError, match="complex"):
    fit(_small(), np.ones((100, 2)), validation_data=(x[:10],), steps=1, progress=False)


def test_validation_data_forms():
  x = datasets.moons(1000, seed=0)
  x_val = datasets.moons(200, seed=1)

  def run(validation_data):
    tf_keras.utils.set_random_seed(0)
    return fit(_small(), x, steps=20, batch_size=100, validation_data=validation_data,
               progress=False, eval_every=10)
  histories = [run(x_val), run((x_val,))]
  assert histories[0].val_nll == pytest.approx(histories[1].val_nll)
  with pytest.raises(ValueError, match=r"a fraction, x_val or \(x_val,\)"):
    fit(_small(), x, validation_data=(x_val, x_val, x_val), steps=1, progress=False)
  with pytest.raises(ValueError, match=r"validation fraction must be in \(0, 1\)"):
    fit(_small(), x, validation_data=1.5, steps=1, progress=False)


def test_conditional_fit_with_per_point_conditions():
  x, labels = datasets.moons(4000, seed=0, return_labels=True)
  c = np.eye(2, dtype=np.float32)[labels]
  flow = RealNVP(2, num_couplings=4, hidden_units=(32, 32), conditional_size=2)
  history = fit(flow, x, conditional_input=c, steps=400, batch_size=200,
                validation_data=0.1, progress=False)
  assert history.val_nll[-1] < history.val_nll[0]
  right = -float(tf.reduce_mean(flow.log_prob(x[:500], conditional_input=c[:500])))
  wrong = -float(tf.reduce_mean(flow.log_prob(x[:500], conditional_input=c[:500, ::-1])))
  assert right < wrong - 1.0  # the condition carries the class
  with pytest.raises(ValueError, match="one conditioning vector per point"):
    fit(flow, x, conditional_input=c[:10], steps=1, progress=False)
  with pytest.raises(ValueError, match=r"tuple \(x_val, conditional_input_val\)"):
    fit(flow, x, conditional_input=c, validation_data=x[:10], steps=1, progress=False)


def test_adapt_also_normalizes_the_conditions():
  x, labels = datasets.moons(2000, seed=0, return_labels=True)
  c = np.stack([labels * 100.0 + 1000.0, labels * 0.0 + 5.0], axis=1).astype(np.float32)
  calls = []
  flow = RealNVP(2, num_couplings=1, hidden_units=(4,), conditional_size=2)
  adapt = flow.adapt
  flow.adapt = lambda data, **kwargs: calls.append(kwargs) or adapt(data, **kwargs)
  fit(flow, x, conditional_input=c, steps=2, batch_size=100, progress=False)
  assert len(calls) == 1 and calls[0]["conditional_input"] is not None
  np.testing.assert_allclose(calls[0]["conditional_input"], c)


@pytest.mark.parametrize("make", [
    lambda x: tf.data.Dataset.from_tensor_slices(x),                       # points, finite
    lambda x: tf.data.Dataset.from_tensor_slices(x).batch(64),             # batches, finite
    lambda x: tf.data.Dataset.from_tensor_slices(x).shuffle(500).repeat(),  # endless
])
def test_a_tf_data_dataset_trains_like_its_array(make):
  x = datasets.moons(1000, seed=0)
  flow = _small()
  history = fit(flow, make(x), steps=40, batch_size=100, eval_every=20,
                validation_data=(x[:200],), progress=False)
  assert history.step == [20, 40] and np.all(np.isfinite(history.val_nll))
  assert flow.is_adapted
  # (an endless dataset is adapted from a sample of it, not the whole array)
  np.testing.assert_allclose(flow.loc.numpy(), x.mean(0), atol=2e-3)


def test_a_dataset_of_points_and_conditions_and_epochs():
  x, labels = datasets.moons(1000, seed=0, return_labels=True)
  c = np.eye(2, dtype=np.float32)[labels]
  flow = RealNVP(2, num_couplings=1, hidden_units=(4,), conditional_size=2)
  history = fit(flow, tf.data.Dataset.from_tensor_slices((x, c)), epochs=2, batch_size=100,
                validation_data=(x[:100], c[:100]), progress=False)
  assert history.step == [10, 20]
  with pytest.raises(ValueError, match="epochs= needs a finite dataset"):
    fit(flow, tf.data.Dataset.from_tensor_slices((x, c)).repeat(), epochs=1, progress=False)
  with pytest.raises(ValueError, match="validation fraction needs array data"):
    fit(flow, tf.data.Dataset.from_tensor_slices((x, c)), steps=2, validation_data=0.1,
        progress=False)


def test_without_steps_or_epochs_fit_takes_the_default_budget(monkeypatch):
  from tfp_realnvp.training import loop
  monkeypatch.setattr(loop, "_D", loop._D.__class__(steps=30))
  history = fit(_small(), datasets.moons(1000, seed=0), batch_size=100, progress=False)
  assert history.step[-1] == 30
