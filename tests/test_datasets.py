"""Tests for tfp_realnvp.datasets: samplers and true densities (two moons first, then the rest)."""

import math

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from tfp_realnvp import datasets


@pytest.mark.parametrize("noise", [0.05, 0.1])
def test_moons_density_integrates_to_one(noise):
  step = 0.02
  xs = np.arange(-1.6, 2.6, step) + step / 2
  ys = np.arange(-1.1, 1.6, step) + step / 2
  grid = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
  total = np.exp(datasets.moons_log_prob(grid, noise)).sum() * step * step
  assert abs(total - 1.0) < 0.01


def test_each_arc_integrates_to_one_and_mixture_is_their_mean():
  step = 0.02
  grid = np.stack(np.meshgrid(np.arange(-1.5, 2.5, step), np.arange(-1.0, 1.5, step)),
                  axis=-1).reshape(-1, 2)
  for arc in (0, 1):
    assert abs(np.exp(datasets.moons_arc_log_prob(grid, arc, 0.05)).sum() * step**2 - 1) < 0.01
  x = datasets.moons(50, seed=3)
  mix = 0.5 * (np.exp(datasets.moons_arc_log_prob(x, 0)) + np.exp(datasets.moons_arc_log_prob(x, 1)))
  np.testing.assert_allclose(np.exp(datasets.moons_log_prob(x)), mix, rtol=1e-10)


def test_density_against_brute_force_gaussian_mixture():
  # Independent computation: a plain sum of Gaussians centred on a fine arc grid.
  noise = 0.1
  t = np.linspace(0, np.pi, 20001)
  centres = np.concatenate([np.stack([np.cos(t), np.sin(t)], -1),
                            np.stack([1 - np.cos(t), 0.5 - np.sin(t)], -1)])
  x = np.array([[0.0, 1.0], [1.0, -0.5], [0.5, 0.25], [1.5, 1.0]])
  sq = ((x[:, None, :] - centres[None]) ** 2).sum(-1)
  brute = np.mean(np.exp(-0.5 * sq / noise**2) / (2 * np.pi * noise**2), axis=1)
  # Near the arcs they agree closely; in the far tail only the arc ends matter,
  # where the two quadratures weight the end points differently.
  np.testing.assert_allclose(datasets.moons_log_prob(x, noise), np.log(brute), atol=5e-3)


def test_oracle_is_the_entropy_and_beats_a_gaussian():
  x = datasets.moons(20000, noise=0.05, seed=1)
  oracle = datasets.oracle_nll(x, 0.05)
  assert 0.25 < oracle < 0.33  # about 0.29 nats in raw units
  cov = np.cov(x.T)
  gaussian_nll = 0.5 * np.log(np.linalg.det(2 * np.pi * np.e * cov))
  assert oracle < gaussian_nll - 1.0


def test_moons_sampler():
  a = datasets.moons(100, noise=0.1, seed=7)
  b = datasets.moons(100, noise=0.1, seed=7)
  assert a.shape == (100, 2) and a.dtype == np.float32
  np.testing.assert_array_equal(a, b)
  x, y = datasets.moons(101, seed=0, return_labels=True)
  assert set(np.unique(y)) == {0, 1} and x.shape == (101, 2)


def test_batch_shapes_and_errors():
  assert datasets.moons_log_prob(np.zeros([3, 4, 2])).shape == (3, 4)
  assert datasets.moons_log_prob(np.zeros(2)).shape == ()
  with pytest.raises(ValueError, match="last dimension of size 2"):
    datasets.moons_log_prob(np.zeros([3, 3]))
  with pytest.raises(ValueError, match="noise"):
    datasets.moons(10, noise=0.0)
  with pytest.raises(ValueError, match="n must be"):
    datasets.moons(0)
  with pytest.raises(ValueError, match="unknown dataset"):
    datasets.get_dataset("nope")


NEW = ["circles", "checkerboard", "s_curve", "gaussian16", "digits"]


def _grid(lo, hi, n):
  g = np.linspace(lo, hi, n)
  return g, g[1] - g[0]


def _grid_integral_2d(log_prob, lo=-3.5, hi=3.5, n=561):
  g, h = _grid(lo, hi, n)
  xx, yy = np.meshgrid(g, g, indexing="ij")
  return np.exp(log_prob(np.stack([xx, yy], -1))).sum() * h * h


@pytest.mark.parametrize("noise", [0.05, 0.2])
def test_circles_density_integrates_to_one(noise):
  assert _grid_integral_2d(lambda p: datasets.circles_log_prob(p, noise)) == pytest.approx(1.0, abs=1e-6)


def test_circles_closed_form_matches_quadrature():
  x = np.random.default_rng(0).uniform(-1.5, 1.5, size=(50, 2))
  for radius in (1.0, 0.5):
    theta = (np.arange(4096) + 0.5) * (2 * np.pi / 4096)
    centres = radius * np.stack([np.cos(theta), np.sin(theta)], -1)
    sq = ((x[:, None, :] - centres[None]) ** 2).sum(-1)
    quad = logsumexp(-0.5 * sq / 0.1**2, axis=1) - np.log(2 * np.pi * 0.1**2) - np.log(4096)
    np.testing.assert_allclose(datasets.ring_log_prob(x, radius, 0.1), quad, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("noise", [0.02, 0.05, 0.3])
def test_checkerboard_density_integrates_to_one(noise):
  total = _grid_integral_2d(lambda p: datasets.checkerboard_log_prob(p, noise), -4.0, 4.0, 801)
  assert total == pytest.approx(1.0, abs=1e-6)


def test_checkerboard_without_noise():
  lp = datasets.checkerboard_log_prob(np.array([[0.5, 0.5], [0.5, -0.5], [-0.5, 1.5], [3.0, 0.0]]), 0.0)
  np.testing.assert_allclose(lp[:3], [-np.log(8), -np.inf, -np.log(8)])
  assert lp[3] == -np.inf
  x = datasets.checkerboard(2000, noise=0.0, seed=1)
  assert np.all(np.isfinite(datasets.checkerboard_log_prob(x, 0.0)))


def test_checkerboard_density_far_in_the_tails_is_finite():
  lp = datasets.checkerboard_log_prob(np.array([[2.5, 1.5], [0.5, 2.6]]), 0.05)
  assert np.all(np.isfinite(lp)) and np.all(lp < -40)


def _histogram_matches(samples, log_prob, lo, hi, bins=12, fine=20, atol=4e-3):
  edges = np.linspace(lo, hi, bins + 1)
  hist, _, _ = np.histogram2d(samples[:, 0], samples[:, 1], bins=[edges, edges])
  empirical = hist / samples.shape[0]
  n = bins * fine
  h = (hi - lo) / n
  g = lo + (np.arange(n) + 0.5) * h  # midpoints of the fine cells
  xx, yy = np.meshgrid(g, g, indexing="ij")
  mass = np.exp(log_prob(np.stack([xx, yy], -1))) * h * h
  expected = mass.reshape(bins, fine, bins, fine).sum(axis=(1, 3))
  np.testing.assert_allclose(empirical, expected, atol=atol)


def test_circles_sampler_matches_density():
  _histogram_matches(datasets.circles(100_000, 0.1, seed=3), lambda p: datasets.circles_log_prob(p, 0.1),
                     -1.6, 1.6)


def test_checkerboard_sampler_matches_density():
  _histogram_matches(datasets.checkerboard(100_000, 0.1, seed=3),
                     lambda p: datasets.checkerboard_log_prob(p, 0.1), -2.6, 2.6)


def test_s_curve_density_factorizes_and_integrates_to_one():
  noise = 0.1
  # The height factor q(h) at h = 1 is 1/2 to double precision.
  gx, hx = _grid(-1.6, 1.6, 161)
  gz, hz = _grid(-2.6, 2.6, 261)
  xx, zz = np.meshgrid(gx, gz, indexing="ij")
  planar = np.stack([xx, np.ones_like(xx), zz], -1)
  p_at_height_1 = np.exp(datasets.s_curve_log_prob(planar, noise))
  assert p_at_height_1.sum() * hx * hz == pytest.approx(0.5, abs=1e-5)
  # Along the height at a fixed planar point the density integrates to r(x, z).
  gy, hy = _grid(-1.0, 3.0, 801)
  point = np.array([0.3, 0.0, -0.05])
  line = np.tile(point, (gy.size, 1))
  line[:, 1] = gy
  r = np.exp(datasets.s_curve_log_prob(np.array([0.3, 1.0, -0.05]), noise)) / 0.5
  assert np.exp(datasets.s_curve_log_prob(line, noise)).sum() * hy == pytest.approx(r, rel=1e-5)


def test_s_curve_samples_follow_the_planar_density():
  x = datasets.s_curve(100_000, 0.1, seed=4)
  planar = x[:, [0, 2]]
  planar_log_prob = lambda p: datasets.s_curve_log_prob(  # noqa: E731
      np.stack([p[..., 0], np.ones(p.shape[:-1]), p[..., 1]], -1), 0.1) + np.log(2.0)
  _histogram_matches(planar, planar_log_prob, -2.4, 2.4, bins=10, fine=16)
  assert np.all((x[:, 1] > -0.6) & (x[:, 1] < 2.6))


def test_s_curve_noise_must_allow_quadrature():
  with pytest.raises(ValueError, match="noise"):
    datasets.s_curve_log_prob(np.zeros([1, 3]), 0.001)


@pytest.mark.parametrize("noise", [0.0, 0.3])
def test_gaussian16_matches_scipy_and_samples(noise):
  mean, cov = datasets.gaussian16_params(noise)
  assert mean.shape == (16,) and cov.shape == (16, 16)
  np.testing.assert_allclose(cov, cov.T)
  off_diagonal = cov / np.sqrt(np.outer(np.diag(cov), np.diag(cov))) - np.eye(16)
  assert np.abs(off_diagonal).max() > 0.3  # genuinely correlated
  x = datasets.gaussian16(50_000, noise, seed=2).astype(np.float64)
  np.testing.assert_allclose(datasets.gaussian16_log_prob(x[:100], noise),
                             multivariate_normal(mean, cov).logpdf(x[:100]), rtol=1e-10)
  np.testing.assert_allclose(x.mean(0), mean, atol=0.05)
  np.testing.assert_allclose(np.cov(x.T), cov, atol=0.1)
  # The oracle NLL is the entropy of the Gaussian, up to sampling error.
  entropy = 0.5 * (16 * math.log(2 * math.pi * math.e) + np.linalg.slogdet(cov)[1])
  assert -datasets.gaussian16_log_prob(x, noise).mean() == pytest.approx(entropy, abs=0.05)


def test_gaussian16_is_fixed():
  a, b = datasets.gaussian16_params(), datasets.gaussian16_params()
  np.testing.assert_array_equal(a[1], b[1])
  b[1][0, 0] = 100.0  # callers get copies
  assert datasets.gaussian16_params()[1][0, 0] != 100.0


def test_digits_split_dequantization_and_bits_per_dim():
  train = datasets.digits(1257, seed=0, split="train", dtype=np.float64)
  valid = datasets.digits(180, seed=0, split="valid", dtype=np.float64)
  test = datasets.digits(360, seed=0, split="test", dtype=np.float64)
  assert train.shape == (1257, 64) and valid.shape == (180, 64) and test.shape == (360, 64)
  assert train.min() >= 0.0 and train.max() < 1.0
  levels_train = np.floor(train * 17).astype(int)
  levels_test = np.floor(test * 17).astype(int)
  assert levels_train.max() == 16
  # n = split size draws every image once; the two splits share no image index.
  from sklearn.datasets import load_digits
  images = load_digits().data.astype(int)
  index = {row.tobytes(): i for i, row in enumerate(images)}
  train_ids = {index[r.tobytes()] for r in levels_train}
  test_ids = {index[r.tobytes()] for r in levels_test}
  valid_ids = {index[r.tobytes()] for r in np.floor(valid * 17).astype(int)}
  duplicates = _duplicates(images, index)
  assert len(train_ids) >= 1250 and len(test_ids) >= 355
  assert not ((train_ids & test_ids) | (train_ids & valid_ids) | (valid_ids & test_ids)) - duplicates
  assert datasets.digits(3000, seed=1).shape == (3000, 64)  # beyond the split: reuse
  assert datasets.digits_bits_per_dim(0.0) == pytest.approx(math.log2(17))


def _duplicates(images, index):
  """Ids of images that occur more than once (identical pixels)."""
  seen = {}
  for i, row in enumerate(images):
    seen.setdefault(row.tobytes(), []).append(i)
  return {index[k] for k, ids in seen.items() if len(ids) > 1}


@pytest.mark.parametrize("name", NEW + ["moons"])
def test_registry_samplers(name):
  ds = datasets.get_dataset(name)
  a = ds.sample(300, ds.default_noise, 7)
  assert a.shape == (300, ds.event_size) and a.dtype == np.float32
  np.testing.assert_array_equal(a, ds.sample(300, ds.default_noise, 7))
  assert not np.array_equal(a, ds.sample(300, ds.default_noise, 8))
  x_train, x_test = ds.train_test(200, 100, seed=1)
  assert x_train.shape == (200, ds.event_size) and x_test.shape == (100, ds.event_size)
  if ds.log_prob is not None:
    lp = ds.log_prob(x_test, ds.default_noise)
    assert lp.shape == (100,) and np.all(np.isfinite(lp))
  assert (ds.bits_per_dim is not None) == (name == "digits") == ds.finite


def test_registry_names():
  assert set(NEW) <= set(datasets.DATASETS)
  assert {n: datasets.DATASETS[n].event_size for n in NEW} == {
      "circles": 2, "checkerboard": 2, "s_curve": 3, "gaussian16": 16, "digits": 64}
  with pytest.raises(ValueError, match="split"):
    datasets.digits(10, split="validation")
