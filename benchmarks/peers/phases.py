"""What the parent measures, phase by phase: start-up, interleaved step time and
throughput, the matched training runs and each library's own recipe.

Every phase runs its own worker processes (:class:`~benchmarks.peers.processes.Worker`)
and returns raw figures; :mod:`benchmarks.peers.summary` turns them into statistics.
"""

from __future__ import annotations

import os
import pathlib
import statistics
import subprocess
import time

from benchmarks.peers.processes import Worker, interpreter, log
from benchmarks.peers.protocol import ONE_THREAD_ENV
from benchmarks.peers.settings import CONTESTANTS, LIBRARIES, PeerSettings

__all__ = ["SNIPPETS", "startup", "interleaved", "training", "own_recipe"]

SNIPPETS = pathlib.Path(__file__).resolve().parent / "snippets"


def _model(settings: PeerSettings, contestant: str, data_path, seed: int) -> dict:
  """The fields of a request that builds ``contestant``'s model."""
  return {"coupling": CONTESTANTS[contestant][1], "settings": settings.to_json(),
          "data": str(data_path), "seed": seed}


def _startup_sample(worker: Worker, settings: PeerSettings, contestant: str, data_path) -> dict:
  """One start-up of a fresh ``worker``: seconds from just before its process started
  until its imports were done, its model built and its first training step finished."""
  reply = worker.request("startup", **_model(settings, contestant, data_path, settings.seeds[0]))
  return {stage: reply[f"{stage}_at"] - worker.spawned_at
          for stage in ("imported", "built", "first_step")}


def startup(settings: PeerSettings, contestants, data_path, logs: pathlib.Path,
            repeats: int) -> dict:
  """``repeats`` more start-up samples of each contestant, each a fresh process
  (default threads) alone on the machine; ``{contestant: [sample, ...]}``."""
  out = {}
  for name in contestants:
    out[name] = []
    for _ in range(repeats):
      with Worker(CONTESTANTS[name][0], "default", logs / f"startup_{name}.log") as worker:
        out[name].append(_startup_sample(worker, settings, name, data_path))
  return out


def interleaved(settings: PeerSettings, contestants, data_path, logs: pathlib.Path,
                threads: str, throughput: bool) -> dict:
  """Per-step times of every contestant in one window, and optionally throughput.

  All processes are started, built and warmed up first (together, untimed);
  then, round after round, each in turn (the order rotating) takes
  ``timing_block`` steps, so that whatever else the machine does hits them
  alike.  Returns the seconds per step of each round, the parameter counts,
  the peak memory and, with
  ``throughput``, the points per second of ``log_prob`` and ``sample`` (after
  the rounds, each process in turn).
  """
  workers = {}
  try:
    for name in contestants:  # started together: their imports overlap, nothing is timed yet
      workers[name] = Worker(CONTESTANTS[name][0], threads,
                             logs / f"timing_{threads}_threads_{name}.log")
    for name, worker in workers.items():  # built and warmed up together too
      worker.send("build", **_model(settings, name, data_path, settings.seeds[0]))
    parameters = {name: worker.receive()["parameters"] for name, worker in workers.items()}
    names, rounds = list(workers), []
    for r in range(settings.timing_rounds):
      order = names[r % len(names):] + names[:r % len(names)]
      rounds.append({name: workers[name].request("steps", n=settings.timing_block)["seconds"]
                     / settings.timing_block for name in order})
    out = {"threads": threads, "block": settings.timing_block, "rounds": rounds,
           "parameters": parameters}
    if throughput:
      out["throughput"] = {name: worker.request("throughput", repeats=settings.throughput_repeats)
                           for name, worker in workers.items()}
    out["peak_rss_mb"] = {name: worker.request("versions")["rss_mb"]
                          for name, worker in workers.items()}
  finally:
    for worker in workers.values():
      worker.close()
  log(f"step times with {threads} thread(s): "
      + ", ".join(f"{n} {1e3 * statistics.median(r[n] for r in rounds):.1f} ms" for n in names))
  return out


def training(settings: PeerSettings, contestant: str, data_paths: dict,
             logs: pathlib.Path) -> dict:
  """The matched training runs of ``contestant``, every seed, in one process (with
  ``train_threads``), whose first request is a start-up sample (see :func:`startup`)."""
  runs = []
  with Worker(CONTESTANTS[contestant][0], settings.train_threads,
              logs / f"train_{contestant}.log") as worker:
    sample = _startup_sample(worker, settings, contestant, data_paths[settings.seeds[0]])
    log(f"start-up {contestant}: {sample['first_step']:.1f} s to the first step")
    for seed in settings.seeds:
      run = worker.request("train_run", **_model(settings, contestant, data_paths[seed], seed))
      runs.append(run)
      log(f"{contestant} seed {seed}: test NLL {run['test_nll']}, "
          f"{run['train_seconds']:.1f} s of training")
    versions = worker.request("versions")
  return {"runs": runs, "startup": sample, "rss_after_first_run_mb": runs[0].pop("rss_mb"),
          "peak_rss_mb": versions.pop("rss_mb"), "versions": versions}


def own_recipe(settings: PeerSettings, library: str, data_paths: dict,
               logs: pathlib.Path) -> list:
  """``library``'s snippet (its own documented recipe) on each of ``own_seeds``.

  Each run is the snippet as a user would run it, ``python -P snippet DATA
  SEED`` (``-P``: the snippets' file names would shadow the libraries), with
  ``train_threads`` (one: pinned to CPU 0, the environment asking for one
  thread); its printed test NLL and its process's wall time.
  """
  snippet = SNIPPETS / LIBRARIES[library]["snippet"]
  one = settings.train_threads == "1"
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(ONE_THREAD_ENV if one else {}))
  out = []
  for seed in settings.own_seeds:
    command = [str(interpreter(library)), "-P", str(snippet), str(data_paths[seed]), str(seed)]
    command += ["--quick"] if settings.quick_snippets else []
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env,
                          preexec_fn=(lambda: os.sched_setaffinity(0, {0})) if one else None)
    wall = time.perf_counter() - start
    (logs / f"own_{library}_seed_{seed}.log").write_text(done.stdout + done.stderr)
    lines = [line for line in done.stdout.splitlines() if line.startswith("test NLL")]
    if done.returncode or not lines:
      raise RuntimeError(f"{snippet.name} failed (exit {done.returncode}):\n"
                         + (done.stdout + done.stderr)[-3000:])
    out.append({"seed": seed, "test_nll": float(lines[-1].split()[-1]), "wall_seconds": wall})
    log(f"own recipe {library} seed {seed}: test NLL {out[-1]['test_nll']:.4f}, {wall:.1f} s")
  return out
