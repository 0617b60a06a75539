"""What :func:`fit` shows while it runs: a ``tqdm`` progress bar and TensorBoard summaries."""

from __future__ import annotations

import math
import sys

import tensorflow as tf
from tqdm.auto import tqdm

__all__ = ["Reporter"]


class Reporter:
  """Shows each epoch of a :class:`History` on a progress bar and in TensorBoard.

  With ``log_dir``: the train/validation NLL, learning rate and non-finite
  step count per epoch, and, given ``image`` (a callable returning an image
  tensor), a density image every ``image_every`` epochs and at the end.
  """

  def __init__(self, *, total_steps: int, done: int, progress: bool, log_dir, image,
               image_every: int):
    interactive = getattr(sys.stderr, "isatty", lambda: False)()
    # In a log file (not a terminal), a line a minute rather than a flood.
    self.bar = tqdm(total=total_steps, initial=done, disable=not progress, unit="step",
                    dynamic_ncols=interactive, desc="fit", file=sys.stderr,
                    mininterval=0.1 if interactive else 60.0,
                    maxinterval=10.0 if interactive else 600.0)
    self.total_steps, self.image, self.image_every = total_steps, image, image_every
    self.writer = tf.summary.create_file_writer(str(log_dir)) if log_dir is not None else None

  def epoch(self, history, chunk: int) -> None:
    val_nll, skipped = history.val_nll[-1], history.nonfinite_steps[-1]
    self.bar.update(chunk)
    postfix = {"nll": f"{history.train_nll[-1]:.4f}"}
    if not math.isnan(val_nll):
      postfix["val"] = f"{val_nll:.4f}"
    if skipped:
      postfix["skipped"] = skipped
    self.bar.set_postfix(postfix, refresh=False)
    if self.writer is None:
      return
    step, epoch = history.step[-1], history.epoch[-1]
    with self.writer.as_default(step=step):
      tf.summary.scalar("nll/train", history.train_nll[-1])
      if not math.isnan(val_nll):
        tf.summary.scalar("nll/validation", val_nll)
      tf.summary.scalar("learning_rate", history.learning_rate[-1])
      tf.summary.scalar("nonfinite_steps", skipped)
      if self.image is not None and (epoch % self.image_every == 0 or step >= self.total_steps):
        tf.summary.image("density", self.image())
    self.writer.flush()

  def close(self) -> None:
    self.bar.close()
    if self.writer is not None:
      self.writer.close()
