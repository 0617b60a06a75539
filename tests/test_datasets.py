import numpy as np
import pytest

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
