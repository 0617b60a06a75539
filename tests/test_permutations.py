"""Permutations: reverse, random (seeded, checkpointed) and the learned LU map."""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from bijector_checks import points, randomize
from tfp_realnvp import RealNVP, real_nvp_bijector

tfb = tfp.bijectors


def test_lu_starts_as_reversal_and_tracks_its_variable():
  chain = real_nvp_bijector(4, num_couplings=2, hidden_units=(8,), permutation="lu")
  lu = [b for b in chain.bijectors if isinstance(b, tfb.ScaleMatvecLU)]
  assert len(lu) == 1 and lu[0].name == "permute_0"
  x = points(3, 4, tf.float32)
  np.testing.assert_allclose(lu[0].forward(x).numpy(), x.numpy()[:, ::-1], atol=1e-6)
  names = [v.name for v in chain.trainable_variables]
  assert sum("lower_upper" in n for n in names) == 1


def test_random_permutation_is_seeded_and_valid():
  a = real_nvp_bijector(5, num_couplings=3, hidden_units=(4,), permutation="random", seed=1)
  b = real_nvp_bijector(5, num_couplings=3, hidden_units=(4,), permutation="random", seed=1)
  perms_a = [p.permutation.numpy() for p in a.bijectors if isinstance(p, tfb.Permute)]
  perms_b = [p.permutation.numpy() for p in b.bijectors if isinstance(p, tfb.Permute)]
  assert len(perms_a) == 2
  for pa, pb in zip(perms_a, perms_b):
    np.testing.assert_array_equal(pa, pb)
    assert sorted(pa) == list(range(5))


def test_random_permutation_is_checkpointed_state(tmp_path):
  # Restoring into a flow built with another seed gives back the same model.
  a = RealNVP(5, num_couplings=3, hidden_units=(8,), permutation="random", seed=1)
  b = RealNVP(5, num_couplings=3, hidden_units=(8,), permutation="random", seed=2)
  randomize(a, scale=0.3)
  x = points(7, 5, tf.float32)
  assert not np.allclose(a.log_prob(x).numpy(), b.log_prob(tf.identity(x)).numpy())
  path = tf.train.Checkpoint(flow=a).write(str(tmp_path / "ckpt"))
  tf.train.Checkpoint(flow=b).read(path).assert_consumed()
  np.testing.assert_allclose(b.log_prob(tf.identity(x)).numpy(), a.log_prob(x).numpy(),
                             rtol=1e-6)
  np.testing.assert_allclose(b.bijector.forward(tf.identity(x)).numpy(),
                             a.bijector.forward(x).numpy(), rtol=1e-6)
  perms = [p for p in b.trainable_variables + b.variables if "indices" in p.name]
  assert perms and not any(p.trainable for p in perms)
