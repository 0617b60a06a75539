"""The contestants' data and models: ours, TFP's built-in RealNVP and the book's model.

Each ``make_*(settings, x_train, seed)`` returns ``(distribution, variables)``:
the distribution to train and the variables ``fit`` trains.  Every model sees
the data through the same fixed per-feature standardization (ours sets it
with ``adapt``; the others get equal ``Shift``/``Scale`` bijectors), so every
density is in data units.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

from tfp_realnvp import RealNVP, datasets

__all__ = ["training_data", "fixed_sets", "make_ours", "make_builtin", "make_book",
           "BookTowers"]

tfb, tfd = tfp.bijectors, tfp.distributions


def training_data(settings, seed: int):
  """The training points of one seed."""
  return datasets.moons(settings.n_train, settings.noise, seed + settings.data_seed_offset)


def fixed_sets(settings):
  """``(x_val, x_test, oracle_val_nll, oracle_test_nll)``, the same for every seed."""
  x_val = datasets.moons(settings.n_val, settings.noise, settings.val_seed)
  x_test = datasets.moons(settings.n_test, settings.noise, settings.test_seed)
  return (x_val, x_test, datasets.oracle_nll(x_val, settings.noise),
          datasets.oracle_nll(x_test, settings.noise))


def _standardize(x_train):
  loc = x_train.mean(axis=0).astype(np.float32)
  std = x_train.std(axis=0)
  scale = np.where(std > 0, std, 1.0).astype(np.float32)
  return [tfb.Shift(loc, name="normalize_shift"), tfb.Scale(scale, name="normalize_scale")]


def make_ours(settings, x_train, seed: int = 0):
  """:class:`tfp_realnvp.RealNVP` with ``settings.flow``, adapted to ``x_train``."""
  flow = RealNVP(2, seed=seed, **settings.flow.as_dict())  # seed: of random permutations
  flow.adapt(x_train)
  return flow, list(flow.trainable_variables)


def _coupling_chain(x_train, networks):
  """``tfb.RealNVP`` couplings on ``networks`` with reversals between them, standardized."""
  forward_order = []
  for i, network in enumerate(networks):
    if i:
      forward_order.append(tfb.Permute([1, 0], name=f"permute_{i - 1}"))
    forward_order.append(tfb.RealNVP(num_masked=1, shift_and_log_scale_fn=network,
                                     name=f"coupling_{i}"))
  chain = tfb.Chain(_standardize(x_train) + [tfb.Chain(forward_order[::-1])])
  return tfd.TransformedDistribution(tfd.MultivariateNormalDiag(tf.zeros(2)), chain)


def make_builtin(settings, x_train, seed: int = 0):
  """``tfb.RealNVP`` + ``tfb.real_nvp_default_template``, ours' couplings and widths."""
  del seed  # the templates draw from the global seed, as fit's caller set it
  templates = [tfb.real_nvp_default_template(hidden_layers=list(settings.flow.hidden_units),
                                             name=f"template_{i}")
               for i in range(settings.flow.num_couplings)]
  dist = _coupling_chain(x_train, templates)
  dist.log_prob(x_train[:2])  # the templates create their variables on first call
  # The distribution tracks none of them (TFP issue 1439): collect them from the templates.
  return dist, [v for t in templates for v in t.trainable_variables]


class BookTowers(tf_keras.layers.Layer):
  """The book's coupling network: separate scale (tanh) and translation towers."""

  def __init__(self, width, depth, input_units=1, output_units=1, **kwargs):
    super().__init__(**kwargs)
    dense = tf_keras.layers.Dense
    self.scale_tower = [dense(width, activation="relu") for _ in range(depth)]
    self.scale_tower.append(dense(output_units, activation="tanh"))
    self.shift_tower = [dense(width, activation="relu") for _ in range(depth)]
    self.shift_tower.append(dense(output_units))
    for tower in (self.scale_tower, self.shift_tower):
      size = input_units
      for layer in tower:
        layer.build((None, size))
        size = layer.units

  def call(self, x0, output_units=None):
    s = t = tf.reshape(x0, [-1, x0.shape[-1]])
    for layer in self.scale_tower:
      s = layer(s)
    for layer in self.shift_tower:
      t = layer(t)
    out_shape = tf.concat([tf.shape(x0)[:-1], [tf.shape(s)[-1]]], 0)
    return tf.reshape(t, out_shape), tf.reshape(s, out_shape)


def make_book(settings, x_train, seed: int = 0):
  """*Generative Deep Learning* (2nd ed., ch. 6) as ``tfb.RealNVP`` couplings."""
  del seed  # as make_builtin
  networks = [BookTowers(settings.book_width, settings.book_depth, name=f"book_towers_{i}")
              for i in range(settings.book_num_couplings)]
  dist = _coupling_chain(x_train, networks)
  return dist, [v for n in networks for v in n.trainable_variables]
