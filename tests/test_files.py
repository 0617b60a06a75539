"""Tests for tfp_realnvp.files: atomic writes, whole folders, temporaries, locks."""

import json
import os

import pytest

from tfp_realnvp import files


def test_atomic_writes_replace_whole_and_leave_nothing_on_failure(tmp_path):
  path = tmp_path / "a.json"
  files.atomic_write_json(path, {"b": 1, "a": [1.5]})
  assert path.read_text() == json.dumps({"a": [1.5], "b": 1}, indent=2, sort_keys=True) + "\n"
  with pytest.raises(ValueError):
    files.atomic_write_json(path, {"x": float("nan")})  # allow_nan=False by default
  assert json.loads(path.read_text()) == {"a": [1.5], "b": 1}
  assert os.listdir(tmp_path) == ["a.json"]


def test_write_folder_replaces_whole_or_not_at_all(tmp_path):
  target = tmp_path / "out"

  def write(text):
    def write_into(folder):
      with open(os.path.join(folder, "f.txt"), "w", encoding="utf-8") as f:
        f.write(text)
    return write_into

  files.write_folder(target, write("one"))
  files.write_folder(target, write("two"))
  assert (target / "f.txt").read_text() == "two"

  def broken(folder):
    write("three")(folder)
    raise OSError("disk full")

  with pytest.raises(OSError, match="disk full"):
    files.write_folder(target, broken)
  assert (target / "f.txt").read_text() == "two"
  assert os.listdir(tmp_path) == ["out"]


def test_remove_temporaries_removes_only_ours(tmp_path):
  for name in (".model.tmp-x1y2", ".metrics.json.tmp-abc_9", ".model.old-zz"):
    (tmp_path / name).mkdir() if "model" in name else (tmp_path / name).write_text("")
  for name in ("model", ".hidden", "notes.tmp-1", ".a.lock"):
    (tmp_path / name).write_text("keep")
  assert files.remove_temporaries(tmp_path) == [".metrics.json.tmp-abc_9", ".model.old-zz",
                                                ".model.tmp-x1y2"]
  assert sorted(os.listdir(tmp_path)) == [".a.lock", ".hidden", "model", "notes.tmp-1"]


def test_lock_refuses_a_second_holder_and_leaves_no_file(tmp_path):
  with files.lock(tmp_path / "run"):
    assert (tmp_path / ".run.lock").read_text().strip() == str(os.getpid())
    with pytest.raises(files.FolderInUse, match=f"in use by another process .pid {os.getpid()}"):
      with files.lock(tmp_path / "run"):
        pass
    with files.lock(tmp_path / "other"):  # another folder is independent
      pass
  assert os.listdir(tmp_path) == []
  with files.lock(tmp_path / "run"):  # free again
    pass


def test_written_files_get_the_usual_permissions(tmp_path):
  umask = os.umask(0o022)
  os.umask(umask)
  files.atomic_write_text(tmp_path / "a.txt", "x")
  files.write_folder(tmp_path / "folder", lambda folder: None)
  assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~umask
  assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o777 & ~umask
