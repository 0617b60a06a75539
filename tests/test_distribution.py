import numpy as np
import pytest
import scipy.stats
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_realnvp import RealNVP
from helpers import randomize_outputs

tfd = tfp.distributions


def _flow(event_size=2, dtype=tf.float32, **kwargs):
  kwargs.setdefault("num_couplings", 4)
  kwargs.setdefault("hidden_units", (16, 16))
  flow = RealNVP(event_size, dtype=dtype, **kwargs)
  randomize_outputs(flow, scale=0.3)
  return flow


def test_is_a_tfp_transformed_distribution():
  flow = RealNVP(2)
  # The class TFP itself builds when a bijector holds Keras networks.
  same_as_tfp = tfd.TransformedDistribution(
      tfd.MultivariateNormalDiag(loc=tf.zeros(2)), flow.bijector)
  assert isinstance(flow, type(same_as_tfp)) and isinstance(flow, tfd.Distribution)
  assert isinstance(flow.distribution, tfd.MultivariateNormalDiag)
  assert flow.event_shape == [2] and flow.batch_shape == []


@pytest.mark.parametrize("sample_shape, expected", [((3, 4), (3, 4, 2)), ((), (2,)), (5, (5, 2))])
def test_sample_shapes(sample_shape, expected):
  flow = _flow()
  assert flow.sample(sample_shape, seed=1).shape == expected
  samples, log_probs = flow.sample_and_log_prob(sample_shape, seed=1)
  assert samples.shape == expected and log_probs.shape == expected[:-1]


def test_log_prob_shapes():
  flow = _flow(3)
  assert flow.log_prob(tf.random.normal([5, 7, 3])).shape == [5, 7]
  assert flow.log_prob(tf.random.normal([3])).shape == []
  assert flow.prob(np.zeros([4, 3], np.float32)).shape == [4]


def test_variables_listed_right_after_construction():
  flow = RealNVP(2, num_couplings=5, hidden_units=(32, 32))
  assert len(flow.trainable_variables) == 5 * 6
  # The normalization is state, but not trained.
  names = [v.name for v in flow.variables if not v.trainable]
  assert any("loc" in n for n in names) and any("scale" in n for n in names)


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
@pytest.mark.parametrize("event_size", [2, 3, 5])
def test_log_prob_is_the_change_of_variables(event_size, dtype):
  flow = _flow(event_size, dtype)
  rng = np.random.default_rng(0)
  flow.loc.assign(rng.normal(size=event_size))
  flow.scale.assign(rng.uniform(0.5, 2.0, size=event_size))
  x = tf.constant(rng.normal(size=(16, event_size)), dtype=dtype)
  # Written out by hand: z = f(x) through the networks, log|det df/dx| by autodiff.
  with tf.GradientTape() as tape:
    tape.watch(x)
    fresh = tf.identity(x)
    z = flow.flow_bijector.inverse((fresh - flow.loc) / flow.scale)
  log_det = tf.linalg.slogdet(tape.batch_jacobian(z, x))[1]
  base = -0.5 * tf.reduce_sum(z**2, -1) - 0.5 * event_size * np.log(2 * np.pi)
  tol = 1e-4 if dtype == tf.float32 else 1e-10
  np.testing.assert_allclose(flow.log_prob(x).numpy(), (base + log_det).numpy(), rtol=tol, atol=tol)


def test_untrained_flow_is_the_normal_of_its_normalization():
  flow = RealNVP(2, num_couplings=3, hidden_units=(8,), loc=[1.0, -2.0], scale=[0.5, 3.0])
  x = np.array([[0.3, 0.1], [2.0, -5.0]], np.float32)
  expected = scipy.stats.norm.logpdf(x, loc=[1.0, -2.0], scale=[0.5, 3.0]).sum(-1)
  np.testing.assert_allclose(flow.log_prob(x).numpy(), expected, rtol=1e-5)


def test_samples_and_log_prob_agree():
  flow = _flow(2, tf.float64)
  samples, log_probs = flow.sample_and_log_prob(2000, seed=3)
  np.testing.assert_allclose(flow.log_prob(samples).numpy(), log_probs.numpy(), atol=1e-8)
  # The density integrates to one and its moments are those of the samples.
  step = 0.05
  axis = np.arange(-9, 9, step) + step / 2
  grid = np.stack(np.meshgrid(axis, axis), -1).reshape(-1, 2)
  density = flow.prob(grid).numpy()
  assert abs(density.sum() * step**2 - 1) < 0.01
  grid_mean = (density[:, None] * grid).sum(0) * step**2
  big = flow.sample(40000, seed=4).numpy()
  np.testing.assert_allclose(big.mean(0), grid_mean, atol=0.03)


def test_inverse_of_forward_through_the_distribution():
  flow = _flow(3)
  flow.adapt(np.random.default_rng(1).normal(2.0, 3.0, size=(500, 3)))
  z = tf.random.normal([20, 3])
  x = flow.bijector.forward(z)
  np.testing.assert_allclose(flow.bijector.inverse(x).numpy(), z.numpy(), atol=1e-4)
  np.testing.assert_allclose(flow.bijector.forward(flow.bijector.inverse(x)).numpy(), x.numpy(),
                             rtol=1e-4, atol=1e-4)


def test_adapt_puts_log_prob_in_data_units():
  rng = np.random.default_rng(2)
  data = rng.normal([5.0, -1.0], [10.0, 0.1], size=(4000, 2))
  flow = RealNVP(2, num_couplings=2, hidden_units=(8,))
  assert not flow.is_adapted
  flow.adapt(data)
  assert flow.is_adapted
  np.testing.assert_allclose(flow.loc.numpy(), data.mean(0), rtol=1e-5)
  np.testing.assert_allclose(flow.scale.numpy(), data.std(0), rtol=1e-5)
  expected = scipy.stats.norm.logpdf(data[:5], data.mean(0), data.std(0)).sum(-1)
  np.testing.assert_allclose(flow.log_prob(data[:5].astype(np.float32)).numpy(), expected, rtol=1e-4)
  with pytest.raises(ValueError, match="shape"):
    flow.adapt(np.zeros((10, 3)))
  with pytest.raises(ValueError, match="NaN"):
    flow.adapt(np.full((10, 2), np.nan))


def test_float64_end_to_end():
  flow = _flow(2, tf.float64)
  x = flow.sample(4, seed=1)
  assert x.dtype == tf.float64 and flow.log_prob(x).dtype == tf.float64
  assert all(v.dtype == tf.float64 for v in flow.trainable_variables)


def test_copy_shares_the_weights():
  flow = _flow(2)
  twin = flow.copy()
  x = tf.random.normal([5, 2])
  np.testing.assert_allclose(twin.log_prob(x).numpy(), flow.log_prob(x).numpy())
  assert {id(v) for v in twin.trainable_variables} == {id(v) for v in flow.trainable_variables}


def test_validate_args_turns_on_tfp_checks():
  flow = RealNVP(2, num_couplings=2, hidden_units=(8,), validate_args=True)
  assert flow.validate_args and flow.bijector.validate_args
  assert all(b.validate_args for b in flow.flow_bijector.bijectors)
  assert np.isfinite(flow.log_prob(np.zeros([3, 2], np.float32)).numpy()).all()


def test_conditional_input_is_routed_and_checked():
  flow = RealNVP(2, num_couplings=2, hidden_units=(8,), conditional_size=3)
  randomize_outputs(flow)
  x = tf.random.normal([4, 2])
  a = flow.log_prob(x, conditional_input=tf.one_hot([0, 0, 0, 0], 3))
  b = flow.log_prob(x, conditional_input=tf.one_hot([1, 1, 1, 1], 3))
  assert not np.allclose(a.numpy(), b.numpy())
  with pytest.raises(ValueError, match="conditional_input"):
    flow.log_prob(x)
  with pytest.raises(ValueError, match=r"\[\.\.\., 3\]"):
    flow.log_prob(x, conditional_input=tf.zeros([4, 2]))
  with pytest.raises(ValueError, match="not conditional"):
    _flow().log_prob(x, conditional_input=tf.zeros([4, 3]))


def test_bad_constructor_arguments():
  with pytest.raises(TypeError, match="dtype"):
    RealNVP(2, dtype=tf.int32)
  with pytest.raises(ValueError, match="event_size"):
    RealNVP(1)
