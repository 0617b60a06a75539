"""Conditional RealNVP: routing of conditional_input, shape convention, errors."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_realnvp

tfd = tfp.distributions

K = 3


def _perturb(flow, scale=0.3, seed=0):
  """Random weights, so that couplings (and the condition) actually matter."""
  rng = np.random.default_rng(seed)
  for v in flow.trainable_variables:
    v.assign(scale * rng.standard_normal(v.shape).astype(v.dtype.as_numpy_dtype))
  return flow


@pytest.fixture(scope="module")
def flow():
  return _perturb(tfp_realnvp.RealNVP(2, num_couplings=3, hidden_units=(16,),
                                      conditional_size=K))


@pytest.fixture(scope="module")
def cond():
  return tf.constant(np.random.default_rng(1).standard_normal([5, K]), tf.float32)


def test_condition_changes_density_and_samples(flow, cond):
  x = tf.zeros([5, 2])
  lp_a = flow.log_prob(x, conditional_input=cond)
  lp_b = flow.log_prob(x, conditional_input=cond + 1.0)
  assert lp_a.shape == [5]
  assert np.all(np.isfinite(lp_a)) and np.max(np.abs(lp_a - lp_b)) > 1e-3
  s_a = flow.sample(5, conditional_input=cond, seed=(1, 2))
  s_b = flow.sample(5, conditional_input=cond + 1.0, seed=(1, 2))
  assert np.max(np.abs(s_a - s_b)) > 1e-3


def test_condition_reaches_every_coupling(flow, cond):
  """log_prob through the public keyword equals the explicit nested bijector_kwargs."""
  x = tf.random.stateless_normal([5, 2], seed=(3, 4))
  per = {"conditional_input": cond}
  nested = {"real_nvp": {f"coupling_{i}": per for i in range(3)}}
  np.testing.assert_allclose(flow.log_prob(x, conditional_input=cond),
                             flow.log_prob(x, bijector_kwargs=nested), rtol=1e-6)


@pytest.mark.parametrize("sample_shape,c_shape,expected", [
    (4, [K], [4, 2]),                   # n samples under one condition
    (5, [5, K], [5, 5, 2]),             # n samples under each of m conditions
    (4, [5, K], [4, 5, 2]),
    ((), [5, K], [5, 2]),               # one sample per condition
    ((4, 1), [5, K], [4, 1, 5, 2]),
    ((), [K], [2]),
    ((2, 3), [1, 3, K], [2, 3, 1, 3, 2]),
])
def test_sample_shape_follows_tfp_batch_convention(flow, sample_shape, c_shape, expected):
  """sample_shape + batch shape of c + event shape, as for any batch of distributions."""
  c = tf.random.stateless_normal(c_shape, seed=(5, 6))
  s = flow.sample(sample_shape, conditional_input=c, seed=(7, 8))
  assert s.shape == expected
  assert np.all(np.isfinite(s))
  y, lp = flow.experimental_sample_and_log_prob(sample_shape, conditional_input=c, seed=(7, 8))
  assert y.shape == expected and lp.shape == expected[:-1]


def test_broadcast_condition_gives_independent_draws(flow):
  c = tf.ones([K])
  s = flow.sample((), conditional_input=tf.tile(c[None], [6, 1]), seed=(1, 1)).numpy()
  # the same condition on every row, yet six different samples
  assert len({tuple(np.round(r, 5)) for r in s}) == 6
  s6 = flow.sample(6, conditional_input=c[None], seed=(1, 1)).numpy()
  assert s6.shape == (6, 1, 2)
  assert len({tuple(np.round(r, 5)) for r in s6[:, 0]}) == 6


def test_samples_follow_their_condition(flow, cond):
  """Column j of sample(n, c[m, k]) is drawn under c[j]: its sample_and_log_prob
  matches log_prob under c[j] alone."""
  y, lp = flow.experimental_sample_and_log_prob(3, conditional_input=cond, seed=(2, 3))
  assert y.shape == [3, 5, 2]
  np.testing.assert_allclose(lp, flow.log_prob(y, conditional_input=cond), rtol=1e-4, atol=1e-5)
  for j in range(5):
    np.testing.assert_allclose(lp[:, j], flow.log_prob(y[:, j], conditional_input=cond[j]),
                               rtol=1e-4, atol=1e-5)


def test_log_prob_shape_convention(flow, cond):
  x = tf.random.stateless_normal([5, 2], seed=(9, 9))
  per_row = flow.log_prob(x, conditional_input=cond)
  assert flow.log_prob(x, conditional_input=cond[0]).shape == [5]
  # one point, many conditions; and a grid of points x conditions
  assert flow.log_prob(x[0], conditional_input=cond).shape == [5]
  grid = flow.log_prob(x[:, None, :], conditional_input=cond)
  assert grid.shape == [5, 5]
  np.testing.assert_allclose(np.diag(grid.numpy()), per_row, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(flow.prob(x, conditional_input=cond), np.exp(per_row), rtol=1e-4)
  # integer one-hot conditions are accepted and cast
  onehot = np.eye(K, dtype=np.int64)[[0, 1, 2, 0, 1]]
  np.testing.assert_allclose(flow.log_prob(x, conditional_input=onehot),
                             flow.log_prob(x, conditional_input=onehot.astype(np.float32)))


def test_mismatched_shapes_give_clear_errors(flow, cond):
  x = tf.zeros([5, 2])
  with pytest.raises(ValueError, match=r"batch shape of x \[2\] does not broadcast"):
    flow.log_prob(x[:2], conditional_input=cond)
  with pytest.raises(ValueError, match=r"conditional_input must have shape \[\.\.\., 3\].*\(5, 4\)"):
    flow.log_prob(x, conditional_input=tf.zeros([5, 4]))
  with pytest.raises(ValueError, match=r"conditional_input must have shape"):
    flow.sample(2, conditional_input=1.0)
  with pytest.raises(ValueError, match="is a conditional flow.*pass conditional_input"):
    flow.log_prob(x)
  with pytest.raises(ValueError, match="is a conditional flow"):
    flow.sample(3)
  plain = tfp_realnvp.RealNVP(2, num_couplings=2, hidden_units=(8,))
  with pytest.raises(ValueError, match="not conditional"):
    plain.log_prob(x, conditional_input=cond)
  with pytest.raises(ValueError, match="not conditional"):
    plain.sample(2, conditional_input=cond)


def test_tf_function_dynamic_shapes(flow, cond):
  @tf.function(input_signature=[tf.TensorSpec([None, 2]), tf.TensorSpec([None, K])])
  def log_prob(x, c):
    return flow.log_prob(x, conditional_input=c)

  @tf.function(input_signature=[tf.TensorSpec([], tf.int32), tf.TensorSpec([None, K])])
  def sample(n, c):
    return flow.sample(n, conditional_input=c, seed=(1, 2))

  x = tf.random.stateless_normal([5, 2], seed=(1, 5))
  np.testing.assert_allclose(log_prob(x, cond), flow.log_prob(x, conditional_input=cond),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(log_prob(x[:1], cond), flow.log_prob(x[0], conditional_input=cond),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(sample(4, cond), flow.sample(4, conditional_input=cond, seed=(1, 2)),
                             rtol=1e-5, atol=1e-6)
  assert sample(3, cond[:1]).shape == [3, 1, 2]
  with pytest.raises(tf.errors.InvalidArgumentError, match="Incompatible shapes"):
    log_prob(x[:2], cond)


def test_flow_as_tf_function_argument(flow, cond):
  """A RealNVP is a plain tf.Module, so it can be a tf.function argument."""
  @tf.function
  def log_prob(dist, x, c):
    return dist.log_prob(x, conditional_input=c)

  x = tf.zeros([5, 2])
  np.testing.assert_allclose(log_prob(flow, x, cond), flow.log_prob(x, conditional_input=cond),
                             rtol=1e-5)
  assert not isinstance(flow, tf.__internal__.CompositeTensor)


def test_copy_shares_weights(flow, cond):
  twin = flow.copy()
  x = tf.zeros([5, 2])
  np.testing.assert_allclose(twin.log_prob(x, conditional_input=cond),
                             flow.log_prob(x, conditional_input=cond))


# -- the condition bound: flow.condition(c) --------------------------------------

def _ids(variables):
  return {id(v) for v in variables}


def test_condition_is_a_batched_distribution_sharing_the_weights(flow, cond):
  dist = flow.condition(cond)
  assert isinstance(dist, tfd.Distribution)
  assert dist.batch_shape == [5] and dist.event_shape == [2]
  assert _ids(dist.trainable_variables) == _ids(flow.trainable_variables)
  s = dist.sample(4, seed=(1, 2))
  assert s.shape == [4, 5, 2]
  np.testing.assert_allclose(s, flow.sample(4, conditional_input=cond, seed=(1, 2)))
  x = tf.random.stateless_normal([3, 1, 2], seed=(4, 4))
  np.testing.assert_allclose(dist.log_prob(x), flow.log_prob(x, conditional_input=cond))
  assert dist.log_prob(x).shape == [3, 5]
  # slicing slices the condition
  np.testing.assert_allclose(dist[1:3].log_prob(x), flow.log_prob(x, conditional_input=cond[1:3]))
  # gradients reach the condition
  with tf.GradientTape() as tape:
    tape.watch(cond)
    total = tf.reduce_sum(flow.condition(cond).log_prob(x))
  grad = tape.gradient(total, cond)
  assert grad is not None and np.all(np.isfinite(grad)) and np.any(grad.numpy() != 0)
  # a tf.Variable condition is read at each call; integer one-hot conditions are cast
  variable = tf.Variable(cond)
  bound = flow.condition(variable)
  variable.assign(cond + 1.0)
  np.testing.assert_allclose(bound.log_prob(x), flow.log_prob(x, conditional_input=cond + 1.0))
  onehot = np.eye(K, dtype=np.int64)[[0, 1, 2, 0, 1]]
  np.testing.assert_allclose(flow.condition(onehot).log_prob(x),
                             flow.log_prob(x, conditional_input=onehot.astype(np.float32)))
  with pytest.raises(ValueError, match="not conditional"):
    tfp_realnvp.RealNVP(2, num_couplings=1, hidden_units=(4,)).condition(cond)
  with pytest.raises(ValueError, match=r"conditional_input must have shape \[\.\.\., 3\]"):
    flow.condition(tf.zeros([5, 2]))


def _likelihood_flow():
  return _perturb(tfp_realnvp.RealNVP(2, num_couplings=2, hidden_units=(8,),
                                      conditional_size=1), seed=3)


def test_condition_as_a_likelihood_in_joint_distributions():
  flow = _likelihood_flow()
  prior = tfd.Normal(0.0, 1.0)

  @tfd.JointDistributionCoroutineAutoBatched
  def coroutine():
    theta = yield tfd.Normal(0.0, 1.0, name="theta")
    yield flow.condition(theta[..., None], name="x")

  named = tfd.JointDistributionNamed(
      {"theta": prior, "x": lambda theta: flow.condition(theta[..., None])})
  for joint in (coroutine, named):
    draws = joint.sample(6, seed=1)
    theta, x = (draws["theta"], draws["x"]) if joint is named else draws
    assert theta.shape == [6] and x.shape == [6, 2]
    expected = prior.log_prob(theta) + flow.log_prob(x, conditional_input=theta[:, None])
    np.testing.assert_allclose(joint.log_prob(draws), expected, rtol=1e-5, atol=1e-5)
    assert _ids(flow.trainable_variables) <= _ids(joint.trainable_variables)


def test_condition_as_the_output_of_a_keras_distribution_lambda():
  import tf_keras  # pylint: disable=import-outside-toplevel
  flow = _likelihood_flow()
  head = tfp.layers.DistributionLambda(flow.condition)
  head.flow = flow  # tracked by the layer, so by the model
  inputs = tf_keras.Input([3])
  model = tf_keras.Model(inputs, head(tf_keras.layers.Dense(1)(inputs)))
  assert _ids(flow.trainable_variables) <= _ids(model.trainable_variables)
  rng = np.random.default_rng(0)
  h = rng.normal(size=(256, 3)).astype(np.float32)
  y = (h[:, :2] + 0.1 * rng.normal(size=(256, 2))).astype(np.float32)
  model.compile(optimizer=tf_keras.optimizers.Adam(1e-2), loss=lambda y, p: -p.log_prob(y))
  before = [v.numpy() for v in flow.trainable_variables]
  losses = model.fit(h, y, epochs=5, batch_size=64, verbose=0).history["loss"]
  assert losses[-1] < losses[0]
  assert all(np.any(a != b.numpy()) for a, b in zip(before, flow.trainable_variables))


def test_condition_as_an_amortized_surrogate_posterior():
  """One flow, conditioned on the observation, fits each Gaussian posterior."""
  import tf_keras  # pylint: disable=import-outside-toplevel
  tf_keras.utils.set_random_seed(0)
  flow = tfp_realnvp.RealNVP(2, num_couplings=2, hidden_units=(16,), conditional_size=1)
  observations = tf.constant([[-1.0], [0.0], [1.5]])
  posterior = tfd.MultivariateNormalDiag(tf.concat([observations, -observations], -1),
                                         [0.5, 0.8])
  surrogate = flow.condition(observations)
  losses = tfp.vi.fit_surrogate_posterior(
      posterior.log_prob, surrogate, tf_keras.optimizers.Adam(1e-2), num_steps=300,
      sample_size=64, seed=(1, 1))
  assert losses.shape == [300, 3]
  # KL(q || p) per observation, estimated by the final losses, has come down near 0
  final = surrogate.sample(4000, seed=(2, 2))
  kl = tf.reduce_mean(surrogate.log_prob(final) - posterior.log_prob(final), 0)
  assert np.all(kl.numpy() < 0.1), kl
  assert np.all(losses[0].numpy() > kl.numpy() + 0.3)


def test_mixture_over_conditions(flow, cond):
  mixture = tfd.MixtureSameFamily(tfd.Categorical(logits=tf.zeros(5)), flow.condition(cond))
  x = tf.random.stateless_normal([7, 2], seed=(8, 8))
  expected = tf.reduce_logsumexp(flow.log_prob(x[:, None], conditional_input=cond), -1) \
      - np.log(5.0)
  np.testing.assert_allclose(mixture.log_prob(x), expected, rtol=1e-5, atol=1e-5)


def test_default_event_space_bijector_of_a_conditional_flow(flow, cond):
  x = tf.random.stateless_normal([4, 2], seed=(1, 9))
  for dist in (flow, flow.condition(cond)):
    bijector = dist.experimental_default_event_space_bijector()
    np.testing.assert_allclose(bijector.forward(x), x)
    np.testing.assert_allclose(bijector.inverse_log_det_jacobian(x, event_ndims=1), 0.0)


# -- normalized conditions --------------------------------------------------------

def test_adapt_normalizes_the_condition_before_the_networks(tmp_path):
  rng = np.random.default_rng(4)
  c = rng.normal([100.0, -5.0, 0.0], [20.0, 0.1, 1.0], size=(500, K))
  x = rng.normal(size=(500, 2))
  flow = _perturb(tfp_realnvp.RealNVP(2, num_couplings=2, hidden_units=(8,),
                                      conditional_size=K))
  unit_c = (c - c.mean(0)) / c.std(0)
  u = (x[:8] - x.mean(0)) / x.std(0)
  before = flow.log_prob(u, conditional_input=unit_c[:8]).numpy()
  flow.adapt(x, conditional_input=c)
  np.testing.assert_allclose(flow.bijector.condition_loc.numpy(), c.mean(0), rtol=1e-5)
  np.testing.assert_allclose(flow.bijector.condition_scale.numpy(), c.std(0), rtol=1e-5)
  assert not any(v.trainable for v in (flow.bijector.condition_loc, flow.bijector.condition_scale))
  # the networks see (c - mean) / std: the flow gives raw data and conditions what it gave
  # standardized ones before
  after = flow.log_prob(x[:8], conditional_input=c[:8]).numpy()
  np.testing.assert_allclose(after, before - np.sum(np.log(x.std(0))), rtol=1e-4, atol=1e-4)
  # the bijector applies the same normalization
  z = tf.random.stateless_normal([8, 2], seed=(2, 2))
  np.testing.assert_allclose(
      flow.bijector.forward(z, conditional_input=c[:8]),
      flow.bijector.bijectors[0].forward(flow.bijector.bijectors[1].forward(
          flow.flow_bijector.forward(z, conditional_input=unit_c[:8]))),
      rtol=1e-4, atol=1e-4)
  # checkpointed with the weights
  tf.train.Checkpoint(flow=flow).write(str(tmp_path / "ckpt"))
  fresh = tfp_realnvp.RealNVP(2, num_couplings=2, hidden_units=(8,), conditional_size=K)
  tf.train.Checkpoint(flow=fresh).read(str(tmp_path / "ckpt")).assert_consumed()
  np.testing.assert_allclose(fresh.log_prob(x[:8], conditional_input=c[:8]),
                             flow.log_prob(x[:8], conditional_input=c[:8]), rtol=1e-5)


# -- class-conditional two moons (examples/conditional_moons.py) ---------------

def _example(name):
  import importlib.util  # pylint: disable=import-outside-toplevel
  import pathlib  # pylint: disable=import-outside-toplevel
  path = pathlib.Path(__file__).resolve().parents[1] / "examples" / f"{name}.py"
  spec = importlib.util.spec_from_file_location(f"example_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_class_conditional_moons_matches_per_moon_oracle(tmp_path):
  from tfp_realnvp.datasets import moons_arc_log_prob  # pylint: disable=import-outside-toplevel
  example = _example("conditional_moons")
  plot = str(tmp_path / "moons.png")
  r = example.run(n_train=4000, n_test=2000, steps=800, num_couplings=4,
                  hidden_units=(32, 32), plot=plot)
  for k, stats in r["per_class"].items():
    # test NLL of each class close to the true per-moon density's
    # (a few thousand steps of the example's defaults reach gaps of ~0.01 nats)
    assert -0.1 < stats["gap"] < 0.25, (k, stats)
    # the label matters: the wrong one explains the points far worse
    assert stats["nll_wrong_label"] > stats["nll"] + 10.0, (k, stats)
  # samples drawn for each class land on that class's moon
  flow = r["flow"]
  for k in range(2):
    s = flow.sample(2000, conditional_input=example.one_hot(k), seed=(3, k)).numpy()
    own = np.mean(moons_arc_log_prob(s, k, 0.05))
    other = np.mean(moons_arc_log_prob(s, 1 - k, 0.05))
    assert own > other + 5.0, (k, own, other)
    assert own > -1.5, (k, own)
  with open(plot, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
