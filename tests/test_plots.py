"""Tests for tfp_realnvp.plots."""

import types

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_realnvp import RealNVP, datasets, plots

tfd = tfp.distributions


def test_limits_are_percentiles_widened_by_the_margin():
  rng = np.random.default_rng(0)
  points = rng.uniform([-1.0, 10.0], [3.0, 12.0], size=(5000, 2))
  got = np.array(plots.limits(points, margin=0.5))
  low = np.percentile(points, 0.1, axis=0)
  high = np.percentile(points, 99.9, axis=0)
  np.testing.assert_allclose(got[:, 0], low - 0.5 * (high - low))
  np.testing.assert_allclose(got[:, 1], high + 0.5 * (high - low))
  with pytest.raises(ValueError, match=r"shape \[n, 2\]"):
    plots.limits(points[:, :1])


def test_density_image_is_an_rgba_image_of_the_density(tmp_path):
  normal = tfd.MultivariateNormalDiag(loc=[0.0, 0.0], scale_diag=[1.0, 1.0])
  image = plots.density_image(normal, np.random.default_rng(1).normal(size=(500, 2)))
  assert image.dtype == tf.uint8
  assert image.shape[0] == 1 and image.shape[-1] == 4 and image.shape[1] > 50
  rgb = image.numpy()[0, ..., :3].astype(int)
  assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 20  # a heat map, not a blank canvas
  with tf.summary.create_file_writer(str(tmp_path)).as_default(step=0):
    assert tf.summary.image("density", image)


def test_density_image_passes_the_condition_to_log_prob():
  flow = RealNVP(2, num_couplings=2, hidden_units=(8,), conditional_size=1, seed=0)
  image = plots.density_image(flow, datasets.moons(200), conditional_input=[1.0])
  assert image.shape[-1] == 4
  with pytest.raises(ValueError, match="conditional_input"):
    plots.density_image(flow, datasets.moons(200))


def test_figures_are_written(tmp_path):
  flow = RealNVP(2, num_couplings=2, hidden_units=(8,), seed=0)
  x = datasets.moons(300)
  plots.plot_four_panels(flow, x, path=tmp_path / "four.png")
  history = types.SimpleNamespace(epoch=[1, 2], train_nll=[2.0, 1.5], val_nll=[2.1, 1.6])
  plots.plot_loss_curve(history, oracle_nll=1.2, path=tmp_path / "loss.png")
  plots.plot_density(flow, lambda g: np.zeros(len(g)), limits=plots.limits(x),
                     resolution=20, path=tmp_path / "density.png")
  for name in ("four.png", "loss.png", "density.png"):
    assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
  with pytest.raises(ValueError, match=r"shape \[n, 2\]"):
    plots.plot_four_panels(flow, np.zeros((5, 3)))
