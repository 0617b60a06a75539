"""Figures of a trained flow (matplotlib, no display needed).

Each ``plot_*`` returns its figure, or with ``path`` saves and closes it.
"""

from __future__ import annotations

import io
import os

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

__all__ = ["plot_loss_curve", "plot_four_panels", "plot_density", "density_image", "limits"]


def _finish(fig, path, tight=True):
  if tight:
    fig.tight_layout()
  if path is not None:
    fig.savefig(os.fspath(path), dpi=120)
    plt.close(fig)
  return fig


def limits(points, margin: float = 0.15):
  """The range ``[(x_low, x_high), (y_low, y_high)]`` that frames 2-D ``points``.

  The 0.1 and 99.9 percentiles of each coordinate (so a few outliers do not
  shrink the picture), widened on each side by ``margin`` times their distance.

  #### Example

  ```python
  limits(np.array([[0., 0.], [1., 2.]]), margin=0.5)  # ~[(-0.5, 1.5), (-1., 3.)]
  ```
  """
  points = np.asarray(points)
  if points.ndim != 2 or points.shape[1] != 2 or points.shape[0] == 0:
    raise ValueError(f"limits needs 2-D points of shape [n, 2] with n > 0, got {points.shape}")
  low, high = np.percentile(points, [0.1, 99.9], axis=0)
  pad = (high - low) * margin
  return [(low[0] - pad[0], high[0] + pad[0]), (low[1] - pad[1], high[1] + pad[1])]


def plot_loss_curve(history, oracle_nll: float | None = None, path=None,
                    title: str = "Negative log-likelihood"):
  """Train and validation NLL against epoch, with the oracle NLL as a line."""
  fig, ax = plt.subplots(figsize=(6.4, 4.0))
  ax.plot(history.epoch, history.train_nll, label="train NLL")
  if np.any(np.isfinite(history.val_nll)):
    ax.plot(history.epoch, history.val_nll, label="validation NLL")
  if oracle_nll is not None:
    ax.axhline(oracle_nll, color="k", linestyle="--", linewidth=1,
               label=f"oracle NLL ({oracle_nll:.3f})")
  values = np.asarray(history.train_nll + history.val_nll, dtype=float)
  values = values[np.isfinite(values)]
  if values.size:
    low = min(values.min(), oracle_nll if oracle_nll is not None else values.min())
    ax.set_ylim(low - 0.05, np.percentile(values, 95) + 0.1)
  ax.set(xlabel="epoch", ylabel="nats per point", title=title)
  ax.legend()
  ax.grid(alpha=0.3)
  return _finish(fig, path)


def _scatter(ax, points, title, color, limits):
  ax.scatter(points[:, 0], points[:, 1], s=1.5, alpha=0.5, color=color)
  ax.set(title=title, xlim=limits[0], ylim=limits[1])
  ax.set_aspect("equal", adjustable="box")


def plot_four_panels(flow, data, num_samples: int = 3000, seed: int = 0, path=None,
                     conditional_input=None):
  """The book's four panels for a 2-D flow: data X, f(X), base samples Z and g(Z).

  ``f`` is ``flow.bijector.inverse`` and ``g`` its forward; a conditional flow takes
  ``conditional_input`` (one row per point, or one row for all).
  """
  data = np.asarray(data)[:num_samples]
  if data.ndim != 2 or data.shape[1] != 2:
    raise ValueError(f"plot_four_panels needs 2-D points of shape [n, 2], got {data.shape}")
  kwargs = {} if conditional_input is None else {"conditional_input": conditional_input}
  fx = flow.bijector.inverse(tf.constant(data, dtype=flow.dtype), **kwargs).numpy()
  z = flow.distribution.sample(data.shape[0], seed=seed).numpy()
  gz = flow.bijector.forward(tf.constant(z), **kwargs).numpy()
  data_limits = limits(data)
  latent_limits = [(-4, 4), (-4, 4)]
  fig, axes = plt.subplots(2, 2, figsize=(8, 8))
  _scatter(axes[0, 0], data, "Data space X", "tab:green", data_limits)
  _scatter(axes[0, 1], fx, "f(X)", "tab:red", latent_limits)
  _scatter(axes[1, 0], z, "Latent space Z", "tab:green", latent_limits)
  _scatter(axes[1, 1], gz, "g(Z)", "tab:red", data_limits)
  return _finish(fig, path)


def plot_density(flow, true_log_prob=None, limits=((-1.5, 2.5), (-1.0, 1.5)),
                 resolution: int = 200, path=None, **log_prob_kwargs):
  """Heat maps of the learned and, if given, the true density over ``limits`` (see :func:`limits`).

  ``log_prob_kwargs`` (e.g. ``conditional_input=``) go to ``flow.log_prob``.
  """
  xs = np.linspace(*limits[0], resolution)
  ys = np.linspace(*limits[1], resolution)
  grid = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
  learned = np.exp(flow.log_prob(tf.constant(grid, dtype=flow.dtype), **log_prob_kwargs).numpy())
  panels = [("learned density", learned)]
  if true_log_prob is not None:
    panels.append(("true density", np.exp(true_log_prob(grid))))
  vmax = max(float(np.nanmax(p)) for _, p in panels)
  fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
  for ax, (title, values) in zip(axes[0], panels):
    image = ax.imshow(values.reshape(resolution, resolution), origin="lower",
                      extent=(*limits[0], *limits[1]), cmap="viridis", vmin=0, vmax=vmax,
                      aspect="equal")
    ax.set_title(title)
  fig.colorbar(image, ax=list(axes[0]), shrink=0.8, label="density")
  return _finish(fig, path, tight=False)


def density_image(distribution, points, resolution: int = 120, **log_prob_kwargs) -> tf.Tensor:
  """:func:`plot_density` over :func:`limits` of ``points`` as an RGBA ``uint8`` image.

  The image has shape ``[1, h, w, 4]``, ready for ``tf.summary.image``.

  #### Example

  ```python
  flow = tfp_realnvp.RealNVP(2, num_couplings=2)
  with tf.summary.create_file_writer("logs").as_default(step=0):
    tf.summary.image("density", density_image(flow, datasets.moons(500)))
  ```
  """
  fig = plot_density(distribution, limits=limits(points), resolution=resolution,
                     **log_prob_kwargs)
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=80)
  plt.close(fig)
  return tf.image.decode_png(buf.getvalue(), channels=4)[None]
