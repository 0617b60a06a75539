"""RealNVP as a chain of TFP coupling bijectors.

An affine coupling (Dinh et al., 2017) keeps the first ``d`` coordinates and
transforms the rest elementwise, conditioned on the kept ones:

    y[:d] = x[:d]
    y[d:] = x[d:] * exp(s(x[:d])) + t(x[:d]),
    log|det dy/dx| = sum(s(x[:d])).

:func:`real_nvp_bijector` stacks ``num_couplings`` of these as ``tfb.RealNVP``
bijectors whose ``shift_and_log_scale_fn`` is a :class:`ShiftAndLogScale`
network, with a ``tfb.Permute`` between consecutive couplings so that every
coordinate is transformed (and conditions others) along the chain.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_realnvp.fused_coupling import FusedRealNVP
from tfp_realnvp.networks import ShiftAndLogScale

tfb = tfp.bijectors

__all__ = ["real_nvp_bijector", "coupling_names", "PERMUTATIONS"]

PERMUTATIONS = ("reverse", "random")


def _check_positive_int(label: str, value, minimum: int = 1) -> int:
  if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
    raise ValueError(f"{label} must be an integer >= {minimum}, got {value!r}")
  return int(value)


def coupling_names(num_couplings: int) -> list[str]:
  """Names of the couplings in a chain made by :func:`real_nvp_bijector`."""
  return [f"coupling_{i}" for i in range(num_couplings)]


def _permutation(kind: str, event_size: int, index: int, seed) -> np.ndarray:
  if kind == "reverse":
    return np.arange(event_size)[::-1].copy()
  rng = np.random.default_rng(None if seed is None else [int(seed), index])
  while True:
    perm = rng.permutation(event_size)
    # A permutation that keeps the conditioning block as it is would waste a coupling.
    if event_size < 2 or not np.array_equal(np.sort(perm[: event_size // 2]),
                                            np.arange(event_size // 2)):
      return perm


def real_nvp_bijector(event_size: int,
                      num_couplings: int = 8,
                      hidden_units: Sequence[int] = (128, 128),
                      activation="relu",
                      *,
                      permutation: str = "reverse",
                      log_scale_bound: float | None = 3.0,
                      conditional_size: int = 0,
                      seed: int | None = None,
                      dtype=tf.float32,
                      validate_args: bool = False,
                      name: str = "real_nvp") -> tfb.Chain:
  """A ``tfb.Chain`` of ``tfb.RealNVP`` affine couplings and ``tfb.Permute``s.

  The chain maps base (latent) space to data space in ``forward``.  Each
  coupling keeps ``event_size // 2`` coordinates and transforms the other
  ``event_size - event_size // 2``; between couplings a permutation reorders
  the coordinates (``"reverse"``: reverse their order, which makes consecutive
  couplings alternate halves; ``"random"``: a fixed random permutation drawn
  from ``seed``).  Odd event sizes work: with reversal, the coordinate kept in
  one coupling is transformed in the next.

  Event shape ``[event_size]``; inputs may have any batch shape.

  Example:

  ```python
  import tensorflow as tf
  from tfp_realnvp import real_nvp_bijector

  bij = real_nvp_bijector(event_size=3, num_couplings=4, hidden_units=(32, 32))
  x = tf.random.normal([8, 3])
  y = bij.forward(x)                                  # identity at init
  ldj = bij.forward_log_det_jacobian(x, event_ndims=1)  # shape [8]
  ```

  Args:
    event_size: number of dimensions of an event, at least 2.
    num_couplings: number of affine couplings.
    hidden_units: hidden widths of each coupling's network.
    activation: hidden activation of each network.
    permutation: ``"reverse"`` or ``"random"``.
    log_scale_bound: soft bound on each coupling's log-scale (see
      :class:`ShiftAndLogScale`), ``None`` for unbounded.
    conditional_size: size of a conditioning vector fed to every network
      (pass it as ``conditional_input=`` to the couplings), 0 for none.
    seed: seed of the random permutations.
    dtype: dtype of the networks.
    validate_args: turn on TFP's argument checks in every bijector.
    name: name of the chain.

  Returns:
    A ``tfb.Chain`` whose couplings are named ``coupling_0`` (applied first in
    ``forward``) to ``coupling_{num_couplings - 1}``.
  """
  event_size = _check_positive_int("event_size", event_size, minimum=2)
  num_couplings = _check_positive_int("num_couplings", num_couplings)
  if permutation not in PERMUTATIONS:
    raise ValueError(f"permutation must be one of {PERMUTATIONS}, got {permutation!r}")

  num_masked = event_size // 2
  transformed = event_size - num_masked
  forward_order = []  # bijectors in the order forward() applies them
  for i, coupling_name in enumerate(coupling_names(num_couplings)):
    if i > 0:
      perm = _permutation(permutation, event_size, i, seed)
      forward_order.append(tfb.Permute(
          permutation=perm.astype(np.int32), validate_args=validate_args,
          name=f"permute_{i - 1}"))
    network = ShiftAndLogScale(
        hidden_units, activation,
        input_units=num_masked, output_units=transformed,
        conditional_size=conditional_size, log_scale_bound=log_scale_bound,
        dtype=dtype, name=f"{coupling_name}_network")
    forward_order.append(FusedRealNVP(
        num_masked=num_masked, shift_and_log_scale_fn=network,
        validate_args=validate_args, name=coupling_name))
  # tfb.Chain applies its list right to left in forward().
  return tfb.Chain(forward_order[::-1], validate_args=validate_args, name=name)
