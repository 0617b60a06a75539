"""Mixing steps between couplings, as a coupling leaves half the coordinates unchanged.

* ``"reverse"``: reverse the order, so consecutive couplings alternate halves;
* ``"random"``: a permutation drawn from a seed, held in a non-trainable
  ``tf.Variable`` (checkpointed: a restore into a flow built with another
  seed gives back the same permutation);
* ``"lu"``: a learned ``y = W x`` (Glow's 1x1 convolution, Kingma & Dhariwal
  2018), ``tfb.ScaleMatvecLU`` with ``W = P L U``: ``P`` the reversal, ``L``
  unit lower and ``U`` upper triangular with diagonal ``exp(d) > 0``, both
  ``I`` at initialization.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_realnvp.options import PERMUTATIONS

tfb = tfp.bijectors

__all__ = ["PERMUTATIONS", "permutation_indices", "make_permutation", "LUParameters"]


def permutation_indices(kind: str, event_size: int, index: int, seed) -> np.ndarray:
  """The fixed index permutation of ``kind`` (``"reverse"`` or ``"random"``)."""
  if kind in ("reverse", "lu"):
    return np.arange(event_size)[::-1].copy()
  rng = np.random.default_rng(None if seed is None else [int(seed), index])
  while True:
    perm = rng.permutation(event_size)
    # A permutation that keeps the conditioning block as it is would waste a coupling.
    if event_size < 2 or not np.array_equal(np.sort(perm[: event_size // 2]),
                                            np.arange(event_size // 2)):
      return perm


class LUParameters(tf.Module):
  """Trainable packed ``lower_upper`` factor of ``tfb.ScaleMatvecLU``.

  A ``[n, n]`` variable ``v`` (zeros: ``L = U = I``) and ``lower_upper``, ``v``
  with the diagonal ``exp(diag(v))`` (a ``tfp.util.DeferredTensor``).
  """

  def __init__(self, event_size: int, dtype=tf.float32, name=None):
    super().__init__(name=name)
    self.unconstrained = tf.Variable(tf.zeros([event_size, event_size], dtype=dtype),
                                     trainable=True, name="lower_upper_unconstrained")
    self.lower_upper = tfp.util.DeferredTensor(
        self.unconstrained,
        lambda v: tf.linalg.set_diag(v, tf.exp(tf.linalg.diag_part(v))),
        name="lower_upper")


def make_permutation(kind: str, event_size: int, index: int, seed=None, *,
                     dtype=tf.float32, validate_args: bool = False,
                     name: str = "permute") -> tfb.Bijector:
  """The mixing bijector of ``kind`` placed after coupling ``index`` (see the module docstring)."""
  if kind not in PERMUTATIONS:
    raise ValueError(f"permutation must be one of {PERMUTATIONS}, got {kind!r}")
  perm = permutation_indices(kind, event_size, index, seed).astype(np.int32)
  if kind == "random":
    perm = tf.Variable(perm, trainable=False, name=f"{name}_indices")
  if kind != "lu":
    return tfb.Permute(permutation=perm, validate_args=validate_args, name=name)
  params = LUParameters(event_size, dtype=dtype, name=f"{name}_parameters")
  bijector = tfb.ScaleMatvecLU(lower_upper=params.lower_upper, permutation=perm,
                               validate_args=validate_args, name=name)
  bijector._lu_parameters = params  # keep the module (and its variable) tracked
  return bijector
