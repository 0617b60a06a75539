"""A RealNVP prior inside TFP joint distributions.

The model: a latent ``z`` with a flow prior, observed through Gaussian noise,

    z ~ RealNVP,   x | z ~ Normal(z, sigma I).

It is written both as a ``tfd.JointDistributionSequential`` and as a
``tfd.JointDistributionCoroutine``.  Both ``sample`` and ``log_prob`` work, and
the flow's weights are the joint's ``trainable_variables``, so the prior can be
fit through the joint's own ``log_prob``: here on pairs ``(z, x)`` with ``z``
from the two moons.

A conditional flow is a likelihood ``p(x | theta)`` through
``flow.condition(c)``, a TFP distribution whose batch shape is that of ``c``
(see :func:`conditional_likelihood_model`).

Run:  python examples/joint_distribution.py --steps 3000
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402
import tf_keras  # noqa: E402

import tfp_realnvp  # noqa: E402
from tfp_realnvp.datasets import moons, oracle_nll  # noqa: E402

tfd = tfp.distributions


def likelihood(z, sigma):
  return tfd.Independent(tfd.Normal(z, sigma), reinterpreted_batch_ndims=1, name="x")


def sequential_model(prior, sigma: float) -> tfd.JointDistributionSequential:
  return tfd.JointDistributionSequential([prior, lambda z: likelihood(z, sigma)])


def coroutine_model(prior, sigma: float) -> tfd.JointDistributionCoroutine:
  def model():
    z = yield tfd.JointDistributionCoroutine.Root(prior)
    yield likelihood(z, sigma)

  return tfd.JointDistributionCoroutine(model)


def conditional_likelihood_model(flow) -> tfd.JointDistributionCoroutineAutoBatched:
  """``theta ~ N(0, 1)``, ``x | theta ~ flow(. | c = theta)``: a conditional flow
  (``conditional_size=1``) as the likelihood of a parameter."""
  @tfd.JointDistributionCoroutineAutoBatched
  def model():
    theta = yield tfd.Normal(0.0, 1.0, name="theta")
    yield flow.condition(theta[..., None], name="x")

  return model


def run(*, n: int = 10000, steps: int = 3000, batch_size: int = 256, sigma: float = 0.1,
        noise: float = 0.05, num_couplings: int = 6, hidden_units=(64, 64),
        learning_rate: float = 2e-3, seed: int = 0) -> dict:
  tf_keras.utils.set_random_seed(seed)
  prior = tfp_realnvp.RealNVP(2, num_couplings=num_couplings, hidden_units=hidden_units)
  joint = sequential_model(prior, sigma)
  joint_c = coroutine_model(prior, sigma)

  z = moons(n, noise=noise, seed=seed)
  prior.adapt(z)
  x = (z + sigma * np.random.default_rng(seed).standard_normal(z.shape)).astype(np.float32)

  # The joint's trainable variables are the flow's.
  variables = joint.trainable_variables
  assert {id(v) for v in variables} == {id(v) for v in prior.trainable_variables}
  optimizer = tf_keras.optimizers.Adam(
      tf_keras.optimizers.schedules.CosineDecay(learning_rate, steps, alpha=0.02))
  dataset = iter(tf.data.Dataset.from_tensor_slices((z, x)).shuffle(n, seed=seed).repeat()
                 .batch(batch_size, drop_remainder=True))

  @tf.function
  def train(num_steps):
    total = tf.constant(0.0)
    for _ in tf.range(num_steps):
      zb, xb = next(dataset)
      with tf.GradientTape() as tape:
        loss = -tf.reduce_mean(joint.log_prob([zb, xb]))
      grads = tape.gradient(loss, variables)
      optimizer.apply_gradients(zip(grads, variables))
      total += loss
    return total / tf.cast(num_steps, tf.float32)

  def joint_nll():
    return float(-tf.reduce_mean(joint.log_prob([tf.constant(z), tf.constant(x)])))

  initial_nll = joint_nll()
  losses = [float(train(tf.constant(min(100, steps - i)))) for i in range(0, steps, 100)]

  likelihood_flow = tfp_realnvp.RealNVP(2, num_couplings=2, hidden_units=(16,),
                                        conditional_size=1)
  conditional = conditional_likelihood_model(likelihood_flow)
  theta_x = conditional.sample(5, seed=seed)

  z_test = moons(4000, noise=noise, seed=seed + 1)
  draws = joint.sample(5, seed=(seed, 3))
  draws_c = joint_c.sample(5, seed=(seed, 3))
  z0, x0 = draws
  check = float(tf.reduce_max(tf.abs(
      joint.log_prob(draws) - (prior.log_prob(z0) + likelihood(z0, sigma).log_prob(x0)))))
  return {
      "losses": losses, "initial_joint_nll": initial_nll, "final_joint_nll": joint_nll(),
      "prior_test_nll": float(-tf.reduce_mean(prior.log_prob(z_test))),
      "oracle_nll": oracle_nll(z_test, noise),
      "sample_shapes": [list(t.shape) for t in draws],
      "coroutine_sample_shapes": [list(t.shape) for t in draws_c],
      "log_prob_decomposition_error": check,
      "sequential_vs_coroutine_log_prob_error": float(tf.reduce_max(tf.abs(
          joint.log_prob(draws) - joint_c.log_prob(tuple(draws))))),
      "conditional_sample_shapes": [list(t.shape) for t in theta_x],
      "conditional_log_prob_shape": list(conditional.log_prob(theta_x).shape),
      "num_trainable_variables": len(joint.trainable_variables),
      "num_trainable_variables_coroutine": len(joint_c.trainable_variables),
      "prior": prior, "joint": joint, "joint_coroutine": joint_c,
  }


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n", type=int, default=10000)
  parser.add_argument("--steps", type=int, default=3000)
  parser.add_argument("--num-couplings", type=int, default=6)
  parser.add_argument("--hidden-units", type=int, nargs="+", default=[64, 64])
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  r = run(n=args.n, steps=args.steps, num_couplings=args.num_couplings,
          hidden_units=tuple(args.hidden_units), seed=args.seed)
  print(f"joint sample shapes: sequential {r['sample_shapes']}, "
        f"coroutine {r['coroutine_sample_shapes']}")
  print(f"joint.log_prob == prior.log_prob(z) + Normal(z, sigma).log_prob(x): "
        f"max error {r['log_prob_decomposition_error']:.2e}")
  print(f"conditional flow as a likelihood p(x | theta): sample shapes "
        f"{r['conditional_sample_shapes']}, log_prob shape {r['conditional_log_prob_shape']}")
  print(f"sequential vs coroutine log_prob: max error "
        f"{r['sequential_vs_coroutine_log_prob_error']:.2e}")
  print(f"trainable variables reachable from the joints: {r['num_trainable_variables']} "
        f"(sequential), {r['num_trainable_variables_coroutine']} (coroutine)")
  print(f"-mean joint.log_prob on the data: {r['initial_joint_nll']:.4f} before, "
        f"{r['final_joint_nll']:.4f} after training")
  print(f"prior fit through joint.log_prob: test NLL of z {r['prior_test_nll']:.4f} "
        f"(oracle {r['oracle_nll']:.4f})")
  return r


if __name__ == "__main__":
  main()
