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
    (4, [K], [4, 2]),            # n samples under one condition
    (5, [5, K], [5, 2]),         # one sample per row
    ((), [5, K], [5, 2]),        # one sample per row
    ((4, 1), [5, K], [4, 5, 2]),  # 4 samples under each of 5 conditions
    ((), [K], [2]),
    ((2, 3), [1, 3, K], [2, 3, 2]),
])
def test_sample_shape_convention(flow, sample_shape, c_shape, expected):
  c = tf.random.stateless_normal(c_shape, seed=(5, 6))
  s = flow.sample(sample_shape, conditional_input=c, seed=(7, 8))
  assert s.shape == expected
  assert np.all(np.isfinite(s))


def test_broadcast_condition_gives_independent_draws(flow):
  c = tf.ones([K])
  s = flow.sample((), conditional_input=tf.tile(c[None], [6, 1]), seed=(1, 1)).numpy()
  # the same condition on every row, yet six different samples
  assert len({tuple(np.round(r, 5)) for r in s}) == 6
  s4 = flow.sample((6, 1), conditional_input=c[None], seed=(1, 1)).numpy()
  assert len({tuple(np.round(r, 5)) for r in s4[:, 0]}) == 6


def test_sample_rows_follow_their_condition(flow, cond):
  """Row i of sample(n, c[n, k]) is drawn under c[i]: its sample_and_log_prob
  matches log_prob under c[i] alone."""
  y, lp = flow.experimental_sample_and_log_prob(5, conditional_input=cond, seed=(2, 3))
  np.testing.assert_allclose(lp, flow.log_prob(y, conditional_input=cond), rtol=1e-4, atol=1e-5)
  for i in range(5):
    np.testing.assert_allclose(lp[i], flow.log_prob(y[i], conditional_input=cond[i]),
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
  with pytest.raises(ValueError, match=r"sample_shape \[7\] does not broadcast.*\[5\]"):
    flow.sample(7, conditional_input=cond)
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
  np.testing.assert_allclose(sample(5, cond), flow.sample(5, conditional_input=cond, seed=(1, 2)),
                             rtol=1e-5, atol=1e-6)
  assert sample(3, cond[:1]).shape == [3, 2]
  with pytest.raises(tf.errors.InvalidArgumentError, match="does not broadcast"):
    log_prob(x[:2], cond)
  with pytest.raises(tf.errors.InvalidArgumentError, match="does not broadcast"):
    sample(4, cond)


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
