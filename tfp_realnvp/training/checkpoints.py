"""What :func:`fit` records: the :class:`History` of a run, and checkpoints that resume it."""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import pathlib
import shutil
import tempfile

import tensorflow as tf

from tfp_realnvp.files import atomic_write_json

__all__ = ["History", "Checkpoints"]


@dataclasses.dataclass
class History:
  """What :func:`fit` measured, one entry per epoch (evaluation period).

  Attributes:
    epoch: epoch numbers, from 1.
    step: optimizer steps done at the end of each epoch.
    train_nll: mean training NLL (nats) over the epoch's finite steps.
    val_nll: validation NLL (nats) at the end of each epoch (``nan`` without validation data).
    learning_rate: learning rate at the end of each epoch.
    wall_time: seconds of training at the end of each epoch (over resumed sessions too).
    nonfinite_steps: steps skipped in each epoch for a non-finite loss or gradient.
    best_epoch: epoch whose weights the model holds at the end (the best validation
      epoch with ``restore_best_weights``, else the last).
    best_val_nll: validation NLL of ``best_epoch``.
    stopped_early: whether early stopping ended training.
    resumed_from_step: the step a resumed run started from (0 if fresh).
    total_time: seconds spent in this call of ``fit``.
  """

  epoch: list[int] = dataclasses.field(default_factory=list)
  step: list[int] = dataclasses.field(default_factory=list)
  train_nll: list[float] = dataclasses.field(default_factory=list)
  val_nll: list[float] = dataclasses.field(default_factory=list)
  learning_rate: list[float] = dataclasses.field(default_factory=list)
  wall_time: list[float] = dataclasses.field(default_factory=list)
  nonfinite_steps: list[int] = dataclasses.field(default_factory=list)
  best_epoch: int | None = None
  best_val_nll: float = math.nan
  stopped_early: bool = False
  resumed_from_step: int = 0
  total_time: float = 0.0

  def as_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, values: dict) -> "History":
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


class Checkpoints:
  """Checkpoints ``ckpt-<step>`` of ``trackables``, each with a ``ckpt-<step>.history.json``
  of the :class:`History` and the loop's ``progress`` state.

  The history is written first, so a resume finds the newest complete checkpoint
  even after a kill mid-save.  A save that runs out of disk space removes what it
  wrote and raises ``OSError(ENOSPC)``.  Under a multi-worker strategy only the
  chief writes (``writer``); the others take part in each save, as
  ``tf.distribute`` requires, into a temporary folder they then remove.
  """

  def __init__(self, directory, trackables: dict, max_to_keep: int, writer: bool = True):
    self.directory = pathlib.Path(directory)
    self.writer = writer
    self.directory.mkdir(parents=True, exist_ok=True)
    self.checkpoint = tf.train.Checkpoint(**trackables)
    self.manager = tf.train.CheckpointManager(self.checkpoint, str(self.directory),
                                              max_to_keep=max_to_keep)

  def _history_path(self, name: str) -> pathlib.Path:
    return self.directory / f"{pathlib.Path(name).name}.history.json"

  def restore(self) -> tuple[History, dict] | None:
    """Restores the newest complete checkpoint: ``(history, progress)``, or ``None``."""
    for path in reversed(self.manager.checkpoints):
      saved = self._history_path(path)
      if saved.exists() and pathlib.Path(path + ".index").exists():
        status = self.checkpoint.restore(path).expect_partial()
        try:
          status.assert_existing_objects_matched()
        except AssertionError as e:
          raise ValueError(
              f"checkpoint {path} does not match this run (another model, optimizer or "
              "weight-average setting; earlier versions of fit used another optimizer): "
              "resume with the settings that wrote it, or use a new checkpoint_dir. "
              f"({str(e).splitlines()[0]})") from e
        payload = json.loads(saved.read_text())
        history = History.from_dict(payload["history"])
        history.resumed_from_step = history.step[-1] if history.step else 0
        return history, payload["progress"]
    if self.manager.checkpoints:
      raise ValueError(f"no checkpoint in {self.directory} has its training history "
                       "(*.history.json): it was not written by tfp_realnvp.fit")
    return None

  def save(self, history: History, progress: dict) -> None:
    if not self.writer:
      scratch = tempfile.mkdtemp(prefix=".not-chief-", dir=self.directory)
      try:
        self.checkpoint.write(str(pathlib.Path(scratch) / "ckpt"))
      finally:
        shutil.rmtree(scratch, ignore_errors=True)
      return
    step = history.step[-1]
    name = f"ckpt-{step}"
    try:
      atomic_write_json(self._history_path(name), {"history": history.as_dict(),
                                                   "progress": progress}, allow_nan=True)
      self.manager.save(checkpoint_number=step)
    except (tf.errors.ResourceExhaustedError, OSError) as e:
      if isinstance(e, OSError) and e.errno != errno.ENOSPC:
        raise
      self._remove_partial(name)
      raise OSError(errno.ENOSPC, f"no space left on device while writing checkpoint "
                    f"{self.directory / name}; removed it, the last good checkpoint "
                    f"({self.manager.latest_checkpoint}) is kept. Free space and resume "
                    f"(error: {str(e).splitlines()[0][:200]})") from None
    kept = {pathlib.Path(p).name for p in self.manager.checkpoints}
    for stale in self.directory.glob("*.history.json"):
      if stale.name[:-len(".history.json")] not in kept:
        stale.unlink(missing_ok=True)
    for leftover in self.directory.glob("ckpt-*_temp*"):  # of a save killed midway
      shutil.rmtree(leftover, ignore_errors=True)

  def _remove_partial(self, name: str) -> None:
    if any(pathlib.Path(p).name == name for p in self.manager.checkpoints):
      return  # the manager recorded it whole before the failure
    for partial in self.directory.glob(f"{name}[._]*"):
      if partial.is_dir():
        shutil.rmtree(partial, ignore_errors=True)
      else:
        partial.unlink(missing_ok=True)
