"""RealNVP composing with the rest of TFP and Keras: VI, joint distributions, Keras."""

import importlib.util
import pathlib

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

import tfp_realnvp

tfd = tfp.distributions

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def _example(name):
  spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _small_flow(**kwargs):
  kwargs.setdefault("num_couplings", 3)
  kwargs.setdefault("hidden_units", (16,))
  flow = tfp_realnvp.RealNVP(2, **kwargs)
  rng = np.random.default_rng(0)
  for v in flow.trainable_variables:
    v.assign(0.3 * rng.standard_normal(v.shape).astype(np.float32))
  return flow


def _ids(variables):
  return {id(v) for v in variables}


# -- variational inference --------------------------------------------------------

def test_vi_banana_elbo_reaches_log_z_and_moments_match():
  example = _example("variational_inference")
  r = example.run(steps=1500, eval_samples=50000)
  # ELBO <= log Z; the gap is KL(q || p)
  assert r["gap"] < 0.05, r["gap"]
  assert r["gap"] > -5 * r["elbo_stderr"] - 1e-3, r
  m, t = r["moments"], r["true_moments"]
  np.testing.assert_allclose(m["mean"], t["mean"], atol=0.06)
  np.testing.assert_allclose(m["cov"][0, 0], t["cov"][0, 0], rtol=0.1)
  np.testing.assert_allclose(m["cov"][0, 1], 0.0, atol=0.1)
  # Var x2 and E[x1^2 x2] hinge on the tails (z1^4 terms): looser tolerances
  np.testing.assert_allclose(m["cov"][1, 1], t["cov"][1, 1], rtol=0.1)
  np.testing.assert_allclose(m["e_x1sq_x2"], t["e_x1sq_x2"], rtol=0.15)
  # the bend itself: E[x2 | x1] = b (x1^2 - s1^2), bin by bin over [-2, 2]
  assert r["bend_error"] < 0.1, r["bend_error"]


def test_vi_banana_target_is_normalized_as_claimed():
  """The example's log Z is right: importance sampling with a wide Gaussian agrees."""
  example = _example("variational_inference")
  target = example.Banana()
  proposal = tfd.MultivariateNormalDiag(loc=[0.0, 0.5], scale_diag=[1.5, 3.0])
  x = proposal.sample(400000, seed=(1, 2))
  log_w = target.unnormalized_log_prob(x) - proposal.log_prob(x)
  log_z = float(tf.reduce_logsumexp(log_w) - np.log(400000.0))
  assert abs(log_z - target.log_z) < 0.02
  np.testing.assert_allclose(target.sample(200000).var(0), np.diag(target.moments()["cov"]),
                             rtol=0.05)


# -- joint distributions ---------------------------------------------------------

@pytest.mark.parametrize("kind", ["sequential", "coroutine", "named"])
def test_flow_prior_in_joint_distribution(kind):
  prior = _small_flow()
  sigma = 0.1

  def likelihood(z):
    return tfd.Independent(tfd.Normal(z, sigma), 1)

  if kind == "sequential":
    joint = tfd.JointDistributionSequential([prior, likelihood])
  elif kind == "coroutine":
    def model():
      z = yield tfd.JointDistributionCoroutine.Root(prior)
      yield likelihood(z)
    joint = tfd.JointDistributionCoroutine(model)
  else:
    joint = tfd.JointDistributionNamed({"z": prior, "x": likelihood})

  draws = joint.sample(6, seed=(1, 2))
  z, x = (draws["z"], draws["x"]) if kind == "named" else draws
  assert z.shape == [6, 2] and x.shape == [6, 2]
  lp = joint.log_prob(draws)
  assert lp.shape == [6]
  np.testing.assert_allclose(lp, prior.log_prob(z) + likelihood(z).log_prob(x), rtol=1e-5)

  # the flow's variables are the joint's, and gradients reach all of them
  assert _ids(joint.trainable_variables) == _ids(prior.trainable_variables)
  assert len(joint.trainable_variables) == len(prior.trainable_variables) > 0
  fixed = tf.nest.map_structure(lambda t: tf.constant(t.numpy()), draws)
  with tf.GradientTape() as tape:
    loss = -tf.reduce_mean(joint.log_prob(fixed))
  grads = tape.gradient(loss, joint.trainable_variables)
  assert all(g is not None for g in grads)
  assert sum(float(tf.reduce_sum(tf.abs(g))) for g in grads) > 0

  # and it all works inside a tf.function
  sample_and_score = tf.function(lambda: joint.log_prob(joint.sample(3, seed=(3, 4))))
  assert sample_and_score().shape == [3]


def test_joint_distribution_example_trains_prior_through_joint():
  r = _example("joint_distribution").run(n=3000, steps=300, num_couplings=4,
                                         hidden_units=(32, 32))
  assert r["sample_shapes"] == [[5, 2], [5, 2]] == r["coroutine_sample_shapes"]
  assert r["log_prob_decomposition_error"] < 1e-4
  assert r["sequential_vs_coroutine_log_prob_error"] < 1e-4
  assert r["num_trainable_variables"] == r["num_trainable_variables_coroutine"] == \
      len(r["prior"].trainable_variables)
  assert r["final_joint_nll"] < r["initial_joint_nll"] - 0.4, r
  assert np.isfinite(r["prior_test_nll"])


# -- Keras --------------------------------------------------------------------------

def test_flow_variables_tracked_by_keras_model_and_layer(tmp_path):
  class Holder(tf_keras.layers.Layer):
    def __init__(self):
      super().__init__()
      self.flow = _small_flow(conditional_size=2)
      self.dense = tf_keras.layers.Dense(2)

    def call(self, x):
      return self.flow.log_prob(x, conditional_input=self.dense(x))

  class Wrapper(tf_keras.Model):
    def __init__(self):
      super().__init__()
      self.holder = Holder()

    def call(self, x):
      return self.holder(x)

  model = Wrapper()
  model(tf.zeros([1, 2]))
  flow = model.holder.flow
  for owner in (model.holder, model):
    assert _ids(flow.trainable_variables) <= _ids(owner.trainable_variables)
    assert {id(flow.loc), id(flow.scale)} <= _ids(owner.non_trainable_variables)
    assert len(owner.trainable_variables) == len(flow.trainable_variables) + 2

  # the weights checkpoint with the model and restore into a fresh one
  x = tf.random.stateless_normal([4, 2], seed=(5, 5))
  want = model(x)
  model.save_weights(str(tmp_path / "ckpt"))
  fresh = Wrapper()
  fresh(tf.zeros([1, 2]))
  assert np.max(np.abs(fresh(x) - want)) > 1e-4
  fresh.load_weights(str(tmp_path / "ckpt"))
  np.testing.assert_allclose(fresh(x), want, rtol=1e-6)


def test_keras_model_fit_trains_conditional_flow_end_to_end():
  example = _example("keras_conditional")
  r = example.run(n_train=5000, n_test=2000, epochs=15, num_couplings=3,
                  flow_hidden_units=(32, 32))
  model = r["model"]
  assert r["num_model_variables"] == r["num_flow_variables"] + 6  # + the encoder's
  assert r["loss"][-1] < r["loss"][0] - 0.5, r["loss"]
  assert r["test_nll"] - r["true_test_nll"] < 0.25, (r["test_nll"], r["true_test_nll"])
  # heteroscedasticity learned: y1 spreads with |x|, y2 narrows
  std, true_std = r["predicted_std"], r["true_std"]  # rows x = -1.75, -1, 0, 1, 1.75
  assert std[0, 0] > 3 * std[2, 0] and std[4, 0] > 3 * std[2, 0], std
  assert std[2, 1] > 2 * std[0, 1] and std[2, 1] > 2 * std[4, 1], std
  np.testing.assert_allclose(std[[0, 1, 3, 4]], true_std[[0, 1, 3, 4]], rtol=0.3)
  np.testing.assert_allclose(r["predicted_mean"], r["true_mean"], atol=0.15)
  # every flow weight moved during model.fit
  fresh = tfp_realnvp.RealNVP(2, num_couplings=3, hidden_units=(32, 32), conditional_size=8)
  moved = [np.max(np.abs(a.numpy() - b.numpy())) > 0
           for a, b in zip(model.flow.trainable_variables, fresh.trainable_variables)
           if "kernel" in a.name]
  assert all(moved)
