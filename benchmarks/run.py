"""Benchmarks against TFP's built-in RealNVP and the book's model.

    python benchmarks/run.py --out benchmarks/results            # full mode (minutes)
    python benchmarks/run.py --out /tmp/bench-quick --quick      # smoke test (seconds)

The same as ``tfp-realnvp bench``; the logic lives in :mod:`tfp_realnvp.bench`.
"""

import argparse
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from tfp_realnvp import bench  # noqa: E402


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  bench.add_arguments(parser)
  args = parser.parse_args(argv)
  results = bench.run_benchmarks(
      args.out, bench.settings_from_args(args), overwrite=args.overwrite,
      progress=not args.no_progress,
      command="python benchmarks/run.py " + " ".join(sys.argv[1:] if argv is None else argv))
  print(f"wrote {args.out} ({results['total_seconds'] / 60:.1f} min)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
