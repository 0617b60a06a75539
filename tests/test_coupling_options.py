"""Coupling types, permutations and actnorm: the same checks as the affine core.

For every option: inverse(forward(x)) == x and back, log-det against
``tf.GradientTape.batch_jacobian`` (one coupling and the whole chain), float32
and float64, event sizes 2, 3, 5; identity at initialization; conditioning;
a short fit lowers the NLL and moves every trainable variable.
"""

import itertools

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_realnvp import RealNVP, fit
from tfp_realnvp import datasets
from tfp_realnvp.actnorm import ActNorm, actnorm_layers, initialize_actnorm
from tfp_realnvp.bijectors import real_nvp_bijector
from tfp_realnvp.couplings import COUPLINGS, make_coupling
from tfp_realnvp.networks import SplineParameters
from tfp_realnvp.permutations import PERMUTATIONS

tfb = tfp.bijectors
tfd = tfp.distributions

DTYPES = [tf.float32, tf.float64]
EVENT_SIZES = [2, 3, 5]


def _tol(dtype):
  return dict(rtol=2e-3, atol=2e-3) if dtype == tf.float32 else dict(rtol=1e-8, atol=1e-8)


def _randomize(module, seed=0, scale=0.5):
  """Gives every variable of ``module`` random values, so that nothing is the identity."""
  rng = np.random.default_rng(seed)
  for v in module.trainable_variables:
    v.assign(scale * rng.standard_normal(v.shape).astype(v.dtype.as_numpy_dtype))


def _points(n, event_size, dtype, seed=1, spread=2.0):
  # Spread 2 puts a good share of the points outside a spline bound of 2.
  rng = np.random.default_rng(seed)
  return tf.constant(spread * rng.standard_normal((n, event_size)), dtype=dtype)


def _autodiff_log_det(bijector, x, **kwargs):
  # A fresh tensor: TFP caches forward(x) by input, and a cached result made
  # outside the tape would have no gradient.
  x = tf.identity(x)
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(x)
    y = bijector.forward(x, **kwargs)
    rows = [y[:, i] for i in range(y.shape[-1])]
  # One backward pass per output coordinate (what batch_jacobian computes,
  # without its pfor conversion, which is slow for the spline ops).
  jacobian = tf.stack([tape.gradient(row, x) for row in rows], axis=1)
  return np.linalg.slogdet(jacobian.numpy().astype(np.float64))[1]


def _check_bijector(bijector, x, dtype, **kwargs):
  y = bijector.forward(x, **kwargs)
  assert y.dtype == dtype and y.shape == x.shape
  tol = _tol(dtype)
  np.testing.assert_allclose(bijector.inverse(y, **kwargs).numpy(), x.numpy(), **tol)
  np.testing.assert_allclose(bijector.forward(bijector.inverse(x, **kwargs), **kwargs).numpy(),
                             x.numpy(), **tol)
  fldj = bijector.forward_log_det_jacobian(x, event_ndims=1, **kwargs)
  fldj = np.broadcast_to(fldj.numpy(), x.shape[:1])
  np.testing.assert_allclose(fldj, _autodiff_log_det(bijector, x, **kwargs), **tol)
  ildj = bijector.inverse_log_det_jacobian(y, event_ndims=1, **kwargs)
  np.testing.assert_allclose(np.broadcast_to(ildj.numpy(), x.shape[:1]), -fldj, **tol)


@pytest.mark.parametrize("coupling,dtype,event_size",
                         list(itertools.product(COUPLINGS, DTYPES, EVENT_SIZES)))
def test_single_coupling_invertible_and_log_det(coupling, dtype, event_size):
  bij = make_coupling(coupling, event_size, (16,), spline_bins=5, spline_bound=2.0,
                      dtype=dtype, name="coupling_0")
  _randomize(bij)
  _check_bijector(bij, _points(16, event_size, dtype), dtype)


@pytest.mark.parametrize("coupling,permutation,dtype",
                         list(itertools.product(COUPLINGS, PERMUTATIONS, DTYPES)))
def test_chain_invertible_and_log_det(coupling, permutation, dtype):
  for event_size in EVENT_SIZES:
    chain = real_nvp_bijector(event_size, num_couplings=3, hidden_units=(8,),
                              coupling=coupling, permutation=permutation, actnorm=True,
                              spline_bound=2.0, spline_bins=4, seed=3, dtype=dtype)
    _randomize(chain, seed=event_size, scale=0.3)
    _check_bijector(chain, _points(12, event_size, dtype), dtype)


@pytest.mark.parametrize("coupling", COUPLINGS)
def test_conditional_couplings(coupling):
  chain = real_nvp_bijector(3, num_couplings=2, hidden_units=(8,), coupling=coupling,
                            conditional_size=2, spline_bound=2.0, dtype=tf.float64)
  _randomize(chain, scale=0.3)
  x = _points(10, 3, tf.float64)
  c = tf.constant(np.random.default_rng(5).standard_normal((10, 2)))
  kwargs = {f"coupling_{i}": {"conditional_input": c} for i in range(2)}
  _check_bijector(chain, x, tf.float64, **kwargs)
  other = {k: {"conditional_input": c + 1.0} for k in kwargs}
  assert not np.allclose(chain.forward(x, **kwargs).numpy(), chain.forward(x, **other).numpy())

  flow = RealNVP(3, num_couplings=2, hidden_units=(8,), coupling=coupling,
                 conditional_size=2, dtype=tf.float64)
  _randomize(flow, scale=0.3)
  lp = flow.log_prob(x, conditional_input=c)
  assert lp.shape == [10] and np.all(np.isfinite(lp.numpy()))
  assert flow.sample(4, conditional_input=c[:1], seed=1).shape == [4, 3]
  with pytest.raises(ValueError, match="conditional"):
    flow.log_prob(x)


@pytest.mark.parametrize("coupling,permutation,dtype",
                         list(itertools.product(COUPLINGS, PERMUTATIONS, DTYPES)))
def test_identity_at_initialization(coupling, permutation, dtype):
  flow = RealNVP(5, num_couplings=3, hidden_units=(8,), coupling=coupling,
                 permutation=permutation, actnorm=True, seed=0, dtype=dtype)
  x = _points(20, 5, dtype, spread=3.0)
  # Couplings (and actnorm) are the identity, so the chain only permutes the
  # coordinates: the untrained flow is its standard normal base.
  base = tfd.MultivariateNormalDiag(loc=tf.zeros([5], dtype))
  np.testing.assert_allclose(flow.log_prob(x).numpy(), base.log_prob(x).numpy(), **_tol(dtype))
  for b in flow.flow_bijector.bijectors:
    if b.name.startswith(("coupling_", "actnorm_")):
      np.testing.assert_allclose(b.forward(x).numpy(), x.numpy(), **_tol(dtype))
      np.testing.assert_allclose(
          np.broadcast_to(b.forward_log_det_jacobian(x, event_ndims=1).numpy(), [20]), 0.0,
          atol=1e-5 if dtype == tf.float32 else 1e-12)


def test_lu_starts_as_reversal_and_tracks_its_variable():
  chain = real_nvp_bijector(4, num_couplings=2, hidden_units=(8,), permutation="lu")
  lu = [b for b in chain.bijectors if isinstance(b, tfb.ScaleMatvecLU)]
  assert len(lu) == 1 and lu[0].name == "permute_0"
  x = _points(3, 4, tf.float32)
  np.testing.assert_allclose(lu[0].forward(x).numpy(), x.numpy()[:, ::-1], atol=1e-6)
  names = [v.name for v in chain.trainable_variables]
  assert sum("lower_upper" in n for n in names) == 1


def test_spline_network_parameters_at_init():
  net = SplineParameters((8,), input_units=2, output_units=3, num_bins=6, bound=2.5)
  widths, heights, slopes = net(tf.random.normal([4, 2]), 3)
  assert widths.shape == [4, 3, 6] and heights.shape == [4, 3, 6] and slopes.shape == [4, 3, 5]
  np.testing.assert_allclose(widths.numpy(), 5.0 / 6, rtol=1e-6)
  np.testing.assert_allclose(heights.numpy(), 5.0 / 6, rtol=1e-6)
  np.testing.assert_allclose(slopes.numpy(), 1.0, rtol=1e-6)
  _randomize(net, scale=3.0)
  widths, heights, slopes = net(tf.random.normal([4, 2]), 3)
  np.testing.assert_allclose(widths.numpy().sum(-1), 5.0, rtol=1e-5)
  assert widths.numpy().min() >= 5.0 * 1e-3 * (1 - 1e-5) and slopes.numpy().min() > 0
  assert net.get_config()["num_bins"] == 6


def test_spline_is_identity_outside_its_bound():
  bij = make_coupling("spline", 2, (8,), spline_bound=1.0, dtype=tf.float64)
  _randomize(bij, scale=1.0)
  x = tf.constant([[0.3, 1.5], [-0.2, -4.0], [2.0, 1.0 + 1e-9]], tf.float64)
  y = bij.forward(x).numpy()
  np.testing.assert_allclose(y[:, 1], x.numpy()[:, 1], atol=1e-9)  # transformed coordinate
  np.testing.assert_allclose(y[:, 0], x.numpy()[:, 0])  # kept coordinate


def test_additive_is_volume_preserving():
  bij = make_coupling("additive", 3, (8,))
  _randomize(bij)
  assert bij.is_constant_jacobian
  x = _points(5, 3, tf.float32)
  assert not np.allclose(bij.forward(x).numpy(), x.numpy())
  np.testing.assert_allclose(bij.forward_log_det_jacobian(x, event_ndims=1).numpy(), 0.0)


def test_spline_variables_tracked_with_validate_args():
  flow = RealNVP(2, num_couplings=2, hidden_units=(8,), coupling="spline", validate_args=True)
  # Two networks, each two dense layers of kernel and bias.
  assert len(flow.trainable_variables) == 8
  assert np.isfinite(flow.log_prob(np.zeros([3, 2], np.float32)).numpy()).all()


def test_actnorm_data_initialization():
  x = datasets.moons(2000, 0.05, seed=0).astype(np.float64)
  flow = RealNVP(2, num_couplings=3, hidden_units=(8,), actnorm=True, dtype=tf.float64)
  _randomize(flow, scale=0.3)  # make the couplings non-trivial first
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


def test_config_round_trip_with_options():
  flow = RealNVP(3, num_couplings=2, hidden_units=(8,), coupling="spline", spline_bins=5,
                 spline_bound=3.0, permutation="random", actnorm=True, dtype=tf.float64)
  config = flow.config
  assert config["coupling"] == "spline" and config["spline_bins"] == 5
  assert config["spline_bound"] == 3.0 and config["actnorm"] is True
  assert config["seed"] is not None  # the drawn seed of the random permutations is kept
  import json
  rebuilt = RealNVP(**json.loads(json.dumps(config)))
  _randomize(flow, scale=0.3)
  assert [v.shape for v in rebuilt.trainable_variables] == [v.shape for v in flow.trainable_variables]
  for a, b in zip(rebuilt.trainable_variables, flow.trainable_variables):
    a.assign(b)
  x = _points(6, 3, tf.float64)
  np.testing.assert_allclose(rebuilt.log_prob(x).numpy(), flow.log_prob(x).numpy(), rtol=1e-10)


def test_invalid_options():
  with pytest.raises(ValueError, match="coupling"):
    RealNVP(2, coupling="quadratic")
  with pytest.raises(ValueError, match="permutation"):
    RealNVP(2, permutation="shuffle")
  with pytest.raises(ValueError, match="num_bins"):
    RealNVP(2, coupling="spline", spline_bins=1)
  with pytest.raises(ValueError, match="bound"):
    RealNVP(2, coupling="spline", spline_bound=0.0)


def test_defaults_unchanged():
  chain = real_nvp_bijector(2, num_couplings=2, hidden_units=(8,))
  assert isinstance(chain.bijectors[0], tfb.RealNVP) and isinstance(chain.bijectors[2], tfb.RealNVP)
  assert isinstance(chain.bijectors[1], tfb.Permute)
  assert [b.name for b in chain.bijectors] == ["coupling_1", "permute_0", "coupling_0"]
  assert RealNVP(2).config["coupling"] == "affine"


@pytest.mark.parametrize("options", [
    dict(coupling="affine", permutation="lu", actnorm=True),
    dict(coupling="additive", permutation="random"),
    dict(coupling="spline", permutation="reverse"),
    dict(coupling="spline", permutation="lu", actnorm=True),
])
def test_short_fit_improves_and_moves_every_variable(options):
  x = datasets.moons(1024, 0.05, seed=0)
  x_val = datasets.moons(512, 0.05, seed=1)
  flow = RealNVP(2, num_couplings=2, hidden_units=(16, 16), seed=0, **options)
  flow.adapt(x)
  before_nll = float(-tf.reduce_mean(flow.log_prob(x_val)))
  before = [v.numpy().copy() for v in flow.trainable_variables]
  fit(flow, x, steps=150, batch_size=128, learning_rate=3e-3, warmup_steps=10, progress=False)
  after_nll = float(-tf.reduce_mean(flow.log_prob(x_val)))
  assert after_nll < before_nll - 0.1
  for v, old in zip(flow.trainable_variables, before):
    assert not np.allclose(v.numpy(), old), v.name
