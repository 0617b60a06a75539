import copy
import os
import pathlib
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf
import tensorflow_probability as tfp
from hypothesis import HealthCheck, given, settings, strategies as st

from tfp_realnvp import RealNVP, datasets, fit, real_nvp_bijector
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


def test_trainable_normalization_is_trained_and_stays_positive():
  rng = np.random.default_rng(3)
  data = rng.normal([50.0, -3.0], [20.0, 0.5], size=(2048, 2)).astype(np.float32)
  fixed = RealNVP(2, num_couplings=2, hidden_units=(8,))
  learned = RealNVP(2, num_couplings=2, hidden_units=(8,), trainable_normalization=True)
  assert len(learned.trainable_variables) == len(fixed.trainable_variables) + 2
  np.testing.assert_allclose(learned.scale.numpy(), [1.0, 1.0])
  learned.adapt(data)  # sets the starting point, as for a fixed normalization
  np.testing.assert_allclose(learned.scale.numpy(), data.std(0), rtol=1e-5)
  learned.loc.assign([0.0, 0.0])
  learned.scale.assign([1.0, 1.0])
  fit(learned, data, steps=300, batch_size=256, learning_rate=5e-2, ema_decay=None,
      progress=False)
  # Trained from (0, 1) by the likelihood alone, through exp: positive throughout.
  assert np.all(learned.scale.numpy() > 0)
  assert learned.log_prob(data).numpy().mean() > fixed.log_prob(data).numpy().mean() + 100
  np.testing.assert_array_less(np.abs(learned.sample(4000, seed=1).numpy().mean(0) - [50, -3]),
                               [4.0, 0.5])


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


# -- no stale results: TFP's bijector cache --------------------------------------

def _shift_weights(flow, by=0.2):
  for v in flow.trainable_variables:
    v.assign_add(tf.fill(v.shape, tf.constant(by, v.dtype)))


def test_log_prob_of_earlier_samples_follows_changed_weights():
  flow = _flow(2)
  s = flow.sample(500, seed=(1, 2))
  stale = flow.log_prob(s).numpy()
  _shift_weights(flow)
  fresh = flow.log_prob(tf.identity(s)).numpy()  # a new tensor: no cache entry
  assert np.max(np.abs(fresh - stale)) > 0.1
  np.testing.assert_allclose(flow.log_prob(s).numpy(), fresh, rtol=1e-5, atol=1e-5)
  # adapt changes the normalization and leaves no stale bijector entry either
  x = flow.bijector.forward(tf.random.stateless_normal([50, 2], seed=(3, 3)))
  flow.adapt(np.random.default_rng(0).normal(5.0, 2.0, size=(100, 2)))
  np.testing.assert_allclose(flow.bijector.inverse(x), flow.bijector.inverse(tf.identity(x)),
                             rtol=1e-5, atol=1e-5)


def test_sample_fit_evaluate_gives_the_trained_density():
  """The issue's workflow: samples drawn before fit are scored by the trained flow."""
  flow = RealNVP(2, num_couplings=2, hidden_units=(16,))
  s = flow.sample(300, seed=(1, 2))
  before = flow.log_prob(s).numpy()
  inverse_before = flow.bijector.inverse(s).numpy()
  fit(flow, datasets.moons(1000) * 3.0 + 5.0, steps=40, batch_size=100, progress=False)
  after = flow.log_prob(s).numpy()
  np.testing.assert_allclose(after, flow.log_prob(tf.identity(s)).numpy(), rtol=1e-5, atol=1e-5)
  assert np.max(np.abs(after - before)) > 1.0
  np.testing.assert_allclose(flow.bijector.inverse(s), flow.bijector.inverse(tf.identity(s)),
                             rtol=1e-5, atol=1e-5)
  assert np.max(np.abs(flow.bijector.inverse(s).numpy() - inverse_before)) > 0.1


def test_clear_cache_drops_bijector_results():
  flow = _flow(2)
  z = tf.random.stateless_normal([20, 2], seed=(4, 4))
  x = flow.bijector.forward(z)
  _shift_weights(flow)
  assert np.allclose(flow.bijector.inverse(x), z)  # TFP's cache: the old inverse
  flow.clear_cache()
  assert not np.allclose(flow.bijector.inverse(x), z, atol=1e-3)


def test_eager_gradient_tape_loop_on_a_fixed_tensor():
  flow = _flow(2)
  x = tf.constant(np.random.default_rng(5).normal(size=(64, 2)), tf.float32)
  optimizer = tf.keras.optimizers.SGD(0.05)
  for _ in range(3):
    with tf.GradientTape() as tape:
      loss = -tf.reduce_mean(flow.log_prob(x))
    grads = tape.gradient(loss, flow.trainable_variables)
    assert all(g is not None for g in grads)
    np.testing.assert_allclose(loss, -tf.reduce_mean(flow.log_prob(tf.identity(x))), rtol=1e-5)
    optimizer.apply_gradients(zip(grads, flow.trainable_variables))


# -- forgetting to normalize ----------------------------------------------------------

def test_from_data_adapts():
  rng = np.random.default_rng(6)
  x = rng.normal([1000.0, -3.0], [100.0, 0.01], size=(300, 2))
  flow = RealNVP.from_data(x, num_couplings=2, hidden_units=(8,))
  assert flow.is_adapted and flow.num_couplings == 2
  np.testing.assert_allclose(flow.loc.numpy(), x.mean(0), rtol=1e-5)
  np.testing.assert_allclose(flow.scale.numpy(), x.std(0), rtol=1e-5)
  c = rng.normal(size=(300, 4))
  conditional = RealNVP.from_data(x, c, num_couplings=2, hidden_units=(8,))
  assert conditional.conditional_size == 4
  np.testing.assert_allclose(conditional.bijector.condition_loc.numpy(), c.mean(0), rtol=1e-5)


def test_unadapted_flow_warns_once_on_data_far_from_standardized():
  x = np.random.default_rng(7).normal(size=(200, 2)).astype(np.float32)
  flow = _flow(2)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    flow.log_prob(x)                       # standardized: no warning
    far = _flow(2)
    far.log_prob(x * 100 + 1000)
    far.log_prob(x * 100 + 1000)
    RealNVP.from_data(x * 100 + 1000, num_couplings=2, hidden_units=(8,)).log_prob(
        x * 100 + 1000)
  messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
  assert len(messages) == 1, messages
  assert "not adapted" in messages[0] and "from_data" in messages[0]


def test_custom_training_loop_example_runs_as_a_script():
  script = pathlib.Path(__file__).resolve().parents[1] / "examples" / "custom_training_loop.py"
  result = subprocess.run(
      [sys.executable, str(script), "--steps", "60", "--num-couplings", "2",
       "--hidden-units", "16"], capture_output=True, text=True, timeout=600,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert result.returncode == 0, result.stderr[-2000:]
  with_line = next(l for l in result.stdout.splitlines() if "with normalization" in l)
  without_line = next(l for l in result.stdout.splitlines() if "without normalization" in l)
  with_start, with_end = (float(t) for t in re.findall(r"(-?[\d.]+) (?:at|after)", with_line))
  without_end = float(re.findall(r"(-?[\d.]+) after", without_line)[0])
  assert with_end < with_start and with_end < 12.0, with_line   # moons NLL + 2 log(100)
  assert without_end > with_end + 50.0, without_line
  assert "warned" in result.stdout


# -- copies ---------------------------------------------------------------------------

def test_copy_refuses_overrides_it_cannot_honour():
  flow = _flow(2)
  for override in ({"num_couplings": 2}, {"conditional_size": 3}, {"dtype": tf.float64},
                   {"loc": [1.0, 2.0]}, {"hidden_units": (4,)}):
    with pytest.raises(ValueError, match=r"shares this flow's weights.*RealNVP\(\*\*dict"):
      flow.copy(**override)
  named = flow.copy(name="twin")
  assert named.name == "twin" and named.num_couplings == 4
  assert {id(v) for v in named.variables} == {id(v) for v in flow.variables}


def test_deepcopy_gives_independent_weights_with_the_same_values():
  flow = _flow(3, actnorm=True, permutation="random", conditional_size=2)
  flow.adapt(np.random.default_rng(8).normal(3.0, 2.0, size=(100, 3)),
             np.random.default_rng(9).normal(size=(100, 2)))
  twin = copy.deepcopy(flow)
  assert twin.config == flow.config and twin.is_adapted
  assert not {id(v) for v in twin.variables} & {id(v) for v in flow.variables}
  x = tf.random.stateless_normal([6, 3], seed=(1, 1))
  c = tf.random.stateless_normal([6, 2], seed=(2, 1))
  np.testing.assert_allclose(twin.log_prob(x, conditional_input=c),
                             flow.log_prob(x, conditional_input=c), rtol=1e-6)
  _shift_weights(twin)
  assert not np.allclose(twin.log_prob(x, conditional_input=c),
                         flow.log_prob(x, conditional_input=c))


# -- no closed forms ------------------------------------------------------------------

@pytest.mark.parametrize("coupling", ["affine", "additive", "spline"])
def test_moments_are_refused_with_the_monte_carlo_estimate(coupling):
  flow = _flow(2, coupling=coupling)
  for method, hint in [("mean", "tf.reduce_mean(flow.sample"), ("mode", "flow.log_prob"),
                       ("stddev", "reduce_std"), ("variance", "reduce_variance"),
                       ("covariance", "tfp.stats.covariance"),
                       ("entropy", "-tf.reduce_mean(flow.log_prob(flow.sample")]:
    with pytest.raises(NotImplementedError, match="no closed-form.*Monte Carlo") as info:
      getattr(flow, method)()
    assert hint in str(info.value)


def test_mixture_of_flows_uses_tfd_mixture():
  """The documented route for a mixture of (unbatched) flows."""
  a, b = _flow(2), _flow(2, hidden_units=(8,))
  mixture = tfd.Mixture(tfd.Categorical(logits=[0.0, 0.0]), [a, b])
  x = tf.random.stateless_normal([5, 2], seed=(3, 1))
  expected = np.logaddexp(a.log_prob(x), b.log_prob(x)) - np.log(2.0)
  np.testing.assert_allclose(mixture.log_prob(x), expected, rtol=1e-5)


# -- clear errors -----------------------------------------------------------------------

@pytest.mark.parametrize("validate_args", [False, True])
def test_wrong_event_size_raises_naming_the_size(validate_args):
  flow = _flow(2, validate_args=validate_args)
  x = np.random.default_rng(1).normal(size=(4, 2)).astype(np.float32)
  for bad in (x[:, :1], x[0, :1], np.float32(0.3), x[:, :, None], np.zeros([4, 3], np.float32)):
    for method in (flow.log_prob, flow.prob):
      with pytest.raises(ValueError, match=r"expected events of size 2"):
        method(bad)


def test_wrong_event_size_in_a_tf_function_with_unknown_shape():
  flow = _flow(2)
  log_prob = tf.function(flow.log_prob,
                         input_signature=[tf.TensorSpec([None, None], tf.float32)])
  np.testing.assert_allclose(log_prob(tf.ones([3, 2])), flow.log_prob(tf.ones([3, 2])),
                             rtol=1e-6)
  with pytest.raises(tf.errors.InvalidArgumentError, match=r"expected shape \[\?,2\]"):
    log_prob(tf.zeros([3, 1]))


def test_complex_input_and_negative_sample_shape_raise():
  flow = _flow(2)
  with pytest.raises(TypeError, match="complex"):
    flow.log_prob(np.array([[1 + 2j, 1.0]], np.complex64))
  with pytest.raises(TypeError, match="complex"):
    flow.log_prob(tf.constant([[1 + 2j, 1.0]], tf.complex64))
  with pytest.raises(ValueError, match="sample_shape must be non-negative.*-1"):
    flow.sample(-1)
  with pytest.raises(ValueError, match="sample_shape must be non-negative"):
    flow.experimental_sample_and_log_prob([2, -3])


# -- numerical extremes (moved from test_reliability) ---------------------------------

@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_log_prob_far_from_the_data_is_never_nan(dtype):
  flow = RealNVP(2, num_couplings=6, hidden_units=(32, 32), dtype=dtype)
  flow.adapt(datasets.moons(2000))
  randomize_outputs(flow, scale=1.0)
  rng = np.random.default_rng(0)
  magnitudes = 10.0 ** rng.uniform(-3, 4, size=(4000, 1))
  directions = rng.normal(size=(4000, 2))
  x = directions / np.linalg.norm(directions, axis=1, keepdims=True) * magnitudes
  x = np.concatenate([x, [[1e4, 1e4], [-1e4, 1e4], [1e4, -1e4], [0.0, 0.0]]])
  log_prob = flow.log_prob(tf.constant(x, dtype=dtype)).numpy()
  assert not np.any(np.isnan(log_prob))
  assert not np.any(log_prob == np.inf)


@pytest.mark.parametrize("coupling", ["affine", "additive", "spline"])
def test_log_prob_of_huge_finite_inputs_is_minus_inf_not_nan(coupling):
  flow = RealNVP(2, num_couplings=4, hidden_units=(16,), coupling=coupling, loc=0.0)
  randomize_outputs(flow, scale=1.0)
  huge = np.array([[1e33, 1e33], [1e34, -1e35], [3e38, 1.0], [-3e38, 3e38], [1e20, 0.0],
                   [0.0, 1e36]], np.float32)
  log_prob = flow.log_prob(huge).numpy()
  assert not np.any(np.isnan(log_prob)), log_prob
  assert np.all(log_prob[:4] == -np.inf), log_prob


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_samples_are_always_finite(dtype):
  flow = RealNVP(3, num_couplings=6, hidden_units=(32,), dtype=dtype)
  randomize_outputs(flow, scale=1.0)
  samples = flow.sample(200_000, seed=7).numpy()
  assert np.all(np.isfinite(samples))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event_size=st.integers(2, 6),
       batch_shape=st.lists(st.integers(1, 4), min_size=0, max_size=2),
       log_magnitude=st.floats(-3, 2),
       seed=st.integers(0, 2**16))
def test_property_invertibility_and_log_det_consistency(event_size, batch_shape, log_magnitude,
                                                        seed):
  chain = real_nvp_bijector(event_size, num_couplings=3, hidden_units=(8,), dtype=tf.float64)
  randomize_outputs(chain, scale=0.5, seed=seed)
  rng = np.random.default_rng(seed)
  x = tf.constant(rng.normal(size=batch_shape + [event_size]) * 10.0**log_magnitude)
  y = chain.forward(x)
  assert y.shape == x.shape
  scale = 1.0 + np.abs(x.numpy())
  np.testing.assert_allclose(chain.inverse(tf.identity(y)).numpy() / scale, x.numpy() / scale,
                             atol=1e-9)
  forward_ldj = chain.forward_log_det_jacobian(tf.identity(x), event_ndims=1).numpy()
  inverse_ldj = chain.inverse_log_det_jacobian(tf.identity(y), event_ndims=1).numpy()
  assert forward_ldj.shape == tuple(batch_shape)
  np.testing.assert_allclose(forward_ldj, -inverse_ldj, atol=1e-9)
  assert np.all(np.isfinite(forward_ldj))


def test_options_are_the_flow_options_with_tuned_defaults():
  import json  # pylint: disable=import-outside-toplevel
  from tfp_realnvp.options import FlowOptions  # pylint: disable=import-outside-toplevel
  flow = RealNVP(2)
  assert flow.options == FlowOptions() and flow.num_couplings == 16
  small = RealNVP(3, num_couplings=2, hidden_units=[8], coupling="spline", seed=4)
  assert small.options == FlowOptions(num_couplings=2, hidden_units=(8,), coupling="spline")
  assert json.loads(json.dumps(small.config)) == small.config
  assert set(small.config) == {
      "event_size", "num_couplings", "hidden_units", "activation", "permutation",
      "log_scale_bound", "conditional_size", "coupling", "spline_bins", "spline_bound",
      "actnorm", "trainable_normalization", "seed", "dtype", "validate_args", "name"}
  assert small.config["hidden_units"] == [8] and small.config["dtype"] == "float32"
  rebuilt = RealNVP(**small.config)
  assert rebuilt.options == small.options
  with pytest.raises(TypeError, match=r"unexpected options \['num_coupling'\].*num_couplings"):
    RealNVP(2, num_coupling=3)
  with pytest.raises(TypeError):
    RealNVP(2, 4)  # options are keywords only
