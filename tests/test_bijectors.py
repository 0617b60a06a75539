import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_realnvp import ShiftAndLogScale, real_nvp_bijector
from helpers import batch_log_abs_det_jacobian, randomize_outputs

tfb = tfp.bijectors

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


def test_random_permutation_is_seeded_and_valid():
  a = real_nvp_bijector(5, num_couplings=3, hidden_units=(4,), permutation="random", seed=1)
  b = real_nvp_bijector(5, num_couplings=3, hidden_units=(4,), permutation="random", seed=1)
  perms_a = [p.permutation.numpy() for p in a.bijectors if isinstance(p, tfb.Permute)]
  perms_b = [p.permutation.numpy() for p in b.bijectors if isinstance(p, tfb.Permute)]
  for pa, pb in zip(perms_a, perms_b):
    np.testing.assert_array_equal(pa, pb)
    assert sorted(pa) == list(range(5))


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
