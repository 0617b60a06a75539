"""Saving, loading and exporting RealNVP flows.

:func:`save` writes a folder holding ``tfp_realnvp.json`` (format name and
version, the flow's :attr:`RealNVP.config`, the size and SHA-256 of each
checkpoint file) and ``weights.*``, a ``tf.train.Checkpoint`` of the flow's
variables.  Nothing is pickled: :func:`load` rebuilds the flow from its config
(so constructor arguments added later round-trip) after checking that every
file it reads lies inside the folder and matches its SHA-256 and that the
config is no larger than the checkpoint (:func:`minimum_parameter_count`), so a
damaged or hostile folder gives a ``ValueError`` naming the problem.
:func:`export` writes a SavedModel that TensorFlow alone serves.

Example:

```python
flow = tfp_realnvp.RealNVP(event_size=2)
tfp_realnvp.fit(flow, tfp_realnvp.datasets.moons(5000), steps=500)
tfp_realnvp.save(flow, "moons_flow")
same = tfp_realnvp.load("moons_flow")
tfp_realnvp.export(flow, "moons_savedmodel")
served = tf.saved_model.load("moons_savedmodel")  # elsewhere, with TensorFlow only
served.log_prob(x)                                # x: float32 [n, 2] or [2]
```
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import numpy as np
import tensorflow as tf

from tfp_realnvp import __version__, files
from tfp_realnvp.distribution import RealNVP
from tfp_realnvp.options import FlowOptions, is_int

__all__ = ["save", "load", "export", "FORMAT_VERSION", "minimum_parameter_count"]

#: Version of the folder layout written by :func:`save` and :func:`export`.
#: :func:`load` reads every version up to this one.
FORMAT_VERSION = 1

_META_FILE = "tfp_realnvp.json"
_SAVE_FORMAT = "tfp_realnvp.save"
_EXPORT_FORMAT = "tfp_realnvp.export"
_CHECKPOINT_PREFIX = "weights"


def _sha256(path: str) -> str:
  with open(path, "rb") as f:
    return hashlib.file_digest(f, "sha256").hexdigest()


def _read_meta(path: str) -> dict | None:
  """The parsed tfp_realnvp.json of ``path``, or None when there is none."""
  meta_path = os.path.join(path, _META_FILE)
  if not os.path.isfile(meta_path):
    return None
  try:
    with open(meta_path, encoding="utf-8") as f:
      meta = json.load(f)
  except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
    raise ValueError(f"{meta_path} is not a readable JSON file, it is damaged "
                     f"({type(e).__name__}: {str(e)[:200]})") from None
  if not isinstance(meta, dict):
    raise ValueError(f"{meta_path} does not hold a JSON object; it was not written by tfp_realnvp")
  return meta


def _begin(flow: RealNVP, path, overwrite: bool) -> tuple[dict, str]:
  """Checks that ``flow`` can be stored and ``path`` written; returns its config, the abspath."""
  if not isinstance(flow, RealNVP):
    raise TypeError(f"expected a tfp_realnvp.RealNVP, got {type(flow).__name__}")
  config = flow.config
  if "activation" in config and config["activation"] is None:
    raise ValueError(
        "this flow uses a custom (callable) activation, which cannot be stored as "
        "JSON; build it with an activation name such as 'relu' or 'tanh' to save it")
  for key, value in config.items():
    try:
      json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
      raise ValueError(
          f"config argument {key}={value!r} of this flow is not plain JSON, so the "
          "flow cannot be saved") from None
  path = os.path.abspath(os.fspath(path))
  if os.path.lexists(path):
    if not overwrite:
      raise FileExistsError(
          f"{path} already exists; pass overwrite=True to replace it (only a folder "
          "written by tfp_realnvp.save or tfp_realnvp.export is ever replaced)")
    if not os.path.isdir(path) or os.path.islink(path):
      raise FileExistsError(f"refusing to overwrite {path}: it is not a folder")
    if os.listdir(path):
      try:
        fmt = (_read_meta(path) or {}).get("format")
      except ValueError:
        fmt = None
      if fmt not in (_SAVE_FORMAT, _EXPORT_FORMAT):
        raise FileExistsError(
            f"refusing to overwrite {path}: it is not a folder written by "
            f"tfp_realnvp.save or tfp_realnvp.export (it has no {_META_FILE} of ours)")
  os.makedirs(os.path.dirname(path), exist_ok=True)
  return config, path


def _meta(fmt: str, flow: RealNVP, config: dict, **extra) -> dict:
  return {"format": fmt, "format_version": FORMAT_VERSION, "class": type(flow).__name__,
          "config": config, **extra, "tfp_realnvp_version": __version__,
          "tensorflow_version": tf.__version__}


def save(flow: RealNVP, path, *, overwrite: bool = False, verify: bool = True) -> str:
  """Saves ``flow`` to the folder ``path``, written whole; returns its absolute path.

  Args:
    flow: a :class:`RealNVP`.
    path: the folder to create.
    overwrite: replace ``path`` if it exists; only an empty folder or one that
      :func:`save` or :func:`export` wrote is ever replaced.
    verify: load the folder back first and compare ``log_prob``, which catches
      a flow that its config does not describe (a custom ``bijector=``).

  Raises:
    FileExistsError: ``path`` exists and may not be replaced.
    ValueError: the flow's config is not plain JSON, or the flow does not
      rebuild from it.
  """
  config, path = _begin(flow, path, overwrite)

  def write_into(folder):
    tf.train.Checkpoint(flow=flow).write(os.path.join(folder, _CHECKPOINT_PREFIX))
    written = {name: {"bytes": os.path.getsize(os.path.join(folder, name)),
                      "sha256": _sha256(os.path.join(folder, name))}
               for name in sorted(os.listdir(folder))}
    variables = [{"name": v.name, "shape": v.shape.as_list(), "dtype": v.dtype.name}
                 for v in flow.variables]
    files.atomic_write_json(os.path.join(folder, _META_FILE), _meta(
        _SAVE_FORMAT, flow, config, variables=variables,
        checkpoint={"prefix": _CHECKPOINT_PREFIX, "files": written}))
    if verify:
      try:
        loaded = load(folder)
      except ValueError as e:
        raise ValueError(
            "the flow does not rebuild from its config, so it cannot be saved (flows built "
            f"with a custom bijector= are not supported): loading it back failed: {e}") from None
      _verify_round_trip(flow, loaded)

  return files.write_folder(path, write_into)


def _verify_round_trip(flow: RealNVP, loaded: RealNVP, n: int = 64) -> None:
  """Compares the two flows' ``log_prob`` at fixed points (and conditions) near the data."""
  z = tf.random.stateless_normal([n, flow.event_size], seed=[20240, 7], dtype=flow.dtype)
  x = flow.loc + flow.scale * z
  kwargs = {}
  if flow.conditional_size:
    kwargs["conditional_input"] = tf.random.stateless_normal(
        [n, flow.conditional_size], seed=[20240, 8], dtype=flow.dtype)
  want = flow.log_prob(x, **kwargs).numpy()
  got = loaded.log_prob(x, **kwargs).numpy()
  if not np.allclose(want, got, rtol=1e-5, atol=1e-5, equal_nan=True):
    worst = float(np.nanmax(np.abs(want - got)))
    raise ValueError(
        "the flow does not rebuild from its config: after saving and loading, log_prob "
        f"differs by up to {worst:.3g} nats. Flows built with a custom bijector= or "
        "changed after construction cannot be saved; build them from constructor "
        "arguments alone")


def load(path) -> RealNVP:
  """Loads a flow written by :func:`save`: the same ``log_prob`` and, with the
  same stateless seed, the same samples.

  Raises:
    FileNotFoundError: ``path`` does not exist, or a checkpoint file is missing.
    ValueError: ``path`` is not a folder written by :func:`save` (another
      program's folder, an :func:`export` folder), its config comes from a
      newer format version or is not one this version of ``RealNVP`` accepts,
      or the checkpoint is truncated, corrupted or does not match the config.
  """
  path = os.path.abspath(os.fspath(path))
  if not os.path.exists(path):
    raise FileNotFoundError(f"cannot load a flow from {path}: no such file or folder")
  if not os.path.isdir(path):
    raise ValueError(f"cannot load a flow from {path}: it is a file, not a folder written "
                     "by tfp_realnvp.save")
  meta = _read_meta(path)
  if meta is None:
    hint = ""
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
      hint = " It holds a TensorFlow SavedModel; open that with tf.saved_model.load."
    raise ValueError(f"{path} is not a folder written by tfp_realnvp.save: it has no "
                     f"{_META_FILE}.{hint}")
  fmt, version = meta.get("format"), meta.get("format_version")
  if fmt == _EXPORT_FORMAT:
    raise ValueError(f"{path} was written by tfp_realnvp.export: it is a SavedModel for "
                     "serving, open it with tf.saved_model.load (tfp_realnvp.load reads "
                     "folders written by tfp_realnvp.save)")
  if fmt != _SAVE_FORMAT:
    raise ValueError(f"{path} was not written by tfp_realnvp.save: its {_META_FILE} has "
                     f"format {fmt!r}, expected {_SAVE_FORMAT!r}")
  if not is_int(version) or version < 1:
    raise ValueError(f"{path}/{_META_FILE} has no valid format_version (got {version!r})")
  if version > FORMAT_VERSION:
    raise ValueError(
        f"{path} was saved in format_version {version} by a newer tfp_realnvp "
        f"({meta.get('tfp_realnvp_version', 'unknown version')}); this version reads "
        f"format_version {FORMAT_VERSION} and older. Upgrade tfp_realnvp to load it.")
  if meta.get("class") != "RealNVP":
    raise ValueError(f"{path} holds a {meta.get('class')!r}, which tfp_realnvp.load cannot "
                     "rebuild (it loads RealNVP flows)")
  config, checkpoint = meta.get("config"), meta.get("checkpoint")
  if not isinstance(config, dict) or not isinstance(checkpoint, dict):
    raise ValueError(f"{path}/{_META_FILE} lacks its config or checkpoint entries; "
                     "the file is damaged")
  prefix = _checked_checkpoint(path, checkpoint)
  if "bijector" in config:
    raise ValueError(f"{path}/{_META_FILE}: config may not contain 'bijector'")
  damaged = f"{path} has an invalid config, the file is damaged"
  event_size = config.get("event_size")
  names = {f.name for f in dataclasses.fields(FlowOptions)}
  try:
    if not is_int(event_size) or event_size < 1:
      raise ValueError(f"event_size must be a positive integer, got {event_size!r}")
    options = FlowOptions(**{k: v for k, v in config.items() if k in names})
  except (TypeError, ValueError) as e:
    raise ValueError(f"{damaged}: {e}") from None
  try:
    stored = tf.train.list_variables(prefix)
  except (tf.errors.OpError, ValueError) as e:
    raise ValueError(f"the checkpoint in {path} is damaged ({type(e).__name__})") from None
  stored_size = sum(int(np.prod(shape)) for _, shape in stored)
  needed = minimum_parameter_count(event_size, options)
  if needed > stored_size:
    raise ValueError(
        f"{path}/{_META_FILE} is damaged: its config describes a flow of at least {needed:,} "
        f"parameters but the checkpoint holds {stored_size:,} values")
  try:
    flow = RealNVP(**config)
  except (TypeError, ValueError) as e:
    if isinstance(e, TypeError) and "unexpected" in str(e):
      raise ValueError(
          f"{path} has a config that this version of RealNVP does not accept ({e}). It was "
          f"saved by tfp_realnvp {meta.get('tfp_realnvp_version', '(unknown version)')}; "
          "upgrade tfp_realnvp to load it.") from None
    raise ValueError(f"{damaged}: {e}") from None
  try:
    tf.train.Checkpoint(flow=flow).read(prefix).assert_consumed()
  except (tf.errors.OpError, AssertionError, ValueError) as e:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise ValueError(
        f"the checkpoint in {path} cannot be restored into the flow its config describes "
        f"({type(e).__name__}: {first})") from e
  return flow


def _checked_checkpoint(path: str, checkpoint: dict) -> str:
  """Checks the listed checkpoint files (inside ``path``, sizes, hashes); returns the prefix."""
  prefix, listed = checkpoint.get("prefix"), checkpoint.get("files")
  if (not isinstance(prefix, str) or prefix in ("", ".", "..")
      or os.path.basename(prefix) != prefix or (os.altsep and os.altsep in prefix)):
    raise ValueError(f"{path}/{_META_FILE} is damaged: the checkpoint prefix {prefix!r} is "
                     "not a file name inside the folder")
  if (not isinstance(listed, dict) or f"{prefix}.index" not in listed
      or not any(name.startswith(f"{prefix}.data-") for name in listed)):
    raise ValueError(f"{path}/{_META_FILE} is damaged: it does not list the checkpoint's "
                     f"{prefix}.index and {prefix}.data-* files")
  unlisted = [n for n in os.listdir(path) if n.startswith(f"{prefix}.") and n not in listed]
  if unlisted:
    raise ValueError(f"{path} holds checkpoint files that {_META_FILE} does not list: {unlisted}")
  root = os.path.realpath(path)
  for name, info in listed.items():
    full = os.path.join(path, name)
    if (os.path.basename(name) != name or not name.startswith(f"{prefix}.")
        or not isinstance(info, dict)):
      raise ValueError(f"{path}/{_META_FILE} lists a bad checkpoint file entry {name!r}")
    if os.path.dirname(os.path.realpath(full)) != root:
      raise ValueError(f"checkpoint file {full} is a link to a file outside the folder; "
                       "refusing to read it")
    if not os.path.isfile(full):
      raise FileNotFoundError(f"checkpoint file {full} is missing; the save is incomplete")
    size = os.path.getsize(full)
    if size != info.get("bytes"):
      raise ValueError(
          f"checkpoint file {full} has {size} bytes but {info.get('bytes')} were saved: "
          "it is truncated or was modified")
    if _sha256(full) != info.get("sha256"):
      raise ValueError(f"checkpoint file {full} does not match the SHA-256 recorded when it "
                       "was saved: it is corrupted or was modified")
  return os.path.join(path, prefix)


def minimum_parameter_count(event_size: int, options: FlowOptions) -> int:
  """A lower bound on the parameters of ``RealNVP(event_size, **options)``, without building it.

  Each of the ``C`` couplings keeps ``h = d // 2`` coordinates; its network
  maps at least ``h + k`` inputs (``k``: ``conditional_size``) through
  ``hidden_units`` ``(u_1..u_L)`` to at least ``h`` outputs, and a learned
  (``"lu"``) permutation holds a ``d x d`` factor:

  ```none
  count >= C [(h + k) u_1 + sum_i u_i u_(i+1) + u_L h + sum_i u_i] + [lu] (C - 1) d^2
  ```

  #### Example

  ```python
  minimum_parameter_count(2, FlowOptions(num_couplings=1, hidden_units=(8,)))  # 24
  ```
  """
  half = event_size // 2
  widths = (half + options.conditional_size, *options.hidden_units, half)
  per_coupling = sum(a * b for a, b in zip(widths, widths[1:])) + sum(options.hidden_units)
  lu = (options.num_couplings - 1) * event_size**2 if options.permutation == "lu" else 0
  return options.num_couplings * per_coupling + lu


class _Served(tf.Module):
  """What :func:`export` saves: the flow's variables and functions closing over it."""

  def __init__(self, flow: RealNVP, meta_json: str):
    super().__init__(name="tfp_realnvp_export")
    d, k, dtype = flow.event_size, flow.conditional_size, flow.dtype
    self.flow_variables = list(flow.variables)  # tracked, so the SavedModel holds them
    self.event_size = tf.Variable(d, trainable=False, dtype=tf.int32, name="event_size")
    self.conditional_size = tf.Variable(k, trainable=False, dtype=tf.int32,
                                        name="conditional_size")
    self.metadata = tf.Variable(meta_json, trainable=False, dtype=tf.string, name="metadata")
    cond = [tf.TensorSpec(None, dtype, name="conditional_input")] if k else []

    def rows(x, size, what):  # [..., size] -> [n, size], with a clear error for a wrong size
      message = (f"{what} must have last dimension {size} (this flow's "
                 f"{'conditional_size' if what == 'conditional_input' else 'event_size'})")
      checks = [tf.debugging.assert_rank_at_least(x, 1, message=message)]
      with tf.control_dependencies(checks):
        checks = [tf.debugging.assert_equal(tf.shape(x)[-1], size, message=message)]
      with tf.control_dependencies(checks):
        return tf.reshape(x, [-1, size])

    def per_event(method):  # f(x [..., d], c) -> method(x) with the batch shape of x
      def fn(x, *c):
        kwargs = {"conditional_input": rows(c[0], k, "conditional_input")} if c else {}
        out = method(rows(x, d, "x"), **kwargs)
        return tf.reshape(out, tf.concat([tf.shape(x)[:-1], tf.shape(out)[1:]], 0))
      return fn

    def sample(n, *c_and_seed):
      *c, seed = c_and_seed
      seed = tf.reshape(seed, [-1])
      tf.debugging.assert_less_equal(tf.size(seed), 2, message="seed: an int or an int pair")
      seed = tf.concat([tf.zeros([2 - tf.size(seed)], tf.int32), seed], 0)
      return flow.sample(n, seed=seed, **({"conditional_input": c[0]} if c else {}))

    x_spec = tf.TensorSpec(None, dtype, name="x")
    sample_specs = [tf.TensorSpec([], tf.int32, name="n"), *cond,
                    tf.TensorSpec(None, tf.int32, name="seed")]
    methods = {"log_prob": (per_event(flow.log_prob), [x_spec, *cond], "log_prob"),
               "inverse": (per_event(flow.bijector.inverse), [x_spec, *cond], "latent"),
               "forward": (per_event(flow.bijector.forward),
                           [tf.TensorSpec(None, dtype, name="z"), *cond], "x"),
               "sample": (sample, sample_specs, "samples")}
    self.signature_functions = {}
    for name, (fn, specs, key) in methods.items():  # SavedModel needs fixed arities
      function = tf.function(_FIXED_ARITY[len(specs)](fn), input_signature=specs)
      setattr(self, name, function)
      self.signature_functions[name] = tf.function(
          _FIXED_ARITY[len(specs)](lambda *args, f=function, key=key: {key: f(*args)}),
          input_signature=specs)


_FIXED_ARITY = {1: lambda f: lambda a: f(a), 2: lambda f: lambda a, b: f(a, b),
                3: lambda f: lambda a, b, c: f(a, b, c)}


def export(flow: RealNVP, path, *, overwrite: bool = False) -> str:
  """Exports ``flow`` as a TensorFlow SavedModel for serving.

  ``tf.saved_model.load(path)`` then gives an object, usable with TensorFlow
  alone, with

  * ``log_prob(x)``: ``[..., event_size]`` -> ``[...]``; another last
    dimension raises ``InvalidArgumentError`` naming ``event_size``;
  * ``inverse(x)`` (data -> latent) and ``forward(z)`` (latent -> data);
  * ``sample(n, seed)``: ``n`` an int32 scalar, ``seed`` an int32 pair (a
    stateless seed: the same seed gives ``flow.sample(n, seed=seed)``) or one
    int ``s`` (meaning the pair ``(0, s)``) -> ``[n, event_size]``;
  * for a conditional flow, each also takes ``conditional_input`` (after
    ``x``/``z``/``n``) of shape ``[conditional_size]`` or ``[m,
    conditional_size]`` (``m`` = n, one row per point, or 1);
  * ``event_size``, ``conditional_size`` (int32 variables) and ``metadata``
    (a JSON string with the format version and the flow's config);
  * serving signatures ``"log_prob"``, ``"inverse"``, ``"forward"``,
    ``"sample"`` in ``.signatures`` (output keys ``"log_prob"``,
    ``"latent"``, ``"x"``, ``"samples"``).

  Written whole, with the same ``overwrite`` rules and return value as :func:`save`.
  """
  config, path = _begin(flow, path, overwrite)
  meta_json = json.dumps(_meta(_EXPORT_FORMAT, flow, config), indent=2, allow_nan=False)

  def write_into(folder):
    module = _Served(flow, meta_json)
    signatures = {name: fn.get_concrete_function()
                  for name, fn in module.signature_functions.items()}
    tf.saved_model.save(module, folder, signatures=signatures)
    files.atomic_write_text(os.path.join(folder, _META_FILE), meta_json + "\n")

  return files.write_folder(path, write_into)
