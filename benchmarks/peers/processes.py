"""The parent's side of the workers: each library's interpreter, and :class:`Worker`,
one worker process spoken to in JSON lines (see :mod:`benchmarks.peers.protocol`)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time

from benchmarks.peers.settings import LIBRARIES, ROOT

__all__ = ["MissingEnvironment", "interpreter", "missing_environments", "Worker", "log"]


class MissingEnvironment(RuntimeError):
  """A peer's virtual environment is not there (``make bench-peers-env`` creates them)."""


def log(message: str) -> None:
  """A progress line on stderr."""
  print(f"[peers] {message}", file=sys.stderr, flush=True)


def interpreter(library: str) -> pathlib.Path:
  """The Python of ``library``'s virtual environment (ours: this one)."""
  venv = LIBRARIES[library]["venv"]
  return pathlib.Path(sys.executable) if venv is None else ROOT / venv / "bin" / "python"


def missing_environments(libraries) -> list:
  """The virtual environments of ``libraries`` that do not exist."""
  return [LIBRARIES[lib]["venv"] for lib in libraries if not interpreter(lib).exists()]


class Worker:
  """A worker process of ``library`` with ``threads`` (``"1"`` or ``"default"``).

  ``spawned_at`` is the wall-clock time just before the process started (the
  start-up's origin).  Its stderr goes to ``log_path``.  Use as a context
  manager: leaving it ends the process.
  """

  def __init__(self, library: str, threads: str, log_path):
    missing = missing_environments([library])
    if missing:
      raise MissingEnvironment(f"{missing[0]} does not exist: run `make bench-peers-env`")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    self.library, self.log_path = library, pathlib.Path(log_path)
    self._log = open(self.log_path, "a")
    self.spawned_at = time.time()
    self.process = subprocess.Popen(
        [str(interpreter(library)), "-m", LIBRARIES[library]["worker"], "--threads", threads],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True, cwd=ROOT,
        env=env)

  def send(self, op: str, **fields) -> None:
    """Sends one request (:meth:`receive` reads its reply)."""
    self._op = op
    try:
      self.process.stdin.write(json.dumps({"op": op, **fields}) + "\n")
      self.process.stdin.flush()
    except BrokenPipeError:
      pass  # receive() reports the exit

  def receive(self) -> dict:
    """The reply to the last request; RuntimeError with the log's tail on failure."""
    line = self.process.stdout.readline()
    reply = json.loads(line) if line else {"error": f"the worker exited ({self.process.wait()})"}
    if "error" in reply:
      self._log.flush()
      tail = "".join(self.log_path.read_text().splitlines(keepends=True)[-20:])
      raise RuntimeError(f"{self.library} worker, request {self._op!r}: {reply['error']}\n"
                         f"log {self.log_path}:\n{tail}")
    return reply

  def request(self, op: str, **fields) -> dict:
    """Sends one request and returns its reply."""
    self.send(op, **fields)
    return self.receive()

  def close(self) -> None:
    if self.process.poll() is None:
      try:
        self.request("exit")
        self.process.wait(timeout=60)
      except (RuntimeError, subprocess.TimeoutExpired):
        self.process.kill()
        self.process.wait()
    self._log.close()

  def __enter__(self) -> "Worker":
    return self

  def __exit__(self, *exc) -> None:
    self.close()
