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

More datasets
-------------
* ``circles``: ``make_circles`` (radii 1 and ``factor``, equal weight), true
  density in closed form (a circle convolved with a Gaussian is a Rice-type
  density with a Bessel function), :func:`circles_log_prob`.
* ``checkerboard``: uniform on 8 unit squares of ``[-2, 2]^2`` plus Gaussian
  noise, true density in closed form with normal CDFs,
  :func:`checkerboard_log_prob`.
* ``s_curve``: ``make_s_curve`` (3-D), true density by quadrature along the
  curve times a closed-form factor for the uniform height,
  :func:`s_curve_log_prob`.
* ``gaussian16``: a correlated Gaussian in 16-D with a covariance fixed by a
  seed, :func:`gaussian16_log_prob`.
* ``digits``: scikit-learn's bundled 8x8 digits (64-D, levels 0..16),
  uniformly dequantized and scaled to ``[0, 1]``, with a fixed train/test
  split; no true density, results in bits per dimension
  (:func:`digits_bits_per_dim`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable

import numpy as np
from scipy.special import ive, log_ndtr, logsumexp
from sklearn.datasets import load_digits, make_circles, make_moons, make_s_curve

__all__ = ["moons", "moons_log_prob", "moons_arc_log_prob", "oracle_nll",
           "circles", "circles_log_prob", "ring_log_prob",
           "checkerboard", "checkerboard_log_prob",
           "s_curve", "s_curve_log_prob",
           "gaussian16", "gaussian16_params", "gaussian16_log_prob",
           "digits", "digits_bits_per_dim",
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


# -- shared helpers ----------------------------------------------------------

def _check_n(n) -> int:
  if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 2:
    raise ValueError(f"n must be an integer >= 2, got {n!r}")
  return int(n)


SPLITS = ("train", "valid", "test")


def _check_split(split: str) -> str:
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  return split


def _check_noise_at_least(noise, minimum: float, what: str) -> float:
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


def _log_normal_mass(a, b) -> np.ndarray:
  """``log(Phi(b) - Phi(a))`` for ``a <= b``, accurate in both tails."""
  a, b = np.broadcast_arrays(np.asarray(a, np.float64), np.asarray(b, np.float64))
  upper = a > 0  # both in the upper tail: use Phi(-a) - Phi(-b)
  lo = np.where(upper, -b, a)
  hi = np.where(upper, -a, b)
  log_hi, log_lo = log_ndtr(hi), log_ndtr(lo)
  with np.errstate(divide="ignore"):
    return log_hi + np.log1p(-np.exp(log_lo - log_hi))


# -- circles -------------------------------------------------------------------

def circles(n: int, noise: float = 0.05, seed: int | None = 0, factor: float = 0.5,
            return_labels: bool = False, dtype=np.float32):
  """Samples ``n`` points of scikit-learn's ``make_circles``, in raw units.

  Half of the points lie on the unit circle and half on the circle of radius
  ``factor``, plus isotropic Gaussian noise of standard deviation ``noise``.
  With ``return_labels`` also returns the circle of each point (0 outer).
  """
  n = _check_n(n)
  noise = _check_noise_at_least(noise, 0.0, "circles")
  if not 0.0 < factor < 1.0:
    raise ValueError(f"factor must be in (0, 1), got {factor!r}")
  x, y = make_circles(n_samples=n, noise=noise, factor=factor, random_state=seed)
  x = x.astype(dtype)
  return (x, y.astype(np.int64)) if return_labels else x


def ring_log_prob(x, radius: float, noise: float) -> np.ndarray:
  """Log-density of a uniform point on a circle of ``radius`` plus noise.

  In closed form: ``p(x) = exp(-(r^2 + R^2) / 2s^2) I0(r R / s^2) / (2 pi s^2)``
  with ``r = |x|``, evaluated with the scaled Bessel function ``ive`` in
  float64.  Accepts any batch shape ``(..., 2)``.
  """
  noise = _check_noise_at_least(noise, 1e-6, "the circles density")
  x = _points(x, 2, "circles")
  r = np.sqrt(np.sum(x**2, axis=-1))
  var = noise**2
  return (-np.log(2.0 * np.pi * var) - (r - radius) ** 2 / (2.0 * var)
          + np.log(ive(0, r * radius / var)))


def circles_log_prob(x, noise: float = 0.05, factor: float = 0.5) -> np.ndarray:
  """True log-density of ``make_circles``: equal mixture of two noisy rings."""
  return np.logaddexp(ring_log_prob(x, 1.0, noise), ring_log_prob(x, factor, noise)) - np.log(2.0)


# -- checkerboard --------------------------------------------------------------

# Lower-left corners of the 8 unit squares of [-2, 2]^2 with an even i + j.
_CHECKER_CELLS = np.array([(i, j) for i in range(-2, 2) for j in range(-2, 2)
                           if (i + j) % 2 == 0], dtype=np.float64)


def checkerboard(n: int, noise: float = 0.05, seed: int | None = 0, dtype=np.float32):
  """Samples ``n`` points uniform on the black squares of a 4x4 checkerboard.

  The board covers ``[-2, 2]^2`` with unit squares; a point picks one of
  the 8 black squares uniformly, a uniform position in it, and adds
  isotropic Gaussian noise of standard deviation ``noise`` (0 allowed).
  """
  n = _check_n(n)
  noise = _check_noise_at_least(noise, 0.0, "checkerboard")
  rng = np.random.default_rng(seed)
  cells = _CHECKER_CELLS[rng.integers(len(_CHECKER_CELLS), size=n)]
  x = cells + rng.uniform(size=(n, 2))
  if noise > 0:
    x = x + noise * rng.standard_normal(size=(n, 2))
  return x.astype(dtype)


def checkerboard_log_prob(x, noise: float = 0.05) -> np.ndarray:
  """True log-density of :func:`checkerboard`, in closed form, float64.

  ``p(x) = 1/8 sum_cells prod_d [Phi((x_d - lo_d)/s) - Phi((x_d - lo_d - 1)/s)]``
  (a uniform square convolved with a Gaussian); with ``noise = 0`` it is
  ``1/8`` on the black squares and 0 (log: ``-inf``) elsewhere.
  """
  noise = _check_noise_at_least(noise, 0.0, "the checkerboard density")
  x = _points(x, 2, "checkerboard")
  lo = _CHECKER_CELLS  # [8, 2]
  rel = x[..., None, :] - lo  # [..., 8, 2]
  if noise == 0.0:
    inside = np.any(np.all((rel >= 0.0) & (rel <= 1.0), axis=-1), axis=-1)
    with np.errstate(divide="ignore"):
      return np.where(inside, -np.log(8.0), -np.inf)
  per_dim = _log_normal_mass((rel - 1.0) / noise, rel / noise)
  return logsumexp(per_dim.sum(-1), axis=-1) - np.log(8.0)


# -- S curve -------------------------------------------------------------------

_S_CURVE_NODES = 4096  # 3 pi / 4096 = 2.3e-3 apart along a unit-speed curve
_S_CURVE_MIN_NOISE = 0.02


def s_curve(n: int, noise: float = 0.1, seed: int | None = 0, dtype=np.float32):
  """Samples ``n`` points of scikit-learn's 3-D ``make_s_curve``.

  ``t ~ U(-3 pi/2, 3 pi/2)``, ``h ~ U(0, 2)``, the point
  ``(sin t, h, sign(t) (cos t - 1))`` plus isotropic Gaussian noise.
  """
  n = _check_n(n)
  noise = _check_noise_at_least(noise, 0.0, "s_curve")
  x, _ = make_s_curve(n_samples=n, noise=noise, random_state=seed)
  return x.astype(dtype)


def _s_curve_centres(nodes: int) -> np.ndarray:
  t = -1.5 * np.pi + (np.arange(nodes) + 0.5) * (3.0 * np.pi / nodes)
  return np.stack([np.sin(t), np.sign(t) * (np.cos(t) - 1.0)], axis=-1)


def s_curve_log_prob(x, noise: float = 0.1, nodes: int = _S_CURVE_NODES,
                     chunk: int = 2048) -> np.ndarray:
  """True log-density of :func:`s_curve`, in float64.

  The height is independent of ``t``, so the density factorizes:
  ``p(x) = q(x_1) r(x_0, x_2)`` with ``q`` a uniform on ``[0, 2]`` convolved
  with the noise (closed form) and ``r`` the noisy S-shaped planar curve,
  ``(1 / 3 pi) int N((x_0, x_2); c(t), s^2 I) dt``, by midpoint quadrature
  (the curve has unit speed, so ``t`` is arc length).
  """
  noise = _check_noise_at_least(noise, _S_CURVE_MIN_NOISE, "the s_curve density by quadrature")
  x = _points(x, 3, "s_curve")
  flat = x.reshape(-1, 3)
  log_height = _log_normal_mass((flat[:, 1] - 2.0) / noise, flat[:, 1] / noise) - np.log(2.0)
  centres = _s_curve_centres(nodes)
  planar = flat[:, [0, 2]]
  log_norm = -np.log(2.0 * np.pi * noise**2) - np.log(nodes)
  log_curve = np.empty(flat.shape[0])
  for start in range(0, flat.shape[0], chunk):
    block = planar[start:start + chunk]
    sq = ((block[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
    log_curve[start:start + chunk] = logsumexp(-0.5 * sq / noise**2, axis=1) + log_norm
  return (log_height + log_curve).reshape(x.shape[:-1])


# -- correlated Gaussian in 16-D ---------------------------------------------

_GAUSSIAN16_SEED = 16
_GAUSSIAN16_SIZE = 16


@functools.lru_cache(maxsize=None)
def _gaussian16_params_cached():
  rng = np.random.default_rng(_GAUSSIAN16_SEED)
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
  noise = _check_noise_at_least(noise, 0.0, "gaussian16")
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
  """True log-density of :func:`gaussian16`, in float64; any batch shape."""
  x = _points(x, _GAUSSIAN16_SIZE, "gaussian16")
  mean, cov = gaussian16_params(noise)
  chol = np.linalg.cholesky(cov)
  flat = (x - mean).reshape(-1, _GAUSSIAN16_SIZE)
  white = np.linalg.solve(chol, flat.T).T
  log_det = 2.0 * np.sum(np.log(np.diag(chol)))
  out = -0.5 * (np.sum(white**2, axis=-1) + log_det + _GAUSSIAN16_SIZE * np.log(2.0 * np.pi))
  return out.reshape(x.shape[:-1])


# -- digits --------------------------------------------------------------------

_DIGITS_LEVELS = 17  # pixel values 0..16
_DIGITS_SIZE = 64
_DIGITS_TEST_FRACTION = 0.2
_DIGITS_VALID_FRACTION = 0.1
_DIGITS_SPLIT_SEED = 0


@functools.lru_cache(maxsize=None)
def _digits_splits():
  values = load_digits().data.astype(np.int64)  # bundled with scikit-learn
  order = np.random.default_rng(_DIGITS_SPLIT_SEED).permutation(values.shape[0])
  n_test = int(round(_DIGITS_TEST_FRACTION * values.shape[0]))
  n_valid = int(round(_DIGITS_VALID_FRACTION * values.shape[0]))
  splits = {"test": values[order[:n_test]],
            "valid": values[order[n_test:n_test + n_valid]],
            "train": values[order[n_test + n_valid:]]}
  for array in splits.values():
    array.setflags(write=False)
  return splits


def digits(n: int, noise: float = 0.0, seed: int | None = 0, split: str = "train",
           dtype=np.float32):
  """Dequantized 8x8 digits in ``[0, 1]^64`` from a fixed split.

  scikit-learn's bundled ``load_digits`` (1797 images, levels 0..16) is split
  once (seeded) into 1257 training, 180 validation (``split="valid"``) and
  360 test images.  ``n`` images of
  ``split`` are taken in a random order (without replacement while ``n``
  does not exceed the split; beyond, every image is used about equally
  often) and dequantized: ``(v + u) / 17`` with ``u ~ U[0, 1)^64`` fresh for
  each draw.  ``noise`` is ignored.
  """
  del noise
  n = _check_n(n)
  pool = _digits_splits()[_check_split(split)]
  rng = np.random.default_rng(seed)
  m = pool.shape[0]
  index = np.concatenate([rng.permutation(m) for _ in range(-(-n // m))])[:n]
  u = rng.uniform(size=(n, _DIGITS_SIZE))
  return ((pool[index] + u) / _DIGITS_LEVELS).astype(dtype)


def digits_bits_per_dim(nll: float) -> float:
  """Bits per dimension of the discrete digits from a dequantized NLL.

  ``nll`` is a mean negative log-likelihood in nats of points of
  :func:`digits` (in ``[0, 1]^64``).  Undoing the ``1/17`` scaling and
  converting to bits gives ``(nll + 64 log 17) / (64 log 2)``, an upper
  bound on the discrete model's bits per dimension (a uniform model has
  ``log2(17) = 4.09``).
  """
  return float((nll + _DIGITS_SIZE * math.log(_DIGITS_LEVELS)) / (_DIGITS_SIZE * math.log(2.0)))


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A named data generator, with its true density where one is known.

  Attributes:
    name: the name ``tfp-realnvp train --dataset`` takes.
    event_size: dimensions of a point.
    sample: ``sample(n, noise, seed, split="train") -> array [n, event_size]``.
      ``split`` (``"train"``, ``"valid"`` or ``"test"``) matters only for
      ``finite`` datasets, which draw from a fixed split; generators ignore it
      (different seeds give independent draws).
    log_prob: ``log_prob(x, noise) -> array [n]``, the true log-density in
      nats, or ``None`` when unknown.
    default_noise: noise level used when none is given (ignored by datasets
      without a noise parameter: ``gaussian16`` treats it as extra isotropic
      noise, ``digits`` ignores it).
    description: one line for ``--help``.
    finite: whether samples come from a fixed set of points (use
      ``split="valid"``/``"test"``, or :meth:`train_test`, for held-out data).
    bits_per_dim: for quantized data, maps a mean NLL in nats (of the
      dequantized points, in the units ``sample`` returns) to bits per
      dimension of the discrete data; ``None`` otherwise.
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


DATASETS: dict[str, Dataset] = {}


def _register(dataset: Dataset) -> Dataset:
  DATASETS[dataset.name] = dataset
  return dataset


_register(Dataset(
    name="moons", event_size=2,
    sample=lambda n, noise, seed, split="train": moons(n, noise, seed),
    log_prob=moons_log_prob, default_noise=0.05,
    description="scikit-learn make_moons, true density known"))


_register(Dataset(
    name="circles", event_size=2,
    sample=lambda n, noise, seed, split="train": circles(n, noise, seed),
    log_prob=circles_log_prob, default_noise=0.05,
    description="scikit-learn make_circles (factor 0.5), true density known"))

_register(Dataset(
    name="checkerboard", event_size=2,
    sample=lambda n, noise, seed, split="train": checkerboard(n, noise, seed),
    log_prob=checkerboard_log_prob, default_noise=0.05,
    description="uniform on 8 squares of a 4x4 board plus noise, true density known"))

_register(Dataset(
    name="s_curve", event_size=3,
    sample=lambda n, noise, seed, split="train": s_curve(n, noise, seed),
    log_prob=s_curve_log_prob, default_noise=0.1,
    description="scikit-learn make_s_curve (3-D), true density known"))

_register(Dataset(
    name="gaussian16", event_size=16,
    sample=lambda n, noise, seed, split="train": gaussian16(n, noise, seed),
    log_prob=gaussian16_log_prob, default_noise=0.0,
    description="correlated 16-D Gaussian (fixed covariance), true density known"))

_register(Dataset(
    name="digits", event_size=64,
    sample=lambda n, noise, seed, split="train": digits(n, noise, seed, split),
    log_prob=None, default_noise=0.0,
    description="scikit-learn 8x8 digits (64-D), dequantized, reported in bits/dim",
    finite=True, bits_per_dim=digits_bits_per_dim))


def get_dataset(name: str) -> Dataset:
  """The registered dataset called ``name``."""
  try:
    return DATASETS[name]
  except KeyError:
    raise ValueError(
        f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}") from None
