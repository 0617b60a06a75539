"""What :func:`fit` trains on: input checks, the validation split and the
``tf.data`` pipeline, for arrays and for a ``tf.data.Dataset``."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfp_realnvp.options import TrainingOptions

__all__ = ["TrainingData", "as_array", "event_size", "prepare"]

_ADAPT_ROWS = 65536  # rows of a dataset read for adapt() and the input checks


def event_size(distribution) -> int | None:
  shape = distribution.event_shape
  return int(shape[0]) if shape.rank == 1 and shape[0] is not None else None


def _check_precision(array: np.ndarray, cast: np.ndarray, name: str) -> None:
  """Refuses a cast to ``cast.dtype`` that overflows or merges what differed."""
  finite = np.isfinite(array)
  overflow = int(np.sum(np.any(finite & ~np.isfinite(cast), axis=1)))
  fix = "use a float64 flow (dtype=tf.float64) or rescale the data"
  if overflow:
    raise ValueError(f"{name} has {overflow} rows with values beyond the range of {cast.dtype} "
                     f"(largest {np.finfo(cast.dtype).max:.3g}): they overflow; {fix}")
  if np.finfo(cast.dtype).bits >= 64 or not np.all(finite) or len(array) < 2:
    return
  wide, narrow = array.astype(np.float64).std(0), cast.astype(np.float64).std(0)
  spread_lost = np.any(np.abs(narrow - wide) > 1e-2 * wide)
  distinct = len(np.unique(array, axis=0))
  if spread_lost or len(np.unique(cast, axis=0)) < 0.99 * distinct:
    raise ValueError(
        f"{name} loses its precision in {cast.dtype}: its values are large compared with "
        f"their spread (per-column spread {wide.tolist()} becomes {narrow.tolist()}, distinct "
        f"rows merge); {fix} such as RealNVP(..., dtype=tf.float64), or subtract the mean")


def as_array(data, name: str, size: int | None, dtype) -> np.ndarray:
  """``data`` as an ``[n, size]`` array of ``dtype``, refusing what would be misread."""
  try:
    array = np.asarray(data)
  except Exception as e:  # ragged lists and the like
    raise TypeError(f"{name} must be an array of shape [n, event_size]: {e}") from None
  if np.iscomplexobj(array):
    raise TypeError(f"{name} is complex ({array.dtype}); fit trains on real data: pass the "
                    "real and imaginary parts as separate columns")
  if array.dtype == object or not (np.issubdtype(array.dtype, np.number)
                                   or array.dtype == np.bool_):
    raise TypeError(f"{name} must be numeric, got dtype {array.dtype}")
  if array.ndim != 2:
    raise ValueError(f"{name} must have shape [n, event_size] (rank 2), got shape {array.shape}")
  if array.shape[0] == 0:
    raise ValueError(f"{name} is empty (shape {array.shape})")
  if size is not None and array.shape[1] != size:
    raise ValueError(f"{name} has {array.shape[1]} columns but the distribution's event size "
                     f"is {size}")
  with np.errstate(over="ignore", invalid="ignore"):
    cast = array.astype(dtype)
  bad_rows = int(np.sum(~np.all(np.isfinite(array), axis=1)))
  if bad_rows:
    raise ValueError(f"{name} has {bad_rows} of {array.shape[0]} rows containing NaN or inf; "
                     "remove or impute them before training (fit drops nothing silently)")
  if array.dtype != cast.dtype:
    _check_precision(array, cast, name)
  return cast


class TrainingData:
  """Training points ``x`` (for a dataset, its first rows) and conditions ``c`` (or
  ``None``), validation points, the endless batched ``dataset`` that feeds the steps,
  and the number of training ``rows`` (``None`` for an endless dataset)."""

  def __init__(self, x, c, x_val, c_val, dataset: tf.data.Dataset, rows: int | None):
    self.x, self.c, self.x_val, self.c_val = x, c, x_val, c_val
    self.dataset, self.rows = dataset, rows


def _validation(validation_data, x, c, seed, size, dtype):
  """Returns (x_train, c_train, x_val, c_val)."""
  if validation_data is None:
    return x, c, None, None
  if isinstance(validation_data, float):
    if not 0.0 < validation_data < 1.0:
      raise ValueError(f"a validation fraction must be in (0, 1), got {validation_data}")
    if x is None:
      raise ValueError("a validation fraction needs array data; with a tf.data.Dataset pass "
                       "validation_data=(x_val,) or (x_val, conditional_input_val)")
    n_val = max(1, int(round(validation_data * x.shape[0])))
    if n_val >= x.shape[0]:
      raise ValueError(
          f"validation fraction {validation_data} leaves no training data out of {x.shape[0]} rows")
    order = np.random.default_rng(seed).permutation(x.shape[0])
    val, train = order[:n_val], order[n_val:]
    return x[train], None if c is None else c[train], x[val], None if c is None else c[val]
  parts = validation_data if isinstance(validation_data, tuple) else (validation_data,)
  if len(parts) != (1 if c is None else 2):
    raise ValueError(
        "validation_data must be a fraction, x_val or (x_val,)" if c is None else
        "with conditional_input, validation_data must be a fraction or a tuple "
        "(x_val, conditional_input_val)")
  x_val = as_array(parts[0], "validation_data[0]", size, dtype)
  if c is None:
    return x, c, x_val, None
  c_val = as_array(parts[1], "validation_data[1]", c.shape[1], dtype)
  if c_val.shape[0] != x_val.shape[0]:
    raise ValueError(
        f"validation data has {x_val.shape[0]} rows but its conditional_input has {c_val.shape[0]}")
  return x, c, x_val, c_val


def _from_dataset(dataset: tf.data.Dataset, size, dtype):
  """A dataset of points or batches, ``x`` or ``(x, c)``: (unbatched dataset, x, c, rows)."""
  spec = dataset.element_spec
  parts = spec if isinstance(spec, tuple) else (spec,)
  if len(parts) not in (1, 2) or not all(isinstance(p, tf.TensorSpec) for p in parts):
    raise TypeError(f"a tf.data.Dataset for fit must yield x or (x, conditional_input) tensors, "
                    f"got elements {spec}")
  if parts[0].shape.rank == 2:  # batches: fit rebatches to its batch_size
    dataset = dataset.unbatch()
  elif parts[0].shape.rank != 1:
    raise ValueError(f"a tf.data.Dataset for fit must yield points [event_size] or batches "
                     f"[b, event_size], got shape {parts[0].shape}")
  endless = dataset.cardinality() == tf.data.INFINITE_CARDINALITY
  rows = None if endless else int(dataset.reduce(np.int64(0), lambda n, _: n + 1))
  if rows == 0:
    raise ValueError("the tf.data.Dataset given to fit is empty")
  head = list(dataset.take(_ADAPT_ROWS).batch(_ADAPT_ROWS).as_numpy_iterator())[0]
  head = head if isinstance(head, tuple) else (head,)
  x = as_array(head[0], "data", size, dtype)
  c = as_array(head[1], "conditional_input", None, dtype) if len(head) == 2 else None
  dataset = dataset.map(lambda *t: tuple(tf.cast(v, dtype) for v in t) if len(t) == 2
                        else tf.cast(t[0], dtype))
  return dataset, x, c, rows


def prepare(distribution, data, conditional_input, validation_data, *, batch_size: int,
            replicas: int, seed) -> TrainingData:
  """Checks ``data`` (an array or a ``tf.data.Dataset``) and builds the pipeline."""
  size = event_size(distribution)
  dtype = getattr(distribution.dtype, "as_numpy_dtype", np.float32)
  TrainingOptions(batch_size=batch_size)  # checks it
  if batch_size % replicas:
    raise ValueError(
        f"batch_size ({batch_size}) must be divisible by the {replicas} replicas of the strategy")
  if isinstance(data, tf.data.Dataset):
    if conditional_input is not None:
      raise ValueError("with a tf.data.Dataset, give the conditions in its elements (x, c), "
                       "not as conditional_input=")
    dataset, x, c, rows = _from_dataset(data, size, dtype)
    _, _, x_val, c_val = _validation(validation_data, None, c, seed, size, dtype)
  else:
    x = as_array(data, "data", size, dtype)
    c = None
    if conditional_input is not None:
      c = as_array(conditional_input, "conditional_input", None, dtype)
      if c.shape[0] != x.shape[0]:
        raise ValueError(f"data has {x.shape[0]} rows but conditional_input has {c.shape[0]}; "
                         "give one conditioning vector per point")
    x, c, x_val, c_val = _validation(validation_data, x, c, seed, size, dtype)
    rows = x.shape[0]
    dataset = tf.data.Dataset.from_tensor_slices(x if c is None else (x, c)).shuffle(
        rows, seed=seed, reshuffle_each_iteration=True)
  if rows is not None and batch_size > rows:
    raise ValueError(
        f"batch_size ({batch_size}) is larger than the number of training points ({rows})")
  dataset = dataset.repeat().batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
  return TrainingData(x, c, x_val, c_val, dataset, rows)
