"""Couplings: each kind inverts and has the autodiff log-det; the fused coupling
matches ``tfb.RealNVP`` with one network call; a factory of one's own works."""

import itertools

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from bijector_checks import check_bijector, points, randomize
from helpers import randomize_outputs
from tfp_realnvp import RealNVP, ShiftAndLogScale, networks, real_nvp_bijector
from tfp_realnvp.couplings import COUPLINGS, FusedRealNVP, coupling_factory
from tfp_realnvp.options import FlowOptions

tfb = tfp.bijectors
tfd = tfp.distributions

DTYPES = [tf.float32, tf.float64]
EVENT_SIZES = [2, 3, 5]


def _coupling(kind, event_size, dtype=tf.float32, name="coupling_0", **options):
  options = FlowOptions(**{"hidden_units": (8,), **options})
  return coupling_factory(kind)(event_size // 2, event_size - event_size // 2, options=options,
                                dtype=dtype, name=name)


@pytest.mark.parametrize("coupling,dtype,event_size",
                         list(itertools.product(COUPLINGS, DTYPES, EVENT_SIZES)))
def test_single_coupling_invertible_and_log_det(coupling, dtype, event_size):
  bij = _coupling(coupling, event_size, dtype, hidden_units=(16,), spline_bins=5,
                  spline_bound=2.0)
  randomize(bij)
  check_bijector(bij, points(16, event_size, dtype), dtype)


@pytest.mark.parametrize("coupling", COUPLINGS)
def test_conditional_couplings(coupling):
  chain = real_nvp_bijector(3, num_couplings=2, hidden_units=(8,), coupling=coupling,
                            conditional_size=2, spline_bound=2.0, dtype=tf.float64)
  randomize(chain, scale=0.3)
  x = points(10, 3, tf.float64)
  c = tf.constant(np.random.default_rng(5).standard_normal((10, 2)))
  kwargs = {f"coupling_{i}": {"conditional_input": c} for i in range(2)}
  check_bijector(chain, x, tf.float64, **kwargs)
  check_bijector(chain, x, tf.float64, conditional_input=c)  # routed to every coupling
  other = {k: {"conditional_input": c + 1.0} for k in kwargs}
  assert not np.allclose(chain.forward(x, **kwargs).numpy(), chain.forward(x, **other).numpy())

  flow = RealNVP(3, num_couplings=2, hidden_units=(8,), coupling=coupling,
                 conditional_size=2, dtype=tf.float64)
  randomize(flow, scale=0.3)
  lp = flow.log_prob(x, conditional_input=c)
  assert lp.shape == [10] and np.all(np.isfinite(lp.numpy()))
  assert flow.sample(4, conditional_input=c[0], seed=1).shape == [4, 3]
  with pytest.raises(ValueError, match="conditional"):
    flow.log_prob(x)


def test_spline_is_identity_outside_its_bound():
  bij = _coupling("spline", 2, tf.float64, spline_bound=1.0)
  randomize(bij, scale=1.0)
  x = tf.constant([[0.3, 1.5], [-0.2, -4.0], [2.0, 1.0 + 1e-9]], tf.float64)
  y = bij.forward(x).numpy()
  np.testing.assert_allclose(y[:, 1], x.numpy()[:, 1], atol=1e-9)  # transformed coordinate
  np.testing.assert_allclose(y[:, 0], x.numpy()[:, 0])  # kept coordinate


def test_additive_is_volume_preserving_but_not_affine():
  bij = _coupling("additive", 3, tf.float64)
  randomize(bij)
  x = points(5, 3, tf.float64)
  assert not np.allclose(bij.forward(x).numpy(), x.numpy())
  np.testing.assert_allclose(bij.forward_log_det_jacobian(x, event_ndims=1).numpy(), 0.0)
  # The Jacobian matrix changes with x (only its determinant is constant), so
  # it must not claim is_constant_jacobian: TFP would then take the flow for
  # an affine map and return forward(mean) as its mean.
  with tf.GradientTape() as tape:
    tape.watch(x)
    y = bij.forward(tf.identity(x))
  jacobians = tape.batch_jacobian(y, x).numpy()
  assert not np.allclose(jacobians[0], jacobians[1])
  assert not bij.is_constant_jacobian
  chain = real_nvp_bijector(3, num_couplings=2, hidden_units=(8,), coupling="additive")
  assert not chain.is_constant_jacobian
  with pytest.raises(NotImplementedError):
    tfd.TransformedDistribution(tfd.MultivariateNormalDiag(tf.zeros(3)), chain).mean()


def test_spline_variables_tracked_with_validate_args():
  flow = RealNVP(2, num_couplings=2, hidden_units=(8,), coupling="spline", validate_args=True)
  # Two networks, each two dense layers of kernel and bias.
  assert len(flow.trainable_variables) == 8
  assert np.isfinite(flow.log_prob(np.zeros([3, 2], np.float32)).numpy()).all()


class CountingNetwork(tf.Module):
  """Wraps a network and counts its calls."""

  def __init__(self, network):
    super().__init__()
    self.network = network
    self.calls = 0

  def __call__(self, x0, output_units, **kwargs):
    self.calls += 1
    return self.network(x0, output_units, **kwargs)


def _pair(event_size=3, conditional_size=0, num_masked=None):
  num_masked = event_size // 2 if num_masked is None else num_masked
  transformed = event_size - abs(num_masked)
  keep = abs(num_masked)
  net = ShiftAndLogScale((16, 16), input_units=keep, output_units=transformed,
                         conditional_size=conditional_size)
  randomize_outputs(net)
  fused = FusedRealNVP(num_masked=num_masked, shift_and_log_scale_fn=CountingNetwork(net))
  plain = tfb.RealNVP(num_masked=num_masked, shift_and_log_scale_fn=CountingNetwork(net))
  return fused, plain


def test_same_results_as_tfb_realnvp_in_both_directions():
  for num_masked in (1, -1, 2):
    fused, plain = _pair(event_size=3, num_masked=num_masked)
    x = tf.random.normal([7, 3], seed=1)
    for bij in (fused, plain):
      bij.forward(tf.zeros([1, 3]))  # build
    assert not np.allclose(plain.forward(x), x)  # a non-trivial coupling
    np.testing.assert_allclose(fused.forward(x), plain.forward(x), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(fused.inverse(x), plain.inverse(x), rtol=1e-6, atol=1e-6)
    x2 = tf.identity(x)
    np.testing.assert_allclose(fused.forward_log_det_jacobian(x2, event_ndims=1),
                               plain.forward_log_det_jacobian(x2, event_ndims=1), rtol=1e-6)
    x3 = tf.identity(x)
    fused.inverse(x3)  # cached ildj, then read back
    np.testing.assert_allclose(fused.inverse_log_det_jacobian(x3, event_ndims=1),
                               plain.inverse_log_det_jacobian(x3, event_ndims=1), rtol=1e-6)
    x4 = tf.identity(x)
    fused.forward(x4)
    np.testing.assert_allclose(fused.forward_log_det_jacobian(x4, event_ndims=1),
                               plain.forward_log_det_jacobian(x4, event_ndims=1), rtol=1e-6)
    # A log-det asked for alone (no transform of that tensor first).
    np.testing.assert_allclose(fused.inverse_log_det_jacobian(tf.identity(x), event_ndims=1),
                               plain.inverse_log_det_jacobian(tf.identity(x), event_ndims=1),
                               rtol=1e-6)


def test_log_prob_calls_the_network_once_per_coupling():
  fused, plain = _pair()
  base = tfd.MultivariateNormalDiag(tf.zeros(3))
  x = tf.random.normal([5, 3], seed=2)
  fused_fn, plain_fn = fused._shift_and_log_scale_fn, plain._shift_and_log_scale_fn
  lp_fused = tfd.TransformedDistribution(base, fused).log_prob(tf.identity(x))
  lp_plain = tfd.TransformedDistribution(base, plain).log_prob(tf.identity(x))
  np.testing.assert_allclose(lp_fused, lp_plain, rtol=1e-6, atol=1e-6)
  assert fused_fn.calls == 1
  assert plain_fn.calls == 2  # TFP's RealNVP: once in _inverse, once in the log-det


def test_same_gradients_as_tfb_realnvp():
  fused, plain = _pair()
  base = tfd.MultivariateNormalDiag(tf.zeros(3))
  x = tf.random.normal([9, 3], seed=3)
  grads = []
  for bij in (fused, plain):
    variables = bij._shift_and_log_scale_fn.network.trainable_variables
    with tf.GradientTape() as tape:
      loss = -tf.reduce_mean(tfd.TransformedDistribution(base, bij).log_prob(tf.identity(x)))
    grads.append(tape.gradient(loss, variables))
  for g_fused, g_plain in zip(*grads):
    np.testing.assert_allclose(g_fused, g_plain, rtol=1e-5, atol=1e-6)


def test_conditional_input_reaches_the_network():
  fused, plain = _pair(conditional_size=2)
  x = tf.random.normal([4, 3], seed=4)
  c = tf.random.normal([4, 2], seed=5)
  np.testing.assert_allclose(fused.inverse(x, conditional_input=c),
                             plain.inverse(x, conditional_input=c), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(
      fused.inverse_log_det_jacobian(x, event_ndims=1, conditional_input=c),
      plain.inverse_log_det_jacobian(x, event_ndims=1, conditional_input=c), rtol=1e-6)


def test_real_nvp_bijector_uses_fused_couplings_under_jit():
  chain = real_nvp_bijector(2, num_couplings=3, hidden_units=(8,))
  couplings = [b for b in chain.bijectors if isinstance(b, tfb.RealNVP)]
  assert len(couplings) == 3 and all(isinstance(b, FusedRealNVP) for b in couplings)
  randomize_outputs(chain)
  dist = tfd.TransformedDistribution(tfd.MultivariateNormalDiag(tf.zeros(2)), chain)
  x = tf.random.normal([6, 2], seed=6)

  @tf.function(jit_compile=True)
  def log_prob(points):
    return dist.log_prob(points)

  np.testing.assert_allclose(log_prob(x), dist.log_prob(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("coupling", COUPLINGS)
def test_vectorized_map_matches_a_batch_call(coupling):
  chain = real_nvp_bijector(2, num_couplings=2, hidden_units=(8,), coupling=coupling,
                            spline_bound=2.0)
  randomize(chain, scale=0.5)
  dist = tfd.TransformedDistribution(tfd.MultivariateNormalDiag(tf.zeros(2)), chain)
  x = points(6, 2, tf.float32, spread=1.0)
  np.testing.assert_allclose(tf.vectorized_map(dist.log_prob, x).numpy(),
                             dist.log_prob(tf.identity(x)).numpy(), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(tf.vectorized_map(chain.forward, x).numpy(),
                             chain.forward(tf.identity(x)).numpy(), rtol=1e-5, atol=1e-5)


def test_a_custom_coupling_factory():
  calls = []

  def shift_by_mean(num_masked, num_transformed, *, options, dtype, validate_args, name):
    """y1 = x1 + a * mean(x0) + b with trainable a, b (a coupling of one's own)."""
    calls.append((num_masked, num_transformed, options.hidden_units, name))
    a = tf.Variable(tf.ones([num_transformed], dtype), name=f"{name}_a")
    b = tf.Variable(tf.zeros([num_transformed], dtype), name=f"{name}_b")
    shift = lambda x0, units: (a * tf.reduce_mean(x0, -1, keepdims=True) + b, None)
    coupling = tfb.RealNVP(num_masked=num_masked, shift_and_log_scale_fn=shift,
                           validate_args=validate_args, name=name)
    coupling.parameters_ab = [a, b]  # tracked
    return coupling

  chain = real_nvp_bijector(3, num_couplings=2, hidden_units=(5,), coupling=shift_by_mean,
                            dtype=tf.float64)
  assert calls == [(1, 2, (5,), "coupling_0"), (1, 2, (5,), "coupling_1")]
  assert len(chain.trainable_variables) == 4
  x = points(4, 3, tf.float64)
  # By hand: coupling_0 adds x[0] to x[1:], the reversal, coupling_1 adds the new first.
  y0 = x.numpy().copy()
  y0[:, 1:] += y0[:, :1]
  y0 = y0[:, ::-1]
  y0[:, 1:] += y0[:, :1]
  np.testing.assert_allclose(chain.forward(x).numpy(), y0, rtol=1e-12)
  check_bijector(chain, x, tf.float64)
  flow = RealNVP(3, num_couplings=2, coupling=shift_by_mean, dtype=tf.float64)
  assert flow.log_prob(x).shape == [4]


def _unbounded_log_prob(dtype, seed=0):
  chain = real_nvp_bijector(2, num_couplings=4, hidden_units=(16, 16), log_scale_bound=None,
                            dtype=dtype)
  randomize(chain, seed=seed, scale=0.8)  # large log-scales, as unbounded training reaches
  return tfd.TransformedDistribution(
      tfd.MultivariateNormalDiag(tf.zeros(2, dtype)), chain).log_prob


@pytest.mark.parametrize("coupling", COUPLINGS)
def test_a_density_is_never_nan_for_a_finite_input(coupling):
  grid = np.stack(np.meshgrid(np.linspace(-6, 6, 25), np.linspace(-6, 6, 25)), -1).reshape(-1, 2)
  huge = np.array([[1e33, 0.0], [-1e35, 1e36], [3e38, -3e38], [0.0, 1e33]])
  chain = real_nvp_bijector(2, num_couplings=4, hidden_units=(16,), coupling=coupling,
                            log_scale_bound=None)
  randomize(chain, scale=1.5)
  x = tf.constant(np.concatenate([grid, huge]), tf.float32)
  for value in (chain.forward(x), chain.inverse(x), chain.forward_log_det_jacobian(x, 1),
                chain.inverse_log_det_jacobian(tf.identity(x), 1)):
    assert not np.isnan(value.numpy()).any()
  log_prob = tfd.TransformedDistribution(tfd.MultivariateNormalDiag(tf.zeros(2)), chain).log_prob
  lp = log_prob(tf.constant(huge, tf.float32)).numpy()
  np.testing.assert_array_equal(lp, -np.inf)


def test_unbounded_log_scale_is_finite_math_not_nan(monkeypatch):
  grid = np.stack(np.meshgrid(np.linspace(-6, 6, 40), np.linspace(-6, 6, 40)), -1).reshape(-1, 2)
  lp32 = _unbounded_log_prob(tf.float32)(tf.constant(grid, tf.float32)).numpy()
  lp64 = _unbounded_log_prob(tf.float64)(tf.constant(grid, tf.float64)).numpy()
  assert not np.isnan(lp32).any()
  # -inf only where the exact value is beyond float32's range; elsewhere float32 agrees
  # (to 0.5%: values near -1e16 lose about 0.2% on some CPUs' float32 exp and matmul).
  finite = np.isfinite(lp32)
  assert finite.mean() > 0.3 and np.all(lp64[~finite] < -np.finfo(np.float32).max / 2)
  np.testing.assert_allclose(lp32[finite], lp64[finite], rtol=5e-3, atol=1e-2)
  # Without the clipping (the math before the fix) the same flow is NaN there.
  monkeypatch.setattr(networks, "INPUT_LIMIT", np.inf)
  monkeypatch.setattr(networks, "UNBOUNDED_LOG_SCALE_LIMIT", np.inf)
  assert np.isnan(_unbounded_log_prob(tf.float32)(tf.constant(grid, tf.float32)).numpy()).any()
