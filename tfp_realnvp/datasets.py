"""Datasets with known generating processes, and their true densities.

Two moons
---------
``sklearn.datasets.make_moons`` places half of the points on the outer arc
``c_0(t) = (cos t, sin t)`` and half on the inner arc
``c_1(t) = (1 - cos t, 1/2 - sin t)``, ``t`` evenly spread over ``[0, pi]``, and
adds isotropic Gaussian noise of standard deviation ``noise``.  Its density is
therefore the continuous mixture

    p(x) = 1/2 sum_k (1/pi) int_0^pi N(x; c_k(t), noise^2 I) dt,

which :func:`moons_log_prob` evaluates by midpoint quadrature over ``t`` with a
log-sum-exp, in float64.  The mean of ``-log p`` over a test set is the oracle
NLL: no model can have a lower expected test NLL.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
from scipy.special import logsumexp
from sklearn.datasets import make_moons

__all__ = ["moons", "moons_log_prob", "moons_arc_log_prob", "oracle_nll",
           "Dataset", "DATASETS", "get_dataset"]

# Quadrature nodes per arc. The arcs have length pi; 2048 nodes space them
# 1.5e-3 apart, under a sixth of the smallest noise the density accepts; the
# midpoint rule on a Gaussian that finely sampled is exact to float64 precision.
_QUADRATURE_NODES = 2048
_MIN_NOISE = 0.01


def _check_noise(noise: float) -> float:
    if not isinstance(noise, (int, float, np.floating, np.integer)) or isinstance(noise, bool):
        raise TypeError(f"noise must be a number, got {type(noise).__name__}")
    noise = float(noise)
    if not np.isfinite(noise) or noise < _MIN_NOISE:
        raise ValueError(
            f"noise must be a finite number >= {_MIN_NOISE} for the moons density "
            f"to be defined and computable by quadrature, got {noise}")
    return noise


def moons(n: int, noise: float = 0.05, seed: int | None = 0,
          return_labels: bool = False, dtype=np.float32):
    """Samples ``n`` points of scikit-learn's two moons, in raw units.

    Args:
      n: number of points (at least 2).
      noise: standard deviation of the isotropic Gaussian noise.
      seed: seed of the generator (``random_state`` of ``make_moons``).
      return_labels: also return the arc of each point (0 outer, 1 inner).
      dtype: floating dtype of the returned points.

    Returns:
      An array of shape ``(n, 2)``, and with ``return_labels`` also an
      integer array of shape ``(n,)``.
    """
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 2:
        raise ValueError(f"n must be an integer >= 2, got {n!r}")
    noise = _check_noise(noise)
    x, y = make_moons(n_samples=int(n), noise=noise, random_state=seed)
    x = x.astype(dtype)
    return (x, y.astype(np.int64)) if return_labels else x


def _arc_centres(arc: int, nodes: int) -> np.ndarray:
    t = (np.arange(nodes) + 0.5) * (np.pi / nodes)  # midpoints of [0, pi]
    if arc == 0:
        return np.stack([np.cos(t), np.sin(t)], axis=-1)
    return np.stack([1.0 - np.cos(t), 0.5 - np.sin(t)], axis=-1)


def _as_points(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 0 or x.shape[-1] != 2:
        raise ValueError(
            f"moons points must have a last dimension of size 2, got shape {x.shape}")
    return x


def moons_arc_log_prob(x, arc: int, noise: float = 0.05,
                       nodes: int = _QUADRATURE_NODES,
                       chunk: int = 2048) -> np.ndarray:
    """Log-density of one arc of the moons (0: outer, 1: inner), in float64.

    This is the class-conditional density ``p(x | label = arc)``.
    Accepts any batch shape ``(..., 2)``; returns shape ``(...)``.
    """
    if arc not in (0, 1):
        raise ValueError(f"arc must be 0 (outer) or 1 (inner), got {arc!r}")
    noise = _check_noise(noise)
    x = _as_points(x)
    flat = x.reshape(-1, 2)
    centres = _arc_centres(arc, nodes)
    log_norm = -np.log(2.0 * np.pi * noise**2) - np.log(nodes)
    out = np.empty(flat.shape[0])
    for start in range(0, flat.shape[0], chunk):
        block = flat[start:start + chunk]
        sq = ((block[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
        out[start:start + chunk] = logsumexp(-0.5 * sq / noise**2, axis=1) + log_norm
    return out.reshape(x.shape[:-1])


def moons_log_prob(x, noise: float = 0.05, nodes: int = _QUADRATURE_NODES) -> np.ndarray:
    """True log-density of the two-moons generator at ``x``, in float64.

    The equal-weight mixture of the two arcs of :func:`moons_arc_log_prob`.
    Accepts any batch shape ``(..., 2)``; returns shape ``(...)``.
    """
    outer = moons_arc_log_prob(x, 0, noise, nodes)
    inner = moons_arc_log_prob(x, 1, noise, nodes)
    return np.logaddexp(outer, inner) - np.log(2.0)


def oracle_nll(x, noise: float = 0.05) -> float:
    """Mean negative log-likelihood of ``x`` under the true moons density."""
    return float(-np.mean(moons_log_prob(x, noise)))


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A named data generator, with its true density where one is known.

  Attributes:
    name: the name ``tfp-realnvp train --dataset`` takes.
    event_size: dimensions of a point.
    sample: ``sample(n, noise, seed) -> array [n, event_size]``.
    log_prob: ``log_prob(x, noise) -> array [n]``, the true log-density in
      nats, or ``None`` when unknown.
    default_noise: noise level used when none is given.
    description: one line for ``--help``.
  """

  name: str
  event_size: int
  sample: Callable[..., np.ndarray]
  log_prob: Callable[..., np.ndarray] | None
  default_noise: float
  description: str


DATASETS: dict[str, Dataset] = {}


def _register(dataset: Dataset) -> Dataset:
  DATASETS[dataset.name] = dataset
  return dataset


_register(Dataset(
    name="moons", event_size=2,
    sample=lambda n, noise, seed: moons(n, noise, seed),
    log_prob=moons_log_prob, default_noise=0.05,
    description="scikit-learn make_moons, true density known"))


def get_dataset(name: str) -> Dataset:
  """The registered dataset called ``name``."""
  try:
    return DATASETS[name]
  except KeyError:
    raise ValueError(
        f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}") from None
