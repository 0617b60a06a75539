"""save / load / export: exact round trips, atomic writes, clear errors."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import tfp_realnvp
from tfp_realnvp import serialization

META = "tfp_realnvp.json"


def _trained_like(flow, seed=0):
  """Random weights and normalization, as if trained and adapted."""
  rng = np.random.default_rng(seed)
  for v in flow.trainable_variables:
    v.assign(0.3 * rng.standard_normal(v.shape).astype(v.dtype.as_numpy_dtype))
  flow.adapt(rng.normal([1.0, -2.0, 0.5][:flow.event_size], 3.0, size=(200, flow.event_size)))
  return flow


def _small(**kwargs):
  kwargs.setdefault("num_couplings", 3)
  kwargs.setdefault("hidden_units", (16, 16))
  return _trained_like(tfp_realnvp.RealNVP(**kwargs))


def _points(flow, n=32):
  cond = {}
  if flow.conditional_size:
    cond["conditional_input"] = tf.random.stateless_normal(
        [n, flow.conditional_size], seed=(1, 1), dtype=flow.dtype)
  # a fresh tensor: a sample's own tensor would hit the bijector's inverse cache
  return tf.constant(flow.sample(n, seed=(4, 2), **cond).numpy()), cond


@pytest.mark.parametrize("kwargs", [
    dict(event_size=2),
    dict(event_size=3, permutation="random", activation="tanh", dtype=tf.float64),
    dict(event_size=2, conditional_size=3, log_scale_bound=None),
], ids=["plain", "random-perm-float64", "conditional"])
def test_round_trip_is_exact(tmp_path, kwargs):
  flow = _small(**kwargs)
  x, cond = _points(flow)
  path = tfp_realnvp.save(flow, tmp_path / "flow")
  loaded = tfp_realnvp.load(path)

  assert isinstance(loaded, tfp_realnvp.RealNVP)
  assert loaded.config == flow.config
  assert loaded.is_adapted
  np.testing.assert_array_equal(loaded.loc.numpy(), flow.loc.numpy())
  np.testing.assert_array_equal(loaded.log_prob(x, **cond), flow.log_prob(x, **cond))
  n = x.shape[0]
  np.testing.assert_array_equal(loaded.sample(n, seed=(7, 7), **cond),
                                flow.sample(n, seed=(7, 7), **cond))
  assert len(loaded.trainable_variables) == len(flow.trainable_variables)
  # still trainable: the loaded flow's weights are variables it owns
  assert all(a is not b for a, b in zip(loaded.trainable_variables, flow.trainable_variables))


def test_folder_holds_json_and_checkpoint_only(tmp_path):
  flow = _small(event_size=2)
  path = tfp_realnvp.save(flow, tmp_path / "flow")
  names = sorted(os.listdir(path))
  assert names == [META, "weights.data-00000-of-00001", "weights.index"]
  with open(os.path.join(path, META)) as f:
    meta = json.load(f)
  assert meta["format"] == "tfp_realnvp.save"
  assert meta["format_version"] == tfp_realnvp.FORMAT_VERSION == 1
  assert meta["config"] == flow.config
  assert set(meta["checkpoint"]["files"]) == {"weights.data-00000-of-00001", "weights.index"}
  # nothing but the new folder was left beside it
  assert os.listdir(tmp_path) == ["flow"]


def test_load_is_generic_over_config(tmp_path, monkeypatch):
  """A constructor argument added later round-trips with no change to save/load."""
  seen = {}

  class FutureRealNVP(serialization.RealNVP):
    def __init__(self, *args, future_option=None, **kwargs):
      seen["future_option"] = future_option
      super().__init__(*args, **kwargs)
      self._config["future_option"] = future_option

  FutureRealNVP.__name__ = "RealNVP"  # stands in for a later RealNVP
  monkeypatch.setattr(serialization, "RealNVP", FutureRealNVP)
  flow = _trained_like(FutureRealNVP(2, num_couplings=2, hidden_units=(8,), future_option="lu"))
  tfp_realnvp.save(flow, tmp_path / "flow")
  seen.clear()
  loaded = tfp_realnvp.load(tmp_path / "flow")
  assert seen["future_option"] == "lu"
  assert loaded.config["future_option"] == "lu"


# -- overwrite and atomicity ---------------------------------------------------

def test_never_overwrites_silently(tmp_path):
  first, second = _small(event_size=2, seed=1), _small(event_size=2)
  _trained_like(second, seed=5)
  path = tmp_path / "flow"
  tfp_realnvp.save(first, path)
  with pytest.raises(FileExistsError, match="already exists.*overwrite=True"):
    tfp_realnvp.save(second, path)
  x, _ = _points(first)
  np.testing.assert_array_equal(tfp_realnvp.load(path).log_prob(x), first.log_prob(x))
  tfp_realnvp.save(second, path, overwrite=True)
  np.testing.assert_array_equal(tfp_realnvp.load(path).log_prob(x), second.log_prob(x))
  assert sorted(os.listdir(tmp_path)) == ["flow"]


def test_overwrite_refuses_foreign_paths(tmp_path):
  flow = _small(event_size=2)
  other = tmp_path / "photos"
  other.mkdir()
  (other / "holiday.jpg").write_bytes(b"not ours")
  with pytest.raises(FileExistsError, match="not a folder written by tfp_realnvp"):
    tfp_realnvp.save(flow, other, overwrite=True)
  assert (other / "holiday.jpg").read_bytes() == b"not ours"
  a_file = tmp_path / "notes.txt"
  a_file.write_text("keep me")
  with pytest.raises(FileExistsError, match="not a folder"):
    tfp_realnvp.save(flow, a_file, overwrite=True)
  with pytest.raises(FileExistsError):
    tfp_realnvp.export(flow, other, overwrite=True)
  assert a_file.read_text() == "keep me"
  # an empty folder may be replaced
  empty = tmp_path / "empty"
  empty.mkdir()
  tfp_realnvp.save(flow, empty, overwrite=True)
  tfp_realnvp.load(empty)


def test_failed_save_leaves_nothing(tmp_path, monkeypatch):
  flow = _small(event_size=2)

  def broken_write(self, prefix, *args, **kwargs):
    with open(prefix + ".index", "wb") as f:
      f.write(b"partial")
    raise OSError("disk full")

  monkeypatch.setattr(tf.train.Checkpoint, "write", broken_write)
  with pytest.raises(OSError, match="disk full"):
    tfp_realnvp.save(flow, tmp_path / "flow")
  assert os.listdir(tmp_path) == []


def test_failed_overwrite_keeps_old_save(tmp_path, monkeypatch):
  flow = _small(event_size=2)
  path = tfp_realnvp.save(flow, tmp_path / "flow")
  monkeypatch.setattr(serialization, "_verify_round_trip",
                      lambda *a: (_ for _ in ()).throw(ValueError("mismatch")))
  with pytest.raises(ValueError, match="mismatch"):
    tfp_realnvp.save(_small(event_size=2), path, overwrite=True)
  x, _ = _points(flow)
  np.testing.assert_array_equal(tfp_realnvp.load(path).log_prob(x), flow.log_prob(x))
  assert os.listdir(tmp_path) == ["flow"]


def test_unsavable_flows_are_refused(tmp_path):
  custom = tfp_realnvp.RealNVP(2, num_couplings=2, hidden_units=(8,), activation=tf.nn.relu)
  with pytest.raises(ValueError, match="custom .*activation"):
    tfp_realnvp.save(custom, tmp_path / "a")
  # weights that the config does not describe: verification catches it
  donor = tfp_realnvp.RealNVP(2, num_couplings=2, hidden_units=(12,))
  liar = tfp_realnvp.RealNVP(2, num_couplings=2, hidden_units=(8,), bijector=donor.bijector)
  with pytest.raises(ValueError, match="does not rebuild from its config.*cannot be restored"):
    tfp_realnvp.save(liar, tmp_path / "b")
  with pytest.raises(TypeError, match="RealNVP"):
    tfp_realnvp.save(object(), tmp_path / "c")
  assert os.listdir(tmp_path) == []


# -- load errors -----------------------------------------------------------------

@pytest.fixture
def saved(tmp_path):
  return tfp_realnvp.save(_small(event_size=2), tmp_path / "flow")


def _edit_meta(path, edit):
  meta_path = os.path.join(path, META)
  with open(meta_path) as f:
    meta = json.load(f)
  edit(meta)
  with open(meta_path, "w") as f:
    json.dump(meta, f)


def test_load_missing_folder(tmp_path):
  with pytest.raises(FileNotFoundError, match="no such file or folder"):
    tfp_realnvp.load(tmp_path / "nowhere")


def test_load_foreign_folders(tmp_path):
  other = tmp_path / "other"
  other.mkdir()
  (other / "model.pkl").write_bytes(b"\x80\x04")
  with pytest.raises(ValueError, match="not a folder written by tfp_realnvp.save.*no tfp_realnvp.json"):
    tfp_realnvp.load(other)
  (other / META).write_text('{"format": "someone-else", "format_version": 1}')
  with pytest.raises(ValueError, match="not written by tfp_realnvp.save.*'someone-else'"):
    tfp_realnvp.load(other)
  (other / META).write_text("{not json")
  with pytest.raises(ValueError, match="not a readable JSON file"):
    tfp_realnvp.load(other)
  (other / META).write_text("[1, 2]")
  with pytest.raises(ValueError, match="not written by tfp_realnvp"):
    tfp_realnvp.load(other)
  a_file = tmp_path / "file.bin"
  a_file.write_bytes(b"x")
  with pytest.raises(ValueError, match="is a file"):
    tfp_realnvp.load(a_file)


def test_load_truncated_checkpoint(saved):
  data = os.path.join(saved, "weights.data-00000-of-00001")
  size = os.path.getsize(data)
  with open(data, "r+b") as f:
    f.truncate(size // 2)
  with pytest.raises(ValueError, match=r"weights.data-00000-of-00001 has \d+ bytes but \d+ were saved.*truncated"):
    tfp_realnvp.load(saved)


def test_load_corrupted_checkpoint(saved):
  data = os.path.join(saved, "weights.data-00000-of-00001")
  with open(data, "r+b") as f:
    f.seek(10)
    byte = f.read(1)
    f.seek(10)
    f.write(bytes([byte[0] ^ 0xFF]))
  with pytest.raises(ValueError, match="SHA-256.*corrupted"):
    tfp_realnvp.load(saved)


def test_load_missing_checkpoint_file(saved):
  os.remove(os.path.join(saved, "weights.index"))
  with pytest.raises(FileNotFoundError, match="weights.index is missing"):
    tfp_realnvp.load(saved)


def test_load_newer_format_version(saved):
  _edit_meta(saved, lambda m: m.update(format_version=99, tfp_realnvp_version="9.0"))
  with pytest.raises(ValueError, match="format_version 99 by a newer tfp_realnvp.*Upgrade"):
    tfp_realnvp.load(saved)
  _edit_meta(saved, lambda m: m.update(format_version="one"))
  with pytest.raises(ValueError, match="no valid format_version"):
    tfp_realnvp.load(saved)


def test_load_config_from_a_newer_release(saved):
  _edit_meta(saved, lambda m: m["config"].update(flux_capacitor=True))
  with pytest.raises(ValueError, match="config that this version of RealNVP does not accept.*flux_capacitor"):
    tfp_realnvp.load(saved)


def test_load_checkpoint_not_matching_config(saved):
  _edit_meta(saved, lambda m: m["config"].update(hidden_units=[4]))
  with pytest.raises(ValueError, match="cannot be restored into the flow its config describes"):
    tfp_realnvp.load(saved)


def test_load_invalid_config(saved):
  _edit_meta(saved, lambda m: m["config"].update(permutation="sideways"))
  with pytest.raises(ValueError, match="invalid config.*sideways"):
    tfp_realnvp.load(saved)


def test_load_reads_nothing_outside_the_folder(saved, tmp_path):
  outside = tfp_realnvp.save(_small(event_size=2, hidden_units=(16, 16)), tmp_path / "outside")
  for prefix in ("../outside/weights", os.path.join(outside, "weights"), "..", ""):
    _edit_meta(saved, lambda m: m["checkpoint"].update(prefix=prefix))
    with pytest.raises(ValueError, match="prefix.*not a file name inside the folder"):
      tfp_realnvp.load(saved)
  _edit_meta(saved, lambda m: m["checkpoint"].update(prefix="weights", files={}))
  with pytest.raises(ValueError, match="does not list the checkpoint's weights.index"):
    tfp_realnvp.load(saved)


def test_load_refuses_links_leaving_the_folder(saved, tmp_path):
  outside = tfp_realnvp.save(_small(event_size=2), tmp_path / "outside")
  data = os.path.join(saved, "weights.data-00000-of-00001")
  os.remove(data)
  os.symlink(os.path.join(outside, "weights.data-00000-of-00001"), data)
  with pytest.raises(ValueError, match="link to a file outside the folder"):
    tfp_realnvp.load(saved)


@pytest.mark.parametrize("update", [
    dict(num_couplings=10**9), dict(hidden_units=[50000, 50000]), dict(event_size=10**7),
    dict(hidden_units=[10**6] * 2), dict(permutation="lu", event_size=10**5),
], ids=["couplings", "widths", "event-size", "huge-widths", "lu"])
def test_load_checks_config_size_against_the_checkpoint_first(saved, update, monkeypatch):
  built = []
  monkeypatch.setattr(serialization, "RealNVP", lambda **c: built.append(c))
  _edit_meta(saved, lambda m: m["config"].update(update))
  with pytest.raises(ValueError, match=r"damaged: its config describes a flow of at least [\d,]+ "
                                       r"parameters but the checkpoint holds [\d,]+ values"):
    tfp_realnvp.load(saved)
  assert not built  # refused before building anything


@pytest.mark.parametrize("kwargs", [
    dict(event_size=2), dict(event_size=5, hidden_units=(7, 3)),
    dict(event_size=3, permutation="lu", coupling="additive"),
    dict(event_size=4, coupling="spline", conditional_size=3, actnorm=True),
    dict(event_size=6, num_couplings=1, permutation="lu"),
])
def test_minimum_parameter_count_is_a_lower_bound(kwargs):
  kwargs.setdefault("num_couplings", 3)
  kwargs.setdefault("hidden_units", (16, 16))
  flow = tfp_realnvp.RealNVP(**kwargs)
  event_size = kwargs.pop("event_size")
  bound = serialization.minimum_parameter_count(event_size, serialization.FlowOptions(**kwargs))
  actual = sum(int(np.prod(v.shape)) for v in flow.trainable_variables)
  assert actual / 4 <= bound <= actual  # a bound, and not a vacuous one


def test_load_says_damaged_for_bad_json_and_values(saved):
  with open(os.path.join(saved, META), "w") as f:
    f.write("[" * 200000 + "]" * 200000)
  with pytest.raises(ValueError, match="damaged"):
    tfp_realnvp.load(saved)


def test_load_says_damaged_for_a_bad_value_not_upgrade(tmp_path):
  for update in (dict(num_couplings="three"), dict(hidden_units=[[1]]), dict(event_size=-2)):
    saved = tfp_realnvp.save(_small(event_size=2), tmp_path / "f", overwrite=True)
    _edit_meta(saved, lambda m: m["config"].update(update))
    with pytest.raises(ValueError, match="damaged") as error:
      tfp_realnvp.load(saved)
    assert "upgrade" not in str(error.value).lower()


# -- export ----------------------------------------------------------------------

_SERVE = textwrap.dedent("""
    import importlib.abc, importlib.util, json, sys

    BLOCKED = ("tfp_realnvp", "tensorflow_probability", "tf_keras")

    class Block(importlib.abc.MetaPathFinder):
      def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
          raise ModuleNotFoundError(f"{name} is blocked in this test")
        return None

    sys.meta_path.insert(0, Block())
    for name in BLOCKED:
      try:
        __import__(name)
      except ImportError:
        pass
      else:
        raise SystemExit(f"{name} is importable")

    import numpy as np
    import tensorflow as tf

    inputs = np.load(sys.argv[3])
    out = {}
    plain = tf.saved_model.load(sys.argv[1])
    out["plain_log_prob"] = plain.log_prob(inputs["x"]).numpy()
    out["plain_sample"] = plain.sample(5, [3, 4]).numpy()
    out["plain_sig"] = plain.signatures["log_prob"](x=tf.constant(inputs["x"]))["log_prob"].numpy()
    cond = tf.saved_model.load(sys.argv[2])
    out["cond_log_prob"] = cond.log_prob(inputs["x"], inputs["c"]).numpy()
    out["cond_sample"] = cond.sample(len(inputs["c"]), inputs["c"], [3, 4]).numpy()
    out["cond_sig"] = cond.signatures["sample"](
        n=tf.constant(len(inputs["c"])), conditional_input=tf.constant(inputs["c"]),
        seed=tf.constant([3, 4]))["samples"].numpy()
    out["event_size"] = cond.event_size.numpy()
    out["conditional_size"] = cond.conditional_size.numpy()
    out["config_k"] = json.loads(cond.metadata.numpy())["config"]["conditional_size"]
    leaked = [m for m in sys.modules if m.split(".")[0] in BLOCKED]
    assert not leaked, leaked
    np.savez(sys.argv[4], **out)
""")


def test_export_serves_without_the_package(tmp_path):
  plain = _small(event_size=2)
  cond = _small(event_size=2, conditional_size=3)
  x = plain.sample(7, seed=(1, 2)).numpy()
  c = np.random.default_rng(0).standard_normal([7, 3]).astype(np.float32)
  plain_dir = tfp_realnvp.export(plain, tmp_path / "plain")
  cond_dir = tfp_realnvp.export(cond, tmp_path / "cond")
  assert os.path.isfile(os.path.join(plain_dir, "saved_model.pb"))
  np.savez(tmp_path / "inputs.npz", x=x, c=c)
  script = tmp_path / "serve.py"
  script.write_text(_SERVE)
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  env["TF_CPP_MIN_LOG_LEVEL"] = "3"
  result = subprocess.run(
      [sys.executable, str(script), plain_dir, cond_dir, str(tmp_path / "inputs.npz"),
       str(tmp_path / "out.npz")],
      cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stdout + result.stderr
  out = np.load(tmp_path / "out.npz")
  np.testing.assert_allclose(out["plain_log_prob"], plain.log_prob(x), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out["plain_sig"], plain.log_prob(x), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out["plain_sample"], plain.sample(5, seed=(3, 4)), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out["cond_log_prob"], cond.log_prob(x, conditional_input=c),
                             rtol=1e-5, atol=1e-5)
  want = cond.sample(7, conditional_input=c, seed=(3, 4))
  np.testing.assert_allclose(out["cond_sample"], want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out["cond_sig"], want, rtol=1e-5, atol=1e-5)
  assert int(out["event_size"]) == 2 and int(out["conditional_size"]) == 3
  assert int(out["config_k"]) == 3

  # an export is not a save folder, and is not overwritten silently
  with pytest.raises(ValueError, match="tfp_realnvp.export.*tf.saved_model.load"):
    tfp_realnvp.load(plain_dir)
  with pytest.raises(FileExistsError, match="already exists"):
    tfp_realnvp.export(plain, plain_dir)
  tfp_realnvp.export(cond, plain_dir, overwrite=True)
  assert sorted(os.listdir(tmp_path)) == ["cond", "inputs.npz", "out.npz", "plain", "serve.py"]


def test_load_plain_savedmodel_hints(tmp_path):
  module = tf.Module()
  module.v = tf.Variable(1.0)
  tf.saved_model.save(module, str(tmp_path / "sm"))
  with pytest.raises(ValueError, match="SavedModel.*tf.saved_model.load"):
    tfp_realnvp.load(tmp_path / "sm")


def test_export_takes_single_events_int_seeds_and_maps_to_latent(tmp_path):
  flow = _small(event_size=2)
  served = tf.saved_model.load(tfp_realnvp.export(flow, tmp_path / "plain"))
  x, _ = _points(flow, 5)
  np.testing.assert_allclose(served.log_prob(x[0]), flow.log_prob(x[:1])[0], rtol=1e-5)
  z = served.inverse(x)
  np.testing.assert_allclose(z, flow.bijector.inverse(tf.identity(x)), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(served.forward(z), x, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(served.inverse(x[0]), z[0], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(served.sample(3, 7), flow.sample(3, seed=(0, 7)), rtol=1e-5)
  np.testing.assert_allclose(served.sample(3, [1, 7]), flow.sample(3, seed=(1, 7)), rtol=1e-5)
  for wrong in (x[:, :1], x[0, :1], tf.constant(1.0), tf.zeros([4, 3])):
    with pytest.raises(tf.errors.InvalidArgumentError, match="event_size|last dimension 2"):
      served.log_prob(wrong)
  with pytest.raises(tf.errors.InvalidArgumentError, match="last dimension 2"):
    served.inverse(x[:, :1])


def test_export_of_a_conditional_flow_maps_to_latent(tmp_path):
  flow = _small(event_size=2, conditional_size=3)
  served = tf.saved_model.load(tfp_realnvp.export(flow, tmp_path / "cond"))
  x = tf.random.stateless_normal([4, 2], seed=(5, 5))
  c = tf.random.stateless_normal([4, 3], seed=(6, 6))
  want = flow.bijector.inverse(tf.identity(x), conditional_input=c)
  np.testing.assert_allclose(served.inverse(x, c), want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(served.log_prob(x[0], c[0]),
                             flow.log_prob(x[:1], conditional_input=c[:1])[0], rtol=1e-5)
  with pytest.raises(tf.errors.InvalidArgumentError, match="last dimension 3"):
    served.log_prob(x, c[:, :2])
