"""The chain: inverse and log-det against autodiff and a hand-built TFP chain for
every option, condition routing, cache clearing, options and overrides."""

import itertools
import json

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from bijector_checks import check_bijector, points, randomize, tol
from tfp_realnvp import RealNVP, ShiftAndLogScale, datasets, fit, real_nvp_bijector
from tfp_realnvp.bijectors import ConditionalChain, clear_caches, coupling_names
from tfp_realnvp.options import COUPLINGS, PERMUTATIONS, FlowOptions
from tfp_realnvp.training import default_optimizer
from helpers import batch_log_abs_det_jacobian, randomize_outputs

tfb = tfp.bijectors
tfd = tfp.distributions

DTYPES = [tf.float32, tf.float64]
SIZES = [2, 3, 5]


def _tolerance(dtype):
  return dict(rtol=1e-4, atol=1e-4) if dtype == tf.float32 else dict(rtol=1e-9, atol=1e-9)


def _chain(event_size, dtype, num_couplings=4, seed=0):
  chain = real_nvp_bijector(event_size, num_couplings=num_couplings, hidden_units=(16, 16),
                            dtype=dtype)
  randomize_outputs(chain, scale=0.3, seed=seed)
  return chain


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("event_size", SIZES)
def test_chain_inverts(event_size, dtype):
  chain = _chain(event_size, dtype)
  x = tf.random.normal([64, event_size], dtype=dtype)
  tol = _tolerance(dtype)
  np.testing.assert_allclose(chain.inverse(chain.forward(x)).numpy(), x.numpy(), **tol)
  np.testing.assert_allclose(chain.forward(chain.inverse(x)).numpy(), x.numpy(), **tol)
  assert not np.allclose(chain.forward(x).numpy(), x.numpy())  # not the identity


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("event_size", SIZES)
def test_chain_log_det_matches_autodiff_jacobian(event_size, dtype):
  chain = _chain(event_size, dtype)
  x = tf.random.normal([16, event_size], dtype=dtype)
  tol = _tolerance(dtype)
  expected = batch_log_abs_det_jacobian(chain.forward, x)
  np.testing.assert_allclose(chain.forward_log_det_jacobian(x, event_ndims=1).numpy(),
                             expected.numpy(), **tol)
  y = chain.forward(x)
  expected_inverse = batch_log_abs_det_jacobian(chain.inverse, y)
  np.testing.assert_allclose(chain.inverse_log_det_jacobian(y, event_ndims=1).numpy(),
                             expected_inverse.numpy(), **tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("event_size", SIZES)
def test_single_coupling_log_det_matches_autodiff_jacobian(event_size, dtype):
  chain = _chain(event_size, dtype, num_couplings=1)
  (coupling,) = chain.bijectors
  assert isinstance(coupling, tfb.RealNVP)
  x = tf.random.normal([16, event_size], dtype=dtype)
  expected = batch_log_abs_det_jacobian(coupling.forward, x)
  np.testing.assert_allclose(coupling.forward_log_det_jacobian(x, event_ndims=1).numpy(),
                             expected.numpy(), **_tolerance(dtype))
  # A coupling keeps its conditioning half unchanged.
  keep = event_size // 2
  np.testing.assert_array_equal(coupling.forward(x).numpy()[:, :keep], x.numpy()[:, :keep])


@pytest.mark.parametrize("event_size", SIZES)
def test_matches_a_hand_assembled_tfp_chain_with_the_same_networks(event_size):
  chain = _chain(event_size, tf.float32, num_couplings=3)
  couplings = [b for b in chain.bijectors if isinstance(b, tfb.RealNVP)][::-1]  # forward order
  networks = [c._shift_and_log_scale_fn for c in couplings]
  assert all(isinstance(n, ShiftAndLogScale) for n in networks)
  reverse = list(range(event_size))[::-1]
  keep = event_size // 2
  # Written out independently: coupling, reverse, coupling, reverse, coupling.
  by_hand = tfb.Chain([
      tfb.RealNVP(num_masked=keep, shift_and_log_scale_fn=networks[2]),
      tfb.Permute(reverse),
      tfb.RealNVP(num_masked=keep, shift_and_log_scale_fn=networks[1]),
      tfb.Permute(reverse),
      tfb.RealNVP(num_masked=keep, shift_and_log_scale_fn=networks[0]),
  ])
  x = tf.random.normal([32, event_size])
  np.testing.assert_allclose(chain.forward(x).numpy(), by_hand.forward(x).numpy(), atol=1e-6)
  np.testing.assert_allclose(chain.inverse(x).numpy(), by_hand.inverse(x).numpy(), atol=1e-6)
  np.testing.assert_allclose(chain.forward_log_det_jacobian(x, 1).numpy(),
                             by_hand.forward_log_det_jacobian(x, 1).numpy(), atol=1e-6)
  np.testing.assert_allclose(chain.inverse_log_det_jacobian(x, 1).numpy(),
                             by_hand.inverse_log_det_jacobian(x, 1).numpy(), atol=1e-6)


@pytest.mark.parametrize("event_size", [2, 3, 5, 6])
def test_every_dimension_is_transformed(event_size):
  chain = _chain(event_size, tf.float64, num_couplings=2)
  x = tf.random.normal([8, event_size], dtype=tf.float64)
  y = chain.forward(x).numpy()
  # With the final permutation undone, no coordinate passes through untouched.
  changed = ~np.isclose(y, x.numpy()[:, ::-1]) & ~np.isclose(y, x.numpy())
  assert changed.any(axis=0).all()


def test_identity_at_initialization():
  chain = real_nvp_bijector(3, num_couplings=3, hidden_units=(8,))
  x = tf.random.normal([10, 3])
  # Three couplings, two reversals: identity up to one reversal.
  np.testing.assert_allclose(chain.forward(x).numpy(), x.numpy(), atol=1e-6)
  np.testing.assert_allclose(chain.forward_log_det_jacobian(x, 1).numpy(), 0.0, atol=1e-6)


def test_tracks_every_network_variable():
  chain = real_nvp_bijector(4, num_couplings=3, hidden_units=(8, 8))
  assert len(chain.trainable_variables) == 3 * 6


def test_bad_arguments():
  with pytest.raises(ValueError, match="event_size"):
    real_nvp_bijector(1)
  with pytest.raises(ValueError, match="num_couplings"):
    real_nvp_bijector(2, num_couplings=0)
  with pytest.raises(ValueError, match="permutation"):
    real_nvp_bijector(2, permutation="sideways")


def test_conditional_input_reaches_every_coupling():
  chain = real_nvp_bijector(3, num_couplings=3, hidden_units=(8,), conditional_size=2,
                            dtype=tf.float64)
  randomize_outputs(chain)
  assert isinstance(chain, ConditionalChain) and chain.conditioned == tuple(coupling_names(3))
  x = tf.random.normal([6, 3], dtype=tf.float64)
  c = tf.random.normal([6, 2], dtype=tf.float64)
  per_name = {name: {"conditional_input": c} for name in coupling_names(3)}
  for method, arg in ((chain.forward, x), (chain.inverse, x)):
    np.testing.assert_allclose(method(tf.identity(arg), conditional_input=c).numpy(),
                               method(tf.identity(arg), **per_name).numpy(), rtol=1e-12)
  for method in (chain.forward_log_det_jacobian, chain.inverse_log_det_jacobian):
    np.testing.assert_allclose(method(tf.identity(x), 1, conditional_input=c).numpy(),
                               method(tf.identity(x), 1, **per_name).numpy(), rtol=1e-12)
  # The condition matters, per-name arguments override the routed one, and the
  # log-det follows the condition (checked against autodiff).
  y = chain.forward(x, conditional_input=c)
  assert not np.allclose(y.numpy(), chain.forward(x, conditional_input=c + 1.0).numpy())
  mixed = chain.forward(x, conditional_input=c + 1.0, coupling_0={"conditional_input": c})
  assert not np.allclose(mixed.numpy(), y.numpy())
  expected = batch_log_abs_det_jacobian(lambda t: chain.forward(t, conditional_input=c), x)
  np.testing.assert_allclose(chain.forward_log_det_jacobian(x, 1, conditional_input=c).numpy(),
                             expected.numpy(), rtol=1e-9, atol=1e-9)
  # A distribution built on the chain routes it too, and an unconditional chain refuses it.
  dist = tfp.distributions.TransformedDistribution(
      tfp.distributions.MultivariateNormalDiag(tf.zeros(3, tf.float64)), chain)
  lp = dist.log_prob(y, bijector_kwargs={"conditional_input": c})
  np.testing.assert_allclose(
      lp.numpy(), dist.log_prob(y, bijector_kwargs=per_name).numpy(), rtol=1e-12)
  with pytest.raises(ValueError, match="not conditional"):
    real_nvp_bijector(2, num_couplings=2, hidden_units=(4,)).forward(
        tf.zeros([1, 2]), conditional_input=tf.zeros([1, 2]))


def test_nested_conditional_chains_route_the_condition():
  inner = real_nvp_bijector(2, num_couplings=2, hidden_units=(8,), conditional_size=1)
  randomize_outputs(inner)
  outer = ConditionalChain([tfb.Shift([1.0, 2.0]), inner])
  assert outer.conditioned == (inner.name,)
  x, c = tf.random.normal([4, 2]), tf.ones([4, 1])
  np.testing.assert_allclose(outer.forward(x, conditional_input=c).numpy(),
                             inner.forward(x, conditional_input=c).numpy() + [1.0, 2.0],
                             rtol=1e-6)
  with pytest.raises(ValueError, match="not members"):
    ConditionalChain([tfb.Shift([1.0])], conditioned=["coupling_0"])


def test_clear_caches_drops_stale_results():
  chain = real_nvp_bijector(2, num_couplings=2, hidden_units=(8,))
  randomize_outputs(chain)
  x = tf.random.normal([5, 2])
  y = chain.forward(x)
  ldj = chain.inverse_log_det_jacobian(y, 1)
  randomize_outputs(chain, seed=7)  # new weights: the cached x for y is stale
  stale = chain.inverse(y)
  np.testing.assert_array_equal(stale.numpy(), x.numpy())  # TFP's cache, keyed by y
  clear_caches(tfb.Invert(chain))
  fresh = chain.inverse(y)
  assert not np.allclose(fresh.numpy(), x.numpy())
  np.testing.assert_allclose(chain.forward(fresh).numpy(), y.numpy(), rtol=1e-5, atol=1e-5)
  assert not np.allclose(chain.inverse_log_det_jacobian(y, 1).numpy(), ldj.numpy())


def test_options_object_and_overrides():
  options = FlowOptions(num_couplings=3, hidden_units=(4,), permutation="lu")
  chain = real_nvp_bijector(3, options, hidden_units=(6,), name="mine")
  assert chain.name == "mine"
  assert [b.name for b in chain.bijectors if b.name.startswith("coupling")] == \
      coupling_names(3)[::-1]
  assert isinstance(chain.bijectors[1], tfb.ScaleMatvecLU)
  # 3 networks of 2 dense layers, 2 LU parameters.
  assert len(chain.trainable_variables) == 3 * 4 + 2
  assert chain.bijectors[0]._shift_and_log_scale_fn.hidden_units == (6,)
  assert len(real_nvp_bijector(2).bijectors) == 2 * FlowOptions().num_couplings - 1
  with pytest.raises(TypeError, match="hidden_unit"):
    real_nvp_bijector(2, hidden_unit=(4,))


@pytest.mark.parametrize("coupling,permutation,dtype",
                         list(itertools.product(COUPLINGS, PERMUTATIONS, DTYPES)))
def test_chain_invertible_and_log_det(coupling, permutation, dtype):
  for event_size in SIZES:
    chain = real_nvp_bijector(event_size, num_couplings=3, hidden_units=(8,),
                              coupling=coupling, permutation=permutation, actnorm=True,
                              spline_bound=2.0, spline_bins=4, seed=3, dtype=dtype)
    randomize(chain, seed=event_size, scale=0.3)
    check_bijector(chain, points(12, event_size, dtype), dtype)


@pytest.mark.parametrize("coupling,permutation,dtype",
                         list(itertools.product(COUPLINGS, PERMUTATIONS, DTYPES)))
def test_every_option_is_identity_at_initialization(coupling, permutation, dtype):
  flow = RealNVP(5, num_couplings=3, hidden_units=(8,), coupling=coupling,
                 permutation=permutation, actnorm=True, seed=0, dtype=dtype)
  x = points(20, 5, dtype, spread=3.0)
  # Couplings (and actnorm) are the identity, so the chain only permutes the
  # coordinates: the untrained flow is its standard normal base.
  base = tfd.MultivariateNormalDiag(loc=tf.zeros([5], dtype))
  np.testing.assert_allclose(flow.log_prob(x).numpy(), base.log_prob(x).numpy(), **tol(dtype))
  for b in flow.flow_bijector.bijectors:
    if b.name.startswith(("coupling_", "actnorm_")):
      np.testing.assert_allclose(b.forward(x).numpy(), x.numpy(), **tol(dtype))
      np.testing.assert_allclose(
          np.broadcast_to(b.forward_log_det_jacobian(x, event_ndims=1).numpy(), [20]), 0.0,
          atol=1e-5 if dtype == tf.float32 else 1e-12)


def test_config_round_trip_with_options():
  flow = RealNVP(3, num_couplings=2, hidden_units=(8,), coupling="spline", spline_bins=5,
                 spline_bound=3.0, permutation="random", actnorm=True, dtype=tf.float64)
  config = flow.config
  assert config["coupling"] == "spline" and config["spline_bins"] == 5
  assert config["spline_bound"] == 3.0 and config["actnorm"] is True
  assert config["seed"] is not None  # the drawn seed of the random permutations is kept
  rebuilt = RealNVP(**json.loads(json.dumps(config)))
  randomize(flow, scale=0.3)
  assert [v.shape for v in rebuilt.trainable_variables] == [v.shape for v in flow.trainable_variables]
  for a, b in zip(rebuilt.trainable_variables, flow.trainable_variables):
    a.assign(b)
  x = points(6, 3, tf.float64)
  np.testing.assert_allclose(rebuilt.log_prob(x).numpy(), flow.log_prob(x).numpy(), rtol=1e-10)


def test_invalid_options():
  with pytest.raises(ValueError, match="coupling"):
    real_nvp_bijector(2, coupling="quadratic")
  with pytest.raises(ValueError, match="permutation"):
    real_nvp_bijector(2, permutation="shuffle")
  with pytest.raises(ValueError, match="spline_bins"):
    real_nvp_bijector(2, coupling="spline", spline_bins=1)
  with pytest.raises(ValueError, match="spline_bound"):
    real_nvp_bijector(2, coupling="spline", spline_bound=0.0)


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
  fit(flow, x, steps=150, batch_size=128, progress=False,
      optimizer=default_optimizer(150, learning_rate=3e-3, warmup_steps=10))
  after_nll = float(-tf.reduce_mean(flow.log_prob(x_val)))
  assert after_nll < before_nll - 0.1
  for v, old in zip(flow.trainable_variables, before):
    assert not np.allclose(v.numpy(), old), v.name
