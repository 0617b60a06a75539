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

Options (all identity at initialization): additive (NICE) and
rational-quadratic spline couplings (:mod:`tfp_realnvp.couplings`), random or
learned LU mixing instead of the reversal (:mod:`tfp_realnvp.permutations`),
and activation normalization between couplings (:mod:`tfp_realnvp.actnorm`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_realnvp.actnorm import ActNorm
from tfp_realnvp.couplings import COUPLINGS, make_coupling
from tfp_realnvp.permutations import PERMUTATIONS, make_permutation, permutation_indices

tfb = tfp.bijectors

__all__ = ["real_nvp_bijector", "coupling_names", "PERMUTATIONS", "COUPLINGS"]


def _check_positive_int(label: str, value, minimum: int = 1) -> int:
  if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
    raise ValueError(f"{label} must be an integer >= {minimum}, got {value!r}")
  return int(value)


def coupling_names(num_couplings: int) -> list[str]:
  """Names of the couplings in a chain made by :func:`real_nvp_bijector`."""
  return [f"coupling_{i}" for i in range(num_couplings)]


def _permutation(kind: str, event_size: int, index: int, seed) -> np.ndarray:
  return permutation_indices(kind, event_size, index, seed)


def real_nvp_bijector(event_size: int,
                      num_couplings: int = 8,
                      hidden_units: Sequence[int] = (128, 128),
                      activation="relu",
                      *,
                      permutation: str = "reverse",
                      log_scale_bound: float | None = 3.0,
                      conditional_size: int = 0,
                      coupling: str = "affine",
                      spline_bins: int = 8,
                      spline_bound: float = 4.0,
                      actnorm: bool = False,
                      seed: int | None = None,
                      dtype=tf.float32,
                      validate_args: bool = False,
                      name: str = "real_nvp") -> tfb.Chain:
  """A ``tfb.Chain`` of ``tfb.RealNVP`` couplings and permutations.

  The chain maps base (latent) space to data space in ``forward``.  Each
  coupling keeps ``event_size // 2`` coordinates and transforms the other
  ``event_size - event_size // 2``; between couplings a permutation reorders
  the coordinates (``"reverse"``: reverse their order, which makes consecutive
  couplings alternate halves; ``"random"``: a fixed random permutation drawn
  from ``seed``; ``"lu"``: a learned invertible linear map
  ``tfb.ScaleMatvecLU`` that starts as the reversal, see
  :mod:`tfp_realnvp.permutations`).  Odd event sizes work: with reversal, the
  coordinate kept in one coupling is transformed in the next.

  ``coupling`` picks the coupling transform (:mod:`tfp_realnvp.couplings`):
  ``"affine"`` (RealNVP), ``"additive"`` (NICE, volume-preserving) or
  ``"spline"`` (rational-quadratic spline on ``[-spline_bound, spline_bound]``
  with ``spline_bins`` bins, identity outside).  With ``actnorm=True`` an
  :class:`~tfp_realnvp.actnorm.ActNorm` named ``actnorm_i`` sits between
  coupling ``i`` and the next permutation (in ``forward``), i.e. it normalizes
  the input of coupling ``i`` in the normalizing direction; see
  :func:`~tfp_realnvp.actnorm.initialize_actnorm`.  Every option is the
  identity at initialization.

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
    num_couplings: number of couplings.
    hidden_units: hidden widths of each coupling's network.
    activation: hidden activation of each network.
    permutation: ``"reverse"``, ``"random"`` or ``"lu"``.
    log_scale_bound: soft bound on each affine coupling's log-scale (see
      :class:`ShiftAndLogScale`), ``None`` for unbounded.
    conditional_size: size of a conditioning vector fed to every network
      (pass it as ``conditional_input=`` to the couplings), 0 for none.
    coupling: ``"affine"``, ``"additive"`` or ``"spline"``.
    spline_bins: bins of each spline (``coupling="spline"``).
    spline_bound: half-width of the interval each spline acts on.
    actnorm: insert an activation normalization after each coupling but the
      last.
    seed: seed of the random permutations.
    dtype: dtype of the networks.
    validate_args: turn on TFP's argument checks in every bijector.
    name: name of the chain.

  Returns:
    A ``tfb.Chain`` whose couplings are named ``coupling_0`` (applied first in
    ``forward``) to ``coupling_{num_couplings - 1}``, with ``permute_i``
    (and ``actnorm_i``) after ``coupling_i``.
  """
  event_size = _check_positive_int("event_size", event_size, minimum=2)
  num_couplings = _check_positive_int("num_couplings", num_couplings)
  if permutation not in PERMUTATIONS:
    raise ValueError(f"permutation must be one of {PERMUTATIONS}, got {permutation!r}")
  if coupling not in COUPLINGS:
    raise ValueError(f"coupling must be one of {COUPLINGS}, got {coupling!r}")

  forward_order = []  # bijectors in the order forward() applies them
  for i, coupling_name in enumerate(coupling_names(num_couplings)):
    if i > 0:
      if actnorm:
        forward_order.append(ActNorm(event_size, dtype=dtype, validate_args=validate_args,
                                     name=f"actnorm_{i - 1}"))
      forward_order.append(make_permutation(
          permutation, event_size, i, seed, dtype=dtype, validate_args=validate_args,
          name=f"permute_{i - 1}"))
    forward_order.append(make_coupling(
        coupling, event_size, hidden_units, activation,
        log_scale_bound=log_scale_bound, spline_bins=spline_bins,
        spline_bound=spline_bound, conditional_size=conditional_size,
        dtype=dtype, validate_args=validate_args, name=coupling_name))
  # tfb.Chain applies its list right to left in forward().
  return tfb.Chain(forward_order[::-1], validate_args=validate_args, name=name)
