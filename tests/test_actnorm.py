"""ActNorm: data initialization, conditional adapt, an affine map for TFP."""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from bijector_checks import randomize
from tfp_realnvp import RealNVP, datasets
from tfp_realnvp.actnorm import ActNorm, actnorm_layers, initialize_actnorm
from tfp_realnvp.bijectors import real_nvp_bijector

tfb = tfp.bijectors


def test_actnorm_data_initialization():
  x = datasets.moons(2000, 0.05, seed=0).astype(np.float64)
  flow = RealNVP(2, num_couplings=3, hidden_units=(8,), actnorm=True, dtype=tf.float64)
  randomize(flow, scale=0.3)  # make the couplings non-trivial first
  assert not flow.is_adapted
  flow.adapt(x)
  layers = actnorm_layers(flow.flow_bijector)
  assert [a.name for a in layers] == ["actnorm_1", "actnorm_0"]
  z = (x - flow.loc.numpy()) / flow.scale.numpy()
  for b in flow.flow_bijector.bijectors:
    z = b.inverse(z)
    if isinstance(b, ActNorm):  # what leaves an actnorm (inverse) is standardized
      np.testing.assert_allclose(z.numpy().mean(0), 0.0, atol=1e-8)
      np.testing.assert_allclose(z.numpy().std(0), 1.0, atol=1e-8)
  chain = real_nvp_bijector(2, num_couplings=2, hidden_units=(8,))
  assert initialize_actnorm(chain, x) == 0  # no actnorm: nothing to do


def test_actnorm_conditional_adapt_uses_conditional_input():
  flow = RealNVP(2, num_couplings=2, hidden_units=(8,), actnorm=True, conditional_size=1)
  x = datasets.moons(500, 0.05, seed=0)
  flow.adapt(x)  # zeros stand in for the condition: exact while untrained
  flow.adapt(x, conditional_input=np.ones([500, 1], np.float32))
  assert np.all(np.isfinite(flow.log_prob(x, conditional_input=np.ones([500, 1])).numpy()))


def test_actnorm_is_affine_and_says_so():
  layer = ActNorm(3, dtype=tf.float64)
  randomize(layer, scale=0.5)
  assert layer.is_constant_jacobian  # as TFP's Shift and Scale declare
  x = tf.constant(np.random.default_rng(0).standard_normal((4, 3)) * 3)
  with tf.GradientTape() as tape:
    tape.watch(x)
    y = layer.forward(tf.identity(x))
  jacobians = tape.batch_jacobian(y, x).numpy()
  np.testing.assert_allclose(jacobians, np.broadcast_to(jacobians[0], jacobians.shape))
  np.testing.assert_allclose(jacobians[0], np.diag(np.exp(layer.log_scale.numpy())))
  ldj = layer.forward_log_det_jacobian(x, event_ndims=1)
  np.testing.assert_allclose(np.broadcast_to(ldj.numpy(), [4]),
                             np.linalg.slogdet(jacobians)[1], rtol=1e-12)
  # The affine map's moments are TFP's closed form.
  dist = tfp.distributions.TransformedDistribution(
      tfp.distributions.MultivariateNormalDiag(tf.zeros(3, tf.float64)), layer)
  np.testing.assert_allclose(dist.mean().numpy(), layer.shift.numpy(), rtol=1e-12)
