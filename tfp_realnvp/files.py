"""File safety in one place: atomic writes of text and JSON files.

A reader (or a process killed mid-write) sees either the old file or the new
one, whole: the text goes to a temporary file in the same folder, is flushed
to disk, then renamed over the destination.
"""

from __future__ import annotations

import json
import os
import pathlib
import tempfile

__all__ = ["atomic_write_text", "atomic_write_json"]


def atomic_write_text(path, text: str) -> None:
  """Writes ``text`` to ``path`` so that a reader sees the old or the new file, whole."""
  path = pathlib.Path(path)
  fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
  try:
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
