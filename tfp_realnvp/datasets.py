"""Datasets with known generating processes, and their true densities.

Samplers return raw units; each ``*_log_prob`` is the true log-density in float64
for any batch shape ``(..., event_size)``, so its mean of ``-log p`` over a test set
is the oracle NLL, which no model can beat in expectation.  ``digits`` has no true
density; its results are in bits per dimension.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable

import numpy as np
from scipy.special import ive, log_ndtr, logsumexp
from sklearn.datasets import load_digits, make_circles, make_moons, make_s_curve

__all__ = ["moons", "moons_log_prob", "moons_arc_log_prob", "oracle_nll", "circles",
           "circles_log_prob", "ring_log_prob", "checkerboard", "checkerboard_log_prob", "s_curve",
           "s_curve_log_prob", "gaussian16", "gaussian16_params", "gaussian16_log_prob", "digits",
           "digits_bits_per_dim", "Dataset", "DATASETS", "get_dataset"]

SPLITS = ("train", "valid", "test")
# Quadrature nodes per arc. The arcs have length pi; 2048 nodes space them
# 1.5e-3 apart, under a sixth of the smallest noise the density accepts; the
# midpoint rule on a Gaussian that finely sampled is exact to float64 precision.
_QUADRATURE_NODES = 2048
_MIN_NOISE = 0.01
_MOONS_NOISE = "the moons density to be defined and computable by quadrature"
_S_CURVE_NODES = 4096  # 3 pi / 4096 = 2.3e-3 apart along a unit-speed curve
_S_CURVE_MIN_NOISE = 0.02


def _check_n(n) -> int:
  if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 2:
    raise ValueError(f"n must be an integer >= 2, got {n!r}")
  return int(n)


def _check_noise(noise, minimum: float, what: str) -> float:
  if not isinstance(noise, (int, float, np.floating, np.integer)) or isinstance(noise, bool):
    raise TypeError(f"noise must be a number, got {type(noise).__name__}")
  noise = float(noise)
  if not np.isfinite(noise) or noise < minimum:
    raise ValueError(f"noise must be a finite number >= {minimum} for {what}, got {noise}")
  return noise


def _points(x, event_size: int, what: str) -> np.ndarray:
  x = np.asarray(x, dtype=np.float64)
  if x.ndim == 0 or x.shape[-1] != event_size:
    raise ValueError(
        f"{what} points must have a last dimension of size {event_size}, got shape {x.shape}")
  return x


def _curve_log_prob(points, centres, noise: float, chunk: int) -> np.ndarray:
  """``log mean_i N(x; centres_i, noise^2 I)`` of 2-D ``points``, ``chunk`` points at a time."""
  log_norm = -np.log(2.0 * np.pi * noise**2) - np.log(len(centres))
  out = np.empty(points.shape[0])
  for start in range(0, points.shape[0], chunk):
    block = points[start:start + chunk]
    sq = ((block[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
    out[start:start + chunk] = logsumexp(-0.5 * sq / noise**2, axis=1) + log_norm
  return out


def _log_normal_mass(a, b) -> np.ndarray:
  """``log(Phi(b) - Phi(a))`` for ``a <= b``, accurate in both tails."""
  a, b = np.broadcast_arrays(np.asarray(a, np.float64), np.asarray(b, np.float64))
  upper = a > 0  # both in the upper tail: use Phi(-a) - Phi(-b)
  lo = np.where(upper, -b, a)
  hi = np.where(upper, -a, b)
  log_hi, log_lo = log_ndtr(hi), log_ndtr(lo)
  with np.errstate(divide="ignore"):
    return log_hi + np.log1p(-np.exp(log_lo - log_hi))


def moons(n: int, noise: float = 0.05, seed: int | None = 0,
          return_labels: bool = False, dtype=np.float32):
  """Samples ``n >= 2`` points ``[n, 2]`` of scikit-learn's two moons (``make_moons``).

  ``noise`` (at least 0.01) is the standard deviation of the isotropic Gaussian
  noise and ``seed`` the ``random_state``; ``return_labels`` also returns the arc
  of each point (0 outer, 1 inner) as integers ``[n]``.
  """
  n = _check_n(n)
  noise = _check_noise(noise, _MIN_NOISE, _MOONS_NOISE)
  x, y = make_moons(n_samples=n, noise=noise, random_state=seed)
  return (x.astype(dtype), y.astype(np.int64)) if return_labels else x.astype(dtype)


def moons_arc_log_prob(x, arc: int, noise: float = 0.05,
                       nodes: int = _QUADRATURE_NODES,
                       chunk: int = 2048) -> np.ndarray:
  """Log-density ``p(x | label = arc)`` of one arc of the moons (0: outer, 1: inner).

  With the arcs ``c_0(t) = (cos t, sin t)`` and ``c_1(t) = (1 - cos t, 1/2 - sin t)``,
  ``p(x | k) = (1/pi) int_0^pi N(x; c_k(t), noise^2 I) dt``, by midpoint quadrature.
  """
  if arc not in (0, 1):
    raise ValueError(f"arc must be 0 (outer) or 1 (inner), got {arc!r}")
  noise = _check_noise(noise, _MIN_NOISE, _MOONS_NOISE)
  x = _points(x, 2, "moons")
  t = (np.arange(nodes) + 0.5) * (np.pi / nodes)  # midpoints of [0, pi]
  centres = np.stack([np.cos(t), np.sin(t)] if arc == 0 else [1.0 - np.cos(t), 0.5 - np.sin(t)],
                     axis=-1)
  return _curve_log_prob(x.reshape(-1, 2), centres, noise, chunk).reshape(x.shape[:-1])


def moons_log_prob(x, noise: float = 0.05, nodes: int = _QUADRATURE_NODES) -> np.ndarray:
  """True log-density of :func:`moons`: the equal mixture of the two arcs."""
  outer = moons_arc_log_prob(x, 0, noise, nodes)
  inner = moons_arc_log_prob(x, 1, noise, nodes)
  return np.logaddexp(outer, inner) - np.log(2.0)


def oracle_nll(x, noise: float = 0.05) -> float:
  """Mean negative log-likelihood of ``x`` under the true moons density."""
  return float(-np.mean(moons_log_prob(x, noise)))


def circles(n: int, noise: float = 0.05, seed: int | None = 0, factor: float = 0.5,
            return_labels: bool = False, dtype=np.float32):
  """Samples scikit-learn's ``make_circles``: radii 1 and ``factor``, plus Gaussian noise.

  ``return_labels`` also returns the circle of each point (0 outer).
  """
  n = _check_n(n)
  noise = _check_noise(noise, 0.0, "circles")
  if not 0.0 < factor < 1.0:
    raise ValueError(f"factor must be in (0, 1), got {factor!r}")
  x, y = make_circles(n_samples=n, noise=noise, factor=factor, random_state=seed)
  return (x.astype(dtype), y.astype(np.int64)) if return_labels else x.astype(dtype)


def ring_log_prob(x, radius: float, noise: float) -> np.ndarray:
  """Log-density of a uniform point on a circle of ``radius`` plus noise.

  In closed form: ``p(x) = exp(-(r^2 + R^2) / 2s^2) I0(r R / s^2) / (2 pi s^2)``
  with ``r = |x|``, evaluated with the scaled Bessel function ``ive``.
  """
  noise = _check_noise(noise, 1e-6, "the circles density")
  x = _points(x, 2, "circles")
  r = np.sqrt(np.sum(x**2, axis=-1))
  var = noise**2
  return (-np.log(2.0 * np.pi * var) - (r - radius) ** 2 / (2.0 * var)
          + np.log(ive(0, r * radius / var)))


def circles_log_prob(x, noise: float = 0.05, factor: float = 0.5) -> np.ndarray:
  """True log-density of :func:`circles`: equal mixture of two noisy rings."""
  return np.logaddexp(ring_log_prob(x, 1.0, noise), ring_log_prob(x, factor, noise)) - np.log(2.0)


# Lower-left corners of the 8 unit squares of [-2, 2]^2 with an even i + j.
_CHECKER_CELLS = np.array([(i, j) for i in range(-2, 2) for j in range(-2, 2)
                           if (i + j) % 2 == 0], dtype=np.float64)


def checkerboard(n: int, noise: float = 0.05, seed: int | None = 0, dtype=np.float32):
  """Samples points uniform on the 8 black unit squares of ``[-2, 2]^2``, plus noise."""
  n = _check_n(n)
  noise = _check_noise(noise, 0.0, "checkerboard")
  rng = np.random.default_rng(seed)
  cells = _CHECKER_CELLS[rng.integers(len(_CHECKER_CELLS), size=n)]
  x = cells + rng.uniform(size=(n, 2))
  if noise > 0:
    x = x + noise * rng.standard_normal(size=(n, 2))
  return x.astype(dtype)


def checkerboard_log_prob(x, noise: float = 0.05) -> np.ndarray:
  """True log-density of :func:`checkerboard`, in closed form.

  ``p(x) = 1/8 sum_cells prod_d [Phi((x_d - lo_d)/s) - Phi((x_d - lo_d - 1)/s)]``
  (a uniform square convolved with a Gaussian); with ``noise = 0`` it is
  ``1/8`` on the black squares and 0 (log: ``-inf``) elsewhere.
  """
  noise = _check_noise(noise, 0.0, "the checkerboard density")
  x = _points(x, 2, "checkerboard")
  rel = x[..., None, :] - _CHECKER_CELLS  # [..., 8, 2]
  if noise == 0.0:
    inside = np.any(np.all((rel >= 0.0) & (rel <= 1.0), axis=-1), axis=-1)
    with np.errstate(divide="ignore"):
      return np.where(inside, -np.log(8.0), -np.inf)
  per_dim = _log_normal_mass((rel - 1.0) / noise, rel / noise)
  return logsumexp(per_dim.sum(-1), axis=-1) - np.log(8.0)


def s_curve(n: int, noise: float = 0.1, seed: int | None = 0, dtype=np.float32):
  """Samples scikit-learn's 3-D ``make_s_curve``.

  ``t ~ U(-3 pi/2, 3 pi/2)``, ``h ~ U(0, 2)``, the point
  ``(sin t, h, sign(t) (cos t - 1))`` plus isotropic Gaussian noise.
  """
  n = _check_n(n)
  noise = _check_noise(noise, 0.0, "s_curve")
  x, _ = make_s_curve(n_samples=n, noise=noise, random_state=seed)
  return x.astype(dtype)


def s_curve_log_prob(x, noise: float = 0.1, nodes: int = _S_CURVE_NODES,
                     chunk: int = 2048) -> np.ndarray:
  """True log-density of :func:`s_curve`: ``p(x) = q(x_1) r(x_0, x_2)``.

  ``q`` is the uniform on ``[0, 2]`` convolved with the noise (closed form), ``r``
  the noisy planar curve ``(1 / 3 pi) int N((x_0, x_2); c(t), s^2 I) dt`` by
  midpoint quadrature (the curve has unit speed, so ``t`` is arc length).
  """
  noise = _check_noise(noise, _S_CURVE_MIN_NOISE, "the s_curve density by quadrature")
  x = _points(x, 3, "s_curve")
  flat = x.reshape(-1, 3)
  log_height = _log_normal_mass((flat[:, 1] - 2.0) / noise, flat[:, 1] / noise) - np.log(2.0)
  t = -1.5 * np.pi + (np.arange(nodes) + 0.5) * (3.0 * np.pi / nodes)
  centres = np.stack([np.sin(t), np.sign(t) * (np.cos(t) - 1.0)], axis=-1)
  log_curve = _curve_log_prob(flat[:, [0, 2]], centres, noise, chunk)
  return (log_height + log_curve).reshape(x.shape[:-1])


_GAUSSIAN16_SIZE = 16


@functools.lru_cache(maxsize=None)
def _gaussian16_params_cached():
  rng = np.random.default_rng(16)  # the seed fixes the covariance
  mean = rng.normal(size=_GAUSSIAN16_SIZE)
  q, r = np.linalg.qr(rng.normal(size=(_GAUSSIAN16_SIZE, _GAUSSIAN16_SIZE)))
  q = q * np.sign(np.diag(r))  # a Haar-random rotation
  eigenvalues = np.exp(rng.uniform(np.log(0.05), np.log(5.0), size=_GAUSSIAN16_SIZE))
  cov = (q * eigenvalues) @ q.T
  cov = 0.5 * (cov + cov.T)
  mean.setflags(write=False)
  cov.setflags(write=False)
  return mean, cov


def gaussian16_params(noise: float = 0.0):
  """``(mean, covariance)`` of :func:`gaussian16`, float64 copies.

  The covariance is a random rotation of eigenvalues log-uniform in
  ``[0.05, 5]`` (fixed by a seed), plus ``noise^2 I``.
  """
  noise = _check_noise(noise, 0.0, "gaussian16")
  mean, cov = _gaussian16_params_cached()
  return mean.copy(), cov + noise**2 * np.eye(_GAUSSIAN16_SIZE)


def gaussian16(n: int, noise: float = 0.0, seed: int | None = 0, dtype=np.float32):
  """Samples ``n`` points of the fixed correlated 16-D Gaussian."""
  n = _check_n(n)
  mean, cov = gaussian16_params(noise)
  rng = np.random.default_rng(seed)
  z = rng.standard_normal(size=(n, _GAUSSIAN16_SIZE))
  return (mean + z @ np.linalg.cholesky(cov).T).astype(dtype)


def gaussian16_log_prob(x, noise: float = 0.0) -> np.ndarray:
  """True log-density of :func:`gaussian16`."""
  x = _points(x, _GAUSSIAN16_SIZE, "gaussian16")
  mean, cov = gaussian16_params(noise)
  chol = np.linalg.cholesky(cov)
  flat = (x - mean).reshape(-1, _GAUSSIAN16_SIZE)
  white = np.linalg.solve(chol, flat.T).T
  log_det = 2.0 * np.sum(np.log(np.diag(chol)))
  out = -0.5 * (np.sum(white**2, axis=-1) + log_det + _GAUSSIAN16_SIZE * np.log(2.0 * np.pi))
  return out.reshape(x.shape[:-1])


_DIGITS_LEVELS = 17  # pixel values 0..16
_DIGITS_SIZE = 64


@functools.lru_cache(maxsize=None)
def _digits_splits():
  values = load_digits().data.astype(np.int64)  # bundled with scikit-learn
  values = values[np.random.default_rng(0).permutation(values.shape[0])]
  n_test = int(round(0.2 * values.shape[0]))
  n_valid = int(round(0.1 * values.shape[0]))
  splits = dict(zip(("test", "valid", "train"), np.split(values, [n_test, n_test + n_valid])))
  for array in splits.values():
    array.setflags(write=False)
  return splits


def digits(n: int, noise: float = 0.0, seed: int | None = 0, split: str = "train",
           dtype=np.float32):
  """Dequantized 8x8 digits in ``[0, 1]^64`` from a fixed split; ``noise`` is ignored.

  scikit-learn's ``load_digits`` (1797 images, levels 0..16) is split once into
  1257 ``"train"``, 180 ``"valid"`` and 360 ``"test"`` images.  ``n`` images of
  ``split`` are drawn in a random order (all about equally often when ``n`` exceeds
  the split) and dequantized: ``(v + u) / 17`` with fresh ``u ~ U[0, 1)^64``.
  """
  del noise
  n = _check_n(n)
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  pool = _digits_splits()[split]
  rng = np.random.default_rng(seed)
  m = pool.shape[0]
  index = np.concatenate([rng.permutation(m) for _ in range(-(-n // m))])[:n]
  u = rng.uniform(size=(n, _DIGITS_SIZE))
  return ((pool[index] + u) / _DIGITS_LEVELS).astype(dtype)


def digits_bits_per_dim(nll: float) -> float:
  """Bits per dimension of the discrete digits from a mean NLL (nats) of :func:`digits`.

  ``(nll + 64 log 17) / (64 log 2)``, an upper bound on the discrete model's bits
  per dimension (a uniform model has ``log2(17) = 4.09``).
  """
  return float((nll + _DIGITS_SIZE * math.log(_DIGITS_LEVELS)) / (_DIGITS_SIZE * math.log(2.0)))


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A named data generator, with its true density where one is known.

  Attributes:
    name: the name ``tfp-realnvp train --dataset`` takes.
    event_size: dimensions of a point.
    sample: ``sample(n, noise, seed, split="train") -> array [n, event_size]``;
      ``split`` (one of :data:`SPLITS`) matters only for ``finite`` datasets.
    log_prob: ``log_prob(x, noise) -> array [n]``, the true log-density, or ``None``.
    default_noise: noise level used when none is given.
    description: one line for ``--help``.
    finite: whether samples come from a fixed set of points (held out by ``split``).
    bits_per_dim: for quantized data, mean NLL in nats -> bits per dimension.
  """

  name: str
  event_size: int
  sample: Callable[..., np.ndarray]
  log_prob: Callable[..., np.ndarray] | None
  default_noise: float
  description: str
  finite: bool = False
  bits_per_dim: Callable[[float], float] | None = None

  def train_test(self, n_train: int, n_test: int, noise: float | None = None,
                 seed: int = 0, test_seed: int | None = None):
    """Disjoint training and test sets: ``(x_train, x_test)``.

    Generators draw the test set with ``test_seed`` (default ``seed + 1000``);
    finite datasets draw it from their held-out split.
    """
    noise = self.default_noise if noise is None else noise
    test_seed = seed + 1000 if test_seed is None else test_seed
    return (self.sample(n_train, noise, seed, split="train"),
            self.sample(n_test, noise, test_seed, split="test"))


def _generator(sample):
  """``sample(n, noise, seed)`` as a :attr:`Dataset.sample`, which takes a split (ignored)."""
  return lambda n, noise, seed, split="train": sample(n, noise, seed)


DATASETS: dict[str, Dataset] = {dataset.name: dataset for dataset in [
    Dataset("moons", 2, _generator(moons), moons_log_prob, 0.05,
            "scikit-learn make_moons, true density known"),
    Dataset("circles", 2, _generator(circles), circles_log_prob, 0.05,
            "scikit-learn make_circles (factor 0.5), true density known"),
    Dataset("checkerboard", 2, _generator(checkerboard), checkerboard_log_prob, 0.05,
            "uniform on 8 squares of a 4x4 board plus noise, true density known"),
    Dataset("s_curve", 3, _generator(s_curve), s_curve_log_prob, 0.1,
            "scikit-learn make_s_curve (3-D), true density known"),
    Dataset("gaussian16", 16, _generator(gaussian16), gaussian16_log_prob, 0.0,
            "correlated 16-D Gaussian (fixed covariance), true density known"),
    Dataset("digits", 64, lambda n, noise, seed, split="train": digits(n, noise, seed, split),
            None, 0.0, "scikit-learn 8x8 digits (64-D), dequantized, reported in bits/dim",
            finite=True, bits_per_dim=digits_bits_per_dim),
]}


def get_dataset(name: str) -> Dataset:
  """The registered dataset called ``name``."""
  try:
    return DATASETS[name]
  except KeyError:
    raise ValueError(
        f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}") from None
