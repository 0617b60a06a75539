"""File safety in one place: atomic writes, folders written whole, locks.

Everything is written under a temporary name in the same folder
(``.NAME.tmp-XXXX``), flushed, then renamed over the destination, so a reader
(or a process killed at any instant) sees the old content or the new one,
whole.  A kill leaves at most such a temporary entry, which
:func:`remove_temporaries` deletes; :func:`lock` keeps two processes from
writing the same folder.

#### Example

```python
with files.lock("runs/moons"):
  files.atomic_write_json("runs/moons.json", {"gap": 0.0065})
  files.write_folder("runs/model", lambda tmp: save_into(tmp))
```
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pathlib
import re
import shutil
import tempfile

__all__ = ["atomic_write_text", "atomic_write_json", "write_folder", "remove_temporaries",
           "replace_folder", "lock", "FolderInUse"]

_TEMPORARY = re.compile(r"^\..+\.(tmp|old)-[A-Za-z0-9_]+$")
_UMASK = os.umask(0o022)  # read once (at import, single-threaded): temporaries get the
os.umask(_UMASK)          # permissions a plain open() or mkdir() would give


class FolderInUse(RuntimeError):
  """Another process holds the :func:`lock` of a folder."""


def atomic_write_text(path, text: str) -> None:
  """Writes ``text`` to ``path`` so that a reader sees the old or the new file, whole."""
  path = pathlib.Path(path)
  fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
  try:
    os.chmod(tmp, 0o666 & ~_UMASK)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    pathlib.Path(tmp).unlink(missing_ok=True)
    raise


def atomic_write_json(path, payload, *, indent: int | None = 2, allow_nan: bool = False) -> None:
  """:func:`atomic_write_text` of ``payload`` as JSON (sorted keys, newline at the end)."""
  atomic_write_text(path, json.dumps(payload, indent=indent, sort_keys=True,
                                     allow_nan=allow_nan) + "\n")


def write_folder(path, write_into) -> str:
  """Creates (or replaces) the folder ``path`` whole; returns ``path`` as a string.

  Calls ``write_into(tmp)`` on a fresh temporary folder beside ``path``, then
  :func:`replace_folder`.  On an exception nothing is left behind; a kill
  leaves at most a ``.NAME.tmp-*`` / ``.NAME.old-*`` entry (a killed
  replacement can leave ``path`` missing, the old folder in ``.NAME.old-*``).
  """
  path = os.fspath(path)
  parent, base = os.path.split(path)
  tmp = tempfile.mkdtemp(prefix=f".{base}.tmp-", dir=parent or ".")
  try:
    os.chmod(tmp, 0o777 & ~_UMASK)
    write_into(tmp)
    replace_folder(tmp, path)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return path


def replace_folder(source, path) -> None:
  """Renames the folder ``source`` to ``path``, replacing (then deleting) an existing ``path``."""
  source, path = os.fspath(source), os.fspath(path)
  if not os.path.lexists(path):
    os.rename(source, path)
    return
  parent, base = os.path.split(path)
  old = tempfile.mkdtemp(prefix=f".{base}.old-", dir=parent or ".")
  os.rmdir(old)
  os.rename(path, old)
  try:
    os.rename(source, path)
  except BaseException:
    os.rename(old, path)
    raise
  shutil.rmtree(old, ignore_errors=True)


def remove_temporaries(folder) -> list[str]:
  """Deletes the ``.NAME.tmp-*`` / ``.NAME.old-*`` entries of ``folder``; returns their names.

  Call it only while no other process writes ``folder`` (hold its :func:`lock`).
  """
  removed = [entry for entry in sorted(os.listdir(folder)) if _TEMPORARY.match(entry)]
  for entry in removed:
    full = os.path.join(folder, entry)
    if os.path.isdir(full) and not os.path.islink(full):
      shutil.rmtree(full)
    else:
      os.unlink(full)
  return removed


@contextlib.contextmanager
def lock(path):
  """Holds an exclusive lock on ``path`` (a folder that need not exist) for a ``with``.

  The lock is ``fcntl.flock`` on a file ``.NAME.lock`` beside ``path``, removed
  on release; the system releases it when the process ends, however it ends.

  Raises:
    FolderInUse: another process holds it.
  """
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  lock_path = path.parent / f".{path.name}.lock"
  while True:
    f = open(lock_path, "a+", encoding="utf-8")  # pylint: disable=consider-using-with
    try:
      fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      f.seek(0)
      owner = f.read().strip() or "unknown"
      f.close()
      raise FolderInUse(f"{path} is in use by another process (pid {owner}); wait for it to "
                        "finish or stop it first") from None
    with contextlib.suppress(FileNotFoundError):  # its previous holder may have removed it
      if os.stat(lock_path).st_ino == os.fstat(f.fileno()).st_ino:
        break
    f.close()
  with f:
    f.truncate(0)
    f.write(f"{os.getpid()}\n")
    f.flush()
    try:
      yield path
    finally:
      lock_path.unlink(missing_ok=True)
